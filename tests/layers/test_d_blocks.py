"""DBlock: hand-computed outputs for both kinds, shapes, serialization."""

import numpy as np
import pytest

from msmt_tf.layers.d_blocks import DBlock
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
