"""benchmarks/caption_lengths.py: the synthetic batches' caption lengths (--caption_lengths)."""

import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import caption_lengths as cl  # noqa: E402
from msmt_tf.data.config import DataConfig  # noqa: E402
from msmt_tf.data.vocabulary import tokenize  # noqa: E402


def test_cub_probs_is_the_binned_lognormal():
    # Untruncated, the binned log-normal keeps the stated mean and standard deviation.
    p = cl.cub_probs(200)
    n = np.arange(1, 201)
    mean = (p * n).sum()
    assert p.sum() == pytest.approx(1.0)
    assert mean == pytest.approx(cl.CUB_MEAN, abs=0.01)
    assert math.sqrt((p * n * n).sum() - mean**2) == pytest.approx(cl.CUB_STD, abs=0.05)
    # Truncated at words_num = 18: the long tail is folded into 18.
    p18 = cl.cub_probs(18)
    np.testing.assert_allclose(p18[:-1], p[:17], atol=1e-12)
    assert p18[-1] == pytest.approx(p[17:].sum())


def test_draw_kinds():
    d = DataConfig(words_num=18)
    rng = np.random.default_rng(0)
    # random: exactly the historical draw (same generator calls).
    np.testing.assert_array_equal(cl.draw("random", d, 7, np.random.default_rng(3)),
                                  np.random.default_rng(3).integers(4, 19, size=7))
    assert (cl.draw("full", d, 5, rng) == 18).all()
    cub = cl.draw("cub", d, 4000, rng)
    assert cub.min() >= 1 and cub.max() == 18
    assert np.mean(cub) == pytest.approx((cl.cub_probs(18) * np.arange(1, 19)).sum(), abs=0.2)
    with pytest.raises(ValueError, match="--caption_lengths"):
        cl.draw("coco", d, 2, rng)


def test_shapes_pool_tokenises_the_generated_captions():
    from msmt_tf.data import shapes

    d = DataConfig(words_num=6)
    pool = cl.shapes_pool(d)
    assert len(pool) == cl.SHAPES_IMAGES * d.captions_per_image
    _, captions, _ = shapes.make_example(
        d.shapes_seed, "train", 0, 16, captions_per_image=d.captions_per_image,
        max_objects=d.shapes_max_objects, textured=d.shapes_textured, layout=d.shapes_layout,
        shapes=d.shapes_name_list, colours=d.shapes_colour_list)
    expected = [min(len(tokenize(c)), 6) for c in captions]
    np.testing.assert_array_equal(pool[: len(captions)], expected)
    assert pool.max() == 6 and pool.min() >= 2
    assert set(cl.draw("shapes", d, 50, np.random.default_rng(0))) <= set(pool)
