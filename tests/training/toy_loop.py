"""A toy training loop on a tiny Dense network, built only from msmt_tf.training parts.

Used in-process by the resume test and as a subprocess (``python toy_loop.py --run_dir ...``)
by the SIGTERM, mirrored and multi-worker tests. It shows the intended loop skeleton:
run directory -> strategy -> models/optimizers/EMA/RNG under the scope -> TrainCheckpoint ->
restore_latest -> loop { step; counters; maybe_save; stop signal } -> final save.
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

    from msmt_tf.training import checkpointing, distribute, progress

    if args.split_cpu:
        distribute.split_cpu(args.split_cpu)
    strategy = distribute.make_strategy(args.strategy)
    tf.config.experimental.enable_op_determinism()

    def run(strategy, run_dir, steps):
        parts = build(strategy, run_dir, dropout=False, checkpoint_every=args.checkpoint_every)
        ckpt = parts["ckpt"]
        start = ckpt.restore_latest()
        print(f"START {start} t={time.time() - T0:.1f}s", flush=True)
        step_fn = make_step(strategy, parts, source="batch")
        data = iter(distribute.distribute_dataset(strategy, toy_dataset(64).repeat()))
        bar = progress.Progress(steps, initial=start, every=1, stream=sys.stdout, tty=False)
        stopped = False
        with checkpointing.StopSignal() as stop:
            for _ in range(start, steps):
                poison = float("nan") if int(ckpt.step.numpy()) + 1 == args.nan_at else 0.0
                loss, ok = step_fn(next(data), tf.constant(poison))
                ckpt.step.assign_add(1)
                if not bool(ok):
                    print(f"SKIPPED {int(ckpt.step.numpy())}", flush=True)
                bar.update(int(ckpt.step.numpy()), {"loss": float(loss)})
                ckpt.maybe_save()
                if args.sleep:
                    time.sleep(args.sleep)
                if distribute.any_replica(strategy, stop.requested):
                    stopped = True
                    break
        path = ckpt.save("signal" if stopped else "end")
        print(f"{'STOPPED' if stopped else 'DONE'} {int(ckpt.step.numpy())} {path} t={time.time() - T0:.1f}s",
              flush=True)
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
