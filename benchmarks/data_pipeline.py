"""Input-pipeline throughput (examples/s at batch 20); prints one figure per line.

    python benchmarks/data_pipeline.py [--images=400] [--epochs=3]

1. shapes at 64 px (a generated --shapes_train + --shapes_test image set of the full shapes
   setting, one 64 px stage);
2. a CUB-format tree of 500 x 375 JPEGs with bounding boxes, 3 stages (64/128/256 px).
Data are written to a temporary directory and deleted afterwards. The first epoch (graph
building, file cache warm-up) is not timed. The CPU time per example (all threads of the
process) tells what the pipeline costs when other processes share the cores.
"""

import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np
from absl import app, flags
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from msmt_tf.cli import entry  # noqa: E402
from msmt_tf.data import attngan_format as fmt  # noqa: E402
from msmt_tf.data import shapes  # noqa: E402
from msmt_tf.data.config import DataConfig  # noqa: E402

flags.DEFINE_integer("images", 400, "JPEGs in the CUB-format tree.", lower_bound=1)
flags.DEFINE_integer("epochs", 3, "Timed epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 20, "Batch size.", lower_bound=1)
flags.DEFINE_integer("shapes_train", 2000, "Generated shapes training images.", lower_bound=1)
flags.DEFINE_integer("shapes_test", 200, "Generated shapes test images.", lower_bound=1)
FLAGS = flags.FLAGS


def _cub_tree(root, n):
    rng = np.random.default_rng(0)
    cub = os.path.join(root, "CUB_200_2011")
    keys, img_lines, box_lines = [], [], []
    yy, xx = np.mgrid[0:375, 0:500]
    for i in range(n):
        key = f"{i % 20:03d}.Class_{i % 20}/Bird_{i:05d}"
        os.makedirs(os.path.join(cub, "images", os.path.dirname(key)), exist_ok=True)
        # photo-like content: smooth colour fields plus texture noise
        f = rng.uniform(0.005, 0.03, size=3)
        img = np.stack([127 + 100 * np.sin(xx * f[c] + yy * f[(c + 1) % 3] + i) for c in range(3)], -1)
        img += rng.normal(0, 20, size=img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            os.path.join(cub, "images", key + ".jpg"), quality=90)
        w, h = rng.uniform(120, 300), rng.uniform(100, 250)
        x, y = rng.uniform(0, 500 - w), rng.uniform(0, 375 - h)
        keys.append(key)
        img_lines.append(f"{i + 1} {key}.jpg")
        box_lines.append(f"{i + 1} {x:.1f} {y:.1f} {w:.1f} {h:.1f}")
        os.makedirs(os.path.join(root, "text", os.path.dirname(key)), exist_ok=True)
        with open(os.path.join(root, "text", key + ".txt"), "w") as fh:
            fh.write("\n".join(f"this bird number {i} has {c} wings and a short beak"
                               for c in ("red", "blue", "brown", "grey", "black", "white",
                                         "yellow", "green", "orange", "pink")) + "\n")
    with open(os.path.join(cub, "images.txt"), "w") as fh:
        fh.write("\n".join(img_lines) + "\n")
    with open(os.path.join(cub, "bounding_boxes.txt"), "w") as fh:
        fh.write("\n".join(box_lines) + "\n")
    fmt.write_pickle(fmt.filenames_path(root, "train"), keys)
    fmt.write_pickle(fmt.filenames_path(root, "test"), keys[:20])


def _cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _rate(cfg, image_sizes, epochs, batch_size):
    """(examples/s wall, CPU ms per example) over ``epochs`` epochs after a warm-up epoch."""
    from msmt_tf.data import pipeline  # imports TensorFlow: after entry.run (quiet C++ logs)

    ds = pipeline.make_dataset(cfg, "train", batch_size, training=True, image_sizes=image_sizes)
    for _ in ds:  # warm-up epoch
        pass
    count, start, cpu = 0, time.perf_counter(), _cpu_seconds()
    for _ in range(epochs):
        for b in ds:
            count += int(b["captions"].shape[0])
    return count / (time.perf_counter() - start), 1000 * (_cpu_seconds() - cpu) / count


def main(argv):
    entry.no_arguments(argv, "--images, --epochs, --batch_size, --help")
    if min(FLAGS.images, FLAGS.shapes_train) < FLAGS.batch_size:
        raise app.UsageError(f"--images={FLAGS.images} and --shapes_train={FLAGS.shapes_train} "
                             f"must be at least --batch_size={FLAGS.batch_size} (full batches).")
    tmp = tempfile.mkdtemp(prefix="msmt_bench_")
    try:
        shapes_dir = os.path.join(tmp, "shapes")
        # The full shapes set (flags/shapes.flags): 1-3 objects of 7 shapes x 9 colours on a grid.
        cfg = DataConfig(data_dir=shapes_dir, shapes_num_train=FLAGS.shapes_train,
                         shapes_num_test=FLAGS.shapes_test, shapes_max_objects=3,
                         shapes_textured=0.4, shapes_layout="grid",
                         shapes_names=",".join(shapes.SHAPES),
                         shapes_colours=",".join(shapes.COLOURS))
        shapes.ensure_generated(shapes_dir, cfg.shapes_seed, cfg.shapes_num_train,
                                cfg.shapes_num_test, cfg.shapes_size, max_objects=3,
                                textured=0.4, layout="grid")
        rate, cpu = _rate(cfg, (64,), FLAGS.epochs, FLAGS.batch_size)
        print(f"shapes_64px_examples_per_s: {rate:.1f}")
        print(f"shapes_64px_cpu_ms_per_example: {cpu:.2f}")
        cub_dir = os.path.join(tmp, "birds")
        _cub_tree(cub_dir, FLAGS.images)
        cfg = DataConfig(dataset="cub", data_dir=cub_dir, mismatch_swap=0.0)
        rate, cpu = _rate(cfg, (64, 128, 256), FLAGS.epochs, FLAGS.batch_size)
        print(f"cub_jpeg_256px_3stages_examples_per_s: {rate:.1f}")
        print(f"cub_jpeg_256px_3stages_cpu_ms_per_example: {cpu:.2f}")
        print(f"cpus_available: {len(os.sched_getaffinity(0))}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    entry.run(main)
