"""Tests for msmt_tf.layers.up_block against a NumPy implementation."""

import keras
import numpy as np
import pytest

from msmt_tf.layers.up_block import UpBlock
from msmt_tf.testing.layer_test import run_serialization_test


def np_conv_same(x, kernel):
    """Stride-1 'same' conv, x [N, H, W, C], kernel [k, k, C, O], no bias."""
    k = kernel.shape[0]
    r = k // 2
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
    out = np.zeros((n, h, w, kernel.shape[-1]))
    for du in range(k):
        for dv in range(k):
            out += xp[:, du : du + h, dv : dv + w] @ kernel[du, dv]
    return out


def np_bn_train(x, gamma, beta, keep=None):
    sub = x if keep is None else x[keep]
    axes = tuple(range(x.ndim - 1))
    mean, var = sub.mean(axis=axes), sub.var(axis=axes)
    return (x - mean) / np.sqrt(var + 1e-5) * gamma + beta


def np_glu(x):
    c = x.shape[-1] // 2
    return x[..., :c] / (1.0 + np.exp(-x[..., c:]))


def _randomize(layer, seed=3):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(size=w.shape).astype("float32") * 0.5 + (1.0 if "var" in w.path else 0.0)
                       for w in layer.weights])


def test_matches_numpy_training_mode():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 4, 5)).astype("float32")
    layer = UpBlock(3)
    layer(x)
    _randomize(layer)
    out = layer(x, training=True)
    up = x.repeat(2, axis=1).repeat(2, axis=2)
    y = np_conv_same(up, np.asarray(layer.conv.kernel))
    y = np_glu(np_bn_train(y, np.asarray(layer.norm.gamma), np.asarray(layer.norm.beta)))
    assert out.shape == (3, 8, 8, 3)
    np.testing.assert_allclose(out, y, rtol=1e-4, atol=1e-4)


def test_sample_mask_restricts_statistics():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 2, 2, 3)).astype("float32")
    x[1] *= 50.0  # a wild excluded sample must not move the statistics
    keep = np.array([True, False, True, True])
    layer = UpBlock(2)
    layer(x)
    _randomize(layer)
    out = np.asarray(layer(x, training=True, sample_mask=keep))
    up = x.repeat(2, axis=1).repeat(2, axis=2)
    y = np_conv_same(up, np.asarray(layer.conv.kernel))
    y = np_glu(np_bn_train(y, np.asarray(layer.norm.gamma), np.asarray(layer.norm.beta), keep))
    np.testing.assert_allclose(out, y, rtol=1e-4, atol=1e-4)


def test_parameter_count():
    layer = UpBlock(32)
    layer.build((None, 8, 8, 64))  # AttnGAN CUB upsample of a refinement stage
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == 36_992


def test_symbolic_and_serialization():
    assert UpBlock(4)(keras.Input((5, 5, 2))).shape == (None, 10, 10, 4)
    x = np.random.default_rng(2).normal(size=(2, 3, 3, 2)).astype("float32")
    run_serialization_test(UpBlock(5, name="up"), x)


def test_bad_filters():
    with pytest.raises(ValueError, match="filters"):
        UpBlock(0)
