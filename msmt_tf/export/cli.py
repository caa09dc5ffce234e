"""Exports a trained run as a TensorFlow SavedModel (captions in, uint8 images out).

Usage:
  python -m msmt_tf.export --run_dir=runs/shapes_msmt --out=exported/shapes_msmt
  python -m msmt_tf.export --checkpoint=runs/x/best/best-5000 --out=DIR --overwrite

Signatures ``generate(captions, noise)``, ``generate_seeded(captions, seed)``,
``generate_float(captions, noise, ca_eps)`` and ``tokenize(captions)``; the model loads with
``tf.saved_model.load`` in a process that has only TensorFlow. See
``msmt_tf.export.saved_model``. Only the flags of ``ExportConfig`` exist here.
"""

from absl import flags

from msmt_tf.cli import entry, flagutil
from msmt_tf.inference_config import ExportConfig

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    flagutil.define_flags(ExportConfig, flag_values)


def main(argv, flag_values=FLAGS):
    entry.no_arguments(argv, "--run_dir, --out")
    cfg = flagutil.from_flags(ExportConfig, flag_values)  # a bad flag fails before TensorFlow
    from msmt_tf.export import saved_model

    info = saved_model.export_run(cfg)
    print(f"Wrote the SavedModel of {info['checkpoint']} ({info['preset']}, "
          f"{info['image_size']} px, {info['vocab_size']} words) to {cfg.out}; signatures: "
          f"{', '.join(info['signatures'])}")


def run():
    define_flags()
    entry.run(main)


if __name__ == "__main__":
    run()
