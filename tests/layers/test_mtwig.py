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


# --- Only valid tails are computed: equality with an independent computation -------------
# The reference builds every tail of every caption (T = L - ks + 1 per caption) with the
# Keras Conv1D for V, decodes them all in one [B * T] batch whose BN statistics are masked
# to the valid tails (BatchNorm's ``sample_mask``: the layer's behaviour before it decoded
# valid tails only), and fuses each caption's valid tails in a Python loop.

MIXED = [6, 2, 4, 1, 6, 3]  # full length, shorter than ks = 3, ks exactly, ... (L = 6)


def _reference(layer, inputs, training):
    c, z, words, mask = inputs
    ks = layer.kernel_size
    lengths = mask.sum(1)
    b, seq_len = mask.shape
    x = np.concatenate([np.repeat(np.concatenate([c, z], -1)[:, None], seq_len, 1), words], -1)
    x = x * mask[..., None]
    x = np.concatenate([x, np.zeros((b, max(ks - seq_len, 0), x.shape[-1]), "float32")], 1)
    num_tails = x.shape[1] - ks + 1
    # V as the Keras Conv1D layer itself (the layer computes it as a matmul of windows).
    seeds = keras.ops.reshape(layer.conv(x), (b * num_tails, -1))
    if layer.project is not None:
        seeds = layer.project(seeds)
    counts = [max(n - ks + 1, 1) for n in lengths]
    valid = np.array([[t < n for t in range(num_tails)] for n in counts]).reshape(-1)
    tails = layer.decoder(seeds, training=training, sample_mask=valid)
    outs = []
    for i, n in enumerate(counts):
        fused = tails[i * num_tails : i * num_tails + 1]
        for t in range(1, n):
            row = i * num_tails + t
            fused = layer.fusion((fused, tails[row : row + 1]))
        outs.append(fused)
    return keras.ops.concatenate(outs, 0)


def _moving_stats(layer):
    return {w.path: np.asarray(w) for w in layer.weights if "moving_" in w.path}


def _with_grads(fn, layer, seed=9):
    """``fn()``'s output, the gradients of a fixed random projection of it, and the BN
    moving statistics after the call."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        out = fn()
        proj = np.random.default_rng(seed).normal(size=out.shape).astype("float32")
        loss = keras.ops.sum(keras.ops.cast(out, "float32") * proj)
    grads = tape.gradient(loss, layer.trainable_weights)
    return np.asarray(out), [np.asarray(g) for g in grads], _moving_stats(layer)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("conv_filters", [None, 6])
def test_valid_tails_only_equal_reference(training, conv_filters):
    inputs = _inputs(MIXED, 6, seed=7)
    layer = _layer(gate="channel", conv_filters=conv_filters)
    layer(inputs)
    _randomize_stats(layer)
    before = layer.get_weights()
    stats_before = _moving_stats(layer)
    out_ref, grads_ref, stats_ref = _with_grads(
        lambda: _reference(layer, inputs, training), layer
    )
    layer.set_weights(before)
    out, grads, stats = _with_grads(lambda: layer(inputs, training=training), layer)
    np.testing.assert_allclose(out, out_ref, rtol=1e-4, atol=1e-5)
    for w, g, g_ref in zip(layer.trainable_weights, grads, grads_ref):
        scale = np.abs(g_ref).max()
        assert scale > 0, w.path  # every weight is reached (the fusion too)
        np.testing.assert_allclose(g, g_ref, atol=1e-4 * scale, err_msg=w.path)
    for path, value in stats_ref.items():
        np.testing.assert_allclose(stats[path], value, rtol=1e-4, atol=1e-6, err_msg=path)
        moved = np.abs(value - stats_before[path]).max()
        assert moved > 1e-4 if training else moved == 0, path


@pytest.mark.parametrize("jit_compile", [False, True])
def test_tf_function_dynamic_number_of_valid_tails(jit_compile):
    """One trace serves two length mixes (N = 13 and 11 valid tails of 6 x 4); outputs and
    gradients equal the reference. XLA compiles the dynamic N as a bounded dynamic shape."""
    import tensorflow as tf

    layer = _layer(output_size=8)  # 1 upsampling block: XLA compiles in seconds
    layer(_inputs([6], 6))
    spec = [tf.TensorSpec([None, CD]), tf.TensorSpec([None, ZD]),
            tf.TensorSpec([None, 6, WD]), tf.TensorSpec([None, 6], tf.bool)]

    @tf.function(input_signature=spec, jit_compile=jit_compile)
    def step(c, z, words, mask):
        with tf.GradientTape() as tape:
            out = layer((c, z, words, mask), training=True)
            loss = tf.reduce_sum(out**2)
        return out, tape.gradient(loss, layer.trainable_weights)

    for lengths, seed in ((MIXED, 1), ([1, 2, 6, 5, 1, 1], 2)):
        inputs = _inputs(lengths, 6, seed=seed)
        out, grads = step(*inputs)
        with tf.GradientTape() as tape:
            ref = _reference(layer, inputs, True)
            loss = tf.reduce_sum(ref**2)
        grads_ref = tape.gradient(loss, layer.trainable_weights)
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-4, atol=1e-5)
        for g, g_ref in zip(grads, grads_ref):
            np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref),
                                       atol=1e-4 * np.abs(np.asarray(g_ref)).max())
    assert step.experimental_get_tracing_count() == 1


def test_mixed_bfloat16_equals_reference():
    inputs = _inputs(MIXED, 6, seed=8)
    layer = _layer(dtype="mixed_bfloat16")
    layer(inputs)
    _randomize_stats(layer)
    for training in (False, True):
        before = layer.get_weights()
        ref = np.asarray(keras.ops.cast(_reference(layer, inputs, training), "float32"))
        layer.set_weights(before)
        out = layer(inputs, training=training)
        assert out.dtype == "bfloat16"
        out = np.asarray(keras.ops.cast(out, "float32"))
        # bfloat16 keeps 8 bits of mantissa: the two paths round differently (V's windowed
        # matmul, BN's summation order), relative differences up to a few 1e-2.
        np.testing.assert_allclose(out, ref, atol=5e-2 * np.abs(ref).max())
        assert np.abs(out - ref).mean() < 1e-2 * np.abs(ref).mean()


MIRRORED = r"""
import sys
import numpy as np
from msmt_tf.training import distribute
distribute.split_cpu(2)
import tensorflow as tf
sys.path.insert(0, sys.argv[1])
from test_mtwig import _inputs, _layer, _moving_stats, _reference

strategy = distribute.make_strategy("mirrored")
with strategy.scope():
    layer = _layer()
    layer(_inputs([6], 6))
replica_inputs = [_inputs([6, 2, 4], 6, seed=1), _inputs([1, 1, 3], 6, seed=2)]  # N = 7, 3
single = _layer()
single(_inputs([6], 6))
init = layer.get_weights()
refs, stats = [], []
for inputs in replica_inputs:
    single.set_weights(init)
    refs.append(np.asarray(_reference(single, inputs, True)))
    stats.append(_moving_stats(single))
values = strategy.experimental_distribute_values_from_function(
    lambda ctx: replica_inputs[ctx.replica_id_in_sync_group])

@tf.function
def step(inputs):
    return strategy.run(lambda x: layer(x, training=True), args=(inputs,))

outs = strategy.experimental_local_results(step(values))
assert len(outs) == 2
for out, ref in zip(outs, refs):
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-5)
got = {w.path: np.asarray(w) for w in layer.weights if "moving_" in w.path}
for path, value in got.items():
    single_path = path.replace(layer.name, single.name, 1)
    expected = (stats[0][single_path] + stats[1][single_path]) / 2
    np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-6, err_msg=path)
print("replicas", len(outs), "moving", len(got))
"""


def test_mirrored_strategy_per_replica_valid_tails():
    """2 logical CPUs with different numbers of valid tails per replica (7 and 3): each
    replica's output equals the reference on its half, and the BN moving statistics are the
    mean of the two replicas' updates (per-replica statistics, ``aggregation="mean"``)."""
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", MIRRORED, here], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replicas 2 moving 6" in proc.stdout  # 3 BNs (decoder + 2 UpBlocks)
