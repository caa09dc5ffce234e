"""Upsampling block of the references' generators (``upBlock``)."""

import keras
from keras import ops

from msmt_tf.layers import batch_norm as bn
from msmt_tf.layers.glu import GLU

# Input sizes (height and width) from which the block runs as one stride-2 transposed conv
# (see `subpixel_kernel`). Below it the upsample + conv is kept: at 4x4 inputs oneDNN's
# transposed-conv filter gradient is no faster than the 8x8 conv's, and building the 4x4 kernel
# (16 C x 2F taps from 9) costs more than the saved FLOPs.
MIN_SUBPIXEL_SIZE = 8

# Output row phase a of pixel 2i + a, tap t of the stride-2 4x4 kernel: the 3x3 rows summed into
# it (see `subpixel_kernel`).
_SUBPIXEL_TAPS = ((2,), (1, 2), (0, 1), (0,))


def subpixel_kernel(kernel):
    """The stride-2 transposed-conv kernel equal to nearest x2 upsampling + ``kernel``.

    ``kernel``: a 3x3 'same' conv kernel ``[3, 3, C, O]`` (HWIO). Returns ``[4, 4, O, C]`` (the
    ``ops.conv_transpose`` layout) such that
    ``conv_transpose(x, k4, strides=2, padding="same") == conv(upsample_nearest_x2(x), kernel)``.

    Why: output row ``2i`` of the upsampled conv reads upsampled rows ``2i-1, 2i, 2i+1`` = input
    rows ``i-1, i, i`` (taps ``K0``, ``K1 + K2``); row ``2i+1`` reads input rows ``i, i, i+1``
    (``K0 + K1``, ``K2``); zero padding maps to zero padding. A stride-2 'same' transposed conv
    with 4 taps gives row ``2i`` the taps ``k4[1]`` (input ``i``) and ``k4[3]`` (``i-1``), row
    ``2i+1`` ``k4[2]`` (``i``) and ``k4[0]`` (``i+1``); hence ``k4 = [K2, K1+K2, K0+K1, K0]``,
    on both spatial axes. Each output pixel then costs 4 taps instead of 9 (2.25x fewer
    multiply-adds, forward and both gradients) and the 4x larger upsampled input is never
    materialised. Values equal the upsample + conv up to float rounding (the taps are summed
    before the products instead of after).
    """
    kernel = ops.transpose(kernel, (0, 1, 3, 2))  # [3, 3, O, C]: the smaller tensor to move
    for axis in (0, 1):
        taps = [ops.take(kernel, t, axis=axis) for t in range(3)]
        kernel = ops.stack(
            [taps[t[0]] if len(t) == 1 else taps[t[0]] + taps[t[1]] for t in _SUBPIXEL_TAPS],
            axis=axis,
        )
    return kernel


@keras.saving.register_keras_serializable(package="msmt_tf")
class UpBlock(keras.layers.Layer):
    """Nearest x2 upsampling -> 3x3 conv (no bias, 2F) -> BN -> GLU -> F channels.

    taoxugit/AttnGAN code/model.py:upBlock (commit 0d000e6) = MinfengZhu/DM-GAN
    code/model.py:upBlock (commit d515995); the paper's "upsampling block" (eq. 3 and §3.3). BN
    uses eps 1e-5 / momentum 0.9 (PyTorch defaults).

    For inputs of at least ``MIN_SUBPIXEL_SIZE`` pixels a side, upsampling + conv run as one
    stride-2 transposed conv of the input with ``subpixel_kernel(conv.kernel)``: the same
    function (to float rounding) at 4/9 of the multiply-adds. The weights are the 3x3
    ``conv.kernel`` either way.

    Args:
        filters: output channels F.

    Call arguments:
        inputs: ``[B, H, W, C]``.
        training: BN mode.
        sample_mask: optional bool ``[B]``; when given, the BN batch statistics are computed over
            the rows where it is True only (MTWIG's all-tails test reference).

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

    def _upsample_conv(self, inputs):
        """``conv(upsample(inputs))``, as one transposed conv for large enough inputs."""
        height, width = inputs.shape[1], inputs.shape[2]
        if height is None or width is None or min(height, width) < MIN_SUBPIXEL_SIZE:
            return self.conv(self.upsample(inputs))
        # Under mixed precision the kernel read here is already autocast to the compute
        # dtype (as the plain conv uses it); its taps are summed in float32 and the sums
        # rounded once more to the compute dtype.
        kernel = subpixel_kernel(ops.cast(self.conv.kernel, "float32"))
        kernel = ops.cast(kernel, self.compute_dtype)
        return ops.conv_transpose(inputs, kernel, strides=2, padding="same")

    def call(self, inputs, training=None, sample_mask=None):
        x = self._upsample_conv(inputs)
        x = self.norm(x, training=training, sample_mask=sample_mask)
        return self.glu(x)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        return (b, None if h is None else 2 * h, None if w is None else 2 * w, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters})
        return config
