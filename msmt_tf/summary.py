"""Prints parameter counts per module and network for a preset.

    python -m msmt_tf.summary --flagfile=flags/msmt_cub.flags [--vocab_size=5450]

The `total` line is Table 2's definition: generator + text encoder.
"""

from absl import flags

from msmt_tf.cli import common, entry

common.define_all_flags()
flags.DEFINE_integer("vocab_size", 5450, "Vocabulary size for the text encoder (CUB: 5,450).")
flags.DEFINE_bool("image_encoder", True, "Also build and count the DAMSM image encoder.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from msmt_tf.models import param_count

    cfg = common.configs_from_flags().model
    rows = param_count.count_parameters(cfg, FLAGS.vocab_size, with_image_encoder=FLAGS.image_encoder)
    print(f"preset: {cfg.preset_name}  stages: {cfg.image_sizes}  vocab: {FLAGS.vocab_size:,}")
    print(param_count.format_table(rows))


def run():
    entry.run(main)


if __name__ == "__main__":
    run()
