"""Images/s of the FID Inception network for 256x256 uint8 inputs (run by hand).

  python benchmarks/inception_throughput.py [--batch_size=50] [--batches=3]
      [--variants=plain,folded,folded_xla,merged,merged_xla] [--onednn=on,off]

Variants (``msmt_tf/models/inception.py``):
  plain       conv -> batch norm -> ReLU, as the weights are stored;
  folded      BN folded into the conv kernels (conv + bias -> ReLU);
  merged      folded, and each mixed block's sibling 1x1 convs merged into one conv
              (``FeatureExtractor``'s default);
  *_xla       the same under ``tf.function(jit_compile=True)``.
``--onednn``: TensorFlow's oneDNN CPU kernels on (``TF_ENABLE_ONEDNN_OPTS=1``, what the FID
and evaluation entry points set) or off (TensorFlow's default on CPUs without AVX-512).

Every (oneDNN, variant) pair runs in a fresh subprocess (oneDNN is chosen at TensorFlow
import): one warm-up batch (tracing / XLA compile), then ``--batches`` timed batches
including the legacy resize to 299. One line per pair: the median images/s, the process CPU
seconds per batch (less sensitive to other jobs on the machine than wall time), the warm-up,
the max |difference| of pool_3 on the six committed fixture images from the TorchScript
features (parity must stay below 1e-4), the 1-minute load average before and after, and the
implied time for 30,000 images. Uses the cached weights (fetched on first use).
"""

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app, flags  # noqa: E402

from msmt_tf.cli import entry  # noqa: E402

flags.DEFINE_integer("batch_size", 50, "Images per batch.", lower_bound=1)
flags.DEFINE_integer("batches", 3, "Timed batches per variant.", lower_bound=1)
flags.DEFINE_integer("image_size", 256, "Input side (resized to 299 inside).", lower_bound=1)
flags.DEFINE_list(
    "variants", ["plain", "folded", "folded_xla", "merged", "merged_xla"],
    "Any of plain, plain_xla, folded, folded_xla, merged, merged_xla.",
)
flags.DEFINE_list("onednn", ["on", "off"], "oneDNN settings to compare: on, off.")
flags.DEFINE_string("worker", None, "(internal) run one variant in this process.")
FLAGS = flags.FLAGS

VARIANTS = ("plain", "plain_xla", "folded", "folded_xla", "merged", "merged_xla")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "inception")


def _fixture_diff(extractor):
    import numpy as np
    from PIL import Image

    names = [f"img{i}_64.png" for i in range(4)] + ["img4_256.png", "img5_256.png"]
    images = [np.asarray(Image.open(os.path.join(FIXTURES, n)).convert("RGB")) for n in names]
    got = [extractor(np.stack(images[:4]))[:4], extractor(np.stack(images[4:]))[:2]]
    expected = np.load(os.path.join(FIXTURES, "pool3_features.npy"))
    return float(np.abs(np.concatenate(got) - expected).max())


def worker(variant):
    import numpy as np

    from msmt_tf.training import onednn
    from msmt_tf.evaluation import fid
    from msmt_tf.models import inception_weights
    from msmt_tf.models import inception

    arrays = inception_weights.load_fid_weights()
    base = variant.replace("_xla", "")
    layer = inception.FIDInception(folded=base != "plain", merge_1x1=base == "merged")
    layer.build((None, 299, 299, 3))
    inception.set_trunk_weights(layer.trunk, arrays)
    extractor = fid.FeatureExtractor(layer=layer, jit_compile=variant.endswith("_xla"))
    rng = np.random.default_rng(0)
    shape = (FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    start = time.perf_counter()
    extractor(images)
    warm = time.perf_counter() - start
    times, cpu = [], []
    for _ in range(FLAGS.batches):
        c0, t0 = time.process_time(), time.perf_counter()
        extractor(images)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(json.dumps({
        "rate": FLAGS.batch_size / float(np.median(times)),
        "cpu": float(np.median(cpu)),
        "warm": warm,
        "diff": _fixture_diff(extractor),
        "onednn": onednn.onednn_enabled(),
    }))


def main(argv):
    entry.no_arguments(argv, "--batch_size, --batches, --variants, --onednn, --help")
    if FLAGS.worker:
        return worker(FLAGS.worker)
    bad = [v for v in FLAGS.variants if v not in VARIANTS] + [
        o for o in FLAGS.onednn if o not in ("on", "off")]
    if bad:
        raise app.UsageError(f"unknown --variants/--onednn values {bad}.")
    print(f"{os.cpu_count()} CPUs; batch {FLAGS.batch_size} at {FLAGS.image_size}x"
          f"{FLAGS.image_size}, median of {FLAGS.batches} batches", flush=True)
    failed = 0
    for onednn in FLAGS.onednn:
        env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1" if onednn == "on" else "0",
                   TF_CPP_MIN_LOG_LEVEL="2")
        for variant in FLAGS.variants:
            load0 = os.getloadavg()[0]
            cmd = [sys.executable, os.path.abspath(__file__), f"--worker={variant}",
                   f"--batch_size={FLAGS.batch_size}", f"--batches={FLAGS.batches}",
                   f"--image_size={FLAGS.image_size}"]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            if out.returncode or not lines:
                print(f"onednn={onednn} {variant}: failed\n{out.stderr[-2000:]}", flush=True)
                failed += 1
                continue
            r = json.loads(lines[-1])
            print(
                f"onednn={onednn:<3} {variant:<10}: {r['rate']:.2f} images/s "
                f"(CPU {r['cpu']:.1f} s/batch; warm-up {r['warm']:.1f} s; fixture max|diff| "
                f"{r['diff']:.1e}; load {load0:.2f} -> {os.getloadavg()[0]:.2f}; "
                f"30,000 images ~ {30000 / r['rate'] / 60:.0f} min)",
                flush=True,
            )
    return 1 if failed else 0  # the exit status: a failed variant fails the run


if __name__ == "__main__":
    entry.run(main)
