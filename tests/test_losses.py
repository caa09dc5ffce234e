"""Tests for msmt_tf.losses: hand-computed values and an independent loop-based NumPy DAMSM."""

import math

import numpy as np
import pytest
import tensorflow as tf

from msmt_tf import losses

LN2, LN3 = math.log(2.0), math.log(3.0)


def _logit(p):
    return np.log(np.asarray(p, "float64") / (1.0 - np.asarray(p, "float64"))).astype("float32")


# ----------------------------------------------------------------------------- BCE / D / G

# Probabilities of a 2-image batch (B - 1 = 1 wrong pair) and the per-term values by hand.
P = dict(
    real_uncond=[0.8, 0.5],
    real_cond=[0.9, 0.6],
    fake_uncond=[0.2, 0.5],
    fake_cond=[0.1, 0.4],
    wrong_cond=[0.25],
)
REAL = (-math.log(0.8) - math.log(0.5)) / 2
COND_REAL = (-math.log(0.9) - math.log(0.6)) / 2
FAKE = (-math.log(0.8) - math.log(0.5)) / 2
COND_FAKE = (-math.log(0.9) - math.log(0.6)) / 2
COND_WRONG = -math.log(0.75)
D_LOSS = (REAL + COND_REAL) / 2 + (FAKE + COND_FAKE + COND_WRONG) / 3


@pytest.mark.parametrize("from_logits", [True, False])
def test_discriminator_loss_hand_values(from_logits):
    scores = {k: (_logit(v) if from_logits else np.float32(v)) for k, v in P.items()}
    out = losses.discriminator_loss(**scores, from_logits=from_logits)
    np.testing.assert_allclose(out["real"], REAL, rtol=1e-5)
    np.testing.assert_allclose(out["cond_real"], COND_REAL, rtol=1e-5)
    np.testing.assert_allclose(out["fake"], FAKE, rtol=1e-5)
    np.testing.assert_allclose(out["cond_fake"], COND_FAKE, rtol=1e-5)
    np.testing.assert_allclose(out["cond_wrong"], COND_WRONG, rtol=1e-5)
    np.testing.assert_allclose(out["loss"], D_LOSS, rtol=1e-5)
    assert abs(D_LOSS - 0.7344262) < 1e-6  # the same number written out
    # 0.5 is not "real" (threshold strictly above 0.5 / logit 0).
    np.testing.assert_allclose(out["accuracy_real"], 0.5)
    np.testing.assert_allclose(out["accuracy_fake"], 1.0)
    np.testing.assert_allclose(out["cond_accuracy_real"], 1.0)
    np.testing.assert_allclose(out["cond_accuracy_fake"], 1.0)
    np.testing.assert_allclose(out["cond_accuracy_wrong"], 1.0)
    assert out["loss"].dtype == tf.float32


def test_discriminator_loss_without_uncond_head():
    out = losses.discriminator_loss(
        None, _logit(P["real_cond"]), None, _logit(P["fake_cond"]), _logit(P["wrong_cond"])
    )
    np.testing.assert_allclose(out["loss"], COND_REAL + (COND_FAKE + COND_WRONG) / 2, rtol=1e-5)
    assert "real" not in out


def test_discriminator_loss_global_batch_sums_to_global_mean():
    rng = np.random.default_rng(0)
    replicas = [
        {k: rng.normal(size=(3 if k != "wrong_cond" else 2,)).astype("float32") for k in P}
        for _ in range(2)
    ]
    summed = sum(
        losses.discriminator_loss(**r, global_batch_size=6)["loss"].numpy() for r in replicas
    )

    def mean_bce(key, label):
        x = np.concatenate([r[key] for r in replicas]).astype("float64")
        return np.mean(np.log1p(np.exp(-x)) if label else np.log1p(np.exp(x)))

    expected = (mean_bce("real_uncond", 1) + mean_bce("real_cond", 1)) / 2 + (
        mean_bce("fake_uncond", 0) + mean_bce("fake_cond", 0) + mean_bce("wrong_cond", 0)
    ) / 3
    np.testing.assert_allclose(summed, expected, rtol=1e-5)


# Fakes with other probabilities than the reals (so a swapped weight cannot pass by symmetry).
P_OFF = dict(P, fake_uncond=[0.3, 0.6], fake_cond=[0.2, 0.7])
FAKE_OFF = (-math.log(0.7) - math.log(0.4)) / 2
COND_FAKE_OFF = (-math.log(0.8) - math.log(0.3)) / 2


def test_discriminator_loss_as_printed_has_no_wrong_pair_term():
    """--d_mismatch_term=off: eq 23, (real + fake)/2 + (cond_real + cond_fake)/2; the wrong pairs
    are reported but not in the loss (any wrong score gives the same loss)."""
    scores = {k: _logit(v) for k, v in P_OFF.items()}
    expected = (REAL + FAKE_OFF) / 2 + (COND_REAL + COND_FAKE_OFF) / 2
    assert abs(expected - 1.0581397) < 1e-6  # written out
    out = losses.discriminator_loss(**scores, mismatch_term=False)
    np.testing.assert_allclose(out["loss"], expected, rtol=1e-6)
    np.testing.assert_allclose(out["cond_wrong"], COND_WRONG, rtol=1e-5)  # logged only
    other = losses.discriminator_loss(**dict(scores, wrong_cond=_logit([0.99])),
                                      mismatch_term=False)
    np.testing.assert_allclose(other["loss"], expected, rtol=1e-6)
    no_wrong = losses.discriminator_loss(**dict(scores, wrong_cond=None), mismatch_term=False)
    np.testing.assert_allclose(no_wrong["loss"], expected, rtol=1e-6)
    assert "cond_wrong" not in no_wrong
    # The references' form on the same scores: (real + cond_real)/2 + (fake + cond_fake + wrong)/3.
    on = losses.discriminator_loss(**scores)
    np.testing.assert_allclose(
        on["loss"], (REAL + COND_REAL) / 2 + (FAKE_OFF + COND_FAKE_OFF + COND_WRONG) / 3, rtol=1e-6)
    # Without an unconditional head: eq 23's conditional half / the references' cond form.
    cond_only = {k: v for k, v in scores.items() if "uncond" not in k}
    off = losses.discriminator_loss(None, fake_uncond=None, mismatch_term=False, **cond_only)
    np.testing.assert_allclose(off["loss"], (COND_REAL + COND_FAKE_OFF) / 2, rtol=1e-6)
    on = losses.discriminator_loss(None, fake_uncond=None, **cond_only)
    np.testing.assert_allclose(on["loss"], COND_REAL + (COND_FAKE_OFF + COND_WRONG) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="needs wrong_cond"):
        losses.discriminator_loss(**dict(scores, wrong_cond=None))


def test_discriminator_loss_masked_wrong_pairs():
    """The pipeline's form: one wrong score per row and ``wrong_mask``. next_row (mask 1, 0)
    gives the references' B - 1 = 1 pair exactly; other_class (mask 1, 1) averages B = 2 pairs."""
    scores = {k: _logit(v) for k, v in P.items()}
    # Row 1's pair is masked out: its score (any value) must not count.
    next_row = losses.discriminator_loss(**dict(scores, wrong_cond=_logit([0.25, 0.99])),
                                         wrong_mask=np.array([1.0, 0.0], "float32"))
    np.testing.assert_allclose(next_row["cond_wrong"], COND_WRONG, rtol=1e-5)
    np.testing.assert_allclose(next_row["loss"], D_LOSS, rtol=1e-5)
    np.testing.assert_allclose(next_row["cond_accuracy_wrong"], 1.0)
    both = losses.discriminator_loss(**dict(scores, wrong_cond=_logit([0.25, 0.6])),
                                     wrong_mask=np.array([1.0, 1.0], "float32"))
    cond_wrong = (-math.log(0.75) - math.log(0.4)) / 2
    np.testing.assert_allclose(both["cond_wrong"], cond_wrong, rtol=1e-5)
    np.testing.assert_allclose(both["loss"], (REAL + COND_REAL) / 2
                               + (FAKE + COND_FAKE + cond_wrong) / 3, rtol=1e-5)
    np.testing.assert_allclose(both["cond_accuracy_wrong"], 0.5)  # p = 0.6 is scored real
    # An all-ones mask is the unmasked mean over the B pairs.
    unmasked = losses.discriminator_loss(**dict(scores, wrong_cond=_logit([0.25, 0.6])))
    np.testing.assert_allclose(unmasked["loss"], both["loss"], rtol=1e-6)


def test_masked_wrong_pairs_across_replicas_sum_to_the_global_mean():
    """next_row over a global batch of 6 on two replicas: only the last replica's last row has
    no pair (5 pairs); with the all-reduced count the replica losses sum to the 5-pair mean."""
    rng = np.random.default_rng(3)
    wrong = rng.normal(size=(2, 3)).astype("float32")
    masks = np.array([[1, 1, 1], [1, 1, 0]], "float32")
    summed = sum(
        losses.discriminator_loss(None, wrong[r], None, wrong[r], wrong[r], global_batch_size=6,
                                  wrong_mask=masks[r], global_wrong_count=5.0)["cond_wrong"]
        for r in range(2))
    pairs = wrong.reshape(-1)[:5].astype("float64")
    np.testing.assert_allclose(summed, np.mean(np.log1p(np.exp(pairs))), rtol=1e-5)
    with pytest.raises(ValueError, match="global_wrong_count"):
        losses.discriminator_loss(None, wrong[0], None, wrong[0], wrong[0], global_batch_size=6,
                                  wrong_mask=masks[0])


def test_masked_average_loss_hand_values():
    x = np.array([1.0, 2.0, 6.0], "float32")
    mask = np.array([1.0, 0.0, 1.0], "float32")
    np.testing.assert_allclose(losses.masked_average_loss(x, mask), 3.5)
    np.testing.assert_allclose(losses.masked_average_loss(x, mask, global_count=4), 7.0 / 4.0)
    np.testing.assert_allclose(losses.masked_average_loss(x, np.zeros(3, "float32")), 0.0)
    np.testing.assert_allclose(losses.masked_average_loss(x, mask.astype(bool)), 3.5)


def test_generator_adversarial_loss_hand_values():
    uncond = np.array([0.0, LN3], "float32")  # BCE(., 1) = ln 2, ln(4/3)
    cond = np.array([-LN3], "float32")  # BCE(., 1) = ln 4
    expected = (LN2 + math.log(4 / 3)) / 2 + math.log(4.0)
    out = losses.generator_adversarial_loss(uncond, cond)
    np.testing.assert_allclose(out["loss"], expected, rtol=1e-6)
    np.testing.assert_allclose(out["uncond"], (LN2 + math.log(4 / 3)) / 2, rtol=1e-6)
    # --g_adv_factor=0.5 (eq 22 as printed): exactly half; the terms before the factor unchanged.
    half = losses.generator_adversarial_loss(uncond, cond, factor=0.5)
    np.testing.assert_allclose(half["loss"], expected / 2, rtol=1e-6)
    np.testing.assert_allclose(half["cond"], out["cond"], rtol=1e-7)
    np.testing.assert_allclose(half["uncond"], out["uncond"], rtol=1e-7)
    np.testing.assert_allclose(
        losses.generator_adversarial_loss(None, cond, factor=0.5)["loss"], math.log(4.0) / 2,
        rtol=1e-6)
    probs = losses.generator_adversarial_loss(
        np.array([0.5, 0.75], "float32"), np.array([0.25], "float32"), from_logits=False
    )
    np.testing.assert_allclose(probs["loss"], expected, rtol=1e-6)


def test_matching_loss_hand_values():
    real = np.array([0.0, LN3], "float32")  # BCE(., 1) = ln 2, ln(4/3)
    wrong = np.array([-LN3, LN3], "float32")  # BCE(., 0) = ln(4/3), ln 4
    out = losses.matching_loss(real, wrong)
    expected = (LN2 + math.log(4 / 3)) / 2 + (math.log(4 / 3) + math.log(4.0)) / 2
    np.testing.assert_allclose(out["loss"], expected, rtol=1e-6)
    # logit 0 is not > 0: real accuracy 1/2; wrong accuracy 1/2 -> 1/2
    np.testing.assert_allclose(out["accuracy"], 0.5, rtol=1e-6)
    scaled = losses.matching_loss(real, wrong, global_batch_size=4)  # a replica of half the batch
    np.testing.assert_allclose(scaled["loss"], expected / 2, rtol=1e-6)
    # next_row's mask: only the first wrong pair counts.
    masked = losses.matching_loss(real, wrong, wrong_mask=np.array([1.0, 0.0], "float32"))
    np.testing.assert_allclose(masked["loss"], (LN2 + math.log(4 / 3)) / 2 + math.log(4 / 3),
                               rtol=1e-6)
    np.testing.assert_allclose(masked["accuracy"], (0.5 + 1.0) / 2, rtol=1e-6)


def test_bce_on_probabilities_clamps_log_like_pytorch():
    # BCELoss clamps log(p) at -100: p = 0 with label 1 costs exactly 100.
    out = losses.binary_cross_entropy_per_example(np.array([0.0, 1.0], "float32"), 1.0, False)
    np.testing.assert_allclose(out, [100.0, 0.0])
    # From logits there is no clamp: logit -200 with label 1 costs 200.
    out = losses.binary_cross_entropy_per_example(np.array([-200.0], "float32"), 1.0, True)
    np.testing.assert_allclose(out, [200.0])


def test_average_loss_modes():
    x = np.array([1.0, 2.0, 6.0], "float32")
    np.testing.assert_allclose(losses.average_loss(x), 3.0)
    np.testing.assert_allclose(losses.average_loss(x, global_batch_size=6), 1.5)
    # 3 terms from a local batch of 4 (B - 1 pairs), global batch 8: sum / (8 * 3 / 4).
    np.testing.assert_allclose(losses.average_loss(x, 8, local_batch_size=4), 9.0 / 6.0)


# ----------------------------------------------------------------------------- KL


def test_kl_loss_hand_value():
    mu = np.array([[1.0, 0.0], [0.0, 0.0]], "float32")
    logvar = np.array([[0.0, LN2], [0.0, 0.0]], "float32")
    # Elements of (1 + logvar - mu^2 - exp(logvar)): -1, ln2 - 1, 0, 0.
    expected = -0.5 * (-1.0 + LN2 - 1.0) / 4
    np.testing.assert_allclose(losses.kl_loss(mu, logvar), expected, rtol=1e-6)
    halved = losses.kl_loss(mu, logvar, global_batch_size=4)  # local batch 2 of 4
    np.testing.assert_allclose(halved, expected / 2, rtol=1e-6)
    assert abs(expected - 0.1633566) < 1e-7  # (2 - ln 2) / 8


# ----------------------------------------------------------------------------- redundancy


def _const(values, size=2):
    return np.tile(np.asarray(values, "float32")[:, None, None, :], (1, size, size, 1))


def test_redundancy_loss_hand_values():
    a = _const([[1.0, 0.0]])
    b = _const([[0.0, 1.0]])
    np.testing.assert_allclose(losses.redundancy_loss([a, b]), 0.0, atol=1e-7)
    np.testing.assert_allclose(losses.redundancy_loss([a, a, 3.0 * a]), 3.0, rtol=1e-6)
    np.testing.assert_allclose(losses.redundancy_loss([a, -a]), -1.0, rtol=1e-6)
    np.testing.assert_allclose(losses.redundancy_loss([a]), 0.0)
    # f(t) is the pixel mean: pixels (1,0),(3,0) -> (2,0); pixels (0,1),(1,1) -> (0.5,1).
    h1 = np.zeros((1, 1, 2, 2), "float32")
    h1[0, 0, 0] = [1, 0]
    h1[0, 0, 1] = [3, 0]
    h2 = np.zeros((1, 1, 2, 2), "float32")
    h2[0, 0, 0] = [0, 1]
    h2[0, 0, 1] = [1, 1]
    # cos((2, 0), (0.5, 1)) = 1 / (2 * sqrt(1.25)) = 1 / sqrt(5).
    np.testing.assert_allclose(losses.redundancy_loss([h1, h2]), 1 / math.sqrt(5.0), rtol=1e-6)
    # Batch reduction: mean of the per-image sums (orthogonal image: 0, equal image: 1).
    x = np.concatenate([a, a])
    y = np.concatenate([b, a])
    np.testing.assert_allclose(losses.redundancy_loss([x, y]), 0.5, rtol=1e-6)


# ----------------------------------------------------------------------------- DAMSM


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _np_ce_mean(scores):
    """nn.CrossEntropyLoss with labels arange(B), -inf entries allowed."""
    out = []
    for i in range(scores.shape[0]):
        row = scores[i]
        finite = row[np.isfinite(row)]
        m = finite.max()
        out.append(-(row[i] - m - np.log(np.sum(np.exp(finite - m)))))
    return np.mean(out)


def _np_mask(scores, class_ids):
    scores = scores.copy()
    if class_ids is None:
        return scores
    for i in range(len(class_ids)):
        for j in range(len(class_ids)):
            if i != j and class_ids[i] == class_ids[j]:
                scores[i, j] = -np.inf
    return scores


def _np_words_loss(region, words, lengths, class_ids, g1=4.0, g2=5.0, g3=10.0):
    """Loop per caption and per image, as taoxugit/AttnGAN code/miscc/losses.py:words_loss
    (commit 0d000e6) computes it."""
    region = region.astype("float64")
    words = words.astype("float64")
    batch, height, width, dim = region.shape
    context = region.reshape(batch, height * width, dim)
    sims = np.zeros((batch, batch))
    maps = np.zeros((batch, height * width, words.shape[1]))
    for i in range(batch):
        word = words[i, : lengths[i]]  # [n, D]
        for b in range(batch):
            s = context[b] @ word.T  # [R, n]
            attn = _softmax(s, axis=1)  # over words, per region
            attn = _softmax(g1 * attn, axis=0)  # over regions, per word
            weighted = attn.T @ context[b]  # [n, D]
            cos = np.array(
                [
                    word[j] @ weighted[j]
                    / max(np.linalg.norm(word[j]) * np.linalg.norm(weighted[j]), 1e-8)
                    for j in range(len(word))
                ]
            )
            sims[b, i] = np.log(np.sum(np.exp(g2 * cos)))
            if b == i:
                maps[i, :, : lengths[i]] = attn
    sims = _np_mask(sims * g3, class_ids)
    return _np_ce_mean(sims), _np_ce_mean(sims.T), maps.reshape(batch, height, width, -1)


def _np_sent_loss(code, sent, class_ids, g3=10.0):
    code = code.astype("float64")
    sent = sent.astype("float64")
    batch = code.shape[0]
    scores = np.zeros((batch, batch))
    for i in range(batch):
        for j in range(batch):
            norm = max(np.linalg.norm(code[i]) * np.linalg.norm(sent[j]), 1e-8)
            scores[i, j] = g3 * code[i] @ sent[j] / norm
    scores = _np_mask(scores, class_ids)
    return _np_ce_mean(scores), _np_ce_mean(scores.T)


LENGTHS = np.array([5, 3, 2, 1], "int32")
CLASS_IDS = np.array([7, 3, 7, 1], "int32")  # images 0 and 2 share a class


def _damsm_inputs(seed=0, length=5):
    rng = np.random.default_rng(seed)
    region = rng.normal(size=(4, 3, 3, 6)).astype("float32")
    words = rng.normal(size=(4, length, 6)).astype("float32")
    mask = np.arange(length)[None, :] < LENGTHS[:, None]
    words = words * mask[..., None]
    return region, words, mask


@pytest.mark.parametrize("class_ids", [CLASS_IDS, None])
def test_damsm_word_loss_matches_loop_numpy(class_ids):
    region, words, mask = _damsm_inputs()
    loss0, loss1, maps = losses.damsm_word_loss(region, words, mask, class_ids)
    e0, e1, emaps = _np_words_loss(region, words, LENGTHS, class_ids)
    np.testing.assert_allclose(loss0, e0, rtol=1e-5)
    np.testing.assert_allclose(loss1, e1, rtol=1e-5)
    np.testing.assert_allclose(maps, emaps, atol=1e-6)
    assert maps.shape == (4, 3, 3, 5)


def test_damsm_class_mask_changes_the_word_loss():
    region, words, mask = _damsm_inputs()
    masked = losses.damsm_word_loss(region, words, mask, CLASS_IDS)[0]
    unmasked = losses.damsm_word_loss(region, words, mask, None)[0]
    distinct = losses.damsm_word_loss(region, words, mask, np.arange(4))[0]
    assert abs(float(masked) - float(unmasked)) > 1e-4
    np.testing.assert_allclose(distinct, unmasked, rtol=1e-6)


def test_damsm_word_loss_padding_invariance_and_lengths():
    region, words, mask = _damsm_inputs()
    base = losses.damsm_word_loss(region, words, mask, CLASS_IDS)
    # Three more padded positions holding garbage (padded words must contribute nothing).
    rng = np.random.default_rng(5)
    padded = np.concatenate([words, rng.normal(size=(4, 3, 6)).astype("float32")], axis=1)
    padded_mask = np.concatenate([mask, np.zeros((4, 3), bool)], axis=1)
    garbage = padded.copy()
    garbage[~padded_mask] = rng.normal(size=(int((~padded_mask).sum()), 6))
    longer = losses.damsm_word_loss(region, garbage, padded_mask, CLASS_IDS)
    from_lengths = losses.damsm_word_loss(region, garbage, LENGTHS, CLASS_IDS)
    for other in (longer, from_lengths):
        np.testing.assert_allclose(other[0], base[0], rtol=1e-6)
        np.testing.assert_allclose(other[1], base[1], rtol=1e-6)
        np.testing.assert_allclose(other[2][..., :5], base[2], atol=1e-6)
        np.testing.assert_allclose(other[2][..., 5:], 0.0)


@pytest.mark.parametrize("class_ids", [CLASS_IDS, None])
def test_damsm_sentence_loss_matches_loop_numpy(class_ids):
    rng = np.random.default_rng(1)
    code = rng.normal(size=(4, 6)).astype("float32")
    sent = rng.normal(size=(4, 6)).astype("float32")
    loss0, loss1 = losses.damsm_sentence_loss(code, sent, class_ids)
    e0, e1 = _np_sent_loss(code, sent, class_ids)
    np.testing.assert_allclose(loss0, e0, rtol=1e-5)
    np.testing.assert_allclose(loss1, e1, rtol=1e-5)
    assert abs(e0 - e1) > 1e-3  # the two directions differ, so a swap would fail


def test_damsm_losses_float32_under_float16_inputs_and_gradients():
    region, words, mask = _damsm_inputs()
    region16 = tf.constant(region, tf.float16)
    words16 = tf.Variable(words.astype("float16"))
    with tf.GradientTape() as tape:
        loss0, loss1, _ = losses.damsm_word_loss(region16, words16, mask, CLASS_IDS)
        total = loss0 + loss1
    assert total.dtype == tf.float32
    grad = tape.gradient(total, words16)
    assert np.all(np.isfinite(grad.numpy()))
    # Gradients reach only the real words.
    assert np.all(grad.numpy()[~mask] == 0)
    assert np.abs(grad.numpy()[mask]).sum() > 0
