"""Tests for msmt_tf.layers.sdm_refinement (MSMT-GAN refinement stage, section 3.3)."""

import numpy as np
import pytest
import tensorflow as tf

from msmt_tf.layers.sdm_refinement import SDMRefinement
from msmt_tf.testing.layer_test import run_serialization_test

B, S, H, L = 2, 4, 2, 3
GF, N_M, N_W = 4, 5, 6


def _inputs(seed=0, num_words=L, lengths=(3, 1), size=S):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(B, size, size, GF)).astype("float32")
    words = rng.normal(size=(B, num_words, N_W)).astype("float32")
    mask = np.arange(num_words)[None, :] < np.asarray(lengths)[:, None]
    words[~mask] = 0.0
    return h, words, mask


def _stage(**kwargs):
    args = dict(r_num=2, heads=2, memory_dim=N_M, grid=H, word_dim=N_W)
    args.update(kwargs)
    return SDMRefinement(GF, **args)


@pytest.mark.parametrize("trunk", ["n_r", "2n_r", "2n_r_prev"])
def test_outputs_and_wiring(trunk):
    stage = _stage(heads=3, trunk=trunk)
    inputs = _inputs()
    out = stage(inputs, training=False)
    assert sorted(out) == ["attention", "features", "head_features"]
    assert out["features"].shape == (B, 2 * S, 2 * S, GF)
    assert out["attention"].shape == (B, S, S, L) and out["attention"].dtype == "float32"
    assert len(out["head_features"]) == 3
    assert all(o.shape == (B, S, S, GF) for o in out["head_features"])
    width = GF if trunk == "n_r" else 2 * GF
    assert [b.channels for b in stage.res_blocks] == [width, width]
    assert stage.upsample.conv.kernel.shape == (3, 3, width, 2 * GF)
    # Second code path: the sublayers chained by hand; the trunk input written out per reading
    # (2n_r: DM-GAN's cat(h_new, h_new) on the response; 2n_r_prev: cat(R_{k-1}, response)).
    response, heads, alphas = stage.imhm(inputs)
    x = np.asarray(response)
    x = {"n_r": x, "2n_r": np.concatenate([x, x], -1),
         "2n_r_prev": np.concatenate([inputs[0], x], -1)}[trunk]
    for block in stage.res_blocks:
        x = block(x, training=False)
    np.testing.assert_allclose(
        np.asarray(out["features"]), np.asarray(stage.upsample(x, training=False)), atol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(out["attention"]), np.mean([np.asarray(a) for a in alphas], axis=0),
        atol=1e-6,
    )
    for a, b in zip(out["head_features"], heads):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    # The mean of per-head distributions is still one over the real words, zero at padding.
    att = np.asarray(out["attention"])
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
    assert np.all(att[1, ..., 1:] == 0.0)
    assert len(stage.res_blocks) == 2


def test_padding_words_change_nothing():
    stage = _stage()
    h, words, mask = _inputs()
    out = stage((h, words, mask), training=False)
    pad = 3
    words_long = np.concatenate([words, np.zeros((B, pad, N_W), "float32")], axis=1)
    mask_long = np.concatenate([mask, np.zeros((B, pad), bool)], axis=1)
    out_long = stage((h, words_long, mask_long), training=False)
    np.testing.assert_allclose(np.asarray(out_long["features"]), np.asarray(out["features"]),
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(out_long["attention"])[..., :L],
                               np.asarray(out["attention"]), atol=1e-6)


@pytest.mark.parametrize("trunk", ["n_r", "2n_r"])
def test_gradient_reaches_every_trainable_weight(trunk):
    stage = _stage(key_reading="positional", gate="channel", trunk=trunk)
    h, words, mask = _inputs(size=8)
    stage((h, words, mask), training=True)
    rng = np.random.default_rng(3)
    probe = tf.constant(rng.normal(size=(B, 16, 16, GF)).astype("float32"))
    with tf.GradientTape() as tape:
        out = stage((h, words, mask), training=True)
        loss = tf.reduce_sum(out["features"] * probe)
    grads = tape.gradient(loss, stage.trainable_weights)
    assert len(grads) == len(stage.trainable_weights) > 0
    missing = [w.path for w, g in zip(stage.trainable_weights, grads)
               if g is None or not np.any(np.asarray(g) != 0)]
    assert not missing, f"no gradient for {missing}"


def _sdm_params(n_r, n_m, n_w, h, k, key_dim):
    conv = lambda cin, cout: k * k * cin * cout + cout  # noqa: E731
    return (
        n_w * n_m + n_m  # M_w (1x1)
        + n_w + h * h * n_r  # A, B_{i,j}
        + conv(n_r, n_m)  # M_c
        + conv(n_m, key_dim)  # phi_K
        + conv(n_m, n_r)  # phi_V
        + 3 * conv(n_r, n_r)  # phi_Q global / grid / pixel
    )


@pytest.mark.parametrize(
    "size, key_reading, kernel_size, trunk, heads",
    [(64, "concat", 3, "n_r", 6), (64, "positional", 1, "n_r", 6),
     (128, "positional", 3, "2n_r", 6), (64, "concat", 3, "2n_r_prev", 6),
     (64, "positional", 3, "2n_r", 1)],
)
def test_parameter_count_at_paper_settings(size, key_reading, kernel_size, trunk, heads):
    # N_r 48, N_m 96, T 6, h 8, R_NUM 2, N_w 256 (paper section 4, appendix 7.3).
    stage = SDMRefinement(48, r_num=2, heads=heads, memory_dim=96, grid=8,
                          kernel_size=kernel_size, key_reading=key_reading, trunk=trunk)
    stage.build(((None, size, size, 48), (None, 18, 256), (None, 18)))
    p = size // 8
    key_dim = 3 * 48 if key_reading == "concat" else 48 + p * p
    fusion = 2 * 48 + 1  # pixel gate: 1x1 conv 2N_r -> 1 with bias
    c = 48 if trunk == "n_r" else 96  # trunk width
    res_block = 9 * c * 2 * c + 2 * 2 * c + 9 * c * c + 2 * c  # convs without bias + BN
    up_block = 9 * c * 96 + 2 * 96  # UpBlock(c -> 48): conv c -> 2 * 48, BN
    # T heads (SDM + eq 15 fusion each) and eq 16's skip fusion for T > 1 only.
    expected = heads * (_sdm_params(48, 96, 256, 8, kernel_size, key_dim) + fusion)
    expected += fusion if heads > 1 else 0
    expected += 2 * res_block + up_block
    trainable = sum(int(np.prod(w.shape)) for w in stage.trainable_weights)
    assert trainable == expected


def test_size_not_divisible_by_grid_is_a_clear_error():
    stage = _stage(grid=3)
    with pytest.raises(ValueError, match=r"s=4 is not divisible by grid=3"):
        stage(_inputs())


def test_mixed_precision_dtypes():
    stage = _stage(dtype="mixed_float16")
    out = stage(_inputs(), training=False)
    assert out["features"].dtype == "float16"
    assert out["attention"].dtype == "float32"
    assert all(o.dtype == "float16" for o in out["head_features"])
    assert np.all(np.isfinite(np.float32(out["features"])))


def test_serialization_round_trip():
    stage = _stage(r_num=1, heads=2, kernel_size=1, key_reading="positional", gate="channel",
                   trunk="2n_r_prev", name="stage_test")
    out = run_serialization_test(stage, _inputs())
    assert out["features"].shape == (B, 2 * S, 2 * S, GF)


def test_bad_r_num():
    with pytest.raises(ValueError, match="r_num=-1"):
        _stage(r_num=-1)


def test_bad_trunk():
    with pytest.raises(ValueError, match=r"trunk='3n_r'.*--sdm_trunk"):
        _stage(trunk="3n_r")
