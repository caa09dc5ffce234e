"""Adaptive gated fusion of two feature maps (paper appendix 7.1, eqs 17-18)."""

import keras
from keras import ops

from msmt_tf.layers import batch_norm as bn

GATES = ("pixel", "channel")


@keras.saving.register_keras_serializable(package="msmt_tf")
class GatedFusion(keras.layers.Layer):
    """``fuse(A, B) = A * g + B * (1 - g)``, ``g = sigmoid(P * concat(A, B) + rho)``.

    Eq. 17: ``g_{u,v} = sigma(P * concat(a_{u,v}, b_{u,v}) + rho)`` — a 1x1 convolution (here a
    dense layer on the last axis, identical for NHWC) with bias over the channel concatenation,
    in the order (A, B). Eq. 18: ``r_{u,v} = a_{u,v} * g + b_{u,v} * (1 - g)``.

    ``gate="pixel"`` gives one gate per pixel broadcast over the channels, the form of DM-GAN's
    response gate (P has shape ``[2C, 1]``); ``gate="channel"`` gives one gate per pixel and
    channel (P ``[2C, C]``). The paper uses this layer for the MTWIG tails (eq. 3), the IMHM heads
    (eq. 15) and the skip connection (eq. 16), each with its own weights.

    The gate and the mix are computed in float32 under mixed precision; the result is cast back to
    the layer's compute dtype.

    Args:
        gate: ``"pixel"`` (default) or ``"channel"``.

    Call arguments:
        inputs: tuple ``(a, b)`` of equal-shape tensors ``[B, H, W, C]`` (any rank >= 2 works;
            the gate is computed over the last axis).
        training: unused (no dropout / BN).

    Returns:
        ``[B, H, W, C]``.
    """

    def __init__(self, gate="pixel", **kwargs):
        super().__init__(**kwargs)
        if gate not in GATES:
            raise ValueError(f"GatedFusion: gate={gate!r} must be one of {list(GATES)}.")
        self.gate = gate
        self.gate_dense = None

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError("GatedFusion expects a pair (a, b) of tensors.")
        a_shape, b_shape = (tuple(s) for s in input_shape)
        channels = a_shape[-1]
        if channels is None or (b_shape[-1] is not None and b_shape[-1] != channels):
            raise ValueError(
                f"GatedFusion: a {a_shape} and b {b_shape} must have the same, known channel "
                "count."
            )
        self.gate_dense = keras.layers.Dense(
            1 if self.gate == "pixel" else channels,
            use_bias=True,
            kernel_initializer=bn.KERNEL_INITIALIZER,
            name="gate",
            dtype=self.dtype_policy,
        )
        self.gate_dense.build(a_shape[:-1] + (2 * channels,))

    def call(self, inputs, training=None):
        a, b = inputs
        logits = self.gate_dense(ops.concatenate([a, b], axis=-1))
        g = ops.sigmoid(ops.cast(logits, "float32"))
        a32 = ops.cast(a, "float32")
        b32 = ops.cast(b, "float32")
        # a * g + b * (1 - g) written as b + g * (a - b): one multiply fewer, same value.
        out = b32 + g * (a32 - b32)
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update({"gate": self.gate})
        return config
