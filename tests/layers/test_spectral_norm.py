"""SpectralNormConv2D against a NumPy power iteration written from DM-GAN's semantics."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from msmt_tf.layers.spectral_norm import SpectralNormConv2D
from msmt_tf.testing.layer_test import run_serialization_test


def _np_step(w_oihw, u, v, eps=1e-12):
    """One DM-GAN power iteration on W.view(out, -1); returns new u, v and sigma."""
    w = w_oihw.reshape(w_oihw.shape[0], -1)
    v = w.T @ u
    v = v / (np.linalg.norm(v) + eps)
    u = w @ v
    u = u / (np.linalg.norm(u) + eps)
    return u, v, u @ (w @ v)


def _np_conv(x, w_oihw, bias, stride, pad):
    """PyTorch Conv2d (OIHW weight, symmetric zero padding) on NHWC input, by loops."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    _, height, width, _ = x.shape
    out, _, kh, kw = w_oihw.shape
    ho, wo = (height - kh) // stride + 1, (width - kw) // stride + 1
    y = np.zeros((x.shape[0], ho, wo, out))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            y[:, i, j, :] = np.einsum("bhwc,ochw->bo", patch, w_oihw)
    return y + bias


def _state(seed=0, out=3, cin=2, kh=3, kw=2):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(out, cin, kh, kw))
    u = rng.normal(size=out)
    v = rng.normal(size=cin * kh * kw)
    return w, u / np.linalg.norm(u), v / np.linalg.norm(v), rng.normal(size=out)


def _layer(w, u, v, b, **kwargs):
    out, cin, kh, kw = w.shape
    layer = SpectralNormConv2D(out, (kh, kw), **kwargs)
    layer.build((None, 6, 6, cin))
    layer.load_pytorch_state(w, u, v, b)
    return layer


def test_weight_matrix_uses_pytorch_oihw_flattening():
    w, u, v, b = _state()
    layer = _layer(w, u, v, b)
    np.testing.assert_allclose(layer.weight_matrix(), w.reshape(3, -1), rtol=1e-6)
    np.testing.assert_allclose(layer.kernel.numpy(), np.transpose(w, (2, 3, 1, 0)), rtol=1e-6)


def test_training_calls_match_numpy_power_iteration():
    w, u, v, b = _state()
    layer = _layer(w, u, v, b, padding=1)
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 2)).astype("float32")
    for _ in range(3):  # u/v advance on every call
        y = layer(x, training=True)
        u, v, sigma = _np_step(w, u, v)
        np.testing.assert_allclose(layer.u.numpy(), u, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.v.numpy(), v, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(y, _np_conv(x, w / sigma, b, 1, 1), rtol=1e-4, atol=1e-5)
    # After 3 iterations from a random start sigma is still below the top singular value.
    assert sigma < np.linalg.svd(w.reshape(3, -1), compute_uv=False)[0]


def test_inference_uses_stored_state_and_update_in_eval_advances():
    w, u, v, b = _state(2)
    x = np.random.default_rng(3).normal(size=(1, 6, 6, 2)).astype("float32")
    frozen = _layer(w, u, v, b, padding=1)
    for _ in range(2):
        y = frozen(x, training=False)
        np.testing.assert_allclose(frozen.u.numpy(), u, rtol=1e-6)
        sigma = u @ w.reshape(3, -1) @ v
        np.testing.assert_allclose(y, _np_conv(x, w / sigma, b, 1, 1), rtol=1e-4, atol=1e-5)
    eager = _layer(w, u, v, b, padding=1, update_in_eval=True)
    eager(x, training=False)
    eager(x)
    for _ in range(2):
        u, v, _ = _np_step(w, u, v)
    np.testing.assert_allclose(eager.u.numpy(), u, rtol=1e-5, atol=1e-6)


def test_sigma_gradient_matches_finite_differences():
    w, u, v, b = _state(4)
    layer = _layer(w, u, v, b, padding=1, strides=2)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 6, 6, 2)).astype("float32")
    g = rng.normal(size=(1, 3, 4, 3))  # output of k(3, 2) s2 p1 on 6x6
    with tf.GradientTape() as tape:
        y = layer(x, training=True)
        objective = tf.reduce_sum(y * g)
    grad = tape.gradient(objective, layer.kernel).numpy()  # HWIO
    u1, v1, sigma1 = _np_step(w, u, v)  # u/v are constants of the differentiation

    def numeric_grad(f, h=1e-5):
        out = np.zeros_like(w)
        for idx in np.ndindex(*w.shape):
            d = np.zeros_like(w)
            d[idx] = h
            out[idx] = (f(w + d) - f(w - d)) / (2 * h)
        return np.transpose(out, (2, 3, 1, 0))  # OIHW -> HWIO

    def objective_np(weight):
        sigma = u1 @ weight.reshape(3, -1) @ v1
        return np.sum(_np_conv(x, weight / sigma, b, 2, 1) * g)

    np.testing.assert_allclose(grad, numeric_grad(objective_np), rtol=2e-3, atol=2e-4)

    # With sigma treated as a constant the gradient would differ: the test can fail.
    constant = numeric_grad(lambda weight: np.sum(_np_conv(x, weight / sigma1, b, 2, 1) * g))
    assert np.abs(constant - grad).max() > 1e-2


def test_same_padding_equals_pytorch_padding_for_even_sizes():
    w, u, v, b = _state(6, out=2, cin=2, kh=4, kw=4)
    x = np.random.default_rng(7).normal(size=(2, 8, 8, 2)).astype("float32")
    a = _layer(w, u, v, b, strides=2, padding="same")
    c = _layer(w, u, v, b, strides=2, padding=1)
    np.testing.assert_allclose(a(x), c(x), rtol=1e-5, atol=1e-6)
    assert tuple(a(x).shape) == a.compute_output_shape(x.shape) == (2, 4, 4, 2)


def test_initial_state_is_unit_norm_and_not_trainable():
    layer = SpectralNormConv2D(5, 3, seed=3)
    layer.build((None, 8, 8, 4))
    np.testing.assert_allclose(np.linalg.norm(layer.u.numpy()), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(layer.v.numpy()), 1.0, rtol=1e-6)
    assert layer.v.shape == (4 * 3 * 3,)
    assert {w.name for w in layer.non_trainable_weights} == {"u", "v"}
    assert len(layer.trainable_weights) == 2
    same = SpectralNormConv2D(5, 3, seed=3)
    same.build((None, 8, 8, 4))
    np.testing.assert_array_equal(same.u.numpy(), layer.u.numpy())
    np.testing.assert_array_equal(same.kernel.numpy(), layer.kernel.numpy())


def test_serialization_round_trip_non_default():
    layer = SpectralNormConv2D(
        4, (4, 3), strides=2, padding=1, use_bias=False, power_iterations=2, epsilon=1e-10, seed=7
    )
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    out = run_serialization_test(layer, x)
    assert tuple(out.shape) == (2, 4, 4, 4)  # (8 + 2 - 4) // 2 + 1, (8 + 2 - 3) // 2 + 1


def test_mixed_precision_keeps_state_float32():
    layer = SpectralNormConv2D(2, 3, dtype="mixed_float16")
    x = np.random.default_rng(0).normal(size=(1, 4, 4, 2)).astype("float32")
    y = layer(x, training=True)
    assert y.dtype == "float16"
    assert layer.u.dtype == layer.kernel.dtype == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(y)))


@pytest.mark.parametrize("kwargs", [dict(padding="full"), dict(filters=0), dict(padding=-1)])
def test_bad_arguments_raise(kwargs):
    args = dict(filters=2, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match="SpectralNormConv2D"):
        SpectralNormConv2D(**args)
