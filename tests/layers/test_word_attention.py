"""Tests for msmt_tf.layers.word_attention (AttnGAN GlobalAttentionGeneral)."""

import keras
import numpy as np
import pytest

from msmt_tf.layers.word_attention import WordAttention, attention_mask
from msmt_tf.testing.layer_test import random_word_inputs, run_serialization_test


def _inputs(lengths, seq_len, size=2, channels=3, word_dim=4, seed=0):
    return random_word_inputs(lengths, seq_len, size, channels, word_dim, seed)


def np_attention(h, words, mask, kernel):
    """Loop-based AttnGAN attention: per pixel, softmax over the real words only."""
    b, hh, ww, c = h.shape
    context = np.zeros_like(h)
    attn = np.zeros((b, hh, ww, words.shape[1]))
    for i in range(b):
        source = words[i] @ kernel  # [L, C]
        for u in range(hh):
            for v in range(ww):
                logits = source @ h[i, u, v]
                e = np.where(mask[i], np.exp(logits - logits[mask[i]].max()), 0.0)
                p = e / e.sum()
                attn[i, u, v] = p
                context[i, u, v] = p @ source
    return context, attn


def test_matches_numpy():
    h, words, mask = _inputs([4, 2, 1], 4)
    layer = WordAttention(3)
    context, attn = layer((h, words, mask))
    ref_context, ref_attn = np_attention(h, words, mask, np.asarray(layer.context_proj.kernel))
    np.testing.assert_allclose(context, ref_context, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(attn, ref_attn, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(attn)[1, ..., 2:] == 0.0)


def test_extra_padding_changes_nothing():
    h, words, mask = _inputs([3, 1], 3, seed=1)
    layer = WordAttention(3)
    context, attn = layer((h, words, mask))
    words2 = np.concatenate([words, np.zeros((2, 4, 4), "float32")], 1)
    mask2 = np.concatenate([mask, np.zeros((2, 4), bool)], 1)
    context2, attn2 = layer((h, words2, mask2))
    np.testing.assert_allclose(context2, context, atol=1e-6)
    np.testing.assert_allclose(np.asarray(attn2)[..., :3], attn, atol=1e-7)
    assert np.all(np.asarray(attn2)[..., 3:] == 0.0)


def test_mask_row_quirk_worked_example():
    """B = 3, Q = 4, lengths 6/4/2; pixel q of sample b uses sample (4b + q) mod 3 (the rows of
    ``mask.repeat(queryL, 1)`` in taoxugit/AttnGAN code/GlobalAttention.py (commit 0d000e6))."""
    lengths = np.array([6, 4, 2])
    mask = np.arange(6)[None, :] < lengths[:, None]
    used = np.asarray(attention_mask(mask, 4, row_quirk=True))
    expected_rows = [[0, 1, 2, 0], [1, 2, 0, 1], [2, 0, 1, 2]]
    np.testing.assert_array_equal(used, mask[np.array(expected_rows)])
    np.testing.assert_array_equal(np.asarray(attention_mask(mask, 4))[:, 0], mask)

    h, words, _ = _inputs(lengths, 6, seed=2)
    quirk = WordAttention(3, mask_row_quirk=True)
    _, attn = quirk((h, words, mask))
    attn = np.asarray(attn).reshape(3, 4, 6)
    # Sample 0 pixel 1 is masked with sample 1's padding (words 4, 5), pixel 2 with sample 2's
    # (words 2-5), pixel 3 with its own (nothing).
    assert np.all(attn[0, 1, 4:] == 0) and np.all(attn[0, 1, :4] > 0)
    assert np.all(attn[0, 2, 2:] == 0) and np.all(attn[0, 2, :2] > 0)
    assert np.all(attn[0, 3] > 0)
    # Sample 2 pixel 1 uses sample 0's mask: its padded words get probability (logit 0).
    assert np.all(attn[2, 1, 2:] > 0)
    np.testing.assert_allclose(attn.sum(-1), 1.0, rtol=1e-5)


def test_float32_attention_under_mixed_precision():
    h, words, mask = _inputs([2, 1], 2, seed=3)
    context, attn = WordAttention(3, dtype="mixed_float16")((h, words, mask))
    assert attn.dtype == "float32" and context.dtype == "float16"


def test_symbolic_serialization_and_errors():
    sym = (keras.Input((4, 4, 3)), keras.Input((5, 4)), keras.Input((5,), dtype="bool"))
    context, attn = WordAttention(3)(sym)
    assert context.shape == (None, 4, 4, 3) and attn.shape == (None, 4, 4, 5)
    run_serialization_test(WordAttention(3, mask_row_quirk=True, name="att"), _inputs([3, 2], 3, seed=4))
    with pytest.raises(ValueError, match="2 channels"):
        WordAttention(3)(_inputs([1], 1, channels=2))
