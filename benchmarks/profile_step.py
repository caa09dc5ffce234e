"""Op-level profile of one GAN training step (benchmarks/train_step.py's step), run by hand.

    PYTHONPATH=. python benchmarks/profile_step.py --preset=dmgan_cub --stages=1 \
        --batch_size=10 --precision=float32 --repeats=2
    PYTHONPATH=. python benchmarks/profile_step.py --preset=msmt_cub --stages=1 \
        --batch_size=10 --precision=mixed_bfloat16 --repeats=2 --trace_dir=/tmp/msmt_trace

Same flags as train_step.py (same step, same synthetic batch, oneDNN on as the entry points set
it). After ``--warmup`` steps, ``--repeats`` steps run under the TensorFlow profiler
(``tf.profiler.experimental.start/stop``, host tracer). Every TensorFlow op the executor runs
leaves one event ``<node name>:<op type>`` on the thread that ran it; an op's *self time* is its
event's duration minus the events nested in it (a ``While`` or a function call around its body).
The script prints, per profiled step:

* ``step_seconds_profiled``: the wall time of a profiled step (the tracer adds ~1 us per op);
* ``op_seconds``: the summed self time of all ops. It exceeds the step's wall time when the
  executor runs independent ops at the same time on its inter-op threads, and falls short of it
  by the time no op runs (Python, dispatch);
* the top ``--top`` op types (with the dtype of the traced op: ``Conv2D float32``; a ``Cast`` as
  ``float32->bfloat16``; ``?`` for ops Grappler or oneDNN created, which have no traced
  counterpart), the top name scopes (the first ``--scope_depth`` components of the node
  name, under ``fwd`` / ``bwd`` columns: ``gradient_tape/`` ops are the backward pass), and the
  top single nodes, each with its ms per step, its share of ``op_seconds`` and its ops per step.

Op types are the runtime's: Grappler's fusions (``_FusedConv2D``, ``_FusedMatMul``) and
oneDNN's rewrites (``_MklNative...``, ``_MklFused...``) show as such. ``--trace_dir`` keeps the
trace for TensorBoard's Profile tab (``tensorboard --logdir=DIR``; its trace viewer shows the
timeline); without it a temporary directory is used and deleted.
"""

import os
import shutil
import statistics
import sys
import tempfile
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import flops, train_step  # noqa: E402  (train_step defines the step's flags)
from benchmarks.profile_trace import node_dtypes, op_events, read_trace, report  # noqa: E402
from msmt_tf.cli import common, entry  # noqa: E402
from msmt_tf.training import onednn  # noqa: E402

flags.DEFINE_integer("top", 20, "Rows of each table.", lower_bound=1)
flags.DEFINE_integer("scope_depth", 3, "Leading name components that make a name scope "
                     "(after gradient_tape/).", lower_bound=1)
flags.DEFINE_string("trace_dir", None, "Keep the profiler trace in this directory (TensorBoard's "
                    "Profile tab reads it); default: a temporary directory, deleted.")
FLAGS = flags.FLAGS

# --------------------------------------------------------------------------- main

def main(argv):
    entry.no_arguments(argv, "--flagfile=FILE, --preset=NAME, --top, --trace_dir, --help")
    import tensorflow as tf  # after entry.run (oneDNN on, TensorFlow's C++ log lines hidden)

    fn, _, configs = train_step.build_step(common.configs_from_flags())
    cfg, mcfg = configs.train, configs.model
    batch = train_step.synthetic_batch(configs, cfg.batch_size)
    for _ in range(FLAGS.warmup):
        float(fn(batch)["g_loss"])
    directory = FLAGS.trace_dir or tempfile.mkdtemp(prefix="profile_step_")
    times = []
    try:
        tf.profiler.experimental.start(directory)
        try:
            for _ in range(FLAGS.repeats):
                t0 = time.perf_counter()
                float(fn(batch)["g_loss"])
                times.append(time.perf_counter() - t0)
        finally:
            tf.profiler.experimental.stop()
        events = op_events(read_trace(directory))
    finally:
        if not FLAGS.trace_dir:
            shutil.rmtree(directory, ignore_errors=True)
    print(f"preset: {mcfg.preset_name} sizes {mcfg.image_sizes} batch {cfg.batch_size} "
          f"precision {cfg.precision} jit {cfg.jit_compile} onednn {onednn.onednn_enabled()} "
          f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    print(f"step_seconds_profiled {statistics.median(times):.3f}")
    report(events, node_dtypes(flops.function_graph(fn, batch)), FLAGS.repeats, FLAGS.top,
           FLAGS.scope_depth)
    if FLAGS.trace_dir:
        print(f"trace written to {FLAGS.trace_dir}")


if __name__ == "__main__":
    # oneDNN on, as the entry points (and train_step.py).
    entry.run(main, onednn=True)
