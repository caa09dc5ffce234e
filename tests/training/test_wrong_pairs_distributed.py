"""--mismatch_pairing=next_row under MirroredStrategy: the B - 1 pairs of the *global* batch.

The pipeline masks the last row of the global batch; split over two replicas only the second
replica holds it. ``GANStep.wrong_pairs`` all-reduces the mask's sum, so the replicas' masked
``cond_wrong`` terms (what the optimizers sum) add up to the mean over the global B - 1 pairs,
as DM-GAN computes it on one device. Runs in a subprocess (logical CPUs must be configured
before TensorFlow initialises its devices).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
from msmt_tf import losses
from msmt_tf.data import pipeline
from msmt_tf.training import distribute
from msmt_tf.training.gan_step import GANStep

distribute.split_cpu(2)
strategy = distribute.make_strategy("mirrored")
logits = np.array(json.loads(sys.argv[1]), "float32")
_, mask = pipeline.next_row_partner(len(logits))
ds = tf.data.Dataset.from_tensors({"wrong_mask": mask, "logits": tf.constant(logits)})
out = {}
for jit in (False, True):
    def replica(batch):
        m, count = GANStep.wrong_pairs(batch)
        d = losses.discriminator_loss(None, batch["logits"], None, batch["logits"],
                                      batch["logits"], global_batch_size=len(logits),
                                      wrong_mask=m, global_wrong_count=count)
        return d["cond_wrong"], count

    @tf.function(jit_compile=jit)
    def step(batch):
        wrong, count = strategy.run(replica, args=(batch,))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, wrong, axis=None),
                strategy.experimental_local_results(count))

    for batch in strategy.experimental_distribute_dataset(ds):
        wrong, counts = step(batch)
        out[str(jit)] = [float(wrong), [float(c) for c in counts]]
print("RESULT " + json.dumps({"replicas": strategy.num_replicas_in_sync, **out}))
"""


def test_next_row_pairs_are_the_global_batchs_under_two_replicas():
    logits = [0.3, -1.2, 2.0, 0.7, -0.4, 5.0]  # the last (masked) one would move the mean
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    env.pop("TF_CONFIG", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(logits)], env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT "):])
    assert result["replicas"] == 2
    pairs = np.asarray(logits[:5], "float64")  # rows 0..B-2: BCE(., 0) = log(1 + e^x)
    expected = float(np.mean(np.log1p(np.exp(pairs))))
    for jit in ("False", "True"):
        wrong, counts = result[jit]
        assert counts == [5.0, 5.0], jit  # every replica divides by the global count
        assert wrong == pytest.approx(expected, rel=1e-5), jit
