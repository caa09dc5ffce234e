"""DBlock: hand-computed outputs for both kinds, shapes, serialization, the LReLU gradient."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from msmt_tf.layers import d_blocks
from msmt_tf.layers.d_blocks import DBlock, _leaky_relu
from msmt_tf.testing.layer_test import run_serialization_test

ONES = np.ones((1, 4, 4, 1), "float32")


def _border_map(corner, edge, inner):
    m = np.full((4, 4), edge, "float32")
    m[1:3, 1:3] = inner
    m[0, 0] = m[0, 3] = m[3, 0] = m[3, 3] = corner
    return m


def test_dmgan_block_hand_values():
    # Kernel of ones (1 x 9 matrix): sigma = 3 after one power iteration, from any start;
    # 3x3 'same' sums over ones are 9 inside, 6 on edges, 4 at corners; bias -2.5; LReLU 0.2.
    block = DBlock(1, kernel_size=3, strides=1, kind="dmgan")
    block.build(ONES.shape)
    block.conv.kernel.assign(np.ones((3, 3, 1, 1), "float32"))
    block.conv.bias.assign([-2.5])
    y = block(ONES, training=True)
    expected = _border_map(0.2 * (4 / 3 - 2.5), 0.2 * (2 - 2.5), 3 - 2.5)
    np.testing.assert_allclose(y[0, :, :, 0], expected, rtol=1e-5)


def test_attngan_block_hand_values():
    # No bias, BN in inference: 2 * v / sqrt(1 + 1e-5) - 10 with v = 9 / 6 / 4; LReLU 0.2.
    block = DBlock(1, kernel_size=3, strides=1, kind="attngan", batch_norm=True)
    block.build(ONES.shape)
    block.conv.kernel.assign(np.ones((3, 3, 1, 1), "float32"))
    block.bn.gamma.assign([2.0])
    block.bn.beta.assign([-10.0])
    y = block(ONES, training=False)
    s = 2 / np.sqrt(1 + 1e-5)
    expected = _border_map(0.2 * (4 * s - 10), 6 * s - 10, 9 * s - 10)
    np.testing.assert_allclose(y[0, :, :, 0], expected, rtol=1e-5)
    assert len(block.trainable_weights) == 3  # kernel, gamma, beta: no conv bias


@pytest.mark.parametrize("kind", ["dmgan", "attngan"])
def test_down_block_halves_resolution(kind):
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    block = DBlock(5, kind=kind, batch_norm=kind == "attngan")
    y = block(x, training=True)
    assert tuple(y.shape) == block.compute_output_shape(x.shape) == (2, 4, 4, 5)
    assert y.numpy().min() < 0  # leaky, not relu


def test_dmgan_block_rejects_batch_norm_and_bad_kind():
    with pytest.raises(ValueError, match="batch_norm=False"):
        DBlock(4, kind="dmgan", batch_norm=True)
    with pytest.raises(ValueError, match="kind="):
        DBlock(4, kind="stylegan")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kind="dmgan", kernel_size=3, strides=1, negative_slope=0.1, seed=3),
        dict(kind="attngan", batch_norm=True, negative_slope=0.3, seed=4),
    ],
)
def test_serialization_round_trip(kwargs):
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("float32")
    out = run_serialization_test(DBlock(6, **kwargs), x)
    size = 8 // kwargs.get("strides", 2)  # default k4 s2 p1 halves; k3 s1 p1 keeps the size
    assert tuple(out.shape) == (2, size, size, 6)


def _plain_leaky_relu(x, negative_slope):
    return keras.ops.leaky_relu(x, negative_slope=negative_slope)


@pytest.mark.parametrize("negative_slope", [0.2, 0.0, -0.5])
def test_leaky_relu_gradient_hand_values(negative_slope):
    # d/dx sum(w * LReLU(x)) = w where x > 0, slope * w where x <= 0 (TensorFlow's convention at 0).
    x = tf.constant([[-2.0, -0.5, 0.0, 0.5, 3.0]])
    w = tf.constant([[1.0, 2.0, 3.0, 4.0, 5.0]])

    def value_and_grad():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = _leaky_relu(x, negative_slope)
            loss = tf.reduce_sum(w * y)
        return y, tape.gradient(loss, x)

    for fn in (value_and_grad, tf.function(value_and_grad)):
        y, grad = fn()
        s = negative_slope
        np.testing.assert_allclose(y, [[-2 * s, -0.5 * s, 0.0, 0.5, 3.0]], rtol=1e-6)
        np.testing.assert_allclose(grad, [[s, 2 * s, 3 * s, 4.0, 5.0]], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, training",
    [
        (dict(kind="dmgan"), False),  # training=False: u/v stay put, both calls see one sigma
        (dict(kind="dmgan", kernel_size=3, strides=1), False),
        (dict(kind="attngan", batch_norm=True), True),  # batch statistics
        (dict(kind="attngan"), True),  # conv -> LReLU directly
    ],
)
def test_block_values_and_gradients_match_plain_leaky_relu(monkeypatch, kwargs, training):
    # The output-reading gradient equals the registered LeakyRelu gradient, for the input and
    # every trainable weight, eagerly and inside tf.function (where Grappler rewrites).
    x = tf.constant(np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype("float32"))
    block = DBlock(6, seed=5, **kwargs)
    block.build(x.shape)
    upstream = tf.constant(
        np.random.default_rng(3).normal(size=(2,) + block.compute_output_shape(x.shape)[1:])
        .astype("float32")
    )

    def value_and_grads():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = block(x, training=training)
            loss = tf.reduce_sum(upstream * y)
        return [y] + tape.gradient(loss, [x] + block.trainable_weights)

    results = {}
    for name in ("output_grad", "plain"):
        if name == "plain":
            monkeypatch.setattr(d_blocks, "_leaky_relu", _plain_leaky_relu)
        results[name] = (value_and_grads(), tf.function(value_and_grads)())
    for new, old in zip(results["output_grad"], results["plain"]):
        for a, b in zip(new, old):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_reads_activation_output_not_conv_output():
    # Why the remapper can fuse conv + bias + LeakyReLU: LeakyReluGrad's features are the
    # LeakyRelu output, so the convolution output has one consumer (see docs/performance.md).
    x = tf.constant(np.ones((1, 8, 8, 3), "float32"))
    block = DBlock(4, kind="dmgan", seed=0)
    block.build(x.shape)

    @tf.function
    def grad():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(block(x, training=True) ** 2)
        return tape.gradient(loss, x)

    graph = grad.get_concrete_function().graph
    grads = [op for op in graph.get_operations() if op.type == "LeakyReluGrad"]
    assert len(grads) == 1
    assert grads[0].inputs[1].op.type == "LeakyRelu"
    (leaky,) = [op for op in graph.get_operations() if op.type == "LeakyRelu"]
    conv_out = leaky.inputs[0]
    assert conv_out.op.type == "AddV2"  # conv + bias, fused by the remapper
    # Besides LeakyRelu only tf.custom_gradient's IdentityN reads it; that output is unused
    # and Grappler prunes it before the remapper runs.
    assert sorted(c.type for c in conv_out.consumers()) == ["IdentityN", "LeakyRelu"]


def test_mixed_precision_gradient_matches_plain(monkeypatch):
    x = tf.constant(np.random.default_rng(4).normal(size=(2, 8, 8, 3)).astype("float32"))
    block = DBlock(4, kind="dmgan", seed=1, dtype="mixed_bfloat16")
    block.build(x.shape)

    def grads():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(block(x, training=False), "float32") ** 2)
        return tape.gradient(loss, [x] + block.trainable_weights)

    new = grads()
    monkeypatch.setattr(d_blocks, "_leaky_relu", _plain_leaky_relu)
    for a, b in zip(new, grads()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
