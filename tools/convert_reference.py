#!/usr/bin/env python3
"""Converts a released AttnGAN / DM-GAN model (PyTorch .pth files) into an msmt_tf run directory.

  python tools/convert_reference.py --preset=dmgan_cub \\
      --netG=models/bird_DMGAN.pth \\
      --text_encoder=DAMSMencoders/bird/text_encoder200.pth \\
      --image_encoder=DAMSMencoders/bird/image_encoder200.pth \\
      --captions_pickle=data/birds/captions.pickle \\
      --mask_row_quirk --damsm_resize=align_corners \\
      --out=runs/cub_dmgan_released

Then ``python -m msmt_tf.evaluate --run_dir=runs/cub_dmgan_released`` or
``python -m msmt_tf.sample --run_dir=...``.

Without ``--netG`` the two DAMSM encoders alone become an encoder directory, what
``python -m msmt_tf.pretrain_damsm`` would write, to train and evaluate with (the paper's
protocol: ``L_DAMSM`` and R-precision with AttnGAN's released encoders)::

  python tools/convert_reference.py --preset=msmt_cub \\
      --text_encoder=DAMSMencoders/bird/text_encoder200.pth \\
      --image_encoder=DAMSMencoders/bird/image_encoder200.pth \\
      --captions_pickle=data/birds/captions.pickle \\
      --damsm_resize=align_corners --out=runs/cub_damsm_attngan
  python -m msmt_tf.train --preset=msmt_cub --damsm_dir=runs/cub_damsm_attngan

Its ``damsm.json`` records the torchvision trunk, the resize and the 299 px input, so loading it
rebuilds the released ``CNN_ENCODER``.

``--preset=NAME`` reads the shipped ``flags/NAME.flags`` (``attngan_cub``, ``dmgan_cub``,
``attngan_coco``, ``dmgan_coco`` for the released models, any paper preset for the encoders
alone; any other flag given on the command line wins), as for every entry point
(``msmt_tf.cli.flagfiles``). ``--mask_row_quirk`` and ``--damsm_resize=align_corners``
reproduce the behaviours the released weights were trained with (the encoders'
``nn.Upsample(size=(299, 299), mode='bilinear')`` under the PyTorch of 2018, which aligned
corners); without them the converted model uses the fixed mask and half-pixel resizing, with a
warning. ``--image_encoder`` defaults to the ``--text_encoder`` path with ``text_encoder``
replaced by ``image_encoder``, as the references derive it. torch is not needed.
"""

import os
import sys

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from msmt_tf.cli import common, entry  # noqa: E402

common.define_all_flags()
flags.DEFINE_string("text_encoder", None, "Released text_encoder*.pth (RNN_ENCODER).")
flags.DEFINE_string("image_encoder", None,
                    "Released image_encoder*.pth (CNN_ENCODER); default: --text_encoder with "
                    "'text_encoder' replaced by 'image_encoder'.")
flags.DEFINE_string("netG", None, "Released generator netG*.pth / bird_AttnGAN2.pth (G_NET); "
                    "without it the encoders alone are converted (--out: a --damsm_dir).")
flags.DEFINE_string("captions_pickle", None,
                    "captions.pickle the encoders were trained with (the vocabulary).")
FLAGS = flags.FLAGS
REFERENCE_IMAGE_SIZE = 299  # CNN_ENCODER resizes its input to 299 x 299


def main(argv):
    entry.no_arguments(argv, "--netG, --text_encoder, --out, --help")
    from msmt_tf.interop import reference

    required = ("text_encoder", "captions_pickle", "out")
    missing = [f"--{n}" for n in required if not FLAGS[n].value]
    if missing:
        raise app.UsageError(f"missing {', '.join(missing)}.")
    image_encoder = FLAGS.image_encoder or FLAGS.text_encoder.replace(
        "text_encoder", "image_encoder")
    if image_encoder == FLAGS.text_encoder:
        raise app.UsageError("give --image_encoder (it cannot be derived from --text_encoder).")
    configs = common.configs_from_flags()
    _warn_unlike_reference(configs, with_generator=bool(FLAGS.netG))
    if not FLAGS.netG:
        reference.convert_encoders(
            configs, FLAGS.out, text_encoder=FLAGS.text_encoder, image_encoder=image_encoder,
            captions_pickle=FLAGS.captions_pickle, log=print)
        return
    reference.convert_reference(
        configs, FLAGS.out, text_encoder=FLAGS.text_encoder, image_encoder=image_encoder,
        netg=FLAGS.netG, captions_pickle=FLAGS.captions_pickle, log=print)


def _warn_unlike_reference(configs, with_generator):
    """One warning naming the settings that differ from what the released weights used."""
    wanted = [("damsm_resize", configs.damsm.damsm_resize, "align_corners"),
              ("damsm_image_size", configs.model.damsm_image_size, REFERENCE_IMAGE_SIZE)]
    if with_generator:
        wanted.insert(0, ("mask_row_quirk", configs.model.mask_row_quirk, True))
    off = [(name, have, want) for name, have, want in wanted if have != want]
    if off:
        logging.warning(
            "Converting with %s; the released weights were trained with %s.",
            " ".join(f"--{n}={h}" for n, h, _ in off), " ".join(f"--{n}={w}" for n, _, w in off))


if __name__ == "__main__":
    entry.run(main)
