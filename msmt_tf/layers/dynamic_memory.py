"""DM-GAN's dynamic memory: memory writing, key addressing and value reading."""

import keras
from keras import ops

from msmt_tf.layers import batch_norm as bn
from msmt_tf.layers.word_attention import attention_mask, masked_softmax


@keras.saving.register_keras_serializable(package="msmt_tf")
class DynamicMemory(keras.layers.Layer):
    """DM-GAN memory (MinfengZhu/DM-GAN code/model.py:NEXT_STAGE_G.forward writing +
    code/model.py:Memory (commit d515995)).

    With image features ``h`` ``[B, H, W, GF]`` and words ``w_l`` ``[B, L, N_w]``:

    1. Writing: ``r = stop_gradient(mean_{H,W} h)`` ``[B, GF]``;
       ``g_l = sigmoid(A w_l + B r)`` (A: N_w -> 1, B: GF -> 1, linear, no bias);
       ``m_l = relu(M_w w_l) * g_l + relu(M_r r) * (1 - g_l)`` (M_w: N_w -> 2 GF,
       M_r: GF -> 2 GF, 1x1 with bias).
    2. Key addressing: ``k_l = relu(phi_K m_l)``, ``alpha_{q,l} = softmax_l(h_q . k_l)``,
       unscaled, padded words masked (float32).
    3. Value reading: ``v_l = relu(phi_V m_l)``, ``o_q = sum_l alpha_{q,l} v_l``
       (phi_K, phi_V: 2 GF -> GF, 1x1 with bias).

    The response gate and the rest of the stage live in ``MemoryRefinement``.

    Args:
        gf_dim: GF, the image feature width.
        mask_row_quirk: reproduce the references' row-order mask bug (see
            ``word_attention.attention_mask``; MinfengZhu/DM-GAN code/model.py:Memory.forward).

    Call arguments:
        inputs: ``(h [B, H, W, GF], words [B, L, N_w], mask bool [B, L])``.

    Returns:
        ``(o [B, H, W, GF], attention [B, H, W, L] float32)``.
    """

    def __init__(self, gf_dim, mask_row_quirk=False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(gf_dim, int) or gf_dim < 1:
            raise ValueError(f"DynamicMemory: gf_dim must be a positive int, got {gf_dim!r}.")
        self.gf_dim = gf_dim
        self.mask_row_quirk = bool(mask_row_quirk)

        def dense(units, name, use_bias=True, activation=None):
            return keras.layers.Dense(
                units,
                use_bias=use_bias,
                activation=activation,
                kernel_initializer=bn.KERNEL_INITIALIZER,
                name=name,
                dtype=self.dtype_policy,
            )

        self.gate_words = dense(1, "A", use_bias=False)
        self.gate_image = dense(1, "B", use_bias=False)
        self.memory_words = dense(2 * gf_dim, "M_w", activation="relu")
        self.memory_image = dense(2 * gf_dim, "M_r", activation="relu")
        self.key = dense(gf_dim, "key", activation="relu")
        self.value = dense(gf_dim, "value", activation="relu")

    def build(self, input_shape):
        h_shape, w_shape, _ = input_shape
        if h_shape[-1] != self.gf_dim:
            raise ValueError(
                f"DynamicMemory({self.gf_dim}): image features have {h_shape[-1]} channels."
            )
        self.gate_words.build(w_shape)
        self.gate_image.build((None, self.gf_dim))
        self.memory_words.build(w_shape)
        self.memory_image.build((None, self.gf_dim))
        self.key.build((None, None, 2 * self.gf_dim))
        self.value.build((None, None, 2 * self.gf_dim))

    def call(self, inputs, training=None):
        h, words, mask = inputs
        height, width = h.shape[1], h.shape[2]
        num_q = height * width
        h = ops.cast(h, self.compute_dtype)
        words = ops.cast(words, self.compute_dtype)

        # 1. Memory writing; the pooled image feature is gradient-stopped as in the reference.
        r = ops.stop_gradient(ops.mean(h, axis=(1, 2)))  # [B, GF]
        gate_logits = self.gate_words(words) + ops.expand_dims(self.gate_image(r), 1)
        g = ops.sigmoid(ops.cast(gate_logits, "float32"))  # [B, L, 1]
        mem_w = ops.cast(self.memory_words(words), "float32")  # [B, L, 2GF]
        mem_r = ops.cast(ops.expand_dims(self.memory_image(r), 1), "float32")  # [B, 1, 2GF]
        memory = ops.cast(mem_w * g + mem_r * (1.0 - g), self.compute_dtype)

        # 2. Key addressing (unscaled dot product, masked softmax over words, float32).
        keys = ops.cast(self.key(memory), "float32")
        values = ops.cast(self.value(memory), "float32")
        query = ops.reshape(ops.cast(h, "float32"), (-1, num_q, self.gf_dim))
        logits = ops.einsum("bqc,blc->bql", query, keys)
        attn = masked_softmax(logits, attention_mask(mask, num_q, self.mask_row_quirk))

        # 3. Value reading.
        o = ops.einsum("bql,blc->bqc", attn, values)
        o = ops.reshape(ops.cast(o, self.compute_dtype), (-1, height, width, self.gf_dim))
        attn = ops.reshape(attn, (-1, height, width, ops.shape(words)[1]))
        return o, attn

    def compute_output_spec(self, inputs, training=None):
        h, words, _ = inputs
        return (
            keras.KerasTensor(h.shape[:3] + (self.gf_dim,), dtype=self.compute_dtype),
            keras.KerasTensor(h.shape[:3] + (words.shape[1],), dtype="float32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update({"gf_dim": self.gf_dim, "mask_row_quirk": self.mask_row_quirk})
        return config
