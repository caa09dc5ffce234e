"""Kernel Inception Distance (Bińkowski et al. 2018) from the same pool_3 features as FID.

KID is the unbiased estimate of the squared MMD with the cubic polynomial kernel
``k(x, y) = (x . y / d + 1)^3`` (d = 2048):

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
              - 2 sum_{i, j} k(x_i, y_j) / m^2

averaged over ``num_subsets`` random subsets of ``m = min(subset_size, N_x, N_y)`` samples
drawn without replacement from each set (100 subsets of 1000, as TF-GAN / clean-fid /
StyleGAN2-ADA). Returns the mean and the standard deviation over subsets. Deterministic for a
given ``seed``. Unlike FID it is unbiased in N, so small sample counts are meaningful.
"""

import numpy as np


def polynomial_kernel(x, y):
    """``(x y^T / d + 1)^3`` for ``[n, d]`` and ``[m, d]`` float64 arrays."""
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3


def mmd2_unbiased(x, y):
    """Unbiased squared MMD between two equally sized samples ``[m, d]`` (m >= 2)."""
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise ValueError(f"mmd2_unbiased: need two samples of equal size >= 2, got {x.shape}, {y.shape}.")
    kxx = polynomial_kernel(x, x)
    kyy = polynomial_kernel(y, y)
    kxy = polynomial_kernel(x, y)
    same = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(same - 2.0 * kxy.sum() / (m * m))


def subset_size_for(requested, num_a, num_b):
    """Samples per KID subset: ``min(requested, N_a, N_b)`` (at least 2 are needed).

    A smaller subset than requested keeps the estimate unbiased (only its spread grows), so
    the evaluator shrinks it on small splits and records the size used."""
    return int(min(requested, num_a, num_b))


def kernel_inception_distance(features_a, features_b, num_subsets=100, subset_size=1000, seed=0):
    """KID between two feature sets ``[N_a, d]``, ``[N_b, d]`` -> (mean, std) over subsets."""
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"kernel_inception_distance: feature shapes {a.shape} and {b.shape} differ.")
    m = subset_size_for(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError("kernel_inception_distance: each set needs at least 2 samples.")
    if num_subsets < 1:
        raise ValueError(f"kernel_inception_distance: num_subsets={num_subsets} must be >= 1.")
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for s in range(num_subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        values[s] = mmd2_unbiased(x, y)
    return float(values.mean()), float(values.std())
