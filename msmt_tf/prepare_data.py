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
from msmt_tf.models.config import ModelConfig
from msmt_tf.training.config import TrainConfig

FLAGS = flags.FLAGS


def define_config_flags(flag_values=FLAGS):
    """The config flags of this entry point: ``DataConfig``'s and those of other configs that the
    data flagfiles (``flags/cub.flags``, ...) set: ``--seed`` draws a custom folder's split,
    ``--base_size``/``--stages``/``--deterministic`` are accepted and unused here."""
    flagutil.define_flags(DataConfig, flag_values)
    flagutil.define_flags(ModelConfig, flag_values, group="model", fields=("base_size", "stages"))
    flagutil.define_flags(TrainConfig, flag_values, group="train", fields=("seed", "deterministic"))


define_config_flags()
flags.DEFINE_bool("tfrecord", False, "Also write sharded TFRecords of both splits.")
flags.DEFINE_string("vocab_from", None,
                    "folder only: reuse the vocabulary of this captions.pickle (e.g. the one a "
                    "released text encoder was trained with) instead of building one.")
flags.DEFINE_integer("tfrecord_shard_size", 1000, "Examples per TFRecord shard.", lower_bound=1)


def prepare(cfg, tfrecord=False, vocab_from=None, shard_size=1000, seed=0):
    """Library entry: prepares the data of ``cfg``; returns a summary dict. ``seed`` (``--seed``)
    draws the train/test split of a custom folder."""
    if cfg.dataset == "folder":
        vocab = attngan_format.load_vocabulary(vocab_from, "--vocab_from") if vocab_from else None
        folder.prepare_folder(cfg, seed, vocab=vocab)
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


def main(argv):
    entry.no_arguments(argv)
    cfg = flagutil.from_flags(DataConfig)
    seed = TrainConfig(seed=FLAGS.seed).seed  # checked by the config that owns it
    summary = prepare(cfg, FLAGS.tfrecord, FLAGS.vocab_from, FLAGS.tfrecord_shard_size, seed=seed)
    for k, v in summary.items():
        print(f"{k}: {v}")


def run():
    """Console-script entry point (``msmt-prepare-data``)."""
    entry.run(main)


if __name__ == "__main__":
    run()
