"""R-precision on hand-made embeddings where the answer is known."""

import numpy as np
import pytest

from msmt_tf.evaluation import r_precision


def _setup(n=400, dim=16, classes=20, seed=0):
    rng = np.random.default_rng(seed)
    sent = rng.normal(size=(n, dim))
    class_ids = np.arange(n) % classes
    neg_idx = r_precision.sample_negatives(class_ids, class_ids, 99, seed=1)
    return rng, sent, class_ids, neg_idx


def test_negatives_are_other_classes_and_deterministic():
    _, _, class_ids, neg_idx = _setup()
    assert neg_idx.shape == (400, 99)
    assert np.all(class_ids[neg_idx] != class_ids[:, None])
    again = r_precision.sample_negatives(class_ids, class_ids, 99, seed=1)
    np.testing.assert_array_equal(neg_idx, again)
    other = r_precision.sample_negatives(class_ids, class_ids, 99, seed=2)
    assert np.any(other != neg_idx)


def test_perfect_encoder_scores_100():
    _, sent, _, neg_idx = _setup()
    hits = r_precision.r_precision_hits(sent * 3.0, sent, sent[neg_idx])
    mean, std = r_precision.fold_statistics(hits, folds=10)
    assert mean == 100.0 and std == 0.0


def test_random_encoder_scores_about_one_percent():
    rng, sent, _, neg_idx = _setup(n=5000, dim=32, classes=50)
    images = rng.normal(size=sent.shape)  # unrelated to the captions
    hits = r_precision.r_precision_hits(images, sent, sent[neg_idx])
    mean, _ = r_precision.fold_statistics(hits)
    assert 0.4 < mean < 2.0  # chance is 1 in 100


def test_hits_against_explicit_ranking():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(50, 8))
    true = img + rng.normal(scale=1.5, size=img.shape)
    neg = rng.normal(size=(50, 99, 8))
    hits = r_precision.r_precision_hits(img, true, neg)
    for i in range(50):
        cands = np.concatenate([true[i:i + 1], neg[i]])
        cos = cands @ img[i] / (np.linalg.norm(cands, axis=1) * np.linalg.norm(img[i]))
        assert hits[i] == float(np.argmax(cos) == 0)
    assert 0 < hits.sum() < 50  # the case is informative


def test_folds_use_every_item():
    hits = np.zeros(30)
    hits[:3] = 1  # 10% hit rate
    mean, _ = r_precision.fold_statistics(hits, folds=10, seed=0)
    assert mean == pytest.approx(10.0)  # DM-GAN's 2-of-3 slices would not average to exactly 10


def test_too_few_other_class_candidates():
    with pytest.raises(ValueError, match="other classes"):
        r_precision.sample_negatives([0, 0], [0, 0, 1], 99)


def test_negative_shortfall_lists_the_classes_without_enough_other_class_captions():
    # candidates: 3 captions of class 0, 2 of class 1, 1 of class 5
    candidates = [0, 0, 0, 1, 1, 5]
    # class 0 has 3 others, class 1 has 4, class 5 has 5, class 9 (no caption of its own) 6
    assert r_precision.negative_shortfall([0, 1, 5, 9], candidates, 4) == {0: 3}
    assert r_precision.negative_shortfall([0, 1, 5, 9], candidates, 6) == {0: 3, 1: 4, 5: 5}
    assert r_precision.negative_shortfall([1, 1], candidates, 4) == {}
    # a test split of one class: no negative at all
    assert r_precision.negative_shortfall([17] * 3, [17] * 30, 99) == {17: 0}
