"""``DAMSMConfig``: DAMSM encoder pretraining and where the GAN finds the encoders.

Defaults are the references' DAMSM schedule (taoxugit/AttnGAN code/cfg/DAMSM/bird.yml and
code/pretrain_DAMSM.py (commit 0d000e6), identical in MinfengZhu/DM-GAN (commit d515995)):
batch 48, Adam lr 0.002 with betas (0.5, 0.999), lr x0.98 after every epoch while it stays
above lr/10, gradient-norm clipping 0.25 on the text encoder, gamma 4/5/10 (shared with
``TrainConfig``).
"""

import dataclasses
import os
from typing import Optional

from msmt_tf import configlib
from msmt_tf.configlib import option


@dataclasses.dataclass(frozen=True)
class DAMSMConfig(configlib.ConfigBase):
    """DAMSM pretraining schedule and encoder location."""

    damsm_dir: Optional[str] = option(
        None, "Directory of the pretrained DAMSM encoders (written by msmt_tf.pretrain_damsm, read "
        "by msmt_tf.train). Default: runs/<dataset>_damsm.")
    damsm_batch_size: int = option(48, "DAMSM pretraining batch size (negatives per batch).", lower=2)
    damsm_epochs: int = option(600, "DAMSM pretraining epochs (if --damsm_max_steps=0).", lower=1)
    damsm_max_steps: int = option(150, "Stop DAMSM pretraining after this many steps (0: epochs).",
                                  lower=0)
    damsm_lr: float = option(0.002, "Initial DAMSM learning rate.", lower=0.0)
    damsm_lr_decay: float = option(0.98, "DAMSM learning-rate factor applied after every epoch.",
                                   lower=0.0, upper=1.0)
    damsm_min_lr_ratio: float = option(
        0.1, "The decay stops once the learning rate would fall below this fraction of "
        "--damsm_lr (the references: lr > ENCODER_LR / 10).", lower=0.0, upper=1.0)
    damsm_clip: float = option(0.25, "Gradient-norm clipping of the text encoder (RNN_GRAD_CLIP).",
                               lower=0.0)
    damsm_image_variant: str = option(
        "tf2015", "Inception trunk of the DAMSM image encoder: tf2015 (the FID graph's weights, "
        "offline) or torchvision (the released AttnGAN/DM-GAN encoders' architecture).",
        choices=("tf2015", "torchvision"))
    damsm_resize: str = option(
        "bilinear", "Resize of the DAMSM image input: bilinear (half-pixel), align_corners "
        "(DM-GAN's released encoders) or legacy (TF1).",
        choices=("bilinear", "align_corners", "legacy"))
    damsm_eval_every_epochs: int = option(1, "Validate on the test split every N epochs.", lower=1)
    damsm_max_eval_batches: int = option(
        0, "Validate on at most this many test batches (0: the whole test split).", lower=0)

    def resolved_damsm_dir(self, dataset):
        """``damsm_dir``, or ``runs/<dataset>_damsm`` relative to the working directory."""
        return self.damsm_dir or os.path.join("runs", f"{dataset}_damsm")
