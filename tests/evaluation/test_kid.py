"""KID: unbiased MMD^2 with the cubic polynomial kernel."""

import numpy as np
import pytest

from msmt_tf.evaluation import kid


def _naive_mmd2(x, y):
    m, d = x.shape
    k = lambda a, b: (np.dot(a, b) / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_hand_computed():
    # d = 1, x = {0, 1}, y = {0, 2}: xx = 1, yy = 1, xy = (1 + 1 + 1 + 27) / 4 -> 1 + 1 - 15
    assert kid.mmd2_unbiased(np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]])) == pytest.approx(-13.0)


def test_against_naive_loops():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(1.0, 1.0, size=(7, 5))
    assert kid.mmd2_unbiased(x, y) == pytest.approx(_naive_mmd2(x, y), rel=1e-10)


def test_subsets_seed_and_small_sets():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 4)), rng.normal(0.5, 1.0, size=(20, 4))
    m1 = kid.kernel_inception_distance(a, b, num_subsets=5, subset_size=10, seed=3)
    m2 = kid.kernel_inception_distance(a, b, num_subsets=5, subset_size=10, seed=3)
    m3 = kid.kernel_inception_distance(a, b, num_subsets=5, subset_size=10, seed=4)
    assert m1 == m2 and m1 != m3
    # subset_size larger than the sets: m = min(N_a, N_b) = 20, so with all of b each time
    rng2 = np.random.default_rng(7)
    expected = []
    for _ in range(3):
        xs = a[rng2.choice(30, 20, replace=False)]
        ys = b[rng2.choice(20, 20, replace=False)]
        expected.append(_naive_mmd2(xs, ys))
    mean, std = kid.kernel_inception_distance(a, b, num_subsets=3, subset_size=1000, seed=7)
    assert mean == pytest.approx(np.mean(expected), rel=1e-10)
    assert std == pytest.approx(np.std(expected), rel=1e-8)


def test_same_distribution_near_zero_and_shift_positive():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same, _ = kid.kernel_inception_distance(a, b, num_subsets=10, subset_size=200)
    shifted, _ = kid.kernel_inception_distance(a, b + 1.0, num_subsets=10, subset_size=200)
    assert abs(same) < 0.05 * shifted


def test_bad_input():
    with pytest.raises(ValueError, match="differ"):
        kid.kernel_inception_distance(np.zeros((3, 2)), np.zeros((3, 4)))
