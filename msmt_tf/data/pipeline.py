"""The tf.data input pipeline: ``make_dataset(cfg, split, batch_size, training, image_sizes=,
seed=)``.

Every element is a dict (B = batch size, W = ``words_num``, S_k = ``image_sizes[k]``, the
model's stage sizes ``ModelConfig.image_sizes``)::

    images             tuple of K float32 [B, S_k, S_k, 3] in [-1, 1], lowest first
    captions           int32 [B, W], zero-padded (0 = '<end>')
    caption_len        int32 [B]   (min(len, W); the caption's real words)
    class_id           int32 [B]
    key                string [B]
    wrong_captions     int32 [B, W]  the mismatched caption of each row (the D wrong pair,
    wrong_caption_len  int32 [B]     --mismatch_pairing): other_class = the caption of the
                                     nearest later row of a different class (when the batch
                                     has one); next_row = row i + 1's (the references' pairs;
                                     the last row gets row 0's, masked out); when training with
                                     --mismatch_swap=p, with probability p the image's own
                                     caption with one of --mismatch_words swapped
    wrong_mask         float32 [B]   1 where the row has a mismatched pair: all rows, except
                                     the last with next_row (B - 1 pairs) unless swapped

Transforms (AttnGAN ``get_imgs``): CUB box crop, resize of the shorter side to
``int(S * 76 / 64)`` (S = the last stage's size; bilinear with antialiasing), then a random
S x S crop and a random horizontal flip when training (``--random_flip``; never for shapes,
whose captions say left and right), a centre crop otherwise (resize and crop are one
``ScaleAndTranslate`` call computing only the S x S window); smaller stages are a pyramid of
halvings of the crop with ``tf.image.resize(..., antialias=True)``.
Caption: uniform over the image's captions; longer than W keeps a random subset of W words
in their original order (training) or the first W words (evaluation).

Randomness: every example draws its random numbers with stateless ops from one int64 of
``tf.data.Dataset.random``, so with a ``seed`` the batches are identical run to run and do not
depend on the number of parallel calls; without a seed they differ every run.
"""

import logging
import os

import numpy as np
import tensorflow as tf

from msmt_tf.data import bbox as bbox_lib
from msmt_tf.data.dataset import Split, load_split
from msmt_tf.data.errors import DataError

logger = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
TFRECORD_SHUFFLE_BUFFER = 8192
_JPEG_MAGIC = b"\xff\xd8\xff"


def load_size(final_size):
    """AttnGAN's resize target of the shorter side: int(imsize * 76 / 64)."""
    return int(final_size * 76 / 64)


def _crop_window(box, height, width):
    """Clipped AttnGAN crop as [y, x, h, w]; the whole image when there is no valid box."""
    x1 = tf.maximum(box[0], 0)
    y1 = tf.maximum(box[1], 0)
    x2 = tf.minimum(box[2], width)
    y2 = tf.minimum(box[3], height)
    valid = tf.logical_and(box[2] > box[0], tf.logical_and(x2 > x1, y2 > y1))
    return tf.where(valid, tf.stack([y1, x1, y2 - y1, x2 - x1]),
                    tf.stack([0, 0, height, width]))


def decode_and_crop(image_bytes, box):
    """Decodes a JPEG/PNG to uint8 [H, W, 3] and applies the (raw, unclipped) crop box.

    JPEGs are decoded only inside the crop window (``decode_and_crop_jpeg``).
    """
    box = tf.cast(box, tf.int32)

    def jpeg():
        shape = tf.image.extract_jpeg_shape(image_bytes)
        win = _crop_window(box, shape[0], shape[1])
        return tf.image.decode_and_crop_jpeg(image_bytes, win, channels=3)

    def other():
        img = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        shape = tf.shape(img)
        win = _crop_window(box, shape[0], shape[1])
        return tf.slice(img, [win[0], win[1], 0], [win[2], win[3], 3])

    is_jpeg = tf.equal(tf.strings.substr(image_bytes, 0, 3), _JPEG_MAGIC)
    img = tf.cond(is_jpeg, jpeg, other)
    img.set_shape([None, None, 3])
    return img


def _seed(rnd, k):
    return tf.stack([rnd, tf.constant(k, tf.int64)])


def transform_image(image, sizes, training, rnd, flip=True):
    """uint8 [H, W, 3] -> tuple of float32 [S_k, S_k, 3] in [-1, 1] (AttnGAN transforms)."""
    final = sizes[-1]
    target = load_size(final)
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    # torchvision Scale(size): the shorter side becomes `size`, the other int(size * long / short).
    oh = tf.where(w <= h, (target * h) // w, target)
    ow = tf.where(w <= h, target, (target * w) // h)
    if training:
        y = tf.random.stateless_uniform([], _seed(rnd, 2), 0, oh - final + 1, tf.int32)
        x = tf.random.stateless_uniform([], _seed(rnd, 3), 0, ow - final + 1, tf.int32)
    else:
        y = (oh - final + 1) // 2
        x = (ow - final + 1) // 2
    # = crop [y:y+S, x:x+S] of the image resized to (oh, ow), computing only the S x S
    # output pixels: ScaleAndTranslate samples output pixel i at (i + 0.5 + y) / scale - 0.5,
    # exactly where the full resize puts pixel i + y. Bilinear (triangle) kernel, widened to
    # antialias only when shrinking (for enlargements it is the plain bilinear filter).
    scale = tf.cast(tf.stack([oh / h, ow / w]), tf.float32)
    shift = -tf.cast(tf.stack([y, x]), tf.float32)

    def resize_crop(antialias):
        return tf.raw_ops.ScaleAndTranslate(
            images=image[None], size=[final, final], scale=scale, translation=shift,
            kernel_type="triangle", antialias=antialias)[0]

    img = tf.cond(tf.minimum(h, w) > target, lambda: resize_crop(True),
                  lambda: resize_crop(False))
    if training and flip:
        mirror = tf.random.stateless_uniform([], _seed(rnd, 4)) < 0.5
        img = tf.cond(mirror, lambda: tf.reverse(img, axis=[1]), lambda: img)
    # Smaller stages form a pyramid: each is the next larger one shrunk by 2 with the
    # antialiased bilinear (triangle) filter, as PIL's BILINEAR resize; chaining the halvings
    # costs 6.8 instead of 9.2 CPU ms per 256 px example (benchmarks/data_pipeline.py).
    outs = [img]
    for s in reversed(sizes[:-1]):
        outs.insert(0, tf.image.resize(outs[0], [s, s], method="bilinear", antialias=True))
    return tuple(tf.ensure_shape(tf.clip_by_value(o, 0.0, 255.0) / 127.5 - 1.0, [s, s, 3])
                 for o, s in zip(outs, sizes))


def choose_caption(words, lens, words_num, training, rnd):
    """Picks one caption uniformly and fits it to ``words_num`` ids.

    Args:
        words: int32 [sum(lens)], the image's captions concatenated.
        lens: int32 [captions_per_image].
    Returns:
        (int32 [words_num] zero-padded caption, int32 length).
    """
    cpi = tf.shape(lens)[0]
    j = tf.random.stateless_uniform([], _seed(rnd, 0), 0, cpi, tf.int32)
    offsets = tf.cumsum(lens, exclusive=True)
    length = lens[j]
    cap = words[offsets[j]:offsets[j] + length]
    if training:
        def subset():
            r = tf.random.stateless_uniform([length], _seed(rnd, 1))
            idx = tf.sort(tf.math.top_k(r, words_num).indices)
            return tf.gather(cap, idx)

        cap = tf.cond(length > words_num, subset, lambda: cap)
    else:
        cap = cap[:words_num]
    n = tf.minimum(length, words_num)
    cap = tf.pad(cap[:n], [[0, words_num - n]])
    return tf.ensure_shape(cap, [words_num]), n


def wrong_partner(class_ids):
    """For each batch row, the nearest later row (cyclically) of a different class.

    Falls back to the next row when the whole batch has one class (and to itself when B=1).
    """
    b = tf.shape(class_ids)[0]
    shifts = tf.range(1, b + 1)
    idx = (tf.range(b)[:, None] + shifts[None, :]) % b
    differs = tf.not_equal(tf.gather(class_ids, idx), class_ids[:, None])
    first = tf.argmax(tf.cast(differs, tf.int32), axis=1, output_type=tf.int32)
    shift = tf.where(tf.reduce_any(differs, axis=1), first + 1, 1)
    return (tf.range(b) + shift) % b


def next_row_partner(batch_size):
    """The references' pairs: row i with row i + 1 for the first B - 1 rows.

    ``discriminator_loss`` of AttnGAN/DM-GAN ``code/miscc/losses.py`` scores
    ``real_features[:B - 1]`` with ``conditions[1:B]`` (same-class pairs included). Returns
    ``(partner int32 [B], mask float32 [B])``: ``partner = (i + 1) % B`` and mask 1 except at the
    last row (whose partner, row 0, is not a pair of the references).
    """
    rows = tf.range(batch_size)
    return (rows + 1) % batch_size, tf.cast(rows < batch_size - 1, tf.float32)


def mismatch_partner(class_ids, pairing):
    """``(partner int32 [B], mask float32 [B])`` of ``--mismatch_pairing`` (``other_class``:
    ``wrong_partner``, every row a pair; ``next_row``: ``next_row_partner``)."""
    if pairing == "next_row":
        return next_row_partner(tf.shape(class_ids)[0])
    if pairing != "other_class":
        raise ValueError(f"mismatch_partner: unknown pairing {pairing!r}.")
    partner = wrong_partner(class_ids)
    return partner, tf.ones(tf.shape(partner), tf.float32)


def swap_word(caption, word_ids, rnd):
    """The caption with one of its ``word_ids`` words replaced by another of ``word_ids``.

    The position is uniform over the caption's occurrences of those words, the new word uniform
    over the other ``len(word_ids) - 1``. Returns ``(int32 [W] caption, bool: a word was
    swapped)``; a caption without any of the words is returned unchanged with False.
    """
    ids = tf.constant(word_ids, tf.int32)
    k = len(word_ids)
    hits = tf.equal(caption[:, None], ids[None, :])  # [W, k]
    at = tf.reduce_any(hits, axis=1)
    found = tf.reduce_any(at)
    # The position: argmax of uniform scores restricted to the hits.
    scores = tf.where(at, tf.random.stateless_uniform(tf.shape(at), _seed(rnd, 5)), -1.0)
    pos = tf.argmax(scores, output_type=tf.int32)
    old = tf.argmax(tf.cast(hits[pos], tf.int32), output_type=tf.int32)
    offset = tf.random.stateless_uniform([], _seed(rnd, 6), 1, k, tf.int32)
    new = ids[(old + offset) % k]
    swapped = tf.tensor_scatter_nd_update(caption, [[pos]], [new])
    return tf.where(found, swapped, caption), found


def mismatch_word_ids(cfg, vocab):
    """Vocabulary ids of ``cfg.mismatch_word_list`` (empty: no swapping). An explicit list must
    be in the vocabulary; auto keeps the shape names the vocabulary has (two or more)."""
    words = list(dict.fromkeys(cfg.mismatch_word_list))
    if cfg.mismatch_words.strip() == "auto":
        words = [w for w in words if w in vocab.wordtoix]
        words = words if len(words) >= 2 else []
    missing = [w for w in words if w not in vocab.wordtoix]
    if missing:
        raise DataError(f"--mismatch_words: {', '.join(missing)} not in the vocabulary of "
                        f"{cfg.resolved_data_dir}: give words its captions use, or "
                        "--mismatch_swap=0.")
    return [vocab.wordtoix[w] for w in words]


def _make_add_wrong(swap_probability, pairing):
    def add_wrong(batch):
        partner, mask = mismatch_partner(batch["class_id"], pairing)
        wrong = tf.gather(batch["captions"], partner)
        wrong_len = tf.gather(batch["caption_len"], partner)
        if swap_probability > 0:
            use = batch.pop("swap_ok") & (batch.pop("swap_draw") < swap_probability)
            wrong = tf.where(use[:, None], batch.pop("swapped_captions"), wrong)
            wrong_len = tf.where(use, batch["caption_len"], wrong_len)
            mask = tf.where(use, 1.0, mask)  # a swapped caption is a pair of its own
        batch["wrong_captions"] = wrong
        batch["wrong_caption_len"] = wrong_len
        batch["wrong_mask"] = mask
        return batch

    return add_wrong


def _flat_captions(split):
    lens = np.array([len(c) for c in split.captions], np.int32)
    words = np.fromiter((i for c in split.captions for i in c), np.int32, count=int(lens.sum()))
    cpi = split.captions_per_image
    per_image = lens.reshape(-1, cpi).sum(axis=1)
    img_off = np.concatenate([[0], np.cumsum(per_image)]).astype(np.int64)
    return words, lens, img_off


def _file_source(split):
    """A function index -> raw example (image bytes + metadata) over in-memory tables."""
    n = len(split)
    cpi = split.captions_per_image
    paths = tf.constant(split.image_paths)
    boxes = tf.constant(split.bboxes if split.bboxes is not None
                        else np.tile(np.array(bbox_lib.NO_BOX, np.int32), (n, 1)))
    class_ids = tf.constant(split.class_ids.astype(np.int32))
    keys = tf.constant(split.keys)
    words, lens, img_off = _flat_captions(split)
    words, lens, img_off = tf.constant(words), tf.constant(lens), tf.constant(img_off)

    def source(i):
        return {
            "image_bytes": tf.io.read_file(paths[i]),
            "box": boxes[i],
            "class_id": class_ids[i],
            "key": keys[i],
            "words": words[img_off[i]:img_off[i + 1]],
            "lens": lens[i * cpi:(i + 1) * cpi],
        }

    return source


def _decode(ex):
    out = {k: v for k, v in ex.items() if k not in ("image_bytes", "box")}
    out["image"] = decode_and_crop(ex["image_bytes"], ex["box"])
    return out


def _make_augment(cfg, sizes, training, swap_ids=()):
    flip = cfg.random_flip and cfg.dataset != "shapes"

    def augment(ex, rnd):
        cap, n = choose_caption(ex["words"], ex["lens"], cfg.words_num, training, rnd)
        out = {
            "images": transform_image(ex["image"], sizes, training, rnd, flip),
            "captions": cap,
            "caption_len": n,
            "class_id": ex["class_id"],
            "key": ex["key"],
        }
        if swap_ids:  # consumed by _make_add_wrong
            out["swapped_captions"], out["swap_ok"] = swap_word(cap, swap_ids, rnd)
            out["swap_draw"] = tf.random.stateless_uniform([], _seed(rnd, 7))
        return out

    return augment


def _tfrecord_examples(cfg, split, training, seed):
    from msmt_tf.data import tfrecord  # local import keeps the file reader optional

    meta = tfrecord.read_meta(cfg.tfrecord_dir, split)
    if meta["captions_per_image"] != cfg.captions_per_image:
        raise DataError(
            f"{tfrecord.meta_path(cfg.tfrecord_dir, split)}: written with captions_per_image="
            f"{meta['captions_per_image']}, but --captions_per_image={cfg.captions_per_image}.")
    files = [os.path.join(cfg.tfrecord_dir, f) for f in meta["shards"]]
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        cycle = min(4, len(files))
    else:
        cycle = 1  # keep the written order: evaluation batches equal those of the file path
    if cycle > 1:
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=cycle, num_parallel_calls=cycle,
                           deterministic=True if seed is not None else None)
    else:
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=1)
    return ds.map(tfrecord.parse_example, num_parallel_calls=AUTOTUNE,
                  deterministic=True if seed is not None else None), meta["num_examples"]


def make_dataset(cfg, split, batch_size, training, *, image_sizes, seed=None):
    """Returns a batched ``tf.data.Dataset`` of one epoch of ``split`` (see module docstring).

    Args:
        cfg: DataConfig.
        split: "train", "test", or a ``Split`` from ``load_split``.
        batch_size: batch size (Python int).
        training: random crop/flip/word subset, shuffling and ``drop_remainder=True``.
        image_sizes: the stage image sizes, lowest first (``ModelConfig.image_sizes``).
        seed: int for a deterministic pipeline, or None (nondeterministic; a training run
            passes ``TrainConfig.pipeline_seed``).
    """
    if batch_size < 1:
        raise DataError(f"batch_size={batch_size}: must be >= 1.")
    det = True if seed is not None else None
    parallel = AUTOTUNE if cfg.num_parallel_calls == -1 else cfg.num_parallel_calls
    swap_ids = []
    if training and cfg.mismatch_swap > 0:
        vocab = split.vocab if isinstance(split, Split) else load_split(cfg, split, False).vocab
        swap_ids = mismatch_word_ids(cfg, vocab)
        if not swap_ids:
            logger.warning("--mismatch_swap=%g: no --mismatch_words in the vocabulary of "
                           "--dataset=%s (give some): every mismatched caption is another "
                           "image's.", cfg.mismatch_swap, cfg.dataset)
    augment = _make_augment(cfg, tuple(image_sizes), training, swap_ids)

    if cfg.tfrecord_dir:
        name = split.name if isinstance(split, Split) else split
        ds, n = _tfrecord_examples(cfg, name, training, seed)
        ds = ds.map(_decode, num_parallel_calls=parallel, deterministic=det)
        if cfg.cache:
            ds = ds.cache()
        if training:
            ds = ds.shuffle(min(n, TFRECORD_SHUFFLE_BUFFER), seed=seed,
                            reshuffle_each_iteration=True)
    else:
        if not isinstance(split, Split):
            split = load_split(cfg, split)
        n = len(split)
        source = _file_source(split)
        ds = tf.data.Dataset.range(n)
        if cfg.cache:
            ds = ds.map(lambda i: _decode(source(i)), num_parallel_calls=parallel,
                        deterministic=det).cache()
        if training:
            # Shuffling n indices or n cached examples with the same seed gives the same order.
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        if not cfg.cache:
            ds = ds.map(lambda i: _decode(source(i)), num_parallel_calls=parallel,
                        deterministic=det)
    if n == 0:
        raise DataError(f"the {getattr(split, 'name', split)} split of {cfg.resolved_data_dir} is "
                        "empty (for a custom folder, raise --test_fraction and prepare it again).")
    if training and n < batch_size:
        raise DataError(f"{n} examples but batch_size={batch_size} with drop_remainder: lower the "
                        "batch size or add data.")
    rnd = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, rnd))
    ds = ds.map(augment, num_parallel_calls=parallel, deterministic=det)
    ds = ds.batch(batch_size, drop_remainder=training)
    ds = ds.map(_make_add_wrong(cfg.mismatch_swap if swap_ids else 0.0, cfg.mismatch_pairing))
    options = tf.data.Options()
    options.deterministic = seed is not None
    ds = ds.with_options(options)
    return ds.prefetch(AUTOTUNE)
