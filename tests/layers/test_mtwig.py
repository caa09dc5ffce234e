"""Tests for msmt_tf.layers.mtwig (paper eqs 1-3)."""

import keras
import numpy as np
import pytest

from msmt_tf.layers.mtwig import MTWIG
from msmt_tf.testing.layer_test import run_serialization_test

CD, ZD, WD = 4, 3, 5


def _inputs(lengths, seq_len, seed=0):
    rng = np.random.default_rng(seed)
    b = len(lengths)
    c = rng.normal(size=(b, CD)).astype("float32")
    z = rng.normal(size=(b, ZD)).astype("float32")
    mask = np.arange(seq_len)[None, :] < np.asarray(lengths)[:, None]
    words = rng.normal(size=(b, seq_len, WD)).astype("float32") * mask[..., None]
    return c, z, words, mask


def _pad(inputs, extra):
    c, z, words, mask = inputs
    b = len(c)
    return (
        c,
        z,
        np.concatenate([words, np.zeros((b, extra, WD), "float32")], 1),
        np.concatenate([mask, np.zeros((b, extra), bool)], 1),
    )


def _layer(**kwargs):
    kwargs.setdefault("kernel_size", 3)
    kwargs.setdefault("output_size", 16)  # 2 upsampling blocks keep the tests fast
    return MTWIG(1, z_dim=ZD, condition_dim=CD, word_dim=WD, **kwargs)


def _randomize_stats(layer, seed=5):
    """Non-trivial moving statistics so that inference mode is not the identity."""
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        if "moving_mean" in w.path:
            w.assign(rng.normal(size=w.shape).astype("float32") * 0.1)
        elif "moving_variance" in w.path:
            w.assign((np.abs(rng.normal(size=w.shape)) + 0.5).astype("float32"))


@pytest.mark.parametrize("training", [False, True])
def test_extra_padding_changes_nothing(training):
    inputs = _inputs([6, 3, 2, 1], 6)
    layer = _layer()
    layer(inputs)
    _randomize_stats(layer)
    out = np.asarray(layer(inputs, training=training))
    padded = np.asarray(layer(_pad(inputs, 5), training=training))
    # Inference is exact; training mode differs only by float summation order in BN.
    np.testing.assert_allclose(padded, out, atol=1e-6 if not training else 1e-4)


def test_equals_manual_loop_over_valid_tails():
    """Second code path: conv -> decode each valid tail -> fuse in order in Python."""
    lengths = [5, 3, 1]
    c, z, words, mask = _inputs(lengths, 5, seed=1)
    layer = _layer(gate="channel")
    out = np.asarray(layer((c, z, words, mask)))
    _randomize_stats(layer)
    out = np.asarray(layer((c, z, words, mask), training=False))
    for i, n in enumerate(lengths):
        x = np.concatenate([np.repeat(np.concatenate([c[i], z[i]])[None], n, 0), words[i, :n]], -1)
        if n < 3:  # shorter than the kernel: zero padding to one window
            x = np.concatenate([x, np.zeros((3 - n, x.shape[1]), "float32")])
        seeds = np.asarray(layer.conv(x[None]))[0]  # [max(n - 2, 1), width]
        tails = np.asarray(layer.decoder(seeds, training=False))
        fused = tails[:1]
        for t in range(1, len(tails)):
            fused = np.asarray(layer.fusion((fused, tails[t : t + 1])))
        np.testing.assert_allclose(out[i], fused[0], rtol=1e-4, atol=1e-5)


def test_single_tail_for_short_captions_and_ks1():
    inputs = _inputs([1, 1], 4, seed=2)
    layer = _layer(kernel_size=1)
    out = np.asarray(layer(inputs, training=False))
    c, z, words, _ = inputs
    x = np.concatenate([c, z, words[:, 0]], -1)[:, None]  # the single word
    expected = np.asarray(layer.decoder(np.asarray(layer.conv(x))[:, 0], training=False))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_sequence_shorter_than_kernel():
    inputs = _inputs([2, 1], 2, seed=3)
    layer = _layer()
    out = np.asarray(layer(inputs, training=False))
    np.testing.assert_allclose(out, np.asarray(layer(_pad(inputs, 3), training=False)), atol=1e-6)


def test_bn_statistics_use_valid_tails_only():
    inputs = _inputs([5, 3], 5, seed=4)  # tails: 3 valid + 0 invalid, 1 valid + 2 invalid
    c, z, words, mask = inputs
    layer = _layer()
    layer(inputs, training=True)
    x = np.concatenate([np.repeat(np.concatenate([c, z], -1)[:, None], 5, 1), words], -1)
    x = x * mask[..., None]
    seeds = np.asarray(layer.conv(x))  # [2, 3, width]
    valid = np.concatenate([seeds[0], seeds[1, :1]])
    np.testing.assert_allclose(
        np.asarray(layer.decoder.norm.moving_mean), 0.1 * valid.mean(0), rtol=1e-4, atol=1e-6
    )


def test_parameter_count_formula():
    gf = 4
    ngf = 16 * gf
    layer = MTWIG(gf, kernel_size=3)
    layer.build(((None, 100), (None, 100), (None, 18, 256), (None, 18)))
    decoder = 2 * 32 * ngf + sum(9 * (ngf >> i) * (ngf >> i) + 2 * (ngf >> i) for i in range(4))
    conv = 3 * (100 + 100 + 256) * 32 * ngf  # V outputs IG's dense width directly, no bias
    fusion = 2 * gf + 1
    trainable = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
    assert trainable == conv + decoder + fusion
    bottleneck = MTWIG(gf, kernel_size=2, conv_filters=10)
    bottleneck.build(((None, 100), (None, 100), (None, 18, 256), (None, 18)))
    widths = np.prod(bottleneck.conv.kernel.shape) + np.prod(bottleneck.project.kernel.shape)
    assert widths == 2 * 456 * 10 + 10 * 32 * ngf


def test_symbolic_serialization_and_errors():
    sym = (keras.Input((CD,)), keras.Input((ZD,)), keras.Input((6, WD)), keras.Input((6,), dtype="bool"))
    assert _layer()(sym).shape == (None, 16, 16, 1)
    assert MTWIG(1, z_dim=ZD, condition_dim=CD, word_dim=WD)(sym).shape == (None, 64, 64, 1)
    inputs = _inputs([4, 2], 4, seed=6)
    layer = MTWIG(1, kernel_size=2, z_dim=ZD, condition_dim=CD, word_dim=WD, gate="channel",
                  conv_filters=6, output_size=8, name="mtwig")
    run_serialization_test(layer, inputs, atol=1e-5)
    with pytest.raises(ValueError, match="word_dim=256"):
        MTWIG(1, z_dim=ZD, condition_dim=CD)(inputs)
    with pytest.raises(ValueError, match="base_size"):
        MTWIG(1, output_size=48)
