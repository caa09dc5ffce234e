"""Tests for msmt_tf.layers.attn_refinement (AttnGAN NEXT_STAGE_G)."""

import keras
import numpy as np
import pytest

from msmt_tf.layers.attn_refinement import AttnRefinement
from msmt_tf.testing.layer_test import run_serialization_test


def _inputs(lengths, seq_len, gf=3, size=4, word_dim=5, seed=0):
    rng = np.random.default_rng(seed)
    b = len(lengths)
    h = rng.normal(size=(b, size, size, gf)).astype("float32")
    mask = np.arange(seq_len)[None, :] < np.asarray(lengths)[:, None]
    words = rng.normal(size=(b, seq_len, word_dim)).astype("float32") * mask[..., None]
    return h, words, mask


def _trainable(layer):
    return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)


def test_attngan_cub_parameter_counts():
    layer = AttnRefinement(32, r_num=2)
    layer.build(((None, 64, 64, 32), (None, 18, 256), (None, 18)))
    assert _trainable(layer) == 267_136
    assert _trainable(layer.attention) == 8_192
    assert sum(_trainable(r) for r in layer.residual) == 221_952
    assert _trainable(layer.upsample) == 36_992


def test_equals_composition_of_parts():
    """concat(h, context) in that order -> residual blocks -> upsampling."""
    h, words, mask = _inputs([3, 1], 3)
    layer = AttnRefinement(3, r_num=2)
    out = layer((h, words, mask), training=True)
    context, attn = layer.attention((h, words, mask))
    x = np.concatenate([h, np.asarray(context)], -1)
    for block in layer.residual:
        x = block(x, training=True)
    np.testing.assert_allclose(out["features"], layer.upsample(x, training=True), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["attention"], attn, atol=1e-7)
    assert out["features"].shape == (2, 8, 8, 3) and out["head_features"] == []


@pytest.mark.parametrize("training", [False, True])
def test_extra_padding_changes_nothing(training):
    h, words, mask = _inputs([4, 2], 4, seed=1)
    layer = AttnRefinement(3, r_num=1)
    out = layer((h, words, mask), training=training)
    words2 = np.concatenate([words, np.zeros((2, 3, 5), "float32")], 1)
    mask2 = np.concatenate([mask, np.zeros((2, 3), bool)], 1)
    out2 = layer((h, words2, mask2), training=training)
    np.testing.assert_allclose(out2["features"], out["features"], atol=1e-5)
    np.testing.assert_allclose(np.asarray(out2["attention"])[..., :4], out["attention"], atol=1e-6)


def test_symbolic_serialization_and_errors():
    sym = (keras.Input((4, 4, 3)), keras.Input((5, 5)), keras.Input((5,), dtype="bool"))
    out = AttnRefinement(3)(sym)
    assert out["features"].shape == (None, 8, 8, 3) and out["attention"].shape == (None, 4, 4, 5)
    run_serialization_test(
        AttnRefinement(3, r_num=1, mask_row_quirk=True, name="refine"), _inputs([3, 2], 3, seed=2),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="r_num"):
        AttnRefinement(3, r_num=-1)
