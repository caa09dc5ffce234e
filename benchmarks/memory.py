"""Peak memory of one GAN training step, a fixed + per-example fit, and the largest batch
that fits a 16 / 32 GiB GPU, run by hand.

    python benchmarks/memory.py                                   # the full table (long)
    python benchmarks/memory.py --presets=msmt_cub --stage_counts=3 --batches=1,2 \
        --precisions=mixed_float16 --json_out=memory.json
    python benchmarks/memory.py --presets=msmt_cub --stage_counts=3 --recompute

The step is benchmarks/train_step.py's (`GANStep`: every discriminator update, the generator
update and the EMA update, synthetic batches, random encoder weights), with
`--caption_lengths=full` by default: MTWIG decodes one tail per valid word n-gram, so a batch
of full-length captions is the largest a run meets (`--caption_lengths=cub` gives a typical one). Each point
(preset, --stages, --precision, --batch_size) runs in a fresh subprocess of this script
(`--measure`): one warm-up step (tracing, optimizer slots), then the allocator's peak over one
more step, read with `tf.config.experimental.get_memory_info("CPU:0")` after
`reset_memory_stats`, with `TF_CPU_ALLOCATOR_USE_BFC=true`: the CPU then allocates through the
same BFC allocator as a GPU, whose statistics count every tensor. That peak includes everything alive during the step: the variables (float32
under every policy), the Adam slots, the EMA copy, the frozen encoders and the step's
activations and gradients. The subprocess's peak RSS is printed beside it as a cross-check (it
adds the Python/TensorFlow runtime, the tracing step and oneDNN's primitive caches).

A point whose subprocess passes `--limit_gb` of RSS is stopped, and a batch whose RSS, fitted
on the smaller batches already measured (from one batch: that RSS times the batch ratio), would
pass it is not started (the machine is shared). Give every flag as `--name=value`.

Fit: per (preset, stages, precision), least squares `peak = fixed + per_example * batch`.
Largest batch on a GPU of G GiB:

    floor(((G - context_gb) / (1 + fragmentation) - fixed) / per_example)

`--context_gb` (1.5) is what TensorFlow cannot hand to its BFC allocator: the CUDA context with
the cuDNN / cuBLAS kernels loaded into it (about 0.5-1 GiB on recent CUDA) plus a margin for
the cuDNN convolution workspaces autotuning asks for; `--fragmentation` (0.1) is the BFC
allocator's usual loss to fragmentation on a graph with many differently sized tensors.

The CPU allocator is a proxy for the GPU's. What differs on a GPU:
* cuDNN picks a convolution algorithm per shape and allocates its workspace from the BFC pool;
  the CPU figure has none (inside the margins above, but large at 256 px);
* no oneDNN primitive caches / scratchpads (in the CPU RSS, mostly outside the allocator);
* under mixed_float16 the variables, Adam slots and EMA copy stay float32 on both devices
  (Keras casts each variable to float16 per use: those copies are step temporaries, in the
  figure); activations are float16 on both, so only the per-example cost drops, and by less
  than half (BN statistics, the losses and the loss-scaled gradients stay float32);
* the layout optimizer may add NCHW transposes on a GPU, and ops run one at a time on one
  stream there, while the CPU executor may run independent ops concurrently (a slightly
  higher CPU peak).
"""

import json
import math
import os
import resource
import subprocess
import sys
import time

import numpy as np
from absl import flags

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import train_step  # noqa: E402  (defines the config flags and --vocab_size)
from msmt_tf.cli import entry  # noqa: E402

def _is_positive(text):
    try:
        return float(text) > 0
    except ValueError:
        return False


flags.DEFINE_list("presets", ["msmt_cub", "dmgan_cub"],
                  "Presets to measure (flags/NAME.flags); 'none': only the flags given.")
flags.DEFINE_list("stage_counts", ["1", "2", "3"],
                  "Values of --stages to measure (1, 2, 3 = 64, 128, 256 px with the presets).")
flags.DEFINE_list("batches", ["1", "2", "4"], "Batch sizes to measure (at least two to fit).")
flags.DEFINE_list("precisions", ["float32", "mixed_float16"], "Precisions to measure.")
flags.DEFINE_float("limit_gb", 10.0, "Stop a measurement whose RSS passes this (GiB); skip a "
                   "batch whose fitted RSS would.", lower_bound=0.1)
flags.DEFINE_list("gpu_gb", ["16", "32"], "GPU memory sizes (GiB) to answer for.")
flags.DEFINE_float("context_gb", 1.5, "GiB of a GPU that TensorFlow's allocator cannot use: "
                   "CUDA context, cuDNN/cuBLAS kernels, workspace margin.", lower_bound=0)
flags.DEFINE_float("fragmentation", 0.1, "BFC allocator fragmentation (fraction of the peak).",
                   lower_bound=0)
flags.DEFINE_string("json_out", None, "Also write the table and the fits to this JSON file "
                    "(--out is the evaluation flag).")
flags.DEFINE_bool("measure", False, "Internal: measure the one configuration the flags describe "
                  "and print one JSON line.")
flags.register_validator("batches", lambda v: all(b.isdigit() and int(b) > 0 for b in v),
                         "--batches: positive integers, e.g. 1,2,4.")
flags.register_validator("stage_counts", lambda v: all(k in ("1", "2", "3", "4") for k in v),
                         "--stage_counts: values of --stages (1 to 4), e.g. 1,2,3.")
flags.register_validator("precisions", lambda v: set(v) <= {"float32", "mixed_float16",
                                                            "mixed_bfloat16"},
                         "--precisions: float32, mixed_float16 or mixed_bfloat16.")
flags.register_validator("gpu_gb", lambda v: all(_is_positive(g) for g in v),
                         "--gpu_gb: positive numbers of GiB, e.g. 16,32.")
FLAGS = flags.FLAGS
# The worst batch must fit: every caption words_num words long, so MTWIG decodes every tail.
FLAGS.set_default("caption_lengths", "full")

GIB = 2.0**30
# Flags of the grid; the measurement subprocess gets the value of its point instead.
_PARENT_ONLY = ("presets", "stage_counts", "batches", "precisions", "json_out", "measure")


# --------------------------------------------------------------------------- one point


def _rss_gib(pid="self"):
    """Resident set size of a process in GiB (0 if it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return 0.0


def measure():
    """Builds the step of the flags, runs it twice; prints the second step's figures."""
    # A BFC allocator for the CPU, as on a GPU: it counts every allocation (oneDNN's default
    # CPU allocator leaves those under 256 KiB, small kernels and BN vectors, out of its stats).
    os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    import tensorflow as tf

    from msmt_tf.cli import common

    fn, _, configs = train_step.build_step(common.configs_from_flags())
    batch = train_step.synthetic_batch(configs, configs.train.batch_size)
    rss_built = _rss_gib()
    t0 = time.perf_counter()
    float(fn(batch)["g_loss"])  # tracing, optimizer slots
    first = time.perf_counter() - t0
    first_peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    tf.config.experimental.reset_memory_stats("CPU:0")
    state = tf.config.experimental.get_memory_info("CPU:0")["current"]
    t0 = time.perf_counter()
    float(fn(batch)["g_loss"])
    second = time.perf_counter() - t0
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    print(json.dumps({
        "peak_gib": max(peak, first_peak) / GIB,  # both steps must fit
        "first_step_peak_gib": first_peak / GIB,
        "step_peak_gib": peak / GIB,
        "state_gib": state / GIB,
        "rss_built_gib": rss_built,
        "rss_peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB,
        "first_step_s": first,
        "step_s": second,
    }))


def _forwarded_args():
    """The command line's flags minus the grid's (they configure every point)."""
    out = []
    for arg in sys.argv[1:]:
        name = arg.lstrip("-").split("=", 1)[0]
        if name.startswith("no") and name[2:] in _PARENT_ONLY:
            name = name[2:]
        if name not in _PARENT_ONLY:
            out.append(arg)
    return out


def run_point(preset, stages, precision, batch):
    """One point in a fresh subprocess; its figures, or `{"error": ...}`."""
    cmd = [sys.executable, os.path.abspath(__file__)]
    if preset != "none":
        cmd.append(f"--preset={preset}")
    cmd += _forwarded_args() + [f"--stages={stages}", f"--precision={precision}",
                                f"--batch_size={batch}", "--measure"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched_rss, killed = 0.0, False
    while proc.poll() is None:
        watched_rss = max(watched_rss, _rss_gib(proc.pid))
        if watched_rss > FLAGS.limit_gb:
            proc.kill()
            killed = True
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    if killed:
        return {"error": f"stopped: RSS passed --limit_gb={FLAGS.limit_gb:g}"}
    if proc.returncode != 0:
        tail = (stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the model


def fit(batches, peaks):
    """Least squares `peak = fixed + per_example * batch`; `(fixed, per_example, max |residual|)`."""
    a = np.stack([np.ones(len(batches)), np.asarray(batches, float)], axis=1)
    (fixed, per_example), *_ = np.linalg.lstsq(a, np.asarray(peaks, float), rcond=None)
    residual = np.abs(a @ np.array([fixed, per_example]) - peaks).max()
    return float(fixed), float(per_example), float(residual)


def max_batch(fixed, per_example, gpu_gib, context_gib, fragmentation):
    """The largest batch whose fitted peak, with the margins, fits `gpu_gib` (0: none)."""
    usable = (gpu_gib - context_gib) / (1.0 + fragmentation) - fixed
    if per_example <= 0:
        return None
    return max(0, math.floor(usable / per_example))


def _too_big(points, batch):
    """True if the RSS fitted on the measured `points` would pass --limit_gb at `batch`."""
    done = [(b, p["rss_peak_gib"]) for b, p in points if "error" not in p]
    if not done:
        return False
    if len(done) == 1:  # no slope yet: assume the whole RSS grows with the batch
        b, rss = done[0]
        return rss * batch / b > FLAGS.limit_gb
    fixed, per_example, _ = fit(*zip(*done))
    return fixed + per_example * batch > FLAGS.limit_gb


def grid():
    """Measures every point, one at a time; a list of row dicts."""
    rows = []
    for preset in FLAGS.presets:
        for stages in map(int, FLAGS.stage_counts):
            for precision in FLAGS.precisions:
                points = []
                for batch in sorted(map(int, FLAGS.batches)):
                    if _too_big(points, batch):
                        result = {"error": f"skipped: fitted RSS passes --limit_gb="
                                           f"{FLAGS.limit_gb:g}"}
                    else:
                        result = run_point(preset, stages, precision, batch)
                    points.append((batch, result))
                    rows.append({"preset": preset, "stages": stages, "precision": precision,
                                 "batch": batch, **result})
                    print(_row_line(rows[-1]), file=sys.stderr, flush=True)
    return rows


def fits(rows):
    """One fit per (preset, stages, precision) with >= 2 measured batches."""
    groups = {}
    for r in rows:
        if "error" not in r:
            groups.setdefault((r["preset"], r["stages"], r["precision"]), []).append(r)
    out = []
    for (preset, stages, precision), rs in groups.items():
        if len(rs) < 2:
            continue
        fixed, per_example, residual = fit([r["batch"] for r in rs], [r["peak_gib"] for r in rs])
        entry_ = {"preset": preset, "stages": stages, "precision": precision,
                  "fixed_gib": fixed, "per_example_gib": per_example,
                  "max_residual_gib": residual, "max_batch": {}}
        for g in map(float, FLAGS.gpu_gb):
            entry_["max_batch"][f"{g:g}"] = max_batch(
                fixed, per_example, g, FLAGS.context_gb, FLAGS.fragmentation)
        out.append(entry_)
    return out


def _row_line(r):
    head = f"{r['preset']:>10} stages {r['stages']} {r['precision']:>13} batch {r['batch']:>3}"
    if "error" in r:
        return f"{head}  {r['error']}"
    return (f"{head}  peak_gib {r['peak_gib']:.3f}  state_gib {r['state_gib']:.3f}  "
            f"rss_peak_gib {r['rss_peak_gib']:.3f}  step_s {r['step_s']:.1f}")


def _fit_line(f):
    answers = "  ".join(f"max_batch_{g}gib {b}" for g, b in f["max_batch"].items())
    return (f"{f['preset']:>10} stages {f['stages']} {f['precision']:>13}  fixed_gib "
            f"{f['fixed_gib']:.3f}  per_example_gib {f['per_example_gib']:.3f}  "
            f"max_residual_gib {f['max_residual_gib']:.3f}  {answers}")


def main(argv):
    entry.no_arguments(argv, "--presets, --stage_counts, --batches, --precisions, --help")
    if FLAGS.measure:
        measure()
        return
    rows = grid()
    fitted = fits(rows)
    print("measured (GiB; peak = CPU allocator peak of one training step)")
    for r in rows:
        print(_row_line(r))
    print(f"fits (peak = fixed + per_example * batch; max batch with context_gb "
          f"{FLAGS.context_gb:g}, fragmentation {FLAGS.fragmentation:g})")
    for f in fitted:
        print(_fit_line(f))
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as fh:
            json.dump({"rows": rows, "fits": fitted, "context_gib": FLAGS.context_gb,
                       "fragmentation": FLAGS.fragmentation,
                       "loadavg": open("/proc/loadavg").read().split()[:3]}, fh, indent=1)
        print(f"wrote {FLAGS.json_out}")


if __name__ == "__main__":
    # oneDNN on, as train_step.py (the entry points' setting).
    entry.run(main, onednn=True)
