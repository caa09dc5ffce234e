"""A toy training task on a tiny Dense network, run by the real ``msmt_tf.training.loop.Loop``.

Used in-process by the resume test (``build``, ``make_step``, ``weights_of``) and as a
subprocess (``python toy_loop.py --run_dir ...``) by the SIGTERM, mirrored and multi-worker
tests, so that they exercise the loop the trainers use (restore, ``StopSignal`` and the
workers' stop agreement, periodic/signal/final saves, the count of skipped non-finite steps),
not a copy of it. Wiring: run directory -> strategy -> models/optimizers/EMA/RNG under the
scope -> ``TrainCheckpoint`` -> ``ToyTask`` (a ``loop.Task``) -> ``loop.Loop(...).run()``.

The loop runs with ``log_every=1`` (each step's outputs, its non-finite flag included, are
read after that step) and one epoch of ``--steps`` steps over a repeated dataset; its
``tensorboard/`` and ``metrics.jsonl`` go to ``--run_dir``.

Printed on stdout (one line each, parsed by the tests):
    START <step> t=...          after the restore (the restored step; 0 for a new run)
    step k/N ... loss=<x>       the loop's progress line, for each finite step (a skipped
                                step has none)
    SKIPPED <k>                 the loop counted step k as non-finite (update skipped)
    stop requested: ...         the loop's line when a signal stops the run
    STOPPED|DONE <step> <checkpoint path> t=...
                                the loop returned stopped by a signal / after the last step;
                                the path is the signal / final save (``ckpt-<step>``)

``--nan_at k`` adds NaN to the loss of step k; ``--sleep s`` waits s seconds after each step;
``--checkpoint_every n`` saves every n steps; ``--out w.npz`` saves every weight of the model,
its EMA copy and the optimizer; ``--compare_default`` then runs the same task again in this
process with the default strategy (run directory ``<run_dir>_default``), its arrays under
``default/`` and ``replicas`` the first strategy's replica count.
"""

import argparse
import os
import sys
import time

import numpy as np

T0 = time.time()
IN_DIM = 4
GLOBAL_BATCH = 8


def build(strategy, run_dir, seed=3, dropout=True, precision="float32", lr=1e-2, keep=2,
          checkpoint_every=1000, ema_decay=0.9):
    import keras
    import tensorflow as tf

    from msmt_tf.training import checkpointing, ema as ema_lib, precision as prec

    prec.set_precision(precision)
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        def make():
            layers = [
                keras.layers.Dense(8, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed)),
            ]
            if dropout:
                layers.append(keras.layers.Dropout(0.25, seed=seed + 1))
            layers.append(keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed + 2)))
            layers.append(keras.layers.Activation("linear", dtype="float32"))
            m = keras.Sequential([keras.Input((IN_DIM,))] + layers)
            return m

        model = make()
        ema_model = make()
        ema_model.set_weights(model.get_weights())
        opt = prec.wrap_optimizer(
            keras.optimizers.Adam(lr, beta_1=0.5, beta_2=0.999, epsilon=1e-8), precision
        )
        opt.build(model.trainable_variables)
        gen = tf.random.Generator.from_seed(seed)
    ema = ema_lib.ExponentialMovingAverage(model, ema_model, decay=ema_decay)
    rng = checkpointing.RngState(generators={"data": gen}, models=[model])
    chief = True
    if hasattr(strategy, "cluster_resolver") and strategy.cluster_resolver is not None:
        from msmt_tf.training import distribute

        _, chief = distribute.worker_info(strategy)
    ckpt = checkpointing.TrainCheckpoint(
        os.path.join(run_dir, "checkpoints"), keep=keep, best_directory=os.path.join(run_dir, "best"),
        checkpoint_every=checkpoint_every, rng=rng, is_chief=chief,
        model=model, ema_model=ema_model, optimizer=opt, data_rng=gen,
    )
    return dict(model=model, ema_model=ema_model, opt=opt, gen=gen, ema=ema, rng=rng, ckpt=ckpt)


def make_step(strategy, parts, source="generator", nan_at=None):
    """A compiled train step. source: "generator" (x drawn from the tf.random.Generator) or
    "batch" (x, y given, distributed)."""
    import tensorflow as tf

    from msmt_tf.training import distribute, precision as prec

    model, opt, gen, ema = parts["model"], parts["opt"], parts["gen"], parts["ema"]
    w_true = tf.constant([[1.0], [-2.0], [0.5], [3.0]])

    def replica_fn(x, y, poison):
        with tf.GradientTape() as tape:
            pred = model(x, training=True)[:, 0]
            per_example = tf.square(pred - y)
            loss = distribute.compute_average_loss(per_example, GLOBAL_BATCH)
            loss = loss + poison  # NaN injection for the skip test
            scaled = opt.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        ok = prec.apply_gradients_if_finite(opt, grads, model.trainable_variables, losses=[loss])
        ema.update(condition=ok)
        return loss, ok

    @tf.function
    def step_gen(poison):
        x = gen.normal([GLOBAL_BATCH, IN_DIM])
        y = tf.matmul(x, w_true)[:, 0]
        loss, ok = strategy.run(replica_fn, args=(x, y, poison))
        return loss, ok

    @tf.function
    def step_batch(batch, poison):
        loss, ok = strategy.run(replica_fn, args=(batch[0], batch[1], poison))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        ok = strategy.experimental_local_results(ok)[0]
        return loss, ok

    return step_gen if source == "generator" else step_batch


def toy_dataset(n_batches, seed=11):
    import tensorflow as tf

    rs = np.random.RandomState(seed)
    x = rs.normal(size=(n_batches * GLOBAL_BATCH, IN_DIM)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], "float32")).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH, drop_remainder=True)


def weights_of(parts):
    import keras

    out = {}
    for i, v in enumerate(parts["model"].weights):
        out[f"model/{i}"] = keras.ops.convert_to_numpy(v)
    for i, v in enumerate(parts["ema_model"].weights):
        out[f"ema/{i}"] = keras.ops.convert_to_numpy(v)
    inner = getattr(parts["opt"], "inner_optimizer", parts["opt"])
    for i, v in enumerate(inner.variables):
        out[f"opt/{i}"] = keras.ops.convert_to_numpy(v)
    return out


def nonfinite_counter(max_in_row=20):
    """The loop's ``precision.NonFiniteCounter`` that also prints ``SKIPPED <step>`` for each
    step it counts as non-finite (the step number is the loop's)."""
    from msmt_tf.training import precision as prec

    class Printing(prec.NonFiniteCounter):
        def update(self, finite, step):
            if not bool(finite):
                print(f"SKIPPED {int(step)}", flush=True)
            return super().update(finite, step)

    return Printing(max_in_row)


def make_task(strategy, parts, nan_at=0, sleep=0.0):
    """A ``loop.Task`` training ``parts`` (``build``) with ``make_step(source="batch")``."""
    import tensorflow as tf

    from msmt_tf.training import loop as loop_lib

    class ToyTask(loop_lib.Task):
        def __init__(self):
            self.checkpoint = parts["ckpt"]
            self.step_fn = make_step(strategy, parts, source="batch")
            self.loop = None

        def begin(self, loop, new_run):
            self.loop = loop
            print(f"START {loop.step} t={time.time() - T0:.1f}s", flush=True)

        def train_step(self, batch):
            # loop.step counts the steps done, so this is step loop.step + 1 (no host read).
            poison = float("nan") if self.loop.step + 1 == nan_at else 0.0
            loss, ok = self.step_fn(batch, tf.constant(poison))
            return {"loss": loss, "finite": ok}

        def progress_metrics(self, logs):
            return {"loss": logs["loss"]}

        def after_step(self, loop, step):
            if sleep:
                time.sleep(sleep)

    return ToyTask()


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--run_dir", required=True)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--strategy", default="default")
    p.add_argument("--split_cpu", type=int, default=0)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--out", default="")
    p.add_argument("--compare_default", action="store_true")
    p.add_argument("--checkpoint_every", type=int, default=1000)
    p.add_argument("--nan_at", type=int, default=0, help="inject a NaN loss at this step (1-based)")
    args = p.parse_args(argv)

    import tensorflow as tf

    from msmt_tf.training import distribute, loop as loop_lib

    if args.split_cpu:
        distribute.split_cpu(args.split_cpu)
    strategy = distribute.make_strategy(args.strategy)
    tf.config.experimental.enable_op_determinism()

    def run(strategy, run_dir, steps):
        parts = build(strategy, run_dir, dropout=False, checkpoint_every=args.checkpoint_every)
        ckpt = parts["ckpt"]
        task = make_task(strategy, parts, nan_at=args.nan_at, sleep=args.sleep)
        data = distribute.distribute_dataset(strategy, toy_dataset(64).repeat())
        result = loop_lib.Loop(
            task, strategy, data, total_steps=steps, steps_per_epoch=steps, log_dir=run_dir,
            log_every=1, examples_per_step=GLOBAL_BATCH, nonfinite=nonfinite_counter(),
            is_chief=ckpt.is_chief, stream=sys.stdout,
        ).run()
        # The loop's last save (signal or final) is the manager's newest checkpoint.
        path = ckpt.manager.latest_checkpoint
        print(f"{'STOPPED' if result['stopped'] else 'DONE'} {result['step']} {path} "
              f"t={time.time() - T0:.1f}s", flush=True)
        return parts

    parts = run(strategy, args.run_dir, args.steps)
    out = {k: v for k, v in weights_of(parts).items()}
    if args.compare_default:
        ref = run(tf.distribute.get_strategy(), args.run_dir + "_default", args.steps)
        out.update({"default/" + k: v for k, v in weights_of(ref).items()})
        out["replicas"] = np.array(strategy.num_replicas_in_sync)
    if args.out:
        np.savez(args.out, **out)


if __name__ == "__main__":
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
    main()
