"""Caption lengths of the benchmarks' synthetic batches (``--caption_lengths``).

The cost of MTWIG depends on the caption lengths: a caption of n words has
``max(n - ks + 1, 1)`` n-gram tails out of ``words_num - ks + 1`` (paper eq. 2), and only those
are decoded. ``draw(kind, data_config, batch, rng)`` returns ``batch`` lengths in
``[1, words_num]``:

* ``random``: uniform over ``4..words_num`` (the benchmarks' historical batches).
* ``cub``: an approximation of the CUB-200 caption lengths (the captions of Reed et al.,
  "Learning Deep Representations of Fine-Grained Visual Descriptions", CVPR 2016, ten per
  image, collected with at least 10 words each; about 15-16 ``\\w+`` tokens on average): a
  log-normal with mean ``CUB_MEAN`` and standard deviation ``CUB_STD`` tokens, rounded and
  clipped to ``[1, words_num]`` (a longer caption keeps ``words_num`` words, as the data
  pipeline). With ``words_num = 18`` about 29% of the captions are full and the mean is
  about 14.4 tokens (``cub_probs``).
* ``shapes``: the lengths of the embedded shapes dataset as configured (``--shapes_*``;
  the quickstart's one-object captions by default, ``flags/shapes.flags`` for the full set):
  ``SHAPES_IMAGES`` images are drawn with ``msmt_tf.data.shapes.make_example``, their
  captions tokenised as the vocabulary does, and the lengths sampled from that pool.
* ``full``: every caption ``words_num`` words (every tail valid: the cost of the padded batch).
"""

import math

import numpy as np

KINDS = ("random", "cub", "shapes", "full")
CUB_MEAN = 15.5
CUB_STD = 5.0
SHAPES_IMAGES = 40


def cub_probs(words_num):
    """``P(length = n)`` for ``n = 1..words_num`` of the ``cub`` approximation (numpy, sums
    to 1): the log-normal's mass of ``[n - 0.5, n + 0.5)``, the tails folded into 1 and
    ``words_num``."""
    sigma = math.sqrt(math.log1p((CUB_STD / CUB_MEAN) ** 2))
    mu = math.log(CUB_MEAN) - sigma**2 / 2

    def cdf(x):
        return 0.5 * math.erfc(-(math.log(x) - mu) / (sigma * math.sqrt(2)))

    edges = [0.0] + [n + 0.5 for n in range(1, words_num)] + [math.inf]
    cdfs = [0.0] + [cdf(e) for e in edges[1:-1]] + [1.0]
    return np.diff(cdfs)


def shapes_pool(data_config):
    """Token counts (clipped to ``words_num``) of the captions of ``SHAPES_IMAGES`` shapes
    images generated with ``data_config``'s ``--shapes_*`` options."""
    from msmt_tf.data import shapes
    from msmt_tf.data.vocabulary import tokenize

    d = data_config
    options = dict(
        captions_per_image=d.captions_per_image, max_objects=d.shapes_max_objects,
        textured=d.shapes_textured, layout=d.shapes_layout, shapes=d.shapes_name_list,
        colours=d.shapes_colour_list, binding=d.shapes_binding)
    lengths = []
    for i in range(SHAPES_IMAGES):
        _, captions, _ = shapes.make_example(d.shapes_seed, "train", i, 16, **options)
        lengths += [len(tokenize(c)) for c in captions]
    return np.clip(np.asarray(lengths), 1, d.words_num)


def draw(kind, data_config, batch, rng):
    """``batch`` int64 caption lengths of ``kind`` (see the module docstring)."""
    words_num = data_config.words_num
    if kind == "random":
        return rng.integers(min(4, words_num), words_num + 1, size=batch)
    if kind == "cub":
        return rng.choice(np.arange(1, words_num + 1), size=batch, p=cub_probs(words_num))
    if kind == "shapes":
        return rng.choice(shapes_pool(data_config), size=batch)
    if kind == "full":
        return np.full(batch, words_num, dtype=np.int64)
    raise ValueError(f"--caption_lengths={kind!r} must be one of {list(KINDS)}.")
