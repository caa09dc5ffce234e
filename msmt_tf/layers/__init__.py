"""msmt_tf.layers: the generator building blocks as Keras 3 layers (one concept per file)."""

from msmt_tf.layers.attn_refinement import AttnRefinement
from msmt_tf.layers.batch_norm import BatchNorm
from msmt_tf.layers.conditioning_augmentation import ConditioningAugmentation
from msmt_tf.layers.dynamic_memory import DynamicMemory
from msmt_tf.layers.gated_fusion import GatedFusion
from msmt_tf.layers.glu import GLU
from msmt_tf.layers.ig_stage import IGStage, SeedDecoder
from msmt_tf.layers.image_head import ImageHead
from msmt_tf.layers.memory_refinement import MemoryRefinement
from msmt_tf.layers.mtwig import MTWIG
from msmt_tf.layers.res_block import ResBlock
from msmt_tf.layers.text_encoder import TextEncoder
from msmt_tf.layers.up_block import UpBlock
from msmt_tf.layers.word_attention import WordAttention

__all__ = [
    "AttnRefinement",
    "BatchNorm",
    "ConditioningAugmentation",
    "DynamicMemory",
    "GatedFusion",
    "GLU",
    "IGStage",
    "ImageHead",
    "MemoryRefinement",
    "MTWIG",
    "ResBlock",
    "SeedDecoder",
    "TextEncoder",
    "UpBlock",
    "WordAttention",
]
