"""Strategies: mirrored over 2 logical CPUs == default; two loopback workers agree (and stop
together)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from msmt_tf.training import distribute

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TOY = os.path.join(HERE, "toy_loop.py")


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def test_compute_average_loss_divides_by_global_batch():
    per_example = tf.constant([1.0, 2.0, 3.0, 6.0])
    # A replica holding 4 of a global batch of 8 contributes 12 / 8.
    assert float(distribute.compute_average_loss(per_example, 8)) == pytest.approx(1.5)
    half = tf.constant([1.0, 2.0], tf.float16)
    out = distribute.compute_average_loss(half, 4)
    assert out.dtype == tf.float32 and float(out) == pytest.approx(0.75)


def test_default_strategy_and_batch_split_errors(monkeypatch):
    s = distribute.make_strategy("default")
    assert s.num_replicas_in_sync == 1 and distribute.worker_info(s) == (0, True)

    class Two:
        num_replicas_in_sync = 2

    # The GAN task checks the split before it builds anything (the strategy is not used).
    from msmt_tf.training.gan_trainer import GANTrainer
    from tests.training import gan_fixtures as fx

    with pytest.raises(distribute.DistributeError, match="--batch_size=21 does not split over 2"):
        GANTrainer(fx.configs(batch_size=21), None, Two(), None, None, None, None, 1)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(distribute.DistributeError, match="TF_CONFIG"):
        distribute.make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(distribute.DistributeError, match="not valid JSON"):
        distribute.make_strategy("multiworker")
    with pytest.raises(ValueError, match="--strategy='tpu'"):
        distribute.make_strategy("tpu")
    assert distribute.any_replica(s, True) and not distribute.any_replica(s, False)


def test_split_cpu_after_initialisation_is_a_clear_error():
    tf.constant(1.0)  # devices are initialised in this process
    n = len(tf.config.list_logical_devices("CPU"))
    distribute.split_cpu(n)  # asking for what exists is fine
    with pytest.raises(distribute.DistributeError, match="before any TF op"):
        distribute.split_cpu(n + 3)


def test_mirrored_two_cpus_equals_default(tmp_path):
    out = tmp_path / "w.npz"
    proc = subprocess.run(
        [sys.executable, TOY, "--run_dir", str(tmp_path / "run"), "--steps", "4", "--strategy",
         "mirrored", "--split_cpu", "2", "--compare_default", "--nan_at", "2", "--out", str(out)],
        env=_env(), capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    d = np.load(out)
    assert int(d["replicas"]) == 2
    keys = [k[len("default/"):] for k in d.files if k.startswith("default/")]
    assert any(k.startswith("model/") for k in keys) and any(k.startswith("opt/") for k in keys)
    for k in keys:
        # Tolerance: float32 sums of two half-batch gradients vs one full-batch sum differ in
        # rounding only (measured max 2.4e-7 on Adam moments of size ~3).
        np.testing.assert_allclose(d[k], d["default/" + k], rtol=1e-5, atol=1e-6, err_msg=k)
    # The NaN injected at step 2 was skipped by both (all replicas agree) and counted by the
    # loop at that step only: 3 Adam updates, and no progress line for the skipped step.
    assert proc.stdout.count("SKIPPED 2") == 2 and proc.stdout.count("SKIPPED") == 2
    assert int(d["opt/0"]) == 3 and int(d["default/opt/0"]) == 3
    for run in ("run", "run_default"):
        with open(tmp_path / run / "metrics.jsonl") as f:
            logged = [json.loads(l) for l in f]
        assert [r["step"] for r in logged] == [1, 2, 3, 4], run
        assert [r["nonfinite_total"] for r in logged] == [0, 1, 1, 1], run
    # The losses printed by both runs are the same global-batch means.
    lines = [l for l in proc.stdout.splitlines() if l.startswith("step ")]
    assert [l.split()[1] for l in lines] == ["1/4", "3/4", "4/4"] * 2
    assert [l.split()[-1] for l in lines[:3]] == [l.split()[-1] for l in lines[3:]]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_two_workers(args, stderr=subprocess.PIPE):
    """Two toy-loop workers of one loopback cluster (``{i}`` in ``args`` is the worker index)."""
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(
            [sys.executable, TOY, "--strategy", "multiworker", *(a.format(i=i) for a in args)],
            env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE, stderr=stderr, text=True))
    return procs


def test_multiworker_two_loopback_workers_end_identical(tmp_path):
    procs = _start_two_workers(["--run_dir", str(tmp_path / "run"), "--steps", "3",
                                "--checkpoint_every", "2", "--out", str(tmp_path / "w{i}.npz")])
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=180))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (so, se) in zip(procs, outs):
        assert p.returncode == 0, se[-3000:]
    a, b = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert a.files == b.files
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # Three steps were taken (Adam's iteration counter) and both workers saw the same losses.
    assert int(a["opt/0"]) == 3
    losses = [[l.split()[-1] for l in so.splitlines() if l.startswith("step ")] for so, _ in outs]
    assert len(losses[0]) == 3 and losses[0] == losses[1]
    # Only the chief's checkpoints stay (the periodic one of step 2 and the final one); the other
    # worker's temporary copy (named by its TF_CONFIG task index) is removed.
    done = [[l for l in so.splitlines() if l.startswith("DONE")][0].split()[2] for so, _ in outs]
    assert done[0].endswith(os.path.join("run", "checkpoints", "ckpt-3"))
    assert done[1].endswith(os.path.join("run", "checkpoints", ".worker_1", "ckpt-3"))
    assert os.path.exists(tmp_path / "run" / "checkpoints" / "ckpt-2.index")
    assert os.path.exists(tmp_path / "run" / "checkpoints" / "ckpt-3.index")
    assert not os.path.exists(tmp_path / "run" / "checkpoints" / ".worker_1")
    # Only the chief logged (3 steps).
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        assert [json.loads(l)["step"] for l in f] == [1, 2, 3]


def test_multiworker_sigterm_to_one_worker_stops_both_at_the_same_step(tmp_path):
    """The loop's stop agreement: SIGTERM to the non-chief worker only; both workers stop after
    the same step and the chief saves it (a worker that went on alone would hang in the next
    step's all-reduce)."""
    procs = _start_two_workers(["--run_dir", str(tmp_path / "run"), "--steps", "1000",
                                "--sleep", "0.05"], stderr=subprocess.DEVNULL)
    outs = []
    try:
        first = []
        deadline = time.time() + 150
        while time.time() < deadline:
            line = procs[1].stdout.readline()
            if not line:
                break
            first.append(line)
            if line.startswith("step 3/"):
                procs[1].send_signal(signal.SIGTERM)
                break
        for p in procs:
            outs.append(p.communicate(timeout=120)[0])
        outs[1] = "".join(first) + outs[1]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs
    stopped = [[l.split() for l in so.splitlines() if l.startswith("STOPPED")] for so in outs]
    assert len(stopped[0]) == 1 and len(stopped[1]) == 1, outs
    step = int(stopped[0][0][1])
    assert int(stopped[1][0][1]) == step and 3 <= step < 1000
    assert stopped[0][0][2].endswith(os.path.join("run", "checkpoints", f"ckpt-{step}"))
    assert os.path.exists(tmp_path / "run" / "checkpoints" / f"ckpt-{step}.index")
    latest = tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints"))
    assert latest.endswith(f"ckpt-{step}")
