"""TensorBoard events and metrics.jsonl carry the same scalars; captioned grids."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from msmt_tf.training import logger as logger_lib


def _read_events(logdir):
    scalars, images = {}, {}
    for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        for raw in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(raw.numpy())
            for v in event.summary.value:
                plugin = v.metadata.plugin_data.plugin_name
                if plugin == "images":
                    t = tf.make_ndarray(v.tensor)  # [width, height, png, png, ...]
                    images.setdefault(v.tag, []).append(
                        (event.step, int(t[0]), int(t[1]), [tf.io.decode_png(p).numpy() for p in t[2:]])
                    )
                else:
                    scalars.setdefault(v.tag, {})[event.step] = float(tf.make_ndarray(v.tensor))
    return scalars, images


def test_scalars_and_images_go_to_tensorboard_and_jsonl(tmp_path):
    run = str(tmp_path)
    img = np.full((2, 6, 8, 3), -1.0, np.float32)
    img[1] = 1.0
    with logger_lib.MetricsLogger(run) as log:
        log.scalars(10, {"loss/g_total": 1.5, "loss/d_64": np.float32(0.25), "lr/g": tf.constant(2e-4)})
        log.scalars(20, {"loss/g_total": 1.25, "loss/d_64": 0.5, "lr/g": 2e-4})
        log.images(20, {"samples/64": img})
        grid, path = log.grid(20, "grid/64", img, ["a red circle", "a blue square"])
    scalars, images = _read_events(os.path.join(run, "tensorboard"))
    assert set(scalars) == {"loss/g_total", "loss/d_64", "lr/g"}
    assert scalars["loss/g_total"] == {10: 1.5, 20: 1.25}
    assert scalars["lr/g"][10] == pytest.approx(2e-4)
    assert set(images) == {"samples/64", "grid/64"}
    step, w, h, pngs = images["samples/64"][0]
    assert (step, w, h, len(pngs)) == (20, 8, 6, 2)
    assert pngs[0].shape == (6, 8, 3)
    assert pngs[0].max() == 0 and pngs[1].min() == 255  # -1 -> 0, +1 -> 255
    np.testing.assert_array_equal(images["grid/64"][0][3][0], grid)

    records = _records(run)
    assert [r["step"] for r in records] == [10, 20]
    for r in records:
        for tag in ("loss/g_total", "loss/d_64", "lr/g"):
            assert r[tag] == pytest.approx(scalars[tag][r["step"]])
    np.testing.assert_array_equal(np.asarray(Image.open(path)), grid)
    assert os.path.basename(path) == "grid_64_00000020.png"


def _records(run):
    with open(os.path.join(run, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_resume_moves_lines_after_the_checkpoint_aside(tmp_path):
    run = str(tmp_path)
    with logger_lib.MetricsLogger(run) as log:
        for s in (10, 20, 30, 40):
            log.scalars(s, {"x": s})
    with logger_lib.MetricsLogger(run, resume_step=20) as log:
        log.scalars(30, {"x": -30})
    assert [(r["step"], r["x"]) for r in _records(run)] == [(10, 10), (20, 20), (30, -30)]
    orphaned = [json.loads(l) for l in open(os.path.join(run, "metrics.orphaned.jsonl"))]
    assert [r["step"] for r in orphaned] == [30, 40]
    # Each writer starts with a SessionLog.START; TensorBoard purges steps >= 21 at the second.
    starts = []
    for path in sorted(glob.glob(os.path.join(run, "tensorboard", "events.out.tfevents.*"))):
        for raw in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(raw.numpy())
            if event.HasField("session_log"):
                starts.append((event.step, event.session_log.status))
    assert sorted(starts) == [(0, tf.compat.v1.SessionLog.START), (21, tf.compat.v1.SessionLog.START)]


def test_caption_grid_layout_and_text():
    images = np.full((3, 16, 20, 3), 0.0, np.float32)  # mid grey
    images[2] = 1.0
    plain = logger_lib.caption_grid(images, None, ncols=2, pad=2)
    assert plain.dtype == np.uint8 and plain.shape == (2 + 2 * 18, 2 + 2 * 22, 3)
    np.testing.assert_array_equal(plain[2:18, 2:22], np.full((16, 20, 3), 128))
    np.testing.assert_array_equal(plain[20:36, 24:44], 255)  # slot of a missing 4th image stays white

    caps = ["a long caption that must wrap over lines", "", "x"]
    grid = logger_lib.caption_grid(images, caps, ncols=3, pad=2)
    assert grid.shape[1] == 2 + 3 * 22 and grid.shape[0] > 2 + 16 + 2
    band = grid[2 + 16:, :, 0]
    first, second, third = (band[:, 2 + 22 * i: 2 + 22 * i + 20] for i in range(3))
    assert (first < 128).sum() > (third < 128).sum() > 0  # text drawn in black under images
    assert (second < 128).sum() == 0  # empty caption: nothing drawn
    np.testing.assert_array_equal(grid[2:18, 2:22], np.full((16, 20, 3), 128))
    with pytest.raises(ValueError, match="2 captions for 3 images"):
        logger_lib.caption_grid(images, caps[:2])


def test_uint8_and_grey_inputs():
    g = logger_lib.caption_grid(np.full((1, 4, 4, 1), 7, np.uint8), None, ncols=1, pad=0)
    assert g.shape == (4, 4, 3) and (g == 7).all()
    with pytest.raises(ValueError, match="1 or 3 channels"):
        logger_lib.caption_grid(np.zeros((1, 4, 4, 2), np.uint8))
