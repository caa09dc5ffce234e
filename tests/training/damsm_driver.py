"""Subprocess driver: DAMSM pretraining (``DAMSMTrainer`` in the shared loop) mirrored over 2
logical CPUs, and the same on one device, for ``test_damsm_trainer.py`` (not collected).

Each row's DAMSM negatives are the rows of its replica, so R replicas on a global batch are not
one device on that batch. What they do equal: 2 replicas on ``[a, b, a, b]`` (each replica sees
``[a, b]``; ``--damsm_batch_size=4``) and one device on ``[a, b]`` (``--damsm_batch_size=2``):
the same per-row losses, mean, gradient, clipped global gradient and Adam update, on every
weight and Adam slot (the word embedding's included: its gradient is made dense before the clip
and Adam). The text encoder's dropout is switched off in both (each replica would draw its own
mask); the clip norm is so small that every step is clipped.

    python damsm_driver.py --out w.npz     # saves mirrored/<i> and default/<i> arrays
"""

import argparse
import os
import sys

import numpy as np

STEPS = 1
CLIP = 1e-6  # below any gradient's norm here: the clip always acts


def run(strategy, directory, rows):
    import tensorflow as tf

    from msmt_tf.training import damsm_trainer
    from msmt_tf.training.damsm_config import DAMSMConfig
    from tests.training import gan_fixtures as fx

    cfgs = fx.configs(log_every=1, checkpoint_every=1000)
    b = fx.batch(cfgs.model)
    b = {k: (tuple(x[rows] for x in v) if isinstance(v, tuple) else v[rows]) for k, v in b.items()}
    b["class_id"] = np.array([0, 1, 0, 1][:len(rows)], "int32")
    ds = tf.data.Dataset.from_tensors(b).repeat(STEPS)
    trainer = damsm_trainer.DAMSMTrainer(
        cfgs.data, cfgs.model, cfgs.train,
        DAMSMConfig(damsm_batch_size=len(rows), damsm_max_steps=STEPS, damsm_clip=CLIP),
        directory, ds, ds.take(1), fx.vocab(), steps_per_epoch=STEPS, strategy=strategy,
        load_trunk_weights=False)
    trainer.text.embedding_dropout.rate = 0.0
    init = [np.array(v) for v in trainer.text.trainable_variables + trainer.image.trainable_variables]
    trainer.train(progress_stream=sys.stdout)
    out = {}
    for group, variables in (("w", trainer.text.trainable_variables + trainer.image.trainable_variables),
                             ("opt", trainer.optimizer.variables)):
        for i, v in enumerate(variables):
            out[f"{group}/{i:03d}"] = np.array(v)
        out[f"names/{group}"] = np.array([str(v.path) for v in variables])
    for i, v in enumerate(init):
        out[f"init/{i:03d}"] = v
    out["step"] = np.array(int(trainer.step.numpy()))
    out["replicas"] = np.array(strategy.num_replicas_in_sync)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    import tensorflow as tf

    from msmt_tf.training import distribute

    distribute.split_cpu(2)
    strategy = distribute.make_strategy("mirrored")
    tf.config.experimental.enable_op_determinism()
    out = {f"mirrored/{k}": v for k, v in run(strategy, os.path.join(args.dir, "m"),
                                              np.array([0, 1, 0, 1])).items()}
    out.update({f"default/{k}": v for k, v in run(tf.distribute.get_strategy(),
                                                  os.path.join(args.dir, "d"),
                                                  np.array([0, 1])).items()})
    np.savez(args.out, **out)


if __name__ == "__main__":
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
    main()
