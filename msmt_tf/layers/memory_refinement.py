"""DM-GAN refinement stage (``NEXT_STAGE_G`` of MinfengZhu/DM-GAN)."""

import keras
from keras import ops

from msmt_tf.layers import batch_norm as bn
from msmt_tf.layers.dynamic_memory import DynamicMemory
from msmt_tf.layers.refinement_trunk import WordRefinementStage


@keras.saving.register_keras_serializable(package="msmt_tf")
class MemoryRefinement(WordRefinementStage):
    """DM-GAN refinement: dynamic memory, response gate, duplication, residual, upsampling.

    ``o = DynamicMemory(h, W)``; response gate ``g = sigmoid(conv1x1(concat(h, o)) + b)`` (one
    gate per pixel, 2 GF -> 1); ``h' = h * (1 - g) + g * o``; then ``concat(h', h')`` (the same
    tensor twice, as the reference) -> ``r_num`` ResBlocks(2 GF) -> UpBlock(GF) (MinfengZhu/DM-GAN
    ``code/model.py`` ``NEXT_STAGE_G``; the trunk helpers are shared with ``SDMRefinement``).
    The gate conv keeps the reference's input order ``(h, o)`` so a checkpoint's
    ``response_gate`` weight maps without permutation; the gate is computed in float32.

    Args:
        gf_dim: GF.
        r_num: number of residual blocks.
        mask_row_quirk: see ``DynamicMemory``.

    Call arguments:
        inputs: ``(h [B, H, W, GF], words [B, L, N_w], mask bool [B, L])``.
        training: BN mode.

    Returns:
        dict ``{"features": [B, 2H, 2W, GF], "attention": [B, H, W, L] float32,
        "head_features": []}``.
    """

    def __init__(self, gf_dim, r_num=2, mask_row_quirk=False, **kwargs):
        super().__init__(gf_dim, r_num, mask_row_quirk, **kwargs)
        self.memory = DynamicMemory(
            gf_dim, mask_row_quirk=mask_row_quirk, name="memory", dtype=self.dtype_policy
        )
        self.response_gate = keras.layers.Dense(
            1,
            use_bias=True,
            kernel_initializer=bn.KERNEL_INITIALIZER,
            name="response_gate",
            dtype=self.dtype_policy,
        )
        self.make_wide_trunk()

    def build(self, input_shape):
        h_shape, w_shape, m_shape = input_shape
        self.memory.build((h_shape, w_shape, m_shape))
        self.response_gate.build(self.build_wide_trunk(h_shape))

    def call(self, inputs, training=None):
        h, words, mask = inputs
        h = ops.cast(h, self.compute_dtype)
        o, attn = self.memory((h, words, mask))
        g = ops.sigmoid(ops.cast(self.response_gate(ops.concatenate([h, o], axis=-1)), "float32"))
        h32 = ops.cast(h, "float32")
        h_new = ops.cast(h32 * (1.0 - g) + g * ops.cast(o, "float32"), self.compute_dtype)
        x = ops.concatenate([h_new, h_new], axis=-1)
        return self.stage_output(x, attn, training)
