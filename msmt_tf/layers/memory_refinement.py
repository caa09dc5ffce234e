"""DM-GAN refinement stage (``NEXT_STAGE_G`` of MinfengZhu/DM-GAN)."""

import keras
from keras import ops

from msmt_tf.layers import batch_norm as bn
from msmt_tf.layers.dynamic_memory import DynamicMemory
from msmt_tf.layers.refinement_trunk import build_trunk, make_trunk, run_trunk


@keras.saving.register_keras_serializable(package="msmt_tf")
class MemoryRefinement(keras.layers.Layer):
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
        super().__init__(**kwargs)
        if not isinstance(gf_dim, int) or gf_dim < 1:
            raise ValueError(f"MemoryRefinement: gf_dim must be a positive int, got {gf_dim!r}.")
        if not isinstance(r_num, int) or r_num < 0:
            raise ValueError(f"MemoryRefinement: r_num must be an int >= 0, got {r_num!r}.")
        self.gf_dim = gf_dim
        self.r_num = r_num
        self.mask_row_quirk = bool(mask_row_quirk)
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
        self.residual, self.upsample = make_trunk(
            gf_dim, r_num, 2 * gf_dim, self.dtype_policy, "residual{}"
        )

    def build(self, input_shape):
        h_shape, w_shape, m_shape = input_shape
        self.memory.build((h_shape, w_shape, m_shape))
        wide = tuple(h_shape[:3]) + (2 * self.gf_dim,)
        self.response_gate.build(wide)
        build_trunk(self.residual, self.upsample, wide)

    def call(self, inputs, training=None):
        h, words, mask = inputs
        h = ops.cast(h, self.compute_dtype)
        o, attn = self.memory((h, words, mask))
        g = ops.sigmoid(ops.cast(self.response_gate(ops.concatenate([h, o], axis=-1)), "float32"))
        h32 = ops.cast(h, "float32")
        h_new = ops.cast(h32 * (1.0 - g) + g * ops.cast(o, "float32"), self.compute_dtype)
        x = ops.concatenate([h_new, h_new], axis=-1)
        return {
            "features": run_trunk(x, self.residual, self.upsample, training),
            "attention": attn,
            "head_features": [],
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {"gf_dim": self.gf_dim, "r_num": self.r_num, "mask_row_quirk": self.mask_row_quirk}
        )
        return config
