"""Prints parameter counts per module and network for a preset.

    python -m msmt_tf.summary --flagfile=flags/msmt_cub.flags [--vocab_size=5450]

The `total` line is Table 2's definition: generator + text encoder.
"""

from absl import flags

from msmt_tf.cli import common, entry

common.define_all_flags()
flags.DEFINE_integer("vocab_size", 5450, "Vocabulary size for the text encoder (CUB: 5,450).",
                     lower_bound=1)
flags.DEFINE_bool("image_encoder", True, "Also build and count the DAMSM image encoder.")
FLAGS = flags.FLAGS


def summary_text(cfg, vocab_size, with_image_encoder=True):
    """What ``main`` prints for the model config ``cfg``: a header line and the count table."""
    from msmt_tf.models import param_count

    rows = param_count.count_parameters(cfg, vocab_size, with_image_encoder=with_image_encoder)
    return (f"preset: {cfg.preset_name}  stages: {cfg.image_sizes}  vocab: {vocab_size:,}\n"
            + param_count.format_table(rows))


def main(argv):
    entry.no_arguments(argv)
    cfg = common.configs_from_flags().model
    print(summary_text(cfg, FLAGS.vocab_size, FLAGS.image_encoder))


def run():
    entry.run(main)


if __name__ == "__main__":
    run()
