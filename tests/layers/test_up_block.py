"""Tests for msmt_tf.layers.up_block against a NumPy implementation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from msmt_tf.layers import up_block
from msmt_tf.layers.up_block import UpBlock
from msmt_tf.testing.layer_test import np_conv_same, run_serialization_test


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


def _op_types(layer, x):
    fn = tf.function(lambda t: layer(t, training=True))
    return {op.type for op in fn.get_concrete_function(
        tf.TensorSpec((None,) + x.shape[1:], tf.float32)).graph.get_operations()}


# 4x4 inputs: upsample + conv; 8x8 (MIN_SUBPIXEL_SIZE): the stride-2 transposed conv.
@pytest.mark.parametrize("size", [4, up_block.MIN_SUBPIXEL_SIZE])
def test_matches_numpy_training_mode(size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, size, size, 5)).astype("float32")
    layer = UpBlock(3)
    layer(x)
    _randomize(layer)
    out = layer(x, training=True)
    up = x.repeat(2, axis=1).repeat(2, axis=2)
    y = np_conv_same(up, np.asarray(layer.conv.kernel))
    y = np_glu(np_bn_train(y, np.asarray(layer.norm.gamma), np.asarray(layer.norm.beta)))
    assert out.shape == (3, 2 * size, 2 * size, 3)
    np.testing.assert_allclose(out, y, rtol=1e-4, atol=1e-4)
    subpixel = "Conv2DBackpropInput" in _op_types(layer, x)  # conv_transpose's forward op
    assert subpixel == (size >= up_block.MIN_SUBPIXEL_SIZE)


def test_subpixel_kernel_by_hand():
    """k4[r, c] = sum of the 3x3 taps K[S(r), S(c)], S = ({2}, {1, 2}, {0, 1}, {0})."""
    kernel = np.arange(9.0, dtype="float32").reshape(3, 3, 1, 1)
    expected = np.array([[8, 15, 13, 6], [13, 24, 20, 9], [7, 12, 8, 3], [2, 3, 1, 0]])
    k4 = np.asarray(up_block.subpixel_kernel(kernel))
    assert k4.shape == (4, 4, 1, 1)
    np.testing.assert_array_equal(k4[..., 0, 0], expected)
    # [3, 3, C, O] -> [4, 4, O, C]: input and output channels swap (conv_transpose's layout).
    wide = np.random.default_rng(4).normal(size=(3, 3, 2, 5)).astype("float32")
    k4 = np.asarray(up_block.subpixel_kernel(wide))
    assert k4.shape == (4, 4, 5, 2)
    np.testing.assert_allclose(k4[1, 2], (wide[1:, :2].sum(axis=(0, 1))).T, rtol=1e-6)


@pytest.mark.parametrize("policy, tol", [("float32", 1e-5), ("mixed_bfloat16", None)])
def test_subpixel_path_equals_upsample_conv_with_gradients(monkeypatch, policy, tol):
    """Both paths of one layer: outputs and the gradients of the input and every weight."""
    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(size=(2, 8, 8, 6)).astype("float32"))
    g = tf.constant(rng.normal(size=(2, 16, 16, 4)).astype("float32"))
    layer = UpBlock(4, dtype=policy)
    layer(x)
    _randomize(layer, seed=6)

    def run(min_size, net=layer):
        monkeypatch.setattr(up_block, "MIN_SUBPIXEL_SIZE", min_size)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(net(x, training=True), tf.float32)
            loss = tf.reduce_sum(y * g)
        grads = tape.gradient(loss, [x] + net.trainable_variables)
        return [np.asarray(t, np.float64) for t in [y] + grads]

    subpixel, plain = run(8), run(10**9)
    if tol is not None:
        for a, b in zip(subpixel, plain):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())
        return
    # bfloat16: both paths are within bfloat16 rounding of the float32 computation, and the
    # transposed conv is no less accurate than the upsample + conv.
    reference = UpBlock(4)  # float32, the same weights
    reference(x)
    reference.set_weights(layer.get_weights())
    exact = run(10**9, reference)
    for a, b, ref in zip(subpixel, plain, exact):
        scale = np.abs(ref).max()
        err_sub, err_plain = np.abs(a - ref).max() / scale, np.abs(b - ref).max() / scale
        assert err_sub < 3e-2 and err_sub < 2 * err_plain + 1e-3, (err_sub, err_plain)


@pytest.mark.parametrize("size", [2, up_block.MIN_SUBPIXEL_SIZE])
def test_sample_mask_restricts_statistics(size):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, size, size, 3)).astype("float32")
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
