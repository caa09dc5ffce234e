"""AttnGAN refinement stage (``NEXT_STAGE_G`` of taoxugit/AttnGAN)."""

import keras
from keras import ops

from msmt_tf.layers.refinement_trunk import WordRefinementStage
from msmt_tf.layers.word_attention import WordAttention


@keras.saving.register_keras_serializable(package="msmt_tf")
class AttnRefinement(WordRefinementStage):
    """``UpBlock(ResBlock^r(concat(h, WordAttention(h, W))))`` (taoxugit/AttnGAN
    code/model.py:NEXT_STAGE_G (commit 0d000e6)).

    The word context of every pixel (``WordAttention``) is concatenated after the image features
    (2 GF channels), passed through ``r_num`` residual blocks of width 2 GF and an upsampling
    block to GF channels at twice the resolution (the trunk helpers shared with the other
    refinement stages). The sentence code is not used (as the reference).

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
        super().__init__(gf_dim, r_num, mask_row_quirk, **kwargs)
        self.attention = WordAttention(
            gf_dim, mask_row_quirk=mask_row_quirk, name="att", dtype=self.dtype_policy
        )
        self.make_wide_trunk()

    def build(self, input_shape):
        h_shape, w_shape, m_shape = input_shape
        self.attention.build((h_shape, w_shape, m_shape))
        self.build_wide_trunk(h_shape)

    def call(self, inputs, training=None):
        h, words, mask = inputs
        context, attn = self.attention((h, words, mask))
        x = ops.concatenate([ops.cast(h, self.compute_dtype), context], axis=-1)
        return self.stage_output(x, attn, training)
