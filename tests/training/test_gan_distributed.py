"""The real GAN loop (GANTrainer / GANStep) under tf.distribute and SIGTERM, in subprocesses.

The toy-loop versions (``test_distribute.py``, ``test_checkpointing.py``) check the building
blocks on a Dense network; these drive ``gan_driver.py``, which wires the tiny fixture networks
(``gan_fixtures.py``) exactly as ``msmt_tf.training.runner.train`` does. ``--lambda3 0`` leaves
the DAMSM image encoder (an Inception trunk) out of the step: it is the slowest part to trace and
none of these properties depends on it (the text encoder still runs).

The subprocesses of all selected tests are started together by the ``jobs`` fixture (each test
then waits for its own), so their wall times overlap: about 1 min per GAN process of CPU.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from msmt_tf.training import run_dir as run_dir_lib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DRIVER = os.path.join(HERE, "gan_driver.py")
# Seconds a test waits for its subprocesses. One process traces the step in ~40 s of CPU
# (~80 s mirrored); the jobs of the selected tests run at the same time (see `jobs`), so on a
# loaded 2-core machine a job can take several minutes.
TIMEOUT = 900


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _lines(stdout, prefix):
    return [l for l in stdout.splitlines() if l.startswith(prefix)]


def _losses(line):
    """The loss fields (``g=...``, ``d=...``) of a progress line."""
    return [f for f in line.split() if f.startswith(("g=", "d="))]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Job:
    """Runs ``target(job, directory)`` (which starts driver subprocesses with ``job.run``) in a
    background thread; ``result()`` waits for it, killing the subprocesses on time-out."""

    def __init__(self, target, directory):
        self.directory = directory
        self.procs, self.value, self.error = [], None, None
        self.thread = threading.Thread(target=self._main, args=(target,), daemon=True)
        self.thread.start()

    def _main(self, target):
        try:
            self.value = target(self, self.directory)
        except BaseException as e:  # re-raised in the test
            self.error = e

    def start(self, args, name, env=None, stdout=None):
        """A driver process; stderr (and stdout unless given) go to ``<name>.err/.out``."""
        out = stdout or open(self.directory / f"{name}.out", "w")
        err = open(self.directory / f"{name}.err", "w")
        p = subprocess.Popen([sys.executable, DRIVER] + [str(a) for a in args], env=env or _env(),
                             stdout=out, stderr=err, text=True)
        p.name = name
        self.procs.append(p)
        return p

    def output(self, p):
        """``(returncode, stdout, stderr tail)`` of a finished process."""
        read = lambda ext: (self.directory / f"{p.name}.{ext}").read_text()
        stdout = read("out") if (self.directory / f"{p.name}.out").exists() else ""
        return p.returncode, stdout, read("err")[-3000:]

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()

    def result(self):
        self.thread.join(TIMEOUT)
        if self.thread.is_alive():
            self.kill()
            self.thread.join(60)
            outs = [self.output(p)[1][-1500:] for p in self.procs]
            raise AssertionError(f"no result after {TIMEOUT} s; stdout: {outs}")
        if self.error is not None:
            raise self.error
        return self.value


def _mirrored_job(job, d):
    p = job.start(["--run_dir", d / "run", "--strategy", "mirrored", "--split_cpu", 2,
                   "--compare_default", "--duplicate_halves", "--lambda3", 0, "--max_steps", 2,
                   "--bn_check", "--out", d / "w.npz"], "mirrored")
    p.wait()
    return job.output(p)


def _multiworker_job(job, d):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        # Worker 1 sends itself SIGTERM after step 2 of 3 (see the test).
        procs.append(job.start(
            ["--run_dir", d / "run", "--strategy", "multiworker", "--lambda3", 0,
             "--max_steps", 3, "--signal_after", 2, "--signal_task", 1, "--out", d / f"w{i}.npz"],
            f"worker{i}", env=_env(TF_CONFIG=tf_config)))
    for p in procs:
        p.wait()
    return [job.output(p) for p in procs]


SIGTERM_STEPS = 8


def _sigterm_job(job, d):
    cmd = ["--run_dir", d / "run", "--lambda3", 0, "--max_steps", SIGTERM_STEPS,
           "--checkpoint_every", 1000]
    # First run: slowed down after each step so that SIGTERM lands mid-run; the only
    # checkpoint it can leave is the one written on the signal.
    p = job.start(cmd + ["--sleep", 1.5], "first", stdout=subprocess.PIPE)
    lines = []
    for line in p.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("step 1/"):
            p.send_signal(signal.SIGTERM)
    p.wait()
    first = (p.returncode, "\n".join(lines), job.output(p)[2])
    # Second run, the same command: restores that checkpoint and does the missing steps.
    p = job.start(cmd + ["--out", d / "w.npz"], "second")
    p.wait()
    return first, job.output(p)


JOBS = {
    "test_mirrored_two_cpus_gives_the_default_update": _mirrored_job,
    "test_multiworker_two_loopback_workers_gan": _multiworker_job,
    "test_sigterm_during_gan_training_leaves_a_checkpoint_that_resumes": _sigterm_job,
}


@pytest.fixture(scope="module")
def jobs(request, tmp_path_factory):
    """Starts the subprocesses of every selected test of this module at once (each is a mostly
    single-threaded TF process), so that their wall times overlap; each test waits for its own."""
    selected = {item.originalname for item in request.session.items
                if getattr(item, "module", None) is request.module}
    started = {}
    for name, target in JOBS.items():
        if name in selected:
            directory = tmp_path_factory.mktemp(name[len("test_"):][:40])
            started[name] = _Job(target, directory)
    yield started
    for job in started.values():
        job.kill()


def test_mirrored_two_cpus_gives_the_default_update(jobs):
    """Mirrored over 2 logical CPUs (global batch 4, 2 per replica) == default (batch 4).

    What is compared: after 2 GAN steps, every variable of G, G-EMA, both Ds (BN moving
    statistics and spectral-norm vectors included), every Adam slot and the noise RNG state.

    Batch-coupled computations legitimately differ between 2 replicas and one device, so the
    driver makes them see identical numbers (``--duplicate_halves``): rows [a, b, a, b] with
    one class id and duplicated z / CA epsilon. Then (1) our BatchNorm (Keras
    ``BatchNormalization``, not synchronized: per-replica batch statistics) gets the same mean
    and biased variance from [x, y] as from [x, y, x, y]; (2) the DAMSM contrastive losses, which
    use the local batch's negatives (``msmt_tf.losses``), are off anyway (``lambda3=0``). What is
    left is exactly what distribution must get right: per-example losses scaled by the global
    batch, gradients all-reduced across replicas, one Adam update, one EMA update (merge_call),
    BN moving statistics on mirrored variables, the all-replica finite flag, and z / CA epsilon
    drawn once for the global batch and split (``GANStep.draw_noise``; drawn in each replica,
    the replicas would get other z than one device and all the *same* CA epsilon, and this
    test fails).
    """
    job = jobs["test_mirrored_two_cpus_gives_the_default_update"]
    returncode, stdout, stderr = job.result()
    assert returncode == 0, stdout[-2000:] + stderr
    d = np.load(job.directory / "w.npz")
    assert int(d["replicas"]) == 2 and int(d["step"]) == 2 and int(d["default/step"]) == 2
    # BatchNorm's moving statistics stay one value across replicas: the average of the
    # replicas' updates. Rows 0, 2 | 10, 20 give replica means 1 | 15 and variances 1 | 25:
    # moving mean 0.9 * 0 + 0.1 * 8 = 0.8 (as on one device), moving variance
    # 0.9 * 1 + 0.1 * 13 = 2.2 (one device: 7.1; the between-replica spread is not seen).
    for r in (0, 1):
        np.testing.assert_allclose(d[f"bn/moving_mean/{r}"], [0.8] * 3, rtol=1e-6)
        np.testing.assert_allclose(d[f"bn/moving_variance/{r}"], [2.2] * 3, rtol=1e-6)
    # Both started from the same weights (same seeds), so any difference is in the update.
    inits = [k for k in d.files if k.startswith("init/")]
    assert len(inits) > 300
    for k in inits:
        np.testing.assert_array_equal(d[k], d["default/" + k], err_msg=k)
    # The real noise generator advanced by the same global-batch draws.
    np.testing.assert_array_equal(d["noise_rng"], d["default/noise_rng"])
    groups = {k.split("/")[1] for k in d.files if k.startswith("paths/")}
    assert {"g", "ema", "d0", "d1", "g_opt", "d0_opt", "d1_opt"} <= groups
    checked = 0
    for group in sorted(groups):
        names = d[f"paths/{group}"]
        for i, name in enumerate(names):
            key = f"{group}/{i:03d}"
            a, b = d[key].astype(np.float64), d["default/" + key].astype(np.float64)
            if group.endswith("_opt"):
                # Adam iterations, learning rate, first and second moments: linear / quadratic
                # in the gradients, so only float32 summation order differs (2-row sums + one
                # all-reduce vs 4-row sums): measured <= 7.5e-5 of the variable's largest
                # entry. A loss scaled by the local instead of the global batch would give
                # 2x / 4x moments, replica-local gradients ~50% differences.
                tol = 1e-3 * np.abs(b).max()
            else:
                # Weights: compare the *update* (both start equal). Adam divides by sqrt(v), so an
                # entry whose gradient is at rounding level (measured: |m| 1e-8 of the
                # tensor's largest) moves by ~lr either way with a few % difference: measured
                # <= 0.72% of the variable's largest update (G, EMA, D). A missed, doubled or
                # per-replica (EMA) update differs by ~100% of it.
                a = a - d["init/" + key]
                b = b - d["default/init/" + key]
                tol = 0.05 * np.abs(b).max()
            diff = np.abs(a - b).max() if a.size else 0.0
            assert diff <= tol, f"{group} {name}: max |mirrored - default| {diff:.3g} > {tol:.3g}"
            checked += 1
    assert checked == sum(len(d[f"paths/{g}"]) for g in groups)
    assert int(d["g_opt/000"]) == 2 and int(d["d1_opt/000"]) == 2  # Adam iterations
    # Every step was finite on all replicas (a progress line is printed for finite steps only),
    # and the logged, all-reduced loss terms are the same global-batch means (float32 rounding
    # only: measured relative differences <= 2e-6). The D accuracies are left out: a logit
    # within rounding of the threshold 0 may flip one of them on another CPU.
    assert len(_lines(stdout, "step ")) == 4, stdout
    logs = [[json.loads(l) for l in open(job.directory / name / "metrics.jsonl")]
            for name in ("run", "run_default")]
    assert [x["step"] for x in logs[0]] == [x["step"] for x in logs[1]] == [1, 2]
    for mirrored, default in zip(*logs):
        assert mirrored["finite"] == 1.0 and "d_loss/stage1" in mirrored and "g_kl" in mirrored
        for key, value in default.items():
            if key not in ("step", "time", "step_seconds", "examples_per_second") and (
                    "accuracy" not in key):
                assert mirrored[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_multiworker_two_loopback_workers_gan(jobs):
    """Two MultiWorkerMirroredStrategy workers (TF_CONFIG, 127.0.0.1) share one run directory.

    The run is for 3 steps, but worker 1 sends itself SIGTERM after step 2: every worker must
    stop after that same step and save (a worker going on alone would block forever in the
    next all-reduce), so both end after 2 GAN steps with identical weights, and only the
    chief's checkpoint stays.
    """
    job = jobs["test_multiworker_two_loopback_workers_gan"]
    outs = job.result()
    for returncode, stdout, stderr in outs:
        assert returncode == 0, stdout[-2000:] + stderr
    run = job.directory / "run"
    outs = [(stdout, stderr) for _, stdout, stderr in outs]
    assert _lines(outs[1][0], "SIGNAL after 2") and not _lines(outs[0][0], "SIGNAL")
    results = [_lines(so, "RESULT")[0].split() for so, _ in outs]
    assert [r[1:3] for r in results] == [["2", "True"], ["2", "True"]], results
    a, b = np.load(job.directory / "w0.npz"), np.load(job.directory / "w1.npz")
    assert a.files == b.files
    for k in a.files:
        if not k.startswith("paths/"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert int(a["replicas"]) == 2 and int(a["step"]) == 2
    assert int(a["g_opt/000"]) == 2 and int(a["d0_opt/000"]) == 2  # two applied Adam updates
    # The weights did train (not two copies of the initial weights).
    assert not np.array_equal(a["g/002"], a["init/g/002"])
    # Both workers printed the same (all-reduced) losses.
    losses = [[_losses(l) for l in _lines(so, "step ")] for so, _ in outs]
    assert len(losses[0]) == 2 and losses[0] == losses[1]
    # Only the chief's checkpoint stays; worker 1 wrote to a temporary directory, then removed
    # it; only the chief wrote the run directory's logs.
    assert results[0][3].endswith(os.path.join("run", "checkpoints", "ckpt-2"))
    assert results[1][3].endswith(os.path.join("run", "checkpoints", ".worker_1", "ckpt-2"))
    assert os.path.exists(run / "checkpoints" / "ckpt-2.index")
    assert all(n == "checkpoint" or n.startswith("ckpt-2.") for n in os.listdir(run / "checkpoints"))
    assert [json.loads(l)["step"] for l in open(run / "metrics.jsonl")] == [1, 2]


def test_non_chief_accepts_a_run_dir_the_chief_is_creating(tmp_path):
    """Workers call prepare_run_dir at the same time: a non-chief that sees the chief's
    directory before its config.json (only the temporary file) must not fail."""
    path = tmp_path / "run"
    path.mkdir()
    (path / "config.json.tmp").write_text("{")
    r = run_dir_lib.prepare_run_dir(str(path), {"train": {"seed": 1}}, is_chief=False)
    assert not r.resumed
    assert sorted(os.listdir(path)) == ["config.json.tmp"]  # nothing written by the non-chief
    try:  # the chief still refuses a non-empty directory without config.json
        run_dir_lib.prepare_run_dir(str(path), {"train": {"seed": 1}})
    except run_dir_lib.RunDirError as e:
        assert "has no config.json" in str(e)
    else:
        raise AssertionError("the chief accepted a directory without config.json")


def test_sigterm_during_gan_training_leaves_a_checkpoint_that_resumes(jobs):
    """SIGTERM (sent once ``step 1/8`` is printed) makes the loop save and exit 0; running the
    same command again restores that step and does only the remaining steps."""
    job = jobs["test_sigterm_during_gan_training_leaves_a_checkpoint_that_resumes"]
    (code, first, err), (code2, second, err2) = job.result()
    run, max_steps = job.directory / "run", SIGTERM_STEPS
    assert code == 0, first + err
    assert "stop requested" in first, first
    result = _lines(first, "RESULT")[0].split()
    saved = int(result[1])
    assert result[2] == "True" and 1 <= saved < max_steps, first
    assert result[3].endswith(os.path.join("checkpoints", f"ckpt-{saved}"))
    assert _lines(first, "LATEST")[0].split()[1] == "None"  # a new run

    assert code2 == 0, second + err2
    latest = _lines(second, "LATEST")[0].split()[1]
    assert latest.endswith(f"ckpt-{saved}"), second
    steps = [int(l.split()[1].split("/")[0]) for l in _lines(second, "step ")]
    assert steps == list(range(saved + 1, max_steps + 1)), second
    assert _lines(second, "RESULT")[0].split()[1:3] == [str(max_steps), "False"]
    d = np.load(job.directory / "w.npz")
    assert int(d["step"]) == max_steps
    # max_steps Adam updates in all: the restored optimizer state went on, no step was redone.
    assert int(d["g_opt/000"]) == max_steps and int(d["d1_opt/000"]) == max_steps
    # One metrics line per step over both runs.
    steps = [json.loads(l)["step"] for l in open(run / "metrics.jsonl")]
    assert steps == list(range(1, max_steps + 1))
