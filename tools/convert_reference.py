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
``python -m msmt_tf.sample --run_dir=...``. ``--preset=NAME`` reads the shipped ``flags/NAME.flags``
(``attngan_cub``, ``dmgan_cub``, ``attngan_coco``, ``dmgan_coco`` for the released models; any other
flag given on the command line wins), as for every entry point (``msmt_tf.cli.flagfiles``).
``--mask_row_quirk`` and ``--damsm_resize=align_corners`` reproduce the behaviours the released
weights were trained with; without them the converted model uses the fixed
mask and half-pixel resizing. ``--image_encoder`` defaults to the ``--text_encoder`` path with
``text_encoder`` replaced by ``image_encoder``, as the references derive it. torch is not needed.
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
flags.DEFINE_string("netG", None, "Released generator netG*.pth / bird_AttnGAN2.pth (G_NET).")
flags.DEFINE_string("captions_pickle", None,
                    "captions.pickle the encoders were trained with (the vocabulary).")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; use flags.")
    from msmt_tf.interop import reference

    required = ("text_encoder", "netG", "captions_pickle", "out")
    missing = [f"--{n}" for n in required if not FLAGS[n].value]
    if missing:
        raise app.UsageError(f"missing {', '.join(missing)}.")
    image_encoder = FLAGS.image_encoder or FLAGS.text_encoder.replace(
        "text_encoder", "image_encoder")
    if image_encoder == FLAGS.text_encoder:
        raise app.UsageError("give --image_encoder (it cannot be derived from --text_encoder).")
    configs = common.configs_from_flags()
    if not configs.model.mask_row_quirk or configs.damsm.damsm_resize != "align_corners":
        logging.warning(
            "Converting with --mask_row_quirk=%s --damsm_resize=%s; the released weights were "
            "trained with --mask_row_quirk --damsm_resize=align_corners.",
            configs.model.mask_row_quirk, configs.damsm.damsm_resize)
    reference.convert_reference(
        configs, FLAGS.out, text_encoder=FLAGS.text_encoder, image_encoder=image_encoder,
        netg=FLAGS.netG, captions_pickle=FLAGS.captions_pickle, log=print)


if __name__ == "__main__":
    entry.run(main)
