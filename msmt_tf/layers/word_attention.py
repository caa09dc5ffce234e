"""AttnGAN's word-level attention (``GlobalAttentionGeneral``) and the shared mask helpers."""

import keras
from keras import ops

from msmt_tf.layers import batch_norm as bn

# Logit for masked words: exp() underflows to exactly 0 in float32, and unlike -inf a row
# with every word masked gives a uniform distribution instead of NaN.
MASKED_LOGIT = -1e9


def attention_mask(mask, num_queries, row_quirk=False):
    """Returns the bool mask applied to the ``[B, Q, L]`` logits (True = real word).

    Without the quirk this is ``mask[:, None, :]`` (``[B, 1, L]``). With ``row_quirk`` it
    reproduces the references' ``mask.repeat(queryL, 1)`` applied to sample-major logits
    (taoxugit/AttnGAN code/GlobalAttention.py:GlobalAttentionGeneral.forward (commit 0d000e6),
    MinfengZhu/DM-GAN code/model.py:Memory.forward (commit d515995)): pixel q of sample b uses
    the mask of sample ``(b * Q + q) mod B`` (``[B, Q, L]``). Only for checkpoints trained with
    that behaviour.
    """
    mask = ops.cast(mask, "bool")
    if not row_quirk:
        return ops.expand_dims(mask, 1)
    batch = ops.shape(mask)[0]
    rows = ops.arange(batch, dtype="int32")[:, None] * num_queries
    rows = rows + ops.arange(num_queries, dtype="int32")[None, :]
    rows = ops.mod(rows, batch)
    return ops.take(mask, rows, axis=0)


def masked_softmax(logits, mask):
    """Softmax over the last axis in float32 with masked positions at probability 0."""
    logits = ops.cast(logits, "float32")
    logits = ops.where(mask, logits, ops.cast(MASKED_LOGIT, "float32"))
    return ops.softmax(logits, axis=-1)


@keras.saving.register_keras_serializable(package="msmt_tf")
class WordAttention(keras.layers.Layer):
    """Per-pixel attention over words (taoxugit/AttnGAN
    code/GlobalAttention.py:GlobalAttentionGeneral (commit 0d000e6)).

    ``e_l = U w_l`` (1x1 conv, no bias, N_w -> C); for every pixel q with feature ``h_q``:
    ``beta_{q,l} = softmax_l(h_q . e_l)`` over the real words (padded words masked; no scaling)
    and ``c_q = sum_l beta_{q,l} e_l``. The logits and the softmax are float32.

    Args:
        channels: C, the image feature width.
        mask_row_quirk: reproduce the references' row-order mask bug (``attention_mask``) so that
            imported AttnGAN / DM-GAN checkpoints behave as trained; off by default.

    Call arguments:
        inputs: ``(h [B, H, W, C], words [B, L, N_w], mask bool [B, L])``.

    Returns:
        ``(context [B, H, W, C], attention [B, H, W, L])`` (attention float32).
    """

    def __init__(self, channels, mask_row_quirk=False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"WordAttention: channels must be a positive int, got {channels!r}.")
        self.channels = channels
        self.mask_row_quirk = bool(mask_row_quirk)
        self.context_proj = keras.layers.Dense(
            channels,
            use_bias=False,
            kernel_initializer=bn.KERNEL_INITIALIZER,
            name="conv_context",
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        h_shape, w_shape, _ = input_shape
        if h_shape[-1] != self.channels:
            raise ValueError(
                f"WordAttention({self.channels}): image features have {h_shape[-1]} channels."
            )
        self.context_proj.build(w_shape)

    def call(self, inputs, training=None):
        h, words, mask = inputs
        height, width = h.shape[1], h.shape[2]
        num_q = height * width
        source = ops.cast(self.context_proj(words), "float32")  # [B, L, C]
        query = ops.reshape(ops.cast(h, "float32"), (-1, num_q, self.channels))
        logits = ops.einsum("bqc,blc->bql", query, source)
        attn = masked_softmax(logits, attention_mask(mask, num_q, self.mask_row_quirk))
        context = ops.einsum("bql,blc->bqc", attn, source)
        context = ops.cast(context, self.compute_dtype)
        context = ops.reshape(context, (-1, height, width, self.channels))
        attn = ops.reshape(attn, (-1, height, width, ops.shape(words)[1]))
        return context, attn

    def compute_output_spec(self, inputs, training=None):
        h, words, _ = inputs
        return (
            keras.KerasTensor(h.shape[:3] + (self.channels,), dtype=self.compute_dtype),
            keras.KerasTensor(h.shape[:3] + (words.shape[1],), dtype="float32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels, "mask_row_quirk": self.mask_row_quirk})
        return config
