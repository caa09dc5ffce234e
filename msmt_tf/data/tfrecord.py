"""Sharded TFRecords of a split, read back by ``make_dataset`` with the same outputs.

Files in ``tfrecord_dir``: ``<split>-00000-of-000NN.tfrecord`` and ``<split>.json``
(num_examples, captions_per_image, shards, vocab_sha1, dataset). One ``tf.train.Example``
per image: ``key`` (bytes), ``image`` (the original encoded file bytes), ``box`` (int64 [4],
the raw CUB crop box or -1s), ``class_id`` (int64), ``caption_ids`` (int64, the image's
captions concatenated) and ``caption_lens`` (int64 [captions_per_image]).
"""

import json
import logging
import os

import tensorflow as tf

from msmt_tf.data import bbox as bbox_lib
from msmt_tf.data.errors import DataError
from msmt_tf.io import atomic

logger = logging.getLogger(__name__)

EXAMPLES_PER_SHARD = 1000


def meta_path(tfrecord_dir, split):
    return os.path.join(tfrecord_dir, f"{split}.json")


def read_meta(tfrecord_dir, split):
    path = meta_path(tfrecord_dir, split)
    if not os.path.isfile(path):
        raise DataError(
            f"{path}: TFRecord index not found (--tfrecord_dir). Write the records with: "
            "python -m msmt_tf.prepare_data --dataset=<kind> --data_dir=<dir> --tfrecord "
            f"--tfrecord_dir={tfrecord_dir}")
    with open(path) as f:
        return json.load(f)


def _int64(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def write_split(split, tfrecord_dir, examples_per_shard=EXAMPLES_PER_SHARD, dataset=""):
    """Writes ``split`` (a ``Split``) as sharded TFRecords; returns the meta dict."""
    os.makedirs(tfrecord_dir, exist_ok=True)
    n = len(split)
    cpi = split.captions_per_image
    num_shards = max(1, -(-n // examples_per_shard))
    shards = [f"{split.name}-{s:05d}-of-{num_shards:05d}.tfrecord" for s in range(num_shards)]
    boxes = split.bboxes
    for s, name in enumerate(shards):
        path = os.path.join(tfrecord_dir, name)
        with atomic.replacing(path) as tmp, tf.io.TFRecordWriter(tmp) as w:
            for i in range(s * examples_per_shard, min(n, (s + 1) * examples_per_shard)):
                with open(split.image_paths[i], "rb") as f:
                    image = f.read()
                caps = split.captions[i * cpi:(i + 1) * cpi]
                feats = {
                    "key": _bytes(split.keys[i].encode("utf-8")),
                    "image": _bytes(image),
                    "box": _int64(boxes[i] if boxes is not None else bbox_lib.NO_BOX),
                    "class_id": _int64([split.class_ids[i]]),
                    "caption_ids": _int64([t for c in caps for t in c]),
                    "caption_lens": _int64([len(c) for c in caps]),
                }
                w.write(tf.train.Example(features=tf.train.Features(feature=feats))
                        .SerializeToString())
    meta = {"split": split.name, "num_examples": n, "captions_per_image": cpi, "shards": shards,
            "vocab_sha1": split.vocab.sha1(), "vocab_size": len(split.vocab), "dataset": dataset}
    with atomic.replacing(meta_path(tfrecord_dir, split.name)) as tmp, open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
    logger.info("%s: wrote %d %s examples in %d shards.", tfrecord_dir, n, split.name, num_shards)
    return meta


_FEATURES = {
    "key": tf.io.FixedLenFeature([], tf.string),
    "image": tf.io.FixedLenFeature([], tf.string),
    "box": tf.io.FixedLenFeature([4], tf.int64),
    "class_id": tf.io.FixedLenFeature([], tf.int64),
    "caption_ids": tf.io.VarLenFeature(tf.int64),
    "caption_lens": tf.io.VarLenFeature(tf.int64),
}


def parse_example(serialized):
    """Serialized Example -> the raw example dict used by ``pipeline`` (same as the file path)."""
    f = tf.io.parse_single_example(serialized, _FEATURES)
    return {
        "image_bytes": f["image"],
        "box": tf.cast(f["box"], tf.int32),
        "class_id": tf.cast(f["class_id"], tf.int32),
        "key": f["key"],
        "words": tf.cast(tf.sparse.to_dense(f["caption_ids"]), tf.int32),
        "lens": tf.cast(tf.sparse.to_dense(f["caption_lens"]), tf.int32),
    }


