"""Residual + upsampling trunk shared by the refinement stages (DM-GAN ``NEXT_STAGE_G``).

A refinement stage ends with ``r_num`` residual blocks at some width followed by one upsampling
block down to the stage width GF: DM-GAN (MinfengZhu/DM-GAN ``code/model.py`` ``NEXT_STAGE_G``)
duplicates its gated response, ``cat(h_new, h_new)``, and runs ``ResBlock(2 GF)`` then
``upBlock(2 GF, GF)``; MSMT-GAN's stage (paper Sec. 3.3, last paragraph) passes the IMHM response
"through several residual blocks and an upsampling block" at a width the text leaves open
(``docs/decisions.md`` "Refinement trunk"). The helpers create, build and run those blocks;
each stage keeps them as its own attributes, so variable paths stay the stage's own.
"""

import keras

from msmt_tf.layers.res_block import ResBlock
from msmt_tf.layers.up_block import UpBlock


class WordRefinementStage(keras.layers.Layer):
    """What AttnGAN's and DM-GAN's stages share: the arguments ``gf_dim`` (GF, > 0), ``r_num``
    (>= 0) and ``mask_row_quirk``, the config, a trunk of width 2 GF, and the output dict of a
    stage that reads the words with one attention. A subclass creates its own layers, then
    calls ``self.make_wide_trunk()``; its ``build`` calls ``self.build_wide_trunk(h_shape)``
    and its ``call`` returns ``self.stage_output(x, attention, training)``."""

    def __init__(self, gf_dim, r_num=2, mask_row_quirk=False, **kwargs):
        super().__init__(**kwargs)
        stage = type(self).__name__
        if not isinstance(gf_dim, int) or gf_dim < 1:
            raise ValueError(f"{stage}: gf_dim must be a positive int, got {gf_dim!r}.")
        if not isinstance(r_num, int) or r_num < 0:
            raise ValueError(f"{stage}: r_num must be an int >= 0, got {r_num!r}.")
        self.gf_dim = gf_dim
        self.r_num = r_num
        self.mask_row_quirk = bool(mask_row_quirk)

    def make_wide_trunk(self):
        """``r_num`` ``ResBlock(2 GF)`` (``residual{i}``) and ``UpBlock(GF)`` (``upsample``)."""
        self.residual, self.upsample = make_trunk(
            self.gf_dim, self.r_num, 2 * self.gf_dim, self.dtype_policy, "residual{}")

    def build_wide_trunk(self, h_shape):
        """Builds the trunk for features ``h_shape`` ``[B, H, W, GF]``; returns the trunk's
        input shape ``[B, H, W, 2 GF]``."""
        wide = tuple(h_shape[:3]) + (2 * self.gf_dim,)
        build_trunk(self.residual, self.upsample, wide)
        return wide

    def stage_output(self, x, attention, training=None):
        """``{"features": trunk(x), "attention": attention, "head_features": []}``."""
        return {
            "features": run_trunk(x, self.residual, self.upsample, training),
            "attention": attention,
            "head_features": [],
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {"gf_dim": self.gf_dim, "r_num": self.r_num, "mask_row_quirk": self.mask_row_quirk}
        )
        return config


def make_trunk(gf_dim, r_num, width, dtype, res_name):
    """Returns ``(blocks, upsample)``: ``r_num`` ``ResBlock(width)`` and ``UpBlock(gf_dim)``.

    Args:
        gf_dim: output width of the upsampling block (the stage width GF / N_r).
        r_num: number of residual blocks (>= 0).
        width: channels of the trunk input and of the residual blocks (GF or 2 GF).
        dtype: dtype policy of the owning layer.
        res_name: format string of the residual block names, e.g. ``"residual{}"``.
    """
    blocks = [ResBlock(width, name=res_name.format(i), dtype=dtype) for i in range(r_num)]
    return blocks, UpBlock(gf_dim, name="upsample", dtype=dtype)


def build_trunk(blocks, upsample, input_shape):
    """Builds the blocks for a trunk input of shape ``[B, H, W, width]``."""
    input_shape = tuple(input_shape)
    for block in blocks:
        block.build(input_shape)
    upsample.build(input_shape)


def run_trunk(x, blocks, upsample, training=None):
    """``UpBlock(ResBlock_r(...ResBlock_1(x)))``: ``[B, H, W, width] -> [B, 2H, 2W, GF]``."""
    for block in blocks:
        x = block(x, training=training)
    return upsample(x, training=training)
