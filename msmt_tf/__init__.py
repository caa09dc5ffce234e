"""msmt_tf: MSMT-GAN, DM-GAN and AttnGAN in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"
