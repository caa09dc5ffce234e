"""Images/s of the FID Inception network for 256x256 uint8 inputs (run by hand).

  python benchmarks/inception_throughput.py [--batch_size=50] [--batches=3] [--variants=plain,folded,folded_xla]

Each variant: one warm-up batch (tracing / XLA compile), then ``--batches`` timed batches
including the legacy resize to 299; prints one ``variant: X images/s`` line per variant and
the implied time for 30,000 images. Uses the cached weights (fetched on first use).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("batch_size", 50, "Images per batch.")
flags.DEFINE_integer("batches", 3, "Timed batches per variant.")
flags.DEFINE_integer("image_size", 256, "Input side (resized to 299 inside).")
flags.DEFINE_list("variants", ["plain", "folded", "folded_xla"], "plain, folded, folded_xla, plain_xla.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import numpy as np

    from msmt_tf.evaluation import fid, inception_weights
    from msmt_tf.models import inception

    arrays = inception_weights.load_fid_weights()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3), np.uint8)
    for variant in FLAGS.variants:
        folded = variant.startswith("folded")
        layer = inception.FIDInception(folded=folded)
        layer.build((None, 299, 299, 3))
        inception.set_trunk_weights(layer.trunk, arrays)
        extractor = fid.FeatureExtractor(layer=layer, jit_compile=variant.endswith("xla"))
        start = time.perf_counter()
        extractor(images)
        warm = time.perf_counter() - start
        times = []
        for _ in range(FLAGS.batches):
            start = time.perf_counter()
            extractor(images)
            times.append(time.perf_counter() - start)
        rate = FLAGS.batch_size / float(np.median(times))
        print(
            f"{variant}: {rate:.2f} images/s (median of {FLAGS.batches} batches of "
            f"{FLAGS.batch_size} at {FLAGS.image_size}x{FLAGS.image_size}; warm-up {warm:.1f} s; "
            f"30,000 images ~ {30000 / rate / 60:.0f} min)",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
