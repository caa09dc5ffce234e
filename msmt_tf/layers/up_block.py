"""Upsampling block of the references' generators (``upBlock``)."""

import keras

from msmt_tf.layers import batch_norm as bn
from msmt_tf.layers.glu import GLU


@keras.saving.register_keras_serializable(package="msmt_tf")
class UpBlock(keras.layers.Layer):
    """Nearest x2 upsampling -> 3x3 conv (no bias, 2F) -> BN -> GLU -> F channels.

    AttnGAN / DM-GAN ``upBlock(in, out)`` (facts §4.1); the paper's "upsampling block" (eq. 3 and
    §3.3). BN uses eps 1e-5 / momentum 0.9 (PyTorch defaults).

    Args:
        filters: output channels F.

    Call arguments:
        inputs: ``[B, H, W, C]``.
        training: BN mode.
        sample_mask: optional bool ``[B]``; when given, the BN batch statistics are computed over
            the rows where it is True only (MTWIG's padded tails).

    Returns:
        ``[B, 2H, 2W, F]``.
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(filters, int) or filters < 1:
            raise ValueError(f"UpBlock: filters must be a positive int, got {filters!r}.")
        self.filters = filters
        self.upsample = keras.layers.UpSampling2D(
            2, interpolation="nearest", name="upsample", dtype=self.dtype_policy
        )
        self.conv = keras.layers.Conv2D(
            2 * filters,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=bn.KERNEL_INITIALIZER,
            name="conv",
            dtype=self.dtype_policy,
        )
        self.norm = bn.batch_norm("bn", dtype=self.dtype_policy)
        self.glu = GLU(name="glu", dtype=self.dtype_policy)

    def build(self, input_shape):
        b, h, w, c = input_shape
        up = (b, None if h is None else 2 * h, None if w is None else 2 * w, c)
        self.upsample.build(input_shape)
        self.conv.build(up)
        self.norm.build(up[:3] + (2 * self.filters,))
        self.glu.build(up[:3] + (2 * self.filters,))

    def call(self, inputs, training=None, sample_mask=None):
        x = self.conv(self.upsample(inputs))
        x = self.norm(x, training=training, sample_mask=sample_mask)
        return self.glu(x)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        return (b, None if h is None else 2 * h, None if w is None else 2 * w, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters})
        return config
