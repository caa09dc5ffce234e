"""Tests for msmt_tf.layers.batch_norm (reference BN defaults and per-sample masking)."""

import numpy as np

from msmt_tf.layers import batch_norm as bn
from msmt_tf.testing.layer_test import run_serialization_test


def test_reference_defaults():
    layer = bn.batch_norm("bn")
    assert layer.epsilon == 1e-5 and layer.momentum == 0.9


def test_sample_mask_statistics_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 3, 2)).astype("float32") * 3.0 + 1.0
    keep = np.array([True, False, True, False])
    layer = bn.batch_norm("bn")
    out = np.asarray(layer(x, training=True, sample_mask=keep))
    sub = x[keep]
    mean = sub.mean(axis=(0, 1, 2))
    var = sub.var(axis=(0, 1, 2))  # biased, as used for normalisation
    gamma, beta = (np.asarray(w) for w in (layer.gamma, layer.beta))
    expected = (x - mean) / np.sqrt(var + 1e-5) * gamma + beta
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)  # rows outside the mask too
    np.testing.assert_allclose(layer.moving_mean, 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance, 0.9 + 0.1 * var, rtol=1e-5)


def test_without_mask_equals_plain_statistics():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 4)).astype("float32")
    layer = bn.batch_norm("bn")
    out = np.asarray(layer(x, training=True))
    g, b = np.asarray(layer.gamma), np.asarray(layer.beta)
    expected = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) * g + b
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_serialization():
    x = np.random.default_rng(2).normal(size=(3, 2, 2, 4)).astype("float32")
    out = run_serialization_test(bn.BatchNorm(momentum=0.5, epsilon=1e-3), x)
    # inference mode with the initial moving statistics (0, 1), gamma 1, beta 0
    np.testing.assert_allclose(out, x / np.sqrt(1.0 + 1e-3), rtol=1e-5, atol=1e-6)
