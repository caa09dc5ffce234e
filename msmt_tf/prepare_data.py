"""Prepares a dataset and prints what it prepared.

    python -m msmt_tf.prepare_data                                   # synthetic shapes (default)
    python -m msmt_tf.prepare_data --dataset=cub --data_dir=data/birds
    python -m msmt_tf.prepare_data --dataset=folder --data_dir=DIR [--vocab_from=captions.pickle]
    python -m msmt_tf.prepare_data --dataset=coco --data_dir=data/coco --tfrecord

shapes: generates the data on first use. cub/coco: validates the AttnGAN layout and builds
``captions.pickle`` from ``text/`` if it is missing. folder: converts the folder into the
AttnGAN layout in ``DIR/prepared``. ``--tfrecord`` also writes sharded TFRecords (to
``--tfrecord_dir``, default ``<data_dir>/tfrecords``), read back by passing ``--tfrecord_dir``.
"""

import os

from absl import flags

from msmt_tf import configlib
from msmt_tf.cli import entry, flagutil
from msmt_tf.data import attngan_format, dataset, folder
from msmt_tf.data.config import DataConfig
from msmt_tf.data.errors import DataError
from msmt_tf.data.vocabulary import Vocabulary

flagutil.define_flags(DataConfig)
flags.DEFINE_bool("tfrecord", False, "Also write sharded TFRecords of both splits.")
flags.DEFINE_string("vocab_from", None,
                    "folder only: reuse the vocabulary of this captions.pickle (e.g. the one a "
                    "released text encoder was trained with) instead of building one.")
flags.DEFINE_integer("tfrecord_shard_size", 1000, "Examples per TFRecord shard.", lower_bound=1)

FLAGS = flags.FLAGS


def prepare(cfg, tfrecord=False, vocab_from=None, shard_size=1000):
    """Library entry: prepares the data of ``cfg``; returns a summary dict."""
    if cfg.dataset == "folder":
        vocab = load_vocab(vocab_from) if vocab_from else None
        folder.prepare_folder(cfg, vocab=vocab)
    elif vocab_from:
        raise configlib.ConfigError("--vocab_from is only used with --dataset=folder.")
    data_dir = dataset.ensure_dataset(cfg)
    summary = {"dataset": cfg.dataset, "data_dir": data_dir}
    splits = {}
    for s in attngan_format.SPLITS:
        splits[s] = dataset.load_split(cfg, s)
        summary[f"num_{s}"] = len(splits[s])
    vocab = splits["train"].vocab
    summary.update(vocab_size=len(vocab), vocab_sha1=vocab.sha1(),
                   num_classes=int(len(set(splits["train"].class_ids.tolist()))),
                   captions_per_image=cfg.captions_per_image)
    if tfrecord:
        from msmt_tf.data import tfrecord as tfrecord_lib

        out = cfg.tfrecord_dir or os.path.join(data_dir, "tfrecords")
        for s in attngan_format.SPLITS:
            tfrecord_lib.write_split(splits[s], out, shard_size, dataset=cfg.dataset)
        summary["tfrecord_dir"] = out
    return summary


def load_vocab(path):
    """The vocabulary of a captions.pickle (a file, or a directory holding one)."""
    if os.path.isdir(path):
        path = os.path.join(path, attngan_format.CAPTIONS_PICKLE)
    data = attngan_format.read_pickle(path, "vocabulary pickle", "(--vocab_from)")
    try:
        return Vocabulary(data[2], data[3])
    except (IndexError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: not an AttnGAN captions.pickle ({e}) (--vocab_from).") from None


def main(argv):
    del argv
    cfg = flagutil.from_flags(DataConfig)
    summary = prepare(cfg, FLAGS.tfrecord, FLAGS.vocab_from, FLAGS.tfrecord_shard_size)
    for k, v in summary.items():
        print(f"{k}: {v}")


def run():
    """Console-script entry point (``msmt-prepare-data``)."""
    entry.run(main)


if __name__ == "__main__":
    run()
