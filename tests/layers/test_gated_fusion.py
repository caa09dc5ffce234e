"""Tests for msmt_tf.layers.gated_fusion (paper eqs 17-18)."""

import keras
import numpy as np
import pytest

from msmt_tf.layers.gated_fusion import GatedFusion
from msmt_tf.testing.layer_test import run_serialization_test


def test_pixel_gate_hand_computed():
    a = np.array([[[[1.0, 2.0]]]], "float32")  # [1, 1, 1, 2]
    b = np.array([[[[3.0, 4.0]]]], "float32")
    layer = GatedFusion()
    layer((a, b))
    # P over concat(a, b) = [1, 2, 3, 4]: logit = 0.5 * 1 - 0.25 * 4 + 0.1 = -0.4.
    layer.set_weights([np.array([[0.5], [0.0], [0.0], [-0.25]], "float32"), np.array([0.1], "float32")])
    # g = sigmoid(-0.4) = 0.40131234; r = a g + b (1 - g) = b - 2 g.
    np.testing.assert_allclose(layer((a, b)), [[[[2.19737532, 3.19737532]]]], rtol=1e-6)


def test_channel_gate_hand_computed():
    a = np.array([[[[1.0, 2.0]]]], "float32")
    b = np.array([[[[3.0, 4.0]]]], "float32")
    layer = GatedFusion(gate="channel")
    layer((a, b))
    kernel = np.zeros((4, 2), "float32")
    kernel[0, 0] = 1.0  # channel 0 logit = a_0 = 1 (+ bias 0)      -> g0 = 0.73105858
    kernel[3, 1] = -1.0  # channel 1 logit = -b_1 = -4 (+ bias 4) -> g1 = 0.5
    layer.set_weights([kernel, np.array([0.0, 4.0], "float32")])
    expected = [[[[1.0 * 0.73105858 + 3.0 * 0.26894142, 2.0 * 0.5 + 4.0 * 0.5]]]]
    np.testing.assert_allclose(layer((a, b)), expected, rtol=1e-6)


def test_matches_numpy_on_a_map():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 3, 4, 5)).astype("float32")
    b = rng.normal(size=(2, 3, 4, 5)).astype("float32")
    layer = GatedFusion()
    out = np.asarray(layer((a, b)))
    kernel, bias = (np.asarray(w) for w in layer.get_weights())
    g = 1.0 / (1.0 + np.exp(-(np.concatenate([a, b], -1) @ kernel + bias)))
    np.testing.assert_allclose(out, a * g + b * (1 - g), rtol=1e-5, atol=1e-6)


def test_parameter_counts():
    pixel, channel = GatedFusion(), GatedFusion(gate="channel")
    pixel.build(((None, 8, 8, 64), (None, 8, 8, 64)))
    channel.build(((None, 8, 8, 48), (None, 8, 8, 48)))
    assert pixel.count_params() == 129  # = DM-GAN's response gate (2 * 64 + 1)
    assert channel.count_params() == 96 * 48 + 48


def test_mixed_precision_keeps_dtype_and_value():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(1, 2, 2, 3)).astype("float32")
    b = rng.normal(size=(1, 2, 2, 3)).astype("float32")
    ref = GatedFusion()
    expected = np.asarray(ref((a, b)))
    half = GatedFusion(dtype="mixed_float16")
    half((a, b))
    half.set_weights(ref.get_weights())
    out = half((a, b))
    assert out.dtype == "float16"
    np.testing.assert_allclose(np.asarray(out, "float32"), expected, atol=5e-3)


def test_symbolic_serialization_and_errors():
    x = keras.Input((4, 4, 3))
    assert GatedFusion()((x, x)).shape == (None, 4, 4, 3)
    rng = np.random.default_rng(2)
    a, b = (rng.normal(size=(2, 3, 3, 4)).astype("float32") for _ in range(2))
    run_serialization_test(GatedFusion(gate="channel", name="fuse"), (a, b))
    with pytest.raises(ValueError, match="gate='spatial'"):
        GatedFusion(gate="spatial")
    with pytest.raises(ValueError, match="same, known channel"):
        GatedFusion()((a, b[..., :2]))
