"""AttnGAN crop-box arithmetic (hand-computed) and the TF crop applied when decoding."""

import os

import numpy as np
import pytest
import tensorflow as tf

from msmt_tf.data import bbox as bbox_lib
from msmt_tf.data import pipeline
from msmt_tf.data.errors import DataError


@pytest.mark.parametrize("bbox,size,expected", [
    # r = int(max(40, 20) * 0.75) = 30; centre (int((2*100 + 40) / 2), int((2*50 + 20) / 2)) = (120, 60)
    ((100, 50, 40, 20), (500, 400), (90, 30, 150, 90)),
    # floats are truncated first: [60.9, 27.2, 325.7, 304.0] -> [60, 27, 325, 304]:
    # r = int(325 * 0.75) = 243; centre (int(445 / 2), int(358 / 2)) = (222, 179)
    ((60.9, 27.2, 325.7, 304.0), (500, 375), (0, 0, 465, 375)),
    # top-left border: r = int(15 * 0.75) = 11; centre (int(9 / 2), int(23 / 2)) = (4, 11)
    ((2, 4, 5, 15), (100, 80), (0, 0, 15, 22)),
    # bottom-right border: r = int(30 * 0.75) = 22; centre (int(370 / 2), int(260 / 2)) = (185, 130)
    ((170, 115, 30, 30), (200, 140), (163, 108, 200, 140)),
    # odd sum: centre x = int((2*3 + 7) / 2) = 6 (6.5 truncated); r = int(7 * .75) = 5
    ((3, 0, 7, 2), (50, 50), (1, 0, 11, 6)),
])
def test_crop_box_hand_values(bbox, size, expected):
    assert bbox_lib.crop_box(bbox, *size) == expected


def test_tf_window_matches_python_clip():
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, h = int(rng.integers(20, 300)), int(rng.integers(20, 300))
        bb = (rng.uniform(-10, w), rng.uniform(-10, h), rng.uniform(1, w), rng.uniform(1, h))
        raw = bbox_lib.raw_crop_box(bb)
        x1, y1, x2, y2 = bbox_lib.crop_box(bb, w, h)
        win = pipeline._crop_window(tf.constant(raw, tf.int32), h, w).numpy().tolist()
        if x2 > x1 and y2 > y1:
            assert win == [y1, x1, y2 - y1, x2 - x1]
        else:  # box entirely outside the image: the whole image is used
            assert win == [0, 0, h, w]
    assert pipeline._crop_window(tf.constant(bbox_lib.NO_BOX), 7, 9).numpy().tolist() == [0, 0, 7, 9]


def test_decode_and_crop_png_and_jpeg(tmp_path, helpers):
    img = helpers.gradient_image(37, 53, 3)
    helpers.write_image(str(tmp_path / "a.png"), img)
    helpers.write_image(str(tmp_path / "a.jpg"), img)
    bb = (20, 10, 30, 12)  # r = 22, centre (35, 16) -> clipped (13, 0, 53, 37)
    raw = tf.constant(bbox_lib.raw_crop_box(bb), tf.int32)
    png = pipeline.decode_and_crop(tf.io.read_file(str(tmp_path / "a.png")), raw).numpy()
    np.testing.assert_array_equal(png, img[0:37, 13:53])
    jpg_bytes = tf.io.read_file(str(tmp_path / "a.jpg"))
    jpg = pipeline.decode_and_crop(jpg_bytes, raw).numpy()
    full = tf.io.decode_jpeg(jpg_bytes, channels=3).numpy()
    np.testing.assert_array_equal(jpg, full[0:37, 13:53])
    whole = pipeline.decode_and_crop(jpg_bytes, tf.constant(bbox_lib.NO_BOX)).numpy()
    np.testing.assert_array_equal(whole, full)


def test_load_cub_bboxes(tmp_path):
    cub = tmp_path / "CUB_200_2011"
    cub.mkdir()
    (cub / "images.txt").write_text("1 001.A/a_1.jpg\n2 002.B/b_2.jpg\n")
    (cub / "bounding_boxes.txt").write_text("1 60.0 27.0 325.0 304.0\n2 1.5 2.0 3.0 4.0\n")
    boxes = bbox_lib.load_cub_bboxes(str(cub))
    assert boxes == {"001.A/a_1": [60.0, 27.0, 325.0, 304.0], "002.B/b_2": [1.5, 2.0, 3.0, 4.0]}
    raw = bbox_lib.raw_boxes_for(["002.B/b_2"], boxes, "x")
    # [1.5, 2, 3, 4] -> [1, 2, 3, 4]: r = int(4 * .75) = 3, centre (int(5 / 2), int(8 / 2)) = (2, 4);
    # the raw box is not clipped yet (x1 = -1).
    assert raw.tolist() == [[-1, 1, 5, 7]]
    with pytest.raises(DataError, match="no bounding box for image 'c'"):
        bbox_lib.raw_boxes_for(["c"], boxes, "x")
    (cub / "bounding_boxes.txt").write_text("1 60.0 27.0 325.0\n")
    with pytest.raises(DataError, match=r"bounding_boxes\.txt:1: expected '<id> <x> <y> <w> <h>'"):
        bbox_lib.load_cub_bboxes(str(cub))
    os.remove(cub / "images.txt")
    with pytest.raises(DataError, match=r"images\.txt: not found.*CUB_200_2011\.tgz"):
        bbox_lib.load_cub_bboxes(str(cub))
