"""Tests for msmt_tf.layers.image_head."""

import numpy as np

from msmt_tf.layers.image_head import ImageHead
from msmt_tf.testing.layer_test import run_serialization_test


def test_matches_numpy_and_range():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 4, 2)).astype("float32") * 3
    layer = ImageHead()
    layer(x)
    kernel = rng.normal(size=(3, 3, 2, 3)).astype("float32")
    layer.set_weights([kernel])
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = sum(xp[:, du : du + 4, dv : dv + 4] @ kernel[du, dv] for du in range(3) for dv in range(3))
    out = np.asarray(layer(x))
    np.testing.assert_allclose(out, np.tanh(y), rtol=1e-5, atol=1e-5)
    assert out.shape == (2, 4, 4, 3) and np.abs(out).max() <= 1.0


def test_parameter_counts():
    for gf, expected in ((32, 864), (64, 1_728), (48, 1_296)):
        layer = ImageHead()
        layer.build((None, 64, 64, gf))
        assert layer.count_params() == expected


def test_float32_image_under_mixed_precision():
    out = ImageHead(dtype="mixed_float16")(np.ones((1, 2, 2, 4), "float32"))
    assert out.dtype == "float32"


def test_serialization():
    out = run_serialization_test(ImageHead(name="img"), np.ones((1, 3, 3, 2), "float32"))
    assert tuple(out.shape) == (1, 3, 3, 3)
