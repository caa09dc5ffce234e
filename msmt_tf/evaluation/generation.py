"""Generated images for the metrics: captions -> EMA generator -> uint8, in memory.

The one generation path of the evaluation, shared by ``Evaluator.evaluate`` (``python -m
msmt_tf.evaluate``, the in-training evaluation) and the checkpoint source of ``tools/fid.py``,
so both produce the same images for the same captions and seed:

* ``split_captions``: image ``i`` uses test (or train) image ``i mod N`` in file order and one
  of its captions drawn uniformly by a seeded generator; ``cycle_captions``: row ``i`` of a
  caption list used for image ``i`` cycles over the list (a caption file).
* ``generated_batches``: the text encoder gives word and sentence features; ``z ~ N(0, 1)``
  and the conditioning-augmentation noise ``ca_eps ~ N(0, 1)`` come from seeded NumPy
  streams drawn batch after batch (image ``i`` gets row ``i`` of each stream whatever the
  batch size); the generator runs with ``training=False``; the final stage is returned.
* ``quantize``: ``[-1, 1]`` -> uint8 exactly as the PNG files would hold them (``truncate`` =
  DM-GAN's ``uint8((x + 1) * 127.5)``), so FID in memory equals FID of the saved PNGs.
"""

import numpy as np

# Independent seeded streams per purpose, ``np.random.default_rng([seed, stream])``.
STREAMS = {"captions": 1, "noise": 2, "ca_eps": 3, "negatives": 4, "folds": 5, "kid": 6}
QUANTIZE_MODES = ("truncate", "round")


def rng(seed, stream):
    """The seeded NumPy generator of one purpose (``STREAMS``)."""
    return np.random.default_rng([int(seed), int(stream)])


def quantize(images, mode="truncate"):
    """Float images in [-1, 1] -> uint8.

    ``truncate``: ``uint8((x + 1) * 127.5)`` after clipping to [0, 255] (DM-GAN's PNG saving,
    which truncates toward zero; the clip only guards against values outside [-1, 1]).
    ``round``: ``round((x + 1) * 127.5)`` clipped to [0, 255].
    """
    x = (np.asarray(images, np.float32) + 1.0) * 127.5
    if mode == "round":
        x = np.rint(x)
    elif mode != "truncate":
        raise ValueError(f"quantize: mode={mode!r} is not 'truncate' or 'round'.")
    return np.clip(x, 0.0, 255.0).astype(np.uint8)


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


def generated_batches(generator, text_encoder, tokens, batch_size, seed, z_dim=None,
                      condition_dim=None):
    """Yields ``(images, tokens, sentence)`` per batch of at most ``batch_size`` images.

    Args:
      generator: the (EMA) ``Generator``: dict inputs -> dict with ``images`` (list over
        stages).
      text_encoder: ``tokens int32 [B, L] -> (words [B, L, D], sentence [B, D])``.
      tokens: int32 ``[N, L]``, one caption per image (0 = padding).
      batch_size: images per generator call.
      seed: seed of the noise streams (``"noise"``, ``"ca_eps"``).
      z_dim, condition_dim: default the generator's ``z_dim`` / ``condition_dim``.

    Yields float32 images ``[b, S, S, 3]`` in [-1, 1] (final stage), their tokens ``[b, L]``
    and float32 sentence features ``[b, D]``.
    """
    import tensorflow as tf

    tokens = np.asarray(tokens, np.int32)
    z_dim = int(z_dim if z_dim is not None else generator.z_dim)
    c_dim = int(condition_dim if condition_dim is not None else generator.condition_dim)
    noise_rng, eps_rng = rng(seed, STREAMS["noise"]), rng(seed, STREAMS["ca_eps"])

    @tf.function(reduce_retracing=True)
    def generate(inputs):
        return generator(inputs, training=False)["images"][-1]

    for start in range(0, len(tokens), batch_size):
        tok = tokens[start : start + batch_size]
        b = len(tok)
        words, sentence = text_encoder(tok, training=False)
        sentence = np.asarray(sentence, np.float32)
        inputs = {
            "noise": noise_rng.standard_normal((b, z_dim)).astype(np.float32),
            "sentence": sentence,
            "words": np.asarray(words, np.float32),
            "mask": tok != 0,
            "ca_eps": eps_rng.standard_normal((b, c_dim)).astype(np.float32),
        }
        yield np.asarray(generate(inputs), np.float32), tok, sentence


def generated_uint8(generator, text_encoder, tokens, batch_size, seed, quantize_mode="truncate",
                    **kwargs):
    """``generated_batches`` quantised: yields uint8 ``[b, S, S, 3]`` batches (FID input)."""
    for images, _, _ in generated_batches(generator, text_encoder, tokens, batch_size, seed,
                                          **kwargs):
        yield quantize(images, quantize_mode)
