"""A real ``tensorboard`` server reads back what ``MetricsLogger`` writes, over its HTTP data API.

A run directory ``runs/tiny`` is written with the tags the GAN trainer logs (``g_loss``,
``d_loss/stage1``, ``lr/generator``, ``eval/fid8`` from ``gan_trainer.eval_scalars``, the captioned
``samples/stage1`` grid) and then resumed from step 2, as ``python -m msmt_tf.train`` does after
a stop. ``tensorboard --logdir runs`` (the README command) is started twice on 127.0.0.1: with
the Rust data server (``--load_fast=true``, what the default ``auto`` picks when
``tensorboard-data-server`` is installed) and with the Python loader (``--load_fast=false``).
Each must list the tags, return the logged values (the orphaned steps 3-4 of the first session
replaced by the resumed ones, not shown twice) and serve the grid PNG pixel for pixel.

``tensorboard`` is an install requirement (TensorFlow 2.21 no longer brings it), so a missing
package fails these tests instead of skipping them.
"""

import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

RUN = "tiny/tensorboard"  # run name: <run dir relative to --logdir>/tensorboard
START_TIMEOUT_S = 60.0
FIRST = {1: 1.5, 2: 1.25, 3: 9.0, 4: 9.5}  # g_loss of the first session; 3 and 4 are orphaned
RESUMED = {3: 1.0, 4: 0.75}  # g_loss after resuming from the step-2 checkpoint
EVAL = {"fid": 12.5, "num_images": 8}


def _require_tensorboard():
    if importlib.util.find_spec("tensorboard") is None:
        pytest.fail("the `tensorboard` package is not installed; it is a requirement of msmt_tf "
                    "(TensorFlow 2.21 does not install it): run `pip install -e \".[cpu]\"` or "
                    "`pip install \"tensorboard~=2.21.0\"`", pytrace=False)


def _write_run(run_dir):
    """The trainer's tags through ``MetricsLogger``; returns the ``samples/stage1`` grid."""
    from msmt_tf.training import logger as logger_lib
    from msmt_tf.training.gan_trainer import eval_scalars

    images = np.full((2, 8, 8, 3), -1.0, np.float32)
    images[1, :, :4] = 1.0
    with logger_lib.MetricsLogger(run_dir) as log:
        grid, _ = log.grid(0, "samples/stage1", images, ["a red bird", "a small blue bird"])
        for step, g in FIRST.items():
            log.scalars(step, {"d_loss/stage1": 0.25, "lr/generator": 2e-4, "g_loss": g})
        log.scalars(2, eval_scalars(EVAL, 3.0, EVAL["num_images"]))
    with logger_lib.MetricsLogger(run_dir, resume_step=2) as log:
        # g_loss last: its resumed step 4 is the last event of the run (what _loaded waits for)
        for step, g in RESUMED.items():
            log.scalars(step, {"d_loss/stage1": 0.5, "lr/generator": 2e-4, "g_loss": g})
    return grid


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """A ``tensorboard`` subprocess on 127.0.0.1 and a JSON/bytes getter for its API."""

    def __init__(self, logdir, load_fast, workdir):
        self.port = _free_port()
        self.log_path = os.path.join(workdir, f"tensorboard_{load_fast}.log")
        env = dict(os.environ, TMPDIR=str(workdir), TF_CPP_MIN_LOG_LEVEL="2")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
                 "--host", "127.0.0.1", "--port", str(self.port), f"--load_fast={load_fast}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=str(workdir))

    def get(self, route, **params):
        url = f"http://127.0.0.1:{self.port}{route}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read()
        return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    def log_tail(self, n=15):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-n:])


def _stop(servers):
    """SIGTERM to every server (they shut down in parallel), then SIGKILL any still up after 10 s."""
    for server in servers:
        if server.proc.poll() is None:
            server.proc.terminate()
    for server in servers:
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)


def _loaded(server):
    """``(g_loss series, None)`` once the server has read both event files (the resumed g_loss
    at step 4 is the last event written), else ``(None, what it serves so far)``."""
    try:
        series = server.get("/data/plugin/scalars/scalars", run=RUN, tag="g_loss")
    except urllib.error.HTTPError as e:  # 400 until the run and tag are loaded
        try:
            return None, f"HTTP {e.code}; scalar tags: {server.get('/data/plugin/scalars/tags')}"
        except (urllib.error.URLError, OSError, ValueError) as e2:
            return None, repr(e2)
    except (urllib.error.URLError, OSError, ValueError) as e:  # not listening yet
        return None, repr(e)
    if not series or series[-1][1:] != [4, RESUMED[4]]:
        return None, f"g_loss: {series}"
    return series, None


def _wait_loaded(server):
    deadline = time.monotonic() + START_TIMEOUT_S
    seen = "nothing"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"tensorboard exited with code {server.proc.returncode}:\n{server.log_tail()}")
        series, seen = _loaded(server)
        if series is not None:
            return series
        time.sleep(0.25)
    pytest.fail(f"tensorboard did not serve run {RUN!r} with the resumed g_loss at step 4 within "
                f"{START_TIMEOUT_S:.0f} s; last seen: {seen}\nserver log:\n{server.log_tail()}")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Both loaders started at once (they spend their start-up importing TensorFlow); None
    without ``tensorboard`` (each test then fails with the install hint)."""
    if importlib.util.find_spec("tensorboard") is None:
        yield None
        return
    root = tmp_path_factory.mktemp("tensorboard")
    grid = _write_run(str(root / "runs" / "tiny"))
    started = {}
    try:
        for load_fast in ("true", "false"):
            started[load_fast] = _Server(root / "runs", load_fast, root)
        yield grid, started
    finally:
        _stop(started.values())


@pytest.mark.parametrize("load_fast", ["true", "false"])
def test_tensorboard_serves_logged_scalars_and_grid(servers, load_fast):
    from PIL import Image

    _require_tensorboard()
    grid, started = servers
    server = started[load_fast]
    g_loss = _wait_loaded(server)

    assert server.get("/data/runs") == [RUN]
    scalar_tags = server.get("/data/plugin/scalars/tags")[RUN]
    assert set(scalar_tags) == {"g_loss", "d_loss/stage1", "lr/generator", "eval/fid8",
                                "eval/num_images", "eval/seconds"}
    # steps 3 and 4 of the first session were orphaned by the resume: replaced, not doubled
    expected = {**{s: v for s, v in FIRST.items() if s <= 2}, **RESUMED}
    assert [(step, value) for _, step, value in g_loss] == sorted(expected.items())
    d_loss = server.get("/data/plugin/scalars/scalars", run=RUN, tag="d_loss/stage1")
    assert [(step, value) for _, step, value in d_loss] == [(1, 0.25), (2, 0.25), (3, 0.5), (4, 0.5)]
    lr = server.get("/data/plugin/scalars/scalars", run=RUN, tag="lr/generator")
    assert [step for _, step, _ in lr] == [1, 2, 3, 4]
    assert lr[0][2] == pytest.approx(2e-4, rel=1e-6)  # float32 in the event file
    fid = server.get("/data/plugin/scalars/scalars", run=RUN, tag="eval/fid8")
    assert [(step, value) for _, step, value in fid] == [(2, EVAL["fid"])]

    image_tags = server.get("/data/plugin/images/tags")[RUN]
    assert set(image_tags) == {"samples/stage1"} and image_tags["samples/stage1"]["samples"] == 1
    meta = server.get("/data/plugin/images/images", run=RUN, tag="samples/stage1")
    assert [m["step"] for m in meta] == [0]
    png = server.get("/data/plugin/images/individualImage?" + meta[0]["query"])
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (grid.shape[1], grid.shape[0])
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")), grid)
