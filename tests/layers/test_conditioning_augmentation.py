"""Tests for msmt_tf.layers.conditioning_augmentation."""

import numpy as np
import pytest

from msmt_tf.layers.conditioning_augmentation import ConditioningAugmentation
from msmt_tf.testing.layer_test import run_serialization_test


def test_matches_numpy_with_injected_eps():
    rng = np.random.default_rng(0)
    sent = rng.normal(size=(3, 6)).astype("float32")
    eps = rng.normal(size=(3, 2)).astype("float32")
    layer = ConditioningAugmentation(condition_dim=2)
    layer(sent, eps=eps)
    kernel = rng.normal(size=(6, 8)).astype("float32") * 0.3
    bias = rng.normal(size=(8,)).astype("float32") * 0.3
    layer.set_weights([kernel, bias])
    c, mu, logvar = (np.asarray(t) for t in layer(sent, eps=eps))
    x = sent @ kernel + bias
    x = x[:, :4] / (1.0 + np.exp(-x[:, 4:]))  # GLU: first half value
    np.testing.assert_allclose(mu, x[:, :2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logvar, x[:, 2:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, eps * np.exp(0.5 * x[:, 2:]) + x[:, :2], rtol=1e-5, atol=1e-6)


def test_seeded_noise_is_reproducible_and_fresh_per_call():
    sent = np.ones((4, 5), "float32")
    first = ConditioningAugmentation(condition_dim=3, seed=11)
    second = ConditioningAugmentation(condition_dim=3, seed=11)
    first(sent)
    second(sent)
    second.set_weights(first.get_weights())
    first_draws = [np.asarray(first(sent)[0]) for _ in range(2)]
    second_draws = [np.asarray(second(sent)[0]) for _ in range(2)]
    np.testing.assert_allclose(first_draws[0], second_draws[0])
    np.testing.assert_allclose(first_draws[1], second_draws[1])
    assert np.abs(first_draws[0] - first_draws[1]).max() > 1e-3
    # eps is drawn at evaluation too (as the references).
    assert np.abs(np.asarray(first(sent, training=False)[0]) - first_draws[1]).max() > 1e-3


def test_parameter_count_and_float32():
    layer = ConditioningAugmentation(dtype="mixed_float16")
    c, mu, logvar = layer(np.zeros((2, 256), "float32"))
    assert layer.count_params() == 102_800
    assert c.dtype == mu.dtype == logvar.dtype == "float32"
    assert c.shape == (2, 100)


def test_serialization_and_errors():
    sent = np.random.default_rng(1).normal(size=(2, 4)).astype("float32")
    eps = np.ones((2, 3), "float32")
    run_serialization_test(
        ConditioningAugmentation(condition_dim=3, seed=7), sent, call_kwargs={"eps": eps}
    )
    with pytest.raises(ValueError, match="condition_dim"):
        ConditioningAugmentation(condition_dim=0)
