"""Tests for msmt_tf.layers.glu."""

import keras
import numpy as np
import pytest

from msmt_tf.layers.glu import GLU
from msmt_tf.testing.layer_test import run_serialization_test


def test_hand_computed_values():
    # value half [1, 2], gate half [0, log 3] -> sigmoid = [0.5, 0.75].
    x = np.array([[1.0, 2.0, 0.0, np.log(3.0)]], "float32")
    np.testing.assert_allclose(GLU()(x), [[0.5, 1.5]], rtol=1e-6)


def test_first_half_is_value_nhwc():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 3, 8)).astype("float32")
    expected = x[..., :4] / (1.0 + np.exp(-x[..., 4:]))
    np.testing.assert_allclose(GLU()(x), expected, rtol=1e-5, atol=1e-6)


def test_other_axis_and_serialization():
    x = np.arange(12, dtype="float32").reshape(1, 4, 3) / 10.0
    out = run_serialization_test(GLU(axis=1), x)
    expected = x[:, :2] / (1.0 + np.exp(-x[:, 2:]))
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_symbolic_shape():
    assert GLU()(keras.Input((5, 5, 6))).shape == (None, 5, 5, 3)


def test_odd_width_is_an_error():
    with pytest.raises(ValueError, match="odd size 5"):
        GLU()(np.zeros((1, 5), "float32"))
