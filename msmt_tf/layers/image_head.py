"""Image head of every generator stage (``GET_IMAGE_G``)."""

import keras
from keras import ops

from msmt_tf.layers import batch_norm as bn


@keras.saving.register_keras_serializable(package="msmt_tf")
class ImageHead(keras.layers.Layer):
    """``tanh(conv3x3(x))`` to 3 channels, no bias (taoxugit/AttnGAN
    code/model.py:GET_IMAGE_G (commit 0d000e6), same in MinfengZhu/DM-GAN; the paper's image
    prediction "using a 3x3 convolution", §3.1 and §3.3).

    The tanh is evaluated in float32 and the image is returned as float32 (images are float32 in
    [-1, 1] everywhere, docs/conventions.md).

    Call arguments:
        inputs: ``[B, H, W, C]`` stage features.

    Returns:
        ``[B, H, W, 3]`` float32 image in [-1, 1].
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(
            3,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=bn.KERNEL_INITIALIZER,
            name="conv",
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        self.conv.build(input_shape)

    def call(self, inputs, training=None):
        return ops.tanh(ops.cast(self.conv(inputs), "float32"))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (3,)

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor(tuple(inputs.shape[:-1]) + (3,), dtype="float32")
