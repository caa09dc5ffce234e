"""Residual + upsampling trunk shared by the refinement stages (DM-GAN ``NEXT_STAGE_G``).

A refinement stage ends with ``r_num`` residual blocks at some width followed by one upsampling
block down to the stage width GF: DM-GAN (MinfengZhu/DM-GAN ``code/model.py`` ``NEXT_STAGE_G``)
duplicates its gated response, ``cat(h_new, h_new)``, and runs ``ResBlock(2 GF)`` then
``upBlock(2 GF, GF)``; MSMT-GAN's stage (paper Sec. 3.3, last paragraph) passes the IMHM response
"through several residual blocks and an upsampling block" at a width the text leaves open
(``docs/decisions.md`` "Refinement trunk"). The helpers create, build and run those blocks;
each stage keeps them as its own attributes, so variable paths stay the stage's own.
"""

from msmt_tf.layers.res_block import ResBlock
from msmt_tf.layers.up_block import UpBlock


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
