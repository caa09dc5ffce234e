"""The evaluation's captions and generated images, in memory.

Shared by ``Evaluator.evaluate`` (``python -m msmt_tf.evaluate``, the in-training evaluation)
and the checkpoint source of ``tools/fid.py``, so both score the same images for the same
captions and seed:

* ``split_captions``: image ``i`` uses test (or train) image ``i mod N`` in file order and one
  of its captions drawn uniformly by the seeded NumPy stream ``"captions"``;
  ``cycle_captions``: image ``i`` uses row ``i mod M`` of a caption list (a caption file).
* ``generated_batches``: image ``i`` is caption index ``i`` (sample 0) of the one inference
  path, ``inference.generate_batches``: its noise is ``seed=[seed, i]``
  (``inference.seeded_noise``), so it is the image ``python -m msmt_tf.sample --seed=seed``
  draws for the same caption at position ``i`` and the SavedModel's ``generate_seeded`` row
  ``i``. Quantisation is ``inference.quantize``.
"""

import numpy as np

from msmt_tf import inference

# Independent seeded NumPy streams per purpose, ``np.random.default_rng([seed, stream])``. The
# noise has no stream: it is ``inference.seeded_noise`` (streams 2 and 3 drew z and ca_eps
# until issue 19, 2026-12-05).
STREAMS = {"captions": 1, "negatives": 4, "folds": 5, "kid": 6}


def rng(seed, stream):
    """The seeded NumPy generator of one purpose (``STREAMS``)."""
    return np.random.default_rng([int(seed), int(stream)])


def fit_caption(ids, words_num):
    """The first ``words_num`` ids, zero-padded (the pipeline's evaluation rule)."""
    out = np.zeros((words_num,), np.int32)
    ids = list(ids)[:words_num]
    out[: len(ids)] = ids
    return out


def split_captions(split, num_images, seed, words_num):
    """Captions of a dataset split for ``num_images`` images.

    Returns image indices ``[N]`` (``i mod len(split)``), caption indices ``[N]`` into
    ``split.captions`` (a uniformly drawn caption of that image, stream ``"captions"``) and
    tokens int32 ``[N, words_num]``.
    """
    n, cpi = len(split), split.captions_per_image
    if n == 0:
        raise ValueError(f"the {split.name} split of {split.data_dir} has no images.")
    image_idx = np.arange(num_images) % n
    caption_idx = image_idx * cpi + rng(seed, STREAMS["captions"]).integers(0, cpi, num_images)
    tokens = np.stack([fit_caption(split.captions[c], words_num) for c in caption_idx])
    return image_idx, caption_idx, tokens


def cycle_captions(ids, num_images):
    """Tokens ``[N, L]`` where image ``i`` uses row ``i mod len(ids)`` of ``ids [M, L]``."""
    ids = np.asarray(ids, np.int32)
    return ids[np.arange(num_images) % len(ids)]


def generated_batches(generator, text_encoder, tokens, batch_size, seed):
    """Yields ``(images, tokens, sentence)`` per batch of at most ``batch_size`` images.

    Args:
      generator: the (EMA) generator (``z_dim``, ``condition_dim``; dict inputs -> dict with
        ``images``, a list over stages).
      text_encoder: ``tokens int32 [B, L] -> (words [B, L, D], sentence [B, D])``.
      tokens: int32 ``[N, L]``, one caption per image (0 = padding).
      batch_size: images per forward pass (the images do not depend on it).
      seed: the noise seed: image ``i`` draws ``inference.seeded_noise(seed, i)``.

    Yields float32 images ``[b, S, S, 3]`` in [-1, 1] (final stage), their tokens ``[b, L]``
    and float32 sentence features ``[b, D]``.
    """
    for batch in inference.generate_batches(text_encoder, generator, tokens, seed, batch_size):
        yield batch.final, batch.ids, batch.sentence
