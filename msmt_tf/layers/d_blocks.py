"""The discriminator's convolution block: conv (spectral-normed or plain) -> [BN] -> LeakyReLU."""

import keras
import tensorflow as tf

from msmt_tf.layers import batch_norm as bn
from msmt_tf.layers.spectral_norm import SpectralNormConv2D

KINDS = ("dmgan", "attngan")


def _leaky_relu(x, negative_slope):
    """``LeakyReLU(x)`` whose gradient reads the output ``y`` instead of the input ``x``.

    Same values and gradients as ``keras.ops.leaky_relu``: for a slope >= 0, ``y > 0`` exactly
    where ``x > 0``, so ``LeakyReluGrad(dy, y)`` equals TensorFlow's registered
    ``LeakyReluGrad(dy, x)``. Not reading ``x`` leaves the convolution output with a single
    consumer, which lets Grappler's remapper fuse Conv2D + bias + LeakyReLU into one
    ``_FusedConv2D``. With the registered gradient the oneDNN remapper (TensorFlow 2.21,
    ``FindContractionWithActivation`` in ``tensorflow/core/grappler/optimizers/remapper.cc``)
    fuses ``_FusedConv2D`` + ``LeakyRelu`` without checking that the convolution output has
    no other consumer, the rewrite fails ("remapper failed: ... fanout '.../LeakyReluGrad'
    exist for missing node '.../conv/add'") and that remapper pass is dropped; see
    ``docs/performance.md``. A negative slope (not used here) keeps the plain op.
    """
    if negative_slope < 0:
        return keras.ops.leaky_relu(x, negative_slope=negative_slope)

    @tf.custom_gradient
    def leaky_relu(inputs):
        outputs = tf.nn.leaky_relu(inputs, alpha=negative_slope)

        def grad(upstream):
            return tf.raw_ops.LeakyReluGrad(
                gradients=upstream, features=outputs, alpha=negative_slope
            )

        return outputs, grad

    return leaky_relu(x)


@keras.saving.register_keras_serializable(package="msmt_tf")
class DBlock(keras.layers.Layer):
    """One discriminator block: convolution, optional batch norm, LeakyReLU(0.2).

    All convolutions of the AttnGAN / DM-GAN discriminators are blocks of this kind
    (taoxugit/AttnGAN code/model.py (commit 0d000e6) and MinfengZhu/DM-GAN code/model.py
    (commit d515995), the functions named below); MSMT-GAN reuses DM-GAN's discriminator (paper
    section 4):

    - ``encode_image_by_16times``: four blocks k4 s2 p1 (3 -> df -> 2df -> 4df -> 8df), the first
      without batch norm;
    - ``downBlock(in, out)``: k4 s2 p1;
    - ``Block3x3_leakRelu(in, out)``: k3 s1 p1.

    ``kind="dmgan"``: ``SpectralNormConv2D`` with bias, never batch norm (``batch_norm`` must be
    False). ``kind="attngan"``: ``Conv2D`` without bias, then ``BatchNormalization`` (PyTorch
    eps 1e-5 / momentum 0.1 = Keras momentum 0.9; gamma ~ N(1, 0.02), beta 0 as ``weights_init``)
    when ``batch_norm`` is True.

    Padding is PyTorch's symmetric ``(kernel_size - 1) // 2`` zeros, so the output is exactly
    ``ceil(H / strides)`` for the even sizes used here (k4 s2 p1 and k3 s1 p1).

    Args:
        filters: output channels.
        kernel_size: 4 (down-sampling) or 3.
        strides: 2 (down-sampling) or 1.
        kind: ``"dmgan"`` or ``"attngan"``.
        batch_norm: apply BN after the convolution (AttnGAN blocks except the first).
        negative_slope: LeakyReLU slope (0.2 in both references).
        kernel_initializer: convolution kernel initializer (orthogonal, gain 1, as
            ``weights_init``).
        update_in_eval: spectral norm power iteration also in inference (reference
            behaviour; ``dmgan`` only).
        seed: int seed for the initializers, or None.

    Call arguments:
        inputs: ``[B, H, W, C]``; training: bool.

    Returns:
        ``[B, H / strides, W / strides, filters]``.
    """

    def __init__(
        self,
        filters,
        kernel_size=4,
        strides=2,
        kind="dmgan",
        batch_norm=False,
        negative_slope=0.2,
        kernel_initializer="orthogonal",
        update_in_eval=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kind not in KINDS:
            raise ValueError(f"DBlock: kind={kind!r} must be one of {list(KINDS)}.")
        if kind == "dmgan" and batch_norm:
            raise ValueError("DBlock: kind='dmgan' has no batch norm; pass batch_norm=False.")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.kind = kind
        self.batch_norm = bool(batch_norm)
        self.negative_slope = float(negative_slope)
        self.kernel_initializer = bn.seeded(kernel_initializer, seed)
        self.update_in_eval = bool(update_in_eval)
        self.seed = seed

        padding = (self.kernel_size - 1) // 2
        if kind == "dmgan":
            self.conv = SpectralNormConv2D(
                self.filters,
                self.kernel_size,
                strides=self.strides,
                padding=padding,
                use_bias=True,
                kernel_initializer=self.kernel_initializer,
                update_in_eval=self.update_in_eval,
                seed=seed,
                name="conv",
                dtype=self.dtype_policy,
            )
        else:
            self.pad = keras.layers.ZeroPadding2D(padding, name="pad", dtype=self.dtype_policy)
            self.conv = keras.layers.Conv2D(
                self.filters,
                self.kernel_size,
                strides=self.strides,
                padding="valid",
                use_bias=False,
                kernel_initializer=self.kernel_initializer,
                name="conv",
                dtype=self.dtype_policy,
            )
        if self.batch_norm:
            # moving statistics averaged over replicas (see BatchNorm)
            self.bn = bn.batch_norm("bn", dtype=self.dtype_policy, seed=bn.offset_seed(seed, 3))
        else:
            self.bn = None

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.kind == "attngan":
            self.pad.build(shape)
            shape = self.pad.compute_output_shape(shape)
        self.conv.build(shape)
        shape = self.conv.compute_output_shape(shape)
        if self.bn is not None:
            self.bn.build(shape)

    def call(self, inputs, training=None):
        if self.kind == "dmgan":
            x = self.conv(inputs, training=training)
        else:
            x = self.conv(self.pad(inputs))
        if self.bn is not None:
            x = self.bn(x, training=training)
        return _leaky_relu(x, self.negative_slope)

    def compute_output_shape(self, input_shape):
        size = [None if d is None else -(-d // self.strides) for d in input_shape[1:3]]
        return (input_shape[0], size[0], size[1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "kind": self.kind,
                "batch_norm": self.batch_norm,
                "negative_slope": self.negative_slope,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "update_in_eval": self.update_in_eval,
                "seed": self.seed,
            }
        )
        return config
