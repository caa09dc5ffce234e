"""Inception Score (improved-gan protocol) and the skip message without the graph."""

import numpy as np
import pytest

from msmt_tf.evaluation import inception_score as isc


def test_uniform_predictions_score_one():
    p = np.full((20, 1008), 1.0 / 1008)
    assert isc.inception_score(p, splits=10) == pytest.approx((1.0, 0.0))


def test_confident_distinct_classes_score_their_count():
    # 4 one-hot classes equally often in one split -> exp(log 4) = 4
    p = np.eye(4)[np.arange(40) % 4]
    assert isc.inception_score(p, splits=1)[0] == pytest.approx(4.0)
    # 10 splits of 4 images, each split holding 2 classes twice -> 2 per split
    p = np.eye(6)[np.array([0, 0, 1, 1] * 5 + [2, 3, 2, 3] * 5)]
    mean, std = isc.inception_score(p, splits=10)
    assert mean == pytest.approx(2.0) and std == pytest.approx(0.0)


def test_mixed_case_against_formula():
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    # p(y) = mean over images = [0.75, 0.25]
    kl0 = 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25)
    kl1 = np.log(1.0 / 0.75)
    assert isc.inception_score(p, splits=1)[0] == pytest.approx(np.exp((kl0 + kl1) / 2))


def test_probabilities_use_no_bias():
    feats = np.array([[1.0, 0.0], [0.0, 2.0]])
    w = np.array([[np.log(3.0), 0.0], [0.0, 0.0]])
    p = isc.class_probabilities(feats, w)
    np.testing.assert_allclose(p, [[0.75, 0.25], [0.5, 0.5]])
    softmax = {"weights": w, "biases": np.array([100.0, -100.0])}
    mean, _ = isc.inception_score_from_features(feats, softmax, splits=1)
    assert mean == pytest.approx(isc.inception_score(p, splits=1)[0])


def test_skipped_without_graph():
    with pytest.raises(ValueError, match="--inception_graph"):
        isc.inception_score_from_features(np.zeros((10, 2048)), None)
