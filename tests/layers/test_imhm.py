"""Tests for msmt_tf.layers.imhm (Iterative Multi-Headed Mechanism, paper eqs 15-16)."""

import numpy as np
import pytest

from msmt_tf.layers.imhm import IMHM
from msmt_tf.testing.layer_test import run_serialization_test

B, S, H, L = 2, 4, 2, 3
N_R, N_M, N_W = 3, 4, 5


def _inputs(seed=0, num_words=L, lengths=(3, 2)):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(B, S, S, N_R)).astype("float32")
    words = rng.normal(size=(B, num_words, N_W)).astype("float32")
    mask = np.arange(num_words)[None, :] < np.asarray(lengths)[:, None]
    words[~mask] = 0.0
    return r, words, mask


def _build(heads, gate="pixel", key_reading="concat", seed=1):
    layer = IMHM(N_R, heads=heads, memory_dim=N_M, grid=H, key_reading=key_reading, gate=gate,
                 word_dim=N_W)
    inputs = _inputs()
    layer(inputs)
    rng = np.random.default_rng(seed)
    layer.set_weights(
        [0.5 * rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()]
    )
    return layer, inputs


def _np_fuse(fusion, a, b):
    """Appendix eqs 17-18 from the fusion's own weights: a * g + b * (1 - g)."""
    kernel, bias = (np.float64(w) for w in fusion.get_weights())
    a, b = np.float64(a), np.float64(b)
    g = 1.0 / (1.0 + np.exp(-(np.concatenate([a, b], axis=-1) @ kernel + bias)))
    return a * g + b * (1.0 - g)


@pytest.mark.parametrize("gate", ["pixel", "channel"])
def test_one_head_is_one_sdm_and_one_fusion(gate):
    # Section 3.3: with a single head, U_1 = fuse(R, O_1) "becomes our response"; eq 16's
    # skip connection is for T > 1 only.
    layer, (r, words, mask) = _build(heads=1, gate=gate)
    assert layer.skip_fusion is None
    assert not any("fuse_skip" in w.path for w in layer.weights)
    per_fuse = 2 * N_R + 1 if gate == "pixel" else 2 * N_R * N_R + N_R
    sdm = layer.sdms[0]
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == (
        sum(int(np.prod(w.shape)) for w in sdm.trainable_weights) + per_fuse)
    response, heads, alphas = layer((r, words, mask))
    o1, alpha1 = sdm((r, r, words, mask))
    expected = _np_fuse(layer.fusions[0], r, np.asarray(o1))  # eq 15 with U_0 = R
    np.testing.assert_allclose(np.asarray(response), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(heads[0]), np.asarray(o1), atol=1e-6)
    np.testing.assert_allclose(np.asarray(alphas[0]), np.asarray(alpha1), atol=1e-6)
    # The fusion is not trivial: the response differs from both of its inputs.
    assert np.abs(expected - r).max() > 1e-2 and np.abs(expected - np.asarray(o1)).max() > 1e-2


@pytest.mark.parametrize("key_reading", ["concat", "positional"])
def test_heads_iterate_queries_from_u_and_memory_from_r(key_reading):
    layer, (r, words, mask) = _build(heads=3, key_reading=key_reading)
    response, heads, alphas = layer((r, words, mask))
    u = r
    for t in range(3):
        o, alpha = layer.sdms[t]((r, u.astype("float32"), words, mask))
        np.testing.assert_allclose(np.asarray(heads[t]), np.asarray(o), atol=1e-5)
        np.testing.assert_allclose(np.asarray(alphas[t]), np.asarray(alpha), atol=1e-5)
        u = _np_fuse(layer.fusions[t], u, np.asarray(o))
    np.testing.assert_allclose(np.asarray(response), _np_fuse(layer.skip_fusion, u, r),
                               atol=1e-5)
    # Writing the memory of head 2 from U_1 instead of R would give another result.
    u1 = np.float32(_np_fuse(layer.fusions[0], r, np.asarray(heads[0])))
    o_wrong, _ = layer.sdms[1]((u1, u1, words, mask))
    assert np.abs(np.asarray(o_wrong) - np.asarray(heads[1])).max() > 1e-4


def test_head_features_for_the_redundancy_loss():
    layer, inputs = _build(heads=4)
    response, heads, alphas = layer(inputs)
    assert response.shape == (B, S, S, N_R)
    assert len(heads) == 4 and len(alphas) == 4
    assert all(o.shape == (B, S, S, N_R) for o in heads)
    assert all(a.shape == (B, S, S, L) and a.dtype == "float32" for a in alphas)
    # Separate weights per head and per fusion (eqs 15-16): T SDMs + T + 1 fusions, no sharing.
    ids = [id(w) for w in layer.trainable_weights]
    assert len(ids) == len(set(ids))
    assert len(layer.sdms) == 4 and len(layer.fusions) == 4
    per_sdm = len(layer.sdms[0].trainable_weights)
    per_fuse = len(layer.skip_fusion.trainable_weights)
    assert len(layer.trainable_weights) == 4 * per_sdm + 5 * per_fuse
    # Different heads give different refinement features.
    assert np.abs(np.asarray(heads[0]) - np.asarray(heads[1])).max() > 1e-3


def test_padding_words_change_nothing():
    layer, (r, words, mask) = _build(heads=2)
    response, heads, _ = layer((r, words, mask))
    words_long = np.concatenate([words, np.zeros((B, 2, N_W), "float32")], axis=1)
    mask_long = np.concatenate([mask, np.zeros((B, 2), bool)], axis=1)
    response_long, heads_long, alphas_long = layer((r, words_long, mask_long))
    np.testing.assert_allclose(np.asarray(response_long), np.asarray(response), atol=1e-6)
    for a, b in zip(heads_long, heads):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    assert all(np.all(np.asarray(a)[..., L:] == 0.0) for a in alphas_long)


@pytest.mark.parametrize("kwargs, match", [({"heads": 0}, "heads=0"), ({"gate": "x"}, "gate"),
                                           ({"key_reading": "x"}, "key_reading")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IMHM(N_R, **kwargs)


@pytest.mark.parametrize("num_heads", [1, 2])
def test_serialization_round_trip(num_heads):
    layer = IMHM(N_R, heads=num_heads, memory_dim=N_M, grid=H, kernel_size=1,
                 key_reading="positional", gate="channel", word_dim=N_W, name="imhm_test")
    response, heads, alphas = run_serialization_test(layer, _inputs())
    assert len(heads) == num_heads and len(alphas) == num_heads
