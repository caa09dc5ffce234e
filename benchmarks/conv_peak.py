"""This machine's peak GFLOP/s for large 3x3 convolutions (forward), run by hand.

    python benchmarks/conv_peak.py                      # the three shapes, float32 and bfloat16
    python benchmarks/conv_peak.py --shapes=8x64x64x256x256 --dtypes=bfloat16 --repeats=20

The practical ceiling that ``benchmarks/train_step.py --peak_gflops=P`` divides the step's
achieved GFLOP/s by (``fraction_of_peak``): pass the ``peak_gflops_<dtype>`` of the dtype the
step computes in (``float32``; ``bfloat16`` for ``--precision=mixed_bfloat16``). oneDNN on, as
the entry points (``msmt_tf.cli.entry.run(main, onednn=True)``). Each shape ``BxHxWxCINxCOUT``
is an NHWC ``[B, H, W, CIN]`` input convolved with a 3x3 (``--kernel``) ``CIN -> COUT`` kernel,
stride 1, SAME padding, in a ``tf.function``: ``--warmup`` untimed calls, then the median wall
time of ``--repeats`` calls. Its FLOPs are counted on the traced graph by benchmarks/flops.py
(2 * B * H * W * COUT * k * k * CIN). One line per (shape, dtype), then the best of each dtype
as ``peak_gflops_<dtype> <GFLOP/s>`` (wall time). Other processes on the machine lower the
figure: the line also gives GFLOP per process CPU second (less sensitive to them: the rate of
one fully used core; times the cores, an estimate of the quiet-machine rate), and the 1-minute
load average before and after goes to stderr.
"""

import os
import re
import statistics
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import flops  # noqa: E402
from msmt_tf.cli import entry  # noqa: E402

flags.DEFINE_list("shapes", ["8x64x64x256x256", "32x32x32x128x128", "4x128x128x256x256"],
                  "Convolutions as BxHxWxCINxCOUT (batch, height, width, in/out channels).")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes: float32, bfloat16.")
flags.DEFINE_integer("kernel", 3, "Kernel side.", lower_bound=1)
flags.DEFINE_integer("warmup", 2, "Untimed calls (tracing, oneDNN primitive creation).",
                     lower_bound=0)
flags.DEFINE_integer("repeats", 10, "Timed calls (the median is printed).", lower_bound=1)
FLAGS = flags.FLAGS

DTYPES = ("float32", "bfloat16")
SHAPE = re.compile(r"(\d+)x(\d+)x(\d+)x(\d+)x(\d+)")


def parse_shapes(values):
    """``[(B, H, W, CIN, COUT), ...]`` of ``--shapes``; a UsageError names a bad value."""
    out = []
    for value in values:
        found = SHAPE.fullmatch(value.strip())
        if not found or not all(int(v) > 0 for v in found.groups()):
            raise app.UsageError(f"--shapes: {value!r} is not BxHxWxCINxCOUT with positive "
                                 "integers (e.g. 8x64x64x256x256).")
        out.append(tuple(int(v) for v in found.groups()))
    return out


def time_conv(shape, dtype):
    """``(FLOPs, median wall seconds, median process CPU seconds)`` of one convolution call."""
    import tensorflow as tf

    batch, height, width, c_in, c_out = shape
    rng = tf.random.Generator.from_seed(0)
    x = tf.cast(rng.normal([batch, height, width, c_in]), dtype)
    w = tf.cast(rng.normal([FLAGS.kernel, FLAGS.kernel, c_in, c_out]) * 0.05, dtype)

    @tf.function
    def conv():
        return tf.nn.conv2d(x, w, strides=1, padding="SAME")

    count = flops.graph_flops(flops.function_graph(conv)).total
    times, cpu = [], []
    for i in range(FLAGS.warmup + FLAGS.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        conv()[0, 0, 0, 0].numpy()  # the result is ready (a one-element read)
        if i >= FLAGS.warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return count, statistics.median(times), statistics.median(cpu)


def main(argv):
    entry.no_arguments(argv, "--shapes, --dtypes, --kernel, --repeats, --help")
    shapes = parse_shapes(FLAGS.shapes)
    bad = [d for d in FLAGS.dtypes if d not in DTYPES]
    if bad:
        raise app.UsageError(f"--dtypes: unknown {bad}; use any of {','.join(DTYPES)}.")
    load = os.getloadavg()[0]
    best = {}
    for dtype in FLAGS.dtypes:
        for shape in shapes:
            count, seconds, cpu = time_conv(shape, dtype)
            rate = count / 1e9 / seconds
            best[dtype] = max(best.get(dtype, 0.0), rate)
            b, h, w, c_in, c_out = shape
            print(f"conv{FLAGS.kernel}x{FLAGS.kernel} [{b},{h},{w},{c_in}]->{c_out} {dtype}: "
                  f"{rate:.4g} GFLOP/s ({count / 1e9:.4g} GFLOP in {seconds:.4g} s, median of "
                  f"{FLAGS.repeats}; {count / 1e9 / cpu:.4g} GFLOP per CPU second)")
    for dtype, rate in best.items():
        print(f"peak_gflops_{dtype} {rate:.4g}")
    print(f"load average (1 min) before {load:.2f}, after {os.getloadavg()[0]:.2f}",
          file=sys.stderr)


if __name__ == "__main__":
    entry.run(main, onednn=True)
