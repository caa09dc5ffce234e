"""Residual block of the references' generators (``ResBlock``)."""

import keras

from msmt_tf.layers import batch_norm as bn
from msmt_tf.layers.glu import GLU


@keras.saving.register_keras_serializable(package="msmt_tf")
class ResBlock(keras.layers.Layer):
    """``x + BN(conv3x3(GLU(BN(conv3x3(x)))))``, no activation after the sum.

    conv3x3 (no bias) C -> 2C -> BN -> GLU -> conv3x3 (no bias) C -> C -> BN, plus the identity
    (taoxugit/AttnGAN code/model.py:ResBlock (commit 0d000e6), same in MinfengZhu/DM-GAN). The
    "residual blocks" of the refinement stages (§3.3).

    Args:
        channels: C, the input and output width.

    Call arguments:
        inputs: ``[B, H, W, C]``.
        training: BN mode.
        sample_mask: optional bool ``[B]`` restricting the BN batch statistics to those rows.

    Returns:
        ``[B, H, W, C]``.
    """

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"ResBlock: channels must be a positive int, got {channels!r}.")
        self.channels = channels
        conv = dict(
            kernel_size=3,
            padding="same",
            use_bias=False,
            kernel_initializer=bn.KERNEL_INITIALIZER,
            dtype=self.dtype_policy,
        )
        self.conv1 = keras.layers.Conv2D(2 * channels, name="conv1", **conv)
        self.bn1 = bn.batch_norm("bn1", dtype=self.dtype_policy)
        self.glu = GLU(name="glu", dtype=self.dtype_policy)
        self.conv2 = keras.layers.Conv2D(channels, name="conv2", **conv)
        self.bn2 = bn.batch_norm("bn2", dtype=self.dtype_policy)

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.channels:
            raise ValueError(
                f"ResBlock({self.channels}): input has {input_shape[-1]} channels; "
                f"it must have {self.channels}."
            )
        wide = tuple(input_shape[:-1]) + (2 * self.channels,)
        self.conv1.build(input_shape)
        self.bn1.build(wide)
        self.glu.build(wide)
        self.conv2.build(tuple(input_shape[:-1]) + (self.channels,))
        self.bn2.build(tuple(input_shape[:-1]) + (self.channels,))

    def call(self, inputs, training=None, sample_mask=None):
        x = self.conv1(inputs)
        x = self.bn1(x, training=training, sample_mask=sample_mask)
        x = self.glu(x)
        x = self.conv2(x)
        x = self.bn2(x, training=training, sample_mask=sample_mask)
        return x + inputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels})
        return config
