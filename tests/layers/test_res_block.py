"""Tests for msmt_tf.layers.res_block against a NumPy implementation."""

import numpy as np
import pytest

from msmt_tf.layers.res_block import ResBlock
from msmt_tf.testing.layer_test import np_conv_same, run_serialization_test


def np_bn_eval(x, layer):
    g, b, m, v = (np.asarray(t) for t in (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance))
    return (x - m) / np.sqrt(v + 1e-5) * g + b


def test_matches_numpy_inference_mode():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    layer = ResBlock(3)
    layer(x)
    # Random weights, positive variances.
    layer.set_weights([
        (np.abs(rng.normal(size=w.shape)) + 0.5 if "variance" in w.path else rng.normal(size=w.shape) * 0.5)
        .astype("float32")
        for w in layer.weights
    ])
    out = layer(x, training=False)
    y = np_bn_eval(np_conv_same(x, np.asarray(layer.conv1.kernel)), layer.bn1)
    y = y[..., :3] / (1.0 + np.exp(-y[..., 3:]))
    y = np_bn_eval(np_conv_same(y, np.asarray(layer.conv2.kernel)), layer.bn2)
    expected = x + y  # no activation after the sum: negative values survive
    assert (expected < 0).any()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_parameter_count():
    layer = ResBlock(64)
    layer.build((None, 8, 8, 64))
    # conv 64->128 (73,728) + BN 256 + conv 64->64 (36,864) + BN 128; two of them = 221,952.
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == 110_976


def test_channel_mismatch_is_an_error():
    with pytest.raises(ValueError, match="must have 4"):
        ResBlock(4)(np.zeros((1, 2, 2, 3), "float32"))


def test_serialization():
    x = np.random.default_rng(1).normal(size=(2, 3, 3, 5)).astype("float32")
    out = run_serialization_test(ResBlock(5, name="res"), x, call_kwargs={"training": True})
    assert tuple(out.shape) == x.shape
