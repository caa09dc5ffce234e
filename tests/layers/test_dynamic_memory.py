"""Tests for msmt_tf.layers.dynamic_memory (DM-GAN memory writing / addressing / reading)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from msmt_tf.layers.dynamic_memory import DynamicMemory
from msmt_tf.testing.layer_test import random_word_inputs, run_serialization_test

GF, NW = 3, 5


def _inputs(lengths, seq_len, size=3, seed=0):
    return random_word_inputs(lengths, seq_len, size, GF, NW, seed)


def _randomize(layer, seed=1):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(size=w.shape).astype("float32") * 0.5 for w in layer.get_weights()])


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _relu(x):
    return np.maximum(x, 0.0)


def np_memory(h, words, mask, p, r=None):
    """Loop-based MinfengZhu/DM-GAN code/model.py:NEXT_STAGE_G.forward and Memory.forward
    (commit d515995); ``r`` overrides the pooled image feature."""
    b, hh, ww, _ = h.shape
    out = np.zeros(h.shape)
    attn = np.zeros((b, hh, ww, words.shape[1]))
    for i in range(b):
        ri = h[i].mean(axis=(0, 1)) if r is None else r[i]
        keys, values = [], []
        for l in range(words.shape[1]):
            w = words[i, l]
            g = _sig(w @ p["A"] + ri @ p["B"])[0]
            m = _relu(w @ p["Mw"] + p["Mw_b"]) * g + _relu(ri @ p["Mr"] + p["Mr_b"]) * (1 - g)
            keys.append(_relu(m @ p["K"] + p["K_b"]))
            values.append(_relu(m @ p["V"] + p["V_b"]))
        keys, values = np.array(keys), np.array(values)
        for u in range(hh):
            for v in range(ww):
                logits = keys @ h[i, u, v]  # unscaled
                e = np.where(mask[i], np.exp(logits - logits[mask[i]].max()), 0.0)
                a = e / e.sum()
                attn[i, u, v] = a
                out[i, u, v] = a @ values
    return out, attn


def _params(layer):
    m = layer
    return {
        "A": np.asarray(m.gate_words.kernel), "B": np.asarray(m.gate_image.kernel),
        "Mw": np.asarray(m.memory_words.kernel), "Mw_b": np.asarray(m.memory_words.bias),
        "Mr": np.asarray(m.memory_image.kernel), "Mr_b": np.asarray(m.memory_image.bias),
        "K": np.asarray(m.key.kernel), "K_b": np.asarray(m.key.bias),
        "V": np.asarray(m.value.kernel), "V_b": np.asarray(m.value.bias),
    }


def test_matches_numpy():
    h, words, mask = _inputs([4, 2, 1], 4)
    layer = DynamicMemory(GF)
    layer((h, words, mask))
    _randomize(layer)
    o, attn = layer((h, words, mask))
    ref_o, ref_attn = np_memory(h.astype("float64"), words.astype("float64"), mask, _params(layer))
    np.testing.assert_allclose(o, ref_o, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(attn, ref_attn, rtol=1e-4, atol=1e-6)


def test_pooled_image_feature_is_gradient_stopped():
    """Autodiff gradient == finite differences of the equations with the pooled feature frozen."""
    h, words, mask = _inputs([3, 2], 3, size=2, seed=2)
    layer = DynamicMemory(GF)
    layer((h, words, mask))
    _randomize(layer, seed=3)
    p = _params(layer)
    h_t = tf.constant(h)
    with tf.GradientTape() as tape:
        tape.watch(h_t)
        loss = tf.reduce_sum(layer((h_t, words, mask))[0])
    grad = tape.gradient(loss, h_t).numpy()

    h64, w64 = h.astype("float64"), words.astype("float64")
    r_frozen = h64.mean(axis=(1, 2))
    eps = 1e-5
    fd_frozen = np.zeros(h.shape)
    fd_full = np.zeros(h.shape)
    for idx in np.ndindex(h.shape):
        hp, hm = h64.copy(), h64.copy()
        hp[idx] += eps
        hm[idx] -= eps
        for fd, r in ((fd_frozen, r_frozen), (fd_full, None)):
            plus = np_memory(hp, w64, mask, p, r)[0].sum()
            minus = np_memory(hm, w64, mask, p, r)[0].sum()
            fd[idx] = (plus - minus) / (2 * eps)
    np.testing.assert_allclose(grad, fd_frozen, rtol=1e-3, atol=1e-3)
    assert np.abs(fd_full - fd_frozen).max() > 1e-2  # the stop-gradient is observable


def test_extra_padding_changes_nothing():
    h, words, mask = _inputs([3, 1], 3, seed=4)
    layer = DynamicMemory(GF)
    layer((h, words, mask))
    _randomize(layer, seed=5)  # biases make padded slots non-zero: only the mask removes them
    o, attn = layer((h, words, mask))
    words2 = np.concatenate([words, np.zeros((2, 4, NW), "float32")], 1)
    mask2 = np.concatenate([mask, np.zeros((2, 4), bool)], 1)
    o2, attn2 = layer((h, words2, mask2))
    np.testing.assert_allclose(o2, o, atol=1e-6)
    np.testing.assert_allclose(np.asarray(attn2)[..., :3], attn, atol=1e-7)
    assert np.all(np.asarray(attn2)[..., 3:] == 0)


def test_mask_row_quirk_uses_other_samples_masks():
    lengths = [6, 4, 2]
    h, words, mask = _inputs(lengths, 6, size=2, seed=6)
    layer = DynamicMemory(GF, mask_row_quirk=True)
    layer((h, words, mask))
    _randomize(layer, seed=7)
    _, attn = layer((h, words, mask))
    attn = np.asarray(attn).reshape(3, 4, 6)
    rows = np.array([[0, 1, 2, 0], [1, 2, 0, 1], [2, 0, 1, 2]])  # (4b + q) mod 3
    np.testing.assert_array_equal(attn == 0, ~mask[rows])
    assert np.all(attn[0, 1, 4:] == 0) and np.all(attn[0, 2, 2:] == 0)
    assert np.all(attn[2, 1, 2:] > 0)  # padded slots of sample 2 read (DM-GAN: non-zero memory)


def test_symbolic_serialization_and_errors():
    sym = (keras.Input((4, 4, GF)), keras.Input((5, NW)), keras.Input((5,), dtype="bool"))
    o, attn = DynamicMemory(GF)(sym)
    assert o.shape == (None, 4, 4, GF) and attn.shape == (None, 4, 4, 5)
    run_serialization_test(
        DynamicMemory(GF, mask_row_quirk=True, name="mem"), _inputs([3, 2], 3, seed=8)
    )
    bad = (np.zeros((1, 2, 2, 4), "float32"), np.zeros((1, 2, NW), "float32"), np.ones((1, 2), bool))
    with pytest.raises(ValueError, match="4 channels"):
        DynamicMemory(GF)(bad)
