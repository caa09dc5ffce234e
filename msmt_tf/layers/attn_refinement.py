"""AttnGAN refinement stage (``NEXT_STAGE_G`` of taoxugit/AttnGAN)."""

import keras
from keras import ops

from msmt_tf.layers.res_block import ResBlock
from msmt_tf.layers.up_block import UpBlock
from msmt_tf.layers.word_attention import WordAttention


@keras.saving.register_keras_serializable(package="msmt_tf")
class AttnRefinement(keras.layers.Layer):
    """``UpBlock(ResBlock^r(concat(h, WordAttention(h, W))))`` (taoxugit/AttnGAN
    code/model.py:NEXT_STAGE_G (commit 0d000e6)).

    The word context of every pixel (``WordAttention``) is concatenated after the image features
    (2 GF channels), passed through ``r_num`` residual blocks of width 2 GF and an upsampling
    block to GF channels at twice the resolution. The sentence code is not used (as the
    reference).

    Args:
        gf_dim: GF, channels of the input and output features.
        r_num: number of residual blocks.
        mask_row_quirk: see ``WordAttention``.

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
            raise ValueError(f"AttnRefinement: gf_dim must be a positive int, got {gf_dim!r}.")
        if not isinstance(r_num, int) or r_num < 0:
            raise ValueError(f"AttnRefinement: r_num must be an int >= 0, got {r_num!r}.")
        self.gf_dim = gf_dim
        self.r_num = r_num
        self.mask_row_quirk = bool(mask_row_quirk)
        self.attention = WordAttention(
            gf_dim, mask_row_quirk=mask_row_quirk, name="att", dtype=self.dtype_policy
        )
        self.residual = [
            ResBlock(2 * gf_dim, name=f"residual{i}", dtype=self.dtype_policy)
            for i in range(r_num)
        ]
        self.upsample = UpBlock(gf_dim, name="upsample", dtype=self.dtype_policy)

    def build(self, input_shape):
        h_shape, w_shape, m_shape = input_shape
        self.attention.build((h_shape, w_shape, m_shape))
        wide = tuple(h_shape[:3]) + (2 * self.gf_dim,)
        for block in self.residual:
            block.build(wide)
        self.upsample.build(wide)

    def call(self, inputs, training=None):
        h, words, mask = inputs
        context, attn = self.attention((h, words, mask))
        x = ops.concatenate([ops.cast(h, self.compute_dtype), context], axis=-1)
        for block in self.residual:
            x = block(x, training=training)
        return {
            "features": self.upsample(x, training=training),
            "attention": attn,
            "head_features": [],
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {"gf_dim": self.gf_dim, "r_num": self.r_num, "mask_row_quirk": self.mask_row_quirk}
        )
        return config
