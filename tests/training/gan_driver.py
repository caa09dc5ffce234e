"""Subprocess driver: the real GAN loop (GANTrainer) on the tiny fixture networks.

Used by ``test_gan_distributed.py`` (not collected by pytest). Like ``toy_loop.py`` (a toy
``loop.Task`` run by the same ``loop.Loop``), but driving
``msmt_tf.training.gan_trainer.GANTrainer`` exactly as ``msmt_tf.training.runner.train`` wires
it: strategy first (``split_cpu`` before any TF op) -> ``worker_info`` -> run directory
(``prepare_run_dir``, chief only writes) -> encoders under the strategy scope -> trainer
(networks, optimizers, EMA, RNG, ``TrainCheckpoint``) -> ``train()`` (restore, loop,
``StopSignal``, final/signal save).

Printed on stdout (one line each, parsed by the tests):
    LATEST <path|None>      newest checkpoint found before training (what ``train`` restores)
    step k/N ...            the progress lines of ``GANTrainer.train`` (``--log_every=1``)
    SIGNAL after k ...      ``--signal_after k``: this process sent itself SIGTERM
    RESULT <step> <stopped> <checkpoint path> t=...

``--out w.npz`` saves every weight of G, G-EMA, each D, every optimizer variable and the noise
RNG state, after the run and (``init/``) before its first step; ``--compare_default`` then runs
the same loop again in this process with the default strategy (own run directory
``<run_dir>_default``) and saves its arrays under ``default/``. ``--duplicate_halves`` and
``--bn_check``: see ``duplicated_halves_dataset`` and ``bn_check``.
"""

import argparse
import os
import signal
import sys
import time

import numpy as np

T0 = time.time()
STEPS_PER_EPOCH = 2


def make_configs(max_steps, checkpoint_every, strategy="default", lambda3=None):
    """The tiny fixture configuration (``gan_fixtures.configs``) with a loop for these tests."""
    from tests.training import gan_fixtures as fx

    # image_every beyond max_steps and no fixed batch: no grids (not what is tested here).
    extra = {} if lambda3 is None else {"lambda3": lambda3}
    return fx.configs(max_steps=max_steps, checkpoint_every=checkpoint_every, log_every=1,
                      image_every=10**6, strategy=strategy, **extra)


def duplicated_halves_dataset(model_cfg, repeats):
    """The fixture batch with rows [a, b, a, b] and one class id for all four rows.

    With the duplicated noise of ``HalvesRng`` every batch-coupled computation sees the same
    numbers on one device (4 rows) and in each of 2 replicas (2 rows): the generator's BatchNorm
    batch statistics (mean and biased variance of [x, y, x, y] equal those of [x, y]) and the
    DAMSM softmax over in-batch negatives (same-class pairs are masked out of it, so each row
    only has itself: the DAMSM losses are exactly 0 both ways, by construction).
    """
    import tensorflow as tf

    from tests.training import gan_fixtures as fx

    b = fx.batch(model_cfg)
    rows = np.array([0, 1, 0, 1])
    out = {k: (tuple(x[rows] for x in v) if isinstance(v, tuple) else v[rows]) for k, v in b.items()}
    out["class_id"] = np.zeros(4, "int32")
    return tf.data.Dataset.from_tensors(out).repeat(repeats)


class HalvesRng:
    """Stands in for ``GANStep.noise_rng``: ``normal([n, d])`` draws n/2 rows from the trainer's
    real generator and repeats them ([u, v, u, v]), so that the rows of the duplicated batch get
    the same z and CA epsilon. The real generator still advances (and is checkpointed)."""

    def __init__(self, rng):
        self.rng = rng

    def normal(self, shape):
        import tensorflow as tf

        half = self.rng.normal([shape[0] // 2] + list(shape[1:]))
        return tf.concat([half, half], axis=0)


def arrays_of(trainer):
    """Every variable by group and position (``g/007``); ``paths/<group>`` names them (Keras
    paths carry auto-numbered names such as ``adam_3`` that differ between two trainers)."""
    import keras

    groups = [("g", trainer.generator.weights), ("ema", trainer.ema_generator.weights)]
    groups += [(f"d{k}", d.weights) for k, d in enumerate(trainer.discriminators)]
    for name, opt in [("g_opt", trainer.g_optimizer)] + [
            (f"d{k}_opt", o) for k, o in enumerate(trainer.d_optimizers)]:
        groups.append((name, getattr(opt, "inner_optimizer", opt).variables))
    out = {}
    for group, variables in groups:
        for i, v in enumerate(variables):
            out[f"{group}/{i:03d}"] = keras.ops.convert_to_numpy(v)
        out[f"paths/{group}"] = np.array([str(v.path) for v in variables])
    out["noise_rng"] = trainer.noise_rng.state.numpy()
    out["step"] = np.array(int(trainer.checkpoint.step.numpy()))
    return out


def run(strategy, run_dir, args, is_chief=True, task_id=0):
    """Builds the trainer as ``runner.train`` does and runs (or resumes) its loop."""
    import keras

    from msmt_tf.training import run_dir as run_dir_lib
    from msmt_tf.training.gan_trainer import GANTrainer
    from tests.training import gan_fixtures as fx

    cfgs = make_configs(args.max_steps, args.checkpoint_every, args.strategy, args.lambda3)
    run = run_dir_lib.prepare_run_dir(run_dir, cfgs.to_dict(), resume=True, is_chief=is_chief)
    keras.utils.set_random_seed(0)  # the frozen encoders' random weights: same in every run
    with strategy.scope():
        text, image = fx.encoders(cfgs.model)
    if args.duplicate_halves:
        ds = duplicated_halves_dataset(cfgs.model, STEPS_PER_EPOCH)
    else:
        ds = fx.dataset(cfgs.model, repeats=STEPS_PER_EPOCH)
    trainer = GANTrainer(cfgs, run, strategy, text, image, fx.vocab(), ds,
                         steps_per_epoch=STEPS_PER_EPOCH, is_chief=is_chief)
    if args.duplicate_halves:
        trainer.step_fn.noise_rng = HalvesRng(trainer.noise_rng)  # before the step is traced
    print(f"LATEST {trainer.checkpoint.latest} t={time.time() - T0:.1f}s", flush=True)
    inner, calls = trainer._train_step, [0]

    def step(batch):
        out = inner(batch)
        calls[0] += 1
        if args.sleep:
            time.sleep(args.sleep)
        if args.signal_after and calls[0] == args.signal_after and (
                args.signal_task < 0 or args.signal_task == task_id):
            print(f"SIGNAL after {calls[0]} steps of this run", flush=True)
            os.kill(os.getpid(), signal.SIGTERM)  # handled by GANTrainer's StopSignal
        return out

    trainer._train_step = step
    trainer.initial_arrays = arrays_of(trainer)  # the ema copy equals G before the first step
    result = trainer.train(stream=sys.stdout)
    print(f"RESULT {result['step']} {result['stopped']} {trainer.checkpoint.manager.latest_checkpoint} "
          f"t={time.time() - T0:.1f}s", flush=True)
    return trainer


def bn_check(strategy):
    """Moving statistics of a fresh ``BatchNorm`` after one training call on the rows
    0, 2, 10, 20 (split over the replicas), as ``{"bn/<name>/<replica>": values}``."""
    import tensorflow as tf

    from msmt_tf.layers import batch_norm as bn

    x = np.array([[0.0], [2.0], [10.0], [20.0]], "float32") * np.ones((1, 3), "float32")
    with strategy.scope():
        layer = bn.batch_norm("bn_check")
        layer.build((None, 3))
    step = tf.function(lambda b: strategy.run(lambda t: layer(t, training=True), (b,)))
    for b in strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(x)):
        step(b)
    return {f"bn/{name}/{i}": t.numpy() for name in ("moving_mean", "moving_variance")
            for i, t in enumerate(strategy.experimental_local_results(getattr(layer, name).value))}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--run_dir", required=True)
    p.add_argument("--max_steps", type=int, default=2)
    p.add_argument("--checkpoint_every", type=int, default=1000)
    p.add_argument("--strategy", default="default")
    p.add_argument("--split_cpu", type=int, default=0)
    p.add_argument("--sleep", type=float, default=0.0, help="seconds to wait after each step")
    p.add_argument("--out", default="")
    p.add_argument("--compare_default", action="store_true")
    p.add_argument("--lambda3", type=float, default=None,
                   help="DAMSM weight (0 leaves the DAMSM image encoder out of the step)")
    p.add_argument("--bn_check", action="store_true", help="also save bn_check(strategy)")
    p.add_argument("--duplicate_halves", action="store_true",
                   help="batch rows [a, b, a, b] with duplicated noise (see HalvesRng)")
    p.add_argument("--signal_after", type=int, default=0,
                   help="send SIGTERM to this process after this many steps of the run")
    p.add_argument("--signal_task", type=int, default=-1,
                   help="only on this TF_CONFIG task index (default: every process)")
    p.add_argument("--verbose", action="store_true", help="INFO logs with times on stderr")
    args = p.parse_args(argv)
    if args.verbose:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(relativeCreated)8.0f ms %(name)s: %(message)s")

    import tensorflow as tf

    from msmt_tf.training import distribute

    if args.split_cpu:
        distribute.split_cpu(args.split_cpu)
    strategy = distribute.make_strategy(args.strategy)  # first: MWMS needs it before other ops
    task_id, is_chief = distribute.worker_info(strategy)
    # Deterministic kernels: the same computation gives the same bits (multi-threaded sums
    # would otherwise differ in the last bits, which Adam amplifies for near-zero gradients).
    tf.config.experimental.enable_op_determinism()

    trainer = run(strategy, args.run_dir, args, is_chief, task_id)
    out = arrays_of(trainer)
    out.update({"init/" + k: v for k, v in trainer.initial_arrays.items() if not k.startswith("paths/")})
    out["replicas"] = np.array(strategy.num_replicas_in_sync)
    if args.bn_check:
        out.update(bn_check(strategy))
    if args.compare_default:
        args.strategy, args.signal_after = "default", 0
        ref = run(tf.distribute.get_strategy(), args.run_dir + "_default", args)
        out.update({"default/" + k: v for k, v in arrays_of(ref).items()})
        out.update({"default/init/" + k: v for k, v in ref.initial_arrays.items()
                    if not k.startswith("paths/")})
    if args.out:
        np.savez(args.out, **out)


if __name__ == "__main__":
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
    main()
