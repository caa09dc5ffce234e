"""Tests for the AttnGAN and DM-GAN refinement stages (``NEXT_STAGE_G`` of taoxugit/AttnGAN and
MinfengZhu/DM-GAN): msmt_tf.layers.attn_refinement and msmt_tf.layers.memory_refinement, with
the contract both share (padding words change nothing, symbolic shapes, serialization, bad
arguments) written once."""

import keras
import numpy as np
import pytest

from msmt_tf.layers.attn_refinement import AttnRefinement
from msmt_tf.layers.memory_refinement import MemoryRefinement
from msmt_tf.testing.layer_test import random_word_inputs, run_serialization_test

STAGES = (AttnRefinement, MemoryRefinement)


def _inputs(lengths, seq_len, gf=3, size=4, word_dim=5, seed=0):
    return random_word_inputs(lengths, seq_len, size, gf, word_dim, seed)


def _trainable(layer):
    return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)


# --------------------------------------------------------------------------- the shared contract


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("training", [False, True])
def test_extra_padding_changes_nothing(stage, training):
    h, words, mask = _inputs([4, 2], 4, seed=1)
    layer = stage(3, r_num=1)
    out = layer((h, words, mask), training=training)
    words2 = np.concatenate([words, np.zeros((2, 3, 5), "float32")], 1)
    mask2 = np.concatenate([mask, np.zeros((2, 3), bool)], 1)
    out2 = layer((h, words2, mask2), training=training)
    np.testing.assert_allclose(out2["features"], out["features"], atol=1e-5)
    np.testing.assert_allclose(np.asarray(out2["attention"])[..., :4], out["attention"], atol=1e-6)


@pytest.mark.parametrize("stage", STAGES)
def test_symbolic_serialization_and_errors(stage):
    sym = (keras.Input((4, 4, 3)), keras.Input((5, 5)), keras.Input((5,), dtype="bool"))
    out = stage(3)(sym)
    assert out["features"].shape == (None, 8, 8, 3) and out["attention"].shape == (None, 4, 4, 5)
    run_serialization_test(
        stage(3, r_num=1, mask_row_quirk=True, name="refine"), _inputs([3, 2], 3, seed=2),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="r_num"):
        stage(3, r_num=-1)
    with pytest.raises(ValueError, match="gf_dim"):
        stage(0)


# --------------------------------------------------------------------------- AttnGAN


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


# --------------------------------------------------------------------------- DM-GAN


def test_dmgan_cub_parameter_counts():
    layer = MemoryRefinement(64, r_num=2)
    layer.build(((None, 64, 64, 64), (None, 18, 256), (None, 18)))
    m = layer.memory
    parts = {
        "A": (m.gate_words, 256), "B": (m.gate_image, 64), "M_r": (m.memory_image, 8_320),
        "M_w": (m.memory_words, 32_896), "key": (m.key, 8_256), "value": (m.value, 8_256),
        "response_gate": (layer.response_gate, 129), "upsample": (layer.upsample, 147_712),
    }
    for name, (sub, expected) in parts.items():
        assert _trainable(sub) == expected, name
    assert sum(_trainable(r) for r in layer.residual) == 886_272
    assert _trainable(layer) == 1_092_161


def test_response_gate_and_duplication_match_numpy():
    h, words, mask = _inputs([4, 2], 4)
    layer = MemoryRefinement(3, r_num=1)
    layer((h, words, mask))
    rng = np.random.default_rng(1)
    layer.set_weights([
        (np.abs(rng.normal(size=w.shape)) + 0.5 if "variance" in w.path else rng.normal(size=w.shape) * 0.5)
        .astype("float32")
        for w in layer.weights
    ])
    out = layer((h, words, mask), training=False)
    o, attn = (np.asarray(t) for t in layer.memory((h, words, mask)))
    kernel, bias = (np.asarray(w) for w in layer.response_gate.get_weights())
    g = 1.0 / (1.0 + np.exp(-(np.concatenate([h, o], -1) @ kernel + bias)))  # cat(h, o) order
    h_new = h * (1 - g) + g * o
    x = np.concatenate([h_new, h_new], -1).astype("float32")
    for block in layer.residual:
        x = block(x, training=False)
    np.testing.assert_allclose(out["features"], layer.upsample(x, training=False), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["attention"], attn, atol=1e-7)
    assert out["features"].shape == (2, 8, 8, 3) and out["head_features"] == []
