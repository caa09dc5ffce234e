"""Gated linear unit along the channel axis (AttnGAN / DM-GAN ``GLU``)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="msmt_tf")
class GLU(keras.layers.Layer):
    """Gated linear unit: ``x[..., :C/2] * sigmoid(x[..., C/2:])``.

    The first half of the channels is the value, the second half the gate, exactly as the
    references' ``GLU.forward`` splits dim 1 of NCHW tensors (taoxugit/AttnGAN
    code/model.py:GLU (commit 0d000e6), same in MinfengZhu/DM-GAN); in NHWC the split is on
    the last axis in the same order. Used after every 2x-wide conv / dense of the generator.

    Args:
        axis: axis to split; its size must be even. Default -1 (channels, NHWC).

    Call arguments:
        inputs: ``[..., 2C]`` tensor.

    Returns:
        ``[..., C]`` tensor.
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(axis, int):
            raise ValueError(f"GLU: axis must be an int, got {axis!r}.")
        self.axis = axis

    def _check(self, shape):
        width = shape[self.axis]
        if width is not None and width % 2:
            raise ValueError(
                f"GLU: axis {self.axis} has odd size {width}; the input must have an even "
                "number of channels (value half + gate half)."
            )

    def build(self, input_shape):
        self._check(input_shape)

    def call(self, inputs):
        value, gate = ops.split(inputs, 2, axis=self.axis)
        return value * ops.sigmoid(gate)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        if shape[self.axis] is not None:
            shape[self.axis] //= 2
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update({"axis": self.axis})
        return config
