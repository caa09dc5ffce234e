"""Smoke runs, at the tiniest size, of the commands README.md and docs/*.md show and of every
script in benchmarks/, so that none of them rots unnoticed.

Each command runs as a user runs it: a subprocess of ``sys.executable`` in the repository root
with ``PYTHONPATH`` = the root and TensorFlow's log variables unset (so the entry point's own
quieting is what is tested), with tiny flags. A test checks what the command printed (the
expected lines, finite positive numbers, the files it names), that it exited 0, and that
stderr holds no traceback and no TensorFlow C++ log line.

The commands are started together when the module starts (``jobs``), two at a time (most of
their time is single-threaded: TensorFlow's import, tracing), so their wall times overlap;
``python -m msmt_tf.train`` reuses the encoders of ``python -m msmt_tf.pretrain_damsm``, and
``evaluate`` and ``benchmarks/conditioning_probe.py`` read the run it trained. What the
commands leave out, and why:

* the FID itself (a 2048 x 2048 ``sqrtm``, ~90 s on 2 cores): ``evaluate`` runs with
  ``--metrics=kid,r_precision,attributes`` (KID reads the same Inception features), ``train``
  with ``--metrics=r_precision,attributes`` (its evaluation is the evaluator ``evaluate`` runs),
  ``tools/fid.py`` with one folder and ``--save_stats``; the two-path routes of
  ``tools/fid.py`` are run through ``msmt_tf.fid.compute`` in tests/test_fid.py;
* the paper presets at full size on CUB/COCO (no data here): the presets are parsed and
  validated in tests/cli and tests/test_flagfiles.py, their parameter counts in
  tests/models/test_table2.py and here (``summary``, the README's AttnGAN row).

Commands covered by other tests: ``python -m msmt_tf.prepare_data`` (shapes) in
tests/data/test_prepare_data.py; ``python -m msmt_tf.sample`` in tests/test_sample.py;
``python -m msmt_tf.export`` in tests/export/test_saved_model.py; ``tools/convert_reference.py``
in tests/interop/test_convert_reference.py (reference files written by the test: the released
CUB weights are not here); ``tensorboard --logdir`` in tests/training/test_tensorboard.py;
``--strategy=mirrored|multiworker`` in tests/training/test_gan_distributed.py.
"""

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from msmt_tf import errors
from msmt_tf.cli import tflog

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TIMEOUT = 900  # seconds per command; they share 2 cores with each other (and other jobs)
WORKERS = 2  # commands run at the same time

# The quickstart (no preset: shapes, sentence-level initial stage) at the tiniest size: one
# 32 px stage (no refinement stage; the discriminators take 32 px at least), widths 4, 12 + 10
# shapes images (the in-training evaluation needs 10).
TINY_DATA = ["--shapes_num_train=12", "--shapes_num_test=10", "--shapes_size=32",
             "--stages=1", "--words_num=6"]
TINY_MODEL = ["--gf_dim=4", "--df_dim=4", "--z_dim=8", "--condition_dim=6",
              "--embedding_dim=16", "--word_embedding_dim=8", "--r_num=1"]
TINY_EVAL = ["--kid_subsets=2", "--kid_subset_size=5", "--r_negatives=2", "--r_folds=2",
             "--attr_train_images=10", "--attr_min_accuracy=0"]
TINY_TRAIN = ["--batch_size=2", "--max_steps=1", "--d_warmup_steps=1", "--eval_num_images=10",
              "--damsm_batch_size=2", "--damsm_max_steps=1", "--damsm_max_eval_batches=1"]


# --------------------------------------------------------------------------- running


def _env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "TF_CONFIG")}
    env["PYTHONPATH"] = ROOT
    return env


_RUNNING = set()  # the live command processes (killed when the module ends)


def _run(*args):
    """``python ARGS`` in the repository root; the finished ``CompletedProcess``."""
    proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _RUNNING.add(proc)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()  # a no-op once it has exited
        _RUNNING.discard(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _ok(proc):
    """Asserts a clean exit: status 0, no traceback, no TensorFlow C++ log line."""
    shown = f"\n$ {' '.join(proc.args[1:])}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n" \
            f"{proc.stderr[-3000:]}"
    assert proc.returncode == 0, shown
    assert "Traceback" not in proc.stderr, shown
    cpp = [line for line in proc.stderr.splitlines() if tflog.is_cpp_log_line(line)]
    assert not cpp, cpp
    return proc.stdout


def _fields(text, sep=": "):
    """``{key: value}`` of the ``key<sep>value`` lines of ``text``."""
    return dict(line.split(sep, 1) for line in text.splitlines() if sep in line)


def _positive(value):
    value = float(value)
    assert math.isfinite(value) and value > 0, value
    return value


def _data_helpers():
    """The tiny CUB/COCO tree writers of tests/data/conftest.py (reused, not copied)."""
    spec = importlib.util.spec_from_file_location(
        "smoke_data_helpers", os.path.join(HERE, "data", "conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Jobs:
    """Runs the jobs (``name -> (function, dependencies)``) on ``WORKERS`` threads, each as soon
    as its dependencies are done, in the given order; ``function(directory, *dependency
    results)``. ``result(name)`` waits for one; a failed dependency fails its dependents."""

    def __init__(self, jobs, directory):
        self.pending = list(jobs.items())
        self.directory = directory
        self.results = {}
        self.cond = threading.Condition()
        for _ in range(WORKERS):
            threading.Thread(target=self._worker, daemon=True).start()

    def _next(self):
        with self.cond:
            while self.pending:
                for item in self.pending:
                    if all(d in self.results for d in item[1][1]):
                        self.pending.remove(item)
                        return item
                self.cond.wait()
        return None

    def _worker(self):
        while (item := self._next()) is not None:
            name, (function, deps) = item
            failed = [d for d in deps if isinstance(self.results[d], BaseException)]
            try:
                if failed:
                    raise RuntimeError(f"{name}: its dependency {failed[0]} failed")
                directory = self.directory / name
                directory.mkdir()
                value = function(directory, *[self.results[d] for d in deps])
            except BaseException as e:  # re-raised in the test
                value = e
            with self.cond:
                self.results[name] = value
                self.cond.notify_all()

    def result(self, name):
        with self.cond:
            while name not in self.results:
                self.cond.wait()
        value = self.results[name]
        if isinstance(value, BaseException):
            raise value
        return value


# --------------------------------------------------------------------------- the jobs


def _pretrain(d):
    """README: python -m msmt_tf.pretrain_damsm (the quickstart's data and model, tiny)."""
    dirs = {"data_dir": str(d / "shapes"), "damsm_dir": str(d / "damsm"),
            "run_dir": str(d / "run")}
    flags = [f"--{k}={v}" for k, v in dirs.items()] + TINY_DATA + TINY_MODEL + TINY_TRAIN
    return dirs, flags, _run("-m", "msmt_tf.pretrain_damsm", *flags)


def _train(d, pretrained):
    """README: python -m msmt_tf.train (the quickstart), with the pretrained encoders."""
    dirs, flags, proc = pretrained
    _ok(proc)
    # --precision pinned: the default (auto) follows the machine (tests/training/test_precision_auto.py).
    return dirs["run_dir"], _run("-m", "msmt_tf.train", *flags, *TINY_EVAL,
                                 "--metrics=r_precision,attributes", "--precision=float32")


def _trained(trained):
    run_dir, proc = trained
    _ok(proc)
    return run_dir


def _evaluate(d, trained):
    """README: python -m msmt_tf.evaluate --run_dir=RUN."""
    run_dir = _trained(trained)
    return run_dir, _run("-m", "msmt_tf.evaluate", f"--run_dir={run_dir}", "--num_images=10",
                         "--eval_batch_size=5", *TINY_EVAL, "--metrics=kid,r_precision,attributes",
                         f"--stats_cache_dir={d / 'stats'}")


def _probe(d, trained):
    """docs/training.md: python benchmarks/conditioning_probe.py --run=..."""
    return _run("benchmarks/conditioning_probe.py", f"--run={_trained(trained)}",
                "--num_images=4")


def _fid_save_stats(d, trained):
    """README: python tools/fid.py real_images/ --save_stats=real.npz (the run's images)."""
    run_dir = _trained(trained)
    with open(os.path.join(run_dir, "config.json")) as f:
        images = os.path.join(json.load(f)["data"]["data_dir"], "images")
    out = d / "real.npz"
    return images, out, _run("tools/fid.py", images, f"--save_stats={out}", "--batch_size=8")


def _summary(d):
    """README: python -m msmt_tf.summary --flagfile=flags/<preset>.flags (full size)."""
    return _run("-m", "msmt_tf.summary", "--flagfile=flags/attngan_cub.flags")


def _prepare_cub(d):
    """docs/data.md: python -m msmt_tf.prepare_data --flagfile=flags/cub.flags, through
    python tools/prepare_data.py (\"the same\")."""
    splits = _data_helpers().make_cub_tree(str(d / "birds"))
    return splits, d / "birds", _run("tools/prepare_data.py", "--flagfile=flags/cub.flags",
                                     f"--data_dir={d / 'birds'}")


def _prepare_coco(d):
    """README: python -m msmt_tf.prepare_data --flagfile=flags/coco.flags --tfrecord."""
    splits = _data_helpers().make_coco_tree(str(d / "coco"))
    return splits, d / "coco", _run("-m", "msmt_tf.prepare_data", "--flagfile=flags/coco.flags",
                                    f"--data_dir={d / 'coco'}", "--tfrecord")


def _prepare_folder(d):
    """README: python -m msmt_tf.prepare_data --dataset=folder --data_dir=DIR."""
    helpers = _data_helpers()
    for i in range(4):
        helpers.write_image(str(d / "mine" / f"img{i}.png"), helpers.gradient_image(20, 24, i))
        (d / "mine" / f"img{i}.txt").write_text(f"a red bird number {i}\na small bird\n")
    return d / "mine", _run("-m", "msmt_tf.prepare_data", "--dataset=folder",
                            f"--data_dir={d / 'mine'}", "--captions_per_image=2")


def _data_pipeline(d):
    """docs/benchmarks.md: python benchmarks/data_pipeline.py --images=400 --epochs=3."""
    return _run("benchmarks/data_pipeline.py", "--images=2", "--epochs=1", "--batch_size=2",
                "--shapes_train=2", "--shapes_test=1")


def _forward(d):
    """docs/benchmarks.md: PYTHONPATH=. python benchmarks/forward.py (every preset, 64 px)."""
    return _run("benchmarks/forward.py", "--sizes=64", "--batch=1", "--repeats=1", "--gf_dim=4",
                "--words_num=4")


def _train_step(d):
    """README: PYTHONPATH=. python benchmarks/train_step.py --batch_size=10 --lambda3=0."""
    return _run("benchmarks/train_step.py", "--warmup=1", "--repeats=1", "--vocab_size=20",
                "--lambda3=0", *TINY_DATA[-2:], *TINY_MODEL, "--batch_size=2",
                "--peak_gflops=50", "--precision=float32",  # pinned: auto follows the machine
                "--caption_lengths=shapes")


def _profile_step(d):
    """docs/performance.md: PYTHONPATH=. python benchmarks/profile_step.py --preset=... (tiny)."""
    return d / "trace", _run(
        "benchmarks/profile_step.py", "--warmup=1", "--repeats=1", "--vocab_size=20",
        "--lambda3=0", *TINY_DATA[-2:], *TINY_MODEL, "--batch_size=2", "--precision=float32",
        "--top=1000", f"--trace_dir={d / 'trace'}")


def _memory(d):
    """docs: python benchmarks/memory.py (two batches of the quickstart at the tiniest size)."""
    return d / "memory.json", _run(
        "benchmarks/memory.py", "--presets=none", "--stage_counts=1", "--batches=1,2",
        "--precisions=float32", "--vocab_size=20", "--lambda3=0", TINY_DATA[-1], *TINY_MODEL,
        f"--json_out={d / 'memory.json'}")


def _inception_throughput(d):
    """docs/benchmarks.md: python benchmarks/inception_throughput.py (default variant, oneDNN)."""
    return _run("benchmarks/inception_throughput.py", "--batch_size=1", "--batches=1",
                "--image_size=64", "--variants=merged", "--onednn=on")


def _conv_peak(d):
    """python benchmarks/conv_peak.py (two tiny convolutions, both dtypes)."""
    return _run("benchmarks/conv_peak.py", "--shapes=1x8x8x8x8,2x4x6x3x5", "--warmup=1",
                "--repeats=1")


def _ablation_report(d):
    """docs/ablations.md: python benchmarks/ablation.py --report (on a copy, from no results)."""
    doc, out = d / "ablations.md", d / "ablations"
    out.mkdir()
    shutil.copy(os.path.join(ROOT, "docs", "ablations.md"), doc)
    return doc, _run("benchmarks/ablation.py", "--report", f"--doc={doc}", f"--out_dir={out}")


# In start order: the chain pretrain -> train -> (evaluate, probe, fid) first (the longest).
JOBS = {
    "pretrain": (_pretrain, ()),
    "train": (_train, ("pretrain",)),
    "evaluate": (_evaluate, ("train",)),
    "probe": (_probe, ("train",)),
    "fid_save_stats": (_fid_save_stats, ("train",)),
    "train_step": (_train_step, ()),
    "profile_step": (_profile_step, ()),
    "memory": (_memory, ()),
    "forward": (_forward, ()),
    "data_pipeline": (_data_pipeline, ()),
    "inception_throughput": (_inception_throughput, ()),
    "conv_peak": (_conv_peak, ()),
    "ablation_report": (_ablation_report, ()),
    "prepare_coco": (_prepare_coco, ()),
    "prepare_cub": (_prepare_cub, ()),
    "prepare_folder": (_prepare_folder, ()),
    "summary": (_summary, ()),
}
# The jobs each test needs (its own and their dependencies).
TESTS = {
    "test_pretrain_damsm": ["pretrain"],
    "test_train_quickstart": ["pretrain", "train"],
    "test_evaluate_run": ["pretrain", "train", "evaluate"],
    "test_conditioning_probe": ["pretrain", "train", "probe"],
    "test_fid_folder_save_stats": ["pretrain", "train", "fid_save_stats"],
    "test_train_step_benchmark": ["train_step"],
    "test_profile_step_benchmark": ["profile_step"],
    "test_memory_benchmark": ["memory"],
    "test_forward_benchmark": ["forward"],
    "test_data_pipeline_benchmark": ["data_pipeline"],
    "test_inception_throughput_benchmark": ["inception_throughput"],
    "test_conv_peak_benchmark": ["conv_peak"],
    "test_ablation_report_benchmark": ["ablation_report"],
    "test_prepare_data_coco_tfrecord": ["prepare_coco"],
    "test_prepare_data_cub_through_tools": ["prepare_cub"],
    "test_prepare_data_folder": ["prepare_folder"],
    "test_summary_prints_the_readme_attngan_row": ["summary"],
}


@pytest.fixture(scope="module")
def jobs(request, tmp_path_factory):
    """Starts the commands of every selected test of this module (see the module docstring)."""
    selected = {item.originalname for item in request.session.items
                if getattr(item, "module", None) is request.module}
    wanted = {job for test in selected for job in TESTS.get(test, ())}
    started = _Jobs({k: v for k, v in JOBS.items() if k in wanted},
                    tmp_path_factory.mktemp("smoke"))
    yield started
    with started.cond:
        started.pending.clear()
    for proc in list(_RUNNING):  # a test failed or was interrupted before its job finished
        proc.kill()


# --------------------------------------------------------------------------- training chain


def test_pretrain_damsm(jobs):
    dirs, _, proc = jobs.result("pretrain")
    out = _fields(_ok(proc))
    damsm_dir = dirs["damsm_dir"]
    assert f"DAMSM encoders written to {damsm_dir}" in proc.stdout
    best = dict(kv.split("=") for kv in out["best validation"].split())
    assert int(best["epoch"]) == 1
    for key in ("w_loss0", "s_loss0", "loss"):
        _positive(best[key])
    assert os.listdir(damsm_dir)


def test_train_quickstart(jobs):
    run_dir, proc = jobs.result("train")
    out = _ok(proc)
    assert re.search(r"^data: shapes in .*: 12 train / 10 test images", out, re.M), out
    assert f"run directory: {run_dir}" in out
    # the final table: untrained and trained value of every metric that ran
    for label in (r"R-precision \(%\)", "attribute accuracy"):
        row = re.search(rf"^\s+{label}\s+(\S+)\s+(\S+)$", out, re.M)
        assert row, (label, out)
        for value in row.groups():
            assert math.isfinite(float(value)) and float(value) >= 0, row.group(0)
    assert "no DAMSM encoders" not in out  # it reused the pretrained ones
    assert os.path.isfile(os.path.join(run_dir, "checkpoints", "ckpt-1.index"))
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f if line.strip()]
    assert 1 in steps


def test_evaluate_run(jobs):
    run_dir, proc = jobs.result("evaluate")
    path = os.path.join(run_dir, "metrics.json")
    assert _ok(proc).strip().splitlines()[-1] == f"Wrote {path}"
    summary = proc.stderr.strip().splitlines()[-1]
    assert summary.startswith("kid_mean "), summary
    with open(path) as f:
        metrics = json.load(f)
    assert metrics["protocol"]["num_images"] == 10
    assert math.isfinite(metrics["kid_mean"])
    assert 0 <= metrics["r_precision_mean"] <= 100
    assert 0 <= metrics["attribute_accuracy"] <= 1
    assert f"kid_mean {metrics['kid_mean']:.4f}" in summary
    assert "fid" not in metrics  # left out: see the module docstring


def test_conditioning_probe(jobs):
    out = _ok(jobs.result("probe")).strip().splitlines()
    assert re.fullmatch(r".*/checkpoints/ckpt-1: 4 test images", out[0]), out
    line = (r"D +32 px: true caption preferred over a swapped shape word (\S+) \(mean logit gap "
            r"(\S+)\), over a swapped colour word (\S+) \(gap (\S+)\)")
    assert len(out) == 2, out  # one discriminator (one stage)
    found = re.fullmatch(line, out[1])
    assert found, out[1]
    shape, shape_gap, colour, colour_gap = map(float, found.groups())
    assert 0 <= shape <= 1 and 0 <= colour <= 1
    assert math.isfinite(shape_gap) and math.isfinite(colour_gap)


def test_fid_folder_save_stats(jobs):
    images, out, proc = jobs.result("fid_save_stats")
    assert _ok(proc).strip().splitlines()[-1] == f"Saved the statistics of {images} to {out}"
    stats = np.load(out)
    count = len([n for n in os.listdir(images) if n.endswith(".png")])
    assert f"{images}: {count} images" in proc.stderr
    assert stats["mu"].shape == (2048,) and stats["sigma"].shape == (2048, 2048)
    assert np.isfinite(stats["mu"]).all() and np.abs(stats["mu"]).max() > 0
    np.testing.assert_allclose(stats["sigma"], stats["sigma"].T, atol=1e-8)


# --------------------------------------------------------------------------- benchmarks


def test_train_step_benchmark(jobs):
    out = _fields(_ok(jobs.result("train_step")), sep=" ")
    _positive(out["step_seconds_median"])
    assert 0 < float(out["damsm_image_encoder_share"]) <= 1
    _positive(out["peak_rss_gb"])
    gflop = _positive(out["step_gflop"])  # benchmarks/flops.py; tests/test_flops.py
    parts = _positive(out["step_gflop_forward"]) + _positive(out["step_gflop_backward"])
    assert math.isclose(parts, gflop, rel_tol=1e-3)
    assert _positive(out["step_gflop_tf_cost_model"]) >= _positive(
        out["step_gflop_tf_cost_model_matrix"])
    achieved = _positive(out["achieved_gflops"])  # = step_gflop / the median, printed +-0.0005
    seconds = _positive(out["step_seconds_median"])
    assert gflop / (seconds + 6e-4) <= achieved <= gflop / max(seconds - 6e-4, 1e-9)
    assert math.isclose(_positive(out["fraction_of_peak"]), achieved / 50, abs_tol=6e-4)


def test_profile_step_benchmark(jobs):
    trace, proc = jobs.result("profile_step")
    lines = _ok(proc).splitlines()
    out = _fields("\n".join(lines[:3]), sep=" ")
    _positive(out["step_seconds_profiled"])
    op_ms = 1000 * _positive(out["op_seconds"])
    tables = {}  # title -> [(ms, share, other columns..., name)] (--top=1000: every row)
    for line in lines[3:]:
        if not line.startswith(" ") and " (top " in line:  # a title; rows are right-aligned
            rows = tables.setdefault(line.split(" (top ")[0], [])
        elif line.strip() and not line.lstrip().startswith(("ms/step", "trace written to")):
            rows.append(line.split(None, 5 if "(depth" in list(tables)[-1] else 3))
    assert list(tables) == ["op types", "name scopes (depth 3)", "nodes"], list(tables)
    for rows in tables.values():  # each table splits the same op time
        assert math.isclose(sum(float(r[0]) for r in rows), op_ms, abs_tol=0.05 * len(rows) + 0.5)
        assert math.isclose(sum(float(r[1].rstrip("%")) for r in rows), 100, abs_tol=0.05 * len(rows) + 0.1)
    assert any("Conv2DBackpropFilter" in r[-1] and r[-1].endswith(" float32")
               for r in tables["op types"])  # the traced dtype found for a runtime op
    assert sum(float(r[3]) for r in tables["name scopes (depth 3)"]) > 0  # backward ms
    assert list(trace.rglob("*.xplane.pb"))  # --trace_dir keeps the trace


def test_memory_benchmark(jobs):
    path, proc = jobs.result("memory")
    out = _ok(proc)
    table = json.loads(path.read_text())
    rows, (fit,) = table["rows"], table["fits"]
    assert [(r["batch"], "error" in r) for r in rows] == [(1, False), (2, False)], rows
    for r in rows:  # the step's peak includes the state alive across steps
        assert _positive(r["peak_gib"]) >= _positive(r["state_gib"])
    # Two batches: the least-squares line passes through both points.
    for r in rows:
        assert math.isclose(fit["fixed_gib"] + fit["per_example_gib"] * r["batch"],
                            r["peak_gib"], rel_tol=1e-9)
    assert set(fit["max_batch"]) == {"16", "32"}
    assert f"fixed_gib {fit['fixed_gib']:.3f}" in out


def test_forward_benchmark(jobs):
    out = _ok(jobs.result("forward")).strip().splitlines()
    assert [line.split()[:2] for line in out] == [
        ["attngan", "64px"], ["dmgan", "64px"], ["msmt", "64px"]], out
    for line in out:
        values = dict(f.split("=") for f in line.split()[2:])
        assert sorted(values) == ["forward_backward_s", "forward_s", "peak_rss_gb"]
        _positive(values["peak_rss_gb"])
        assert all(float(v) >= 0 for v in values.values())  # 0.00 s at this size


def test_data_pipeline_benchmark(jobs):
    out = _fields(_ok(jobs.result("data_pipeline")))
    for key in ("shapes_64px_examples_per_s", "shapes_64px_cpu_ms_per_example",
                "cub_jpeg_256px_3stages_examples_per_s",
                "cub_jpeg_256px_3stages_cpu_ms_per_example"):
        _positive(out[key])
    assert int(out["cpus_available"]) >= 1


def test_inception_throughput_benchmark(jobs):
    out = _ok(jobs.result("inception_throughput")).strip().splitlines()
    assert out[0].endswith("CPUs; batch 1 at 64x64, median of 1 batches"), out
    found = re.match(r"onednn=on  merged    : (\S+) images/s \(CPU (\S+) s/batch; warm-up (\S+) s; "
                     r"fixture max\|diff\| (\S+); load", out[1])
    assert found and len(out) == 2, out
    rate, _, warm, diff = map(float, found.groups())
    assert rate > 0 and warm > 0
    assert diff < 1e-4  # parity with the TorchScript features


def test_conv_peak_benchmark(jobs):
    out = _ok(jobs.result("conv_peak")).strip().splitlines()
    line = r"conv3x3 \[(\d+),(\d+),(\d+),(\d+)\]->(\d+) (\w+): (\S+) GFLOP/s \((\S+) GFLOP in"
    rows = [re.match(line, x) for x in out[:4]]
    assert all(rows) and len(out) == 6, out
    best = {}
    for row in rows:
        b, h, w, c_in, c_out = map(int, row.groups()[:5])
        rate, gflop = _positive(row.group(7)), float(row.group(8))
        assert math.isclose(gflop, 2 * b * h * w * c_out * 9 * c_in / 1e9, rel_tol=1e-3)
        best[row.group(6)] = max(best.get(row.group(6), 0), rate)
    assert [row.group(6) for row in rows] == ["float32"] * 2 + ["bfloat16"] * 2
    assert _fields("\n".join(out[4:]), sep=" ") == {
        f"peak_gflops_{k}": f"{v:.4g}" for k, v in best.items()}


def _entry_benchmarks():
    """The scripts of benchmarks/ run through ``msmt_tf.cli.entry.run`` (the others are modules)."""
    out = []
    for name in sorted(os.listdir(os.path.join(ROOT, "benchmarks"))):
        if name.endswith(".py"):
            with open(os.path.join(ROOT, "benchmarks", name)) as f:
                if "entry.run(main" in f.read():
                    out.append(name)
    return out


REQUIRED_FLAGS = {"conditioning_probe.py": ["--run=unused"]}


@pytest.mark.parametrize("script", _entry_benchmarks())
def test_benchmark_refuses_a_positional_argument(script):
    """``entry.no_arguments``: a stray word is one ``Error:`` line (before TensorFlow's import),
    not silently ignored."""
    proc = _run(f"benchmarks/{script}", *REQUIRED_FLAGS.get(script, []), "stray")
    assert proc.returncode == errors.EXIT_CODE, proc.stderr
    assert proc.stderr.strip().startswith("Error: unexpected arguments ['stray']; use flags (--"), \
        proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# --------------------------------------------------------------------------- data, summary


def test_ablation_report_benchmark(jobs):
    doc, proc = jobs.result("ablation_report")
    assert _ok(proc).strip() == f"Wrote {doc} (0 runs)"
    text = doc.read_text()
    assert "No grids yet." in text and "t1_ig_memory" not in text.split("ablation-grids:start")[1]


def test_prepare_data_coco_tfrecord(jobs):
    splits, data_dir, proc = jobs.result("prepare_coco")
    out = _fields(_ok(proc))
    assert out["dataset"] == "coco" and out["data_dir"] == str(data_dir)
    assert int(out["num_train"]) == len(splits["train"]) and int(out["num_test"]) == len(
        splits["test"])
    assert int(out["captions_per_image"]) == 5  # flags/coco.flags
    assert out["tfrecord_dir"] == os.path.join(str(data_dir), "tfrecords")
    written = os.listdir(out["tfrecord_dir"])
    assert any(n.startswith("train-") and n.endswith(".tfrecord") for n in written), written
    assert any(n.startswith("test-") and n.endswith(".tfrecord") for n in written), written


def test_prepare_data_cub_through_tools(jobs):
    splits, data_dir, proc = jobs.result("prepare_cub")
    out = _fields(_ok(proc))
    assert out["dataset"] == "cub" and out["data_dir"] == str(data_dir)
    assert int(out["num_train"]) == len(splits["train"]) and int(out["num_test"]) == len(
        splits["test"])
    assert int(out["num_classes"]) == 2 and int(out["captions_per_image"]) == 10
    assert int(out["vocab_size"]) > 10
    assert os.path.isfile(data_dir / "captions.pickle")  # built from text/ (absent before)


def test_prepare_data_folder(jobs):
    data_dir, proc = jobs.result("prepare_folder")
    out = _fields(_ok(proc))
    assert out["dataset"] == "folder"
    assert int(out["num_train"]) + int(out["num_test"]) == 4 and int(out["num_test"]) >= 1
    assert int(out["vocab_size"]) >= 6  # a red bird number small + <end>, digits
    assert os.path.isfile(data_dir / "prepared" / "captions.pickle")


def _readme_row(label):
    """The first number of every cell of the README table row starting with ``label``."""
    with open(os.path.join(ROOT, "README.md")) as f:
        row = next(line for line in f if line.startswith(f"| {label} |"))
    cells = [c.strip() for c in row.strip().strip("|").split("|")[1:]]
    return [int(re.match(r"[\d,]+", c).group(0).replace(",", "")) for c in cells]


def test_summary_prints_the_readme_attngan_row(jobs):
    out = _ok(jobs.result("summary"))
    assert out.startswith("preset: attngan  stages: (64, 128, 256)  vocab: 5,450"), out
    counts = {line.split()[0]: int(line.split()[1].replace(",", ""))
              for line in out.splitlines()[2:]}
    generator, discriminators, text_encoder, total = _readme_row("AttnGAN CUB")
    assert counts["generator"] == generator
    assert counts["discriminators"] == discriminators
    assert counts["text_encoder"] == text_encoder
    assert counts["total"] == total == generator + text_encoder
