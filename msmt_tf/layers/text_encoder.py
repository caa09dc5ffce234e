"""DAMSM text encoder: embedding + bidirectional LSTM (the references' ``RNN_ENCODER``)."""

import math

import keras
from keras import ops

RNN_TYPES = ("lstm", "gru")


@keras.saving.register_keras_serializable(package="msmt_tf")
class TextEncoder(keras.layers.Layer):
    """Word features W and sentence feature s of a caption (paper eq. 1; taoxugit/AttnGAN
    code/model.py:RNN_ENCODER (commit 0d000e6), same in MinfengZhu/DM-GAN).

    ``Embedding(vocab_size, word_dim)`` (init U(-0.1, 0.1)) -> Dropout -> bidirectional LSTM
    (or GRU) with ``hidden_per_direction`` units per direction, masked by ``tokens != 0``
    (padding at the end only):

    - words ``[B, L, 2H]`` = [forward | backward] outputs, exactly zero at padded positions;
    - sentence ``[B, 2H]`` = [forward state at the last real word | backward state at the
      first word] (the backward direction starts at the last real word, as PyTorch's packed
      sequences do), so padding never changes any output.

    Parameter count: Keras' LSTM has one bias per gate where PyTorch has two (b_ih + b_hh), so
    for a 5,450-word vocabulary this layer has 2,074,296 = 2,075,320 - 1,024 parameters; a
    PyTorch checkpoint maps with ``bias = b_ih + b_hh``. Recurrent weights and biases are
    initialised U(-1/sqrt(H), 1/sqrt(H)) like PyTorch's LSTM (no unit forget bias).
    Outputs are float32 under mixed precision.

    Args:
        vocab_size: number of tokens (index 0 = padding / ``<end>``).
        word_dim: embedding size (300).
        hidden_per_direction: H (128; output width 2H = 256).
        dropout: dropout rate on the embeddings (training only).
        rnn_type: ``"lstm"`` or ``"gru"`` (Keras GRU, ``reset_after=True``).

    Call arguments:
        inputs: int tokens ``[B, L]``, zero-padded at the end.
        training: dropout mode.

    Returns:
        ``(words [B, L, 2H], sentence [B, 2H])``, float32.
    """

    def __init__(
        self,
        vocab_size,
        word_dim=300,
        hidden_per_direction=128,
        dropout=0.5,
        rnn_type="lstm",
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("vocab_size", vocab_size),
            ("word_dim", word_dim),
            ("hidden_per_direction", hidden_per_direction),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TextEncoder: {name} must be a positive int, got {value!r}.")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"TextEncoder: dropout must be in [0, 1), got {dropout!r}.")
        if rnn_type not in RNN_TYPES:
            raise ValueError(
                f"TextEncoder: rnn_type={rnn_type!r} must be one of {list(RNN_TYPES)}."
            )
        self.vocab_size = vocab_size
        self.word_dim = word_dim
        self.hidden_per_direction = hidden_per_direction
        self.dropout = float(dropout)
        self.rnn_type = rnn_type

        self.embedding = keras.layers.Embedding(
            vocab_size,
            word_dim,
            embeddings_initializer=keras.initializers.RandomUniform(-0.1, 0.1),
            name="embedding",
            dtype=self.dtype_policy,
        )
        self.embedding_dropout = keras.layers.Dropout(
            self.dropout, name="dropout", dtype=self.dtype_policy
        )
        bound = 1.0 / math.sqrt(hidden_per_direction)
        rnn_cls = keras.layers.LSTM if rnn_type == "lstm" else keras.layers.GRU
        extra = {"unit_forget_bias": False} if rnn_type == "lstm" else {}
        rnn = rnn_cls(
            hidden_per_direction,
            return_sequences=True,
            return_state=True,
            kernel_initializer=keras.initializers.RandomUniform(-bound, bound),
            recurrent_initializer=keras.initializers.RandomUniform(-bound, bound),
            bias_initializer=keras.initializers.RandomUniform(-bound, bound),
            name=rnn_type,
            dtype=self.dtype_policy,
            **extra,
        )
        self.rnn = keras.layers.Bidirectional(
            rnn, merge_mode="concat", name="bidirectional", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        self.embedding.build(input_shape)
        self.rnn.build(tuple(input_shape) + (self.word_dim,))

    def call(self, inputs, training=None):
        tokens = ops.cast(inputs, "int32")
        mask = ops.not_equal(tokens, 0)
        x = self.embedding(tokens)
        x = self.embedding_dropout(x, training=training)
        outputs = self.rnn(x, mask=mask, training=training)
        sequence = outputs[0]
        if self.rnn_type == "lstm":
            forward_h, backward_h = outputs[1], outputs[3]
        else:
            forward_h, backward_h = outputs[1], outputs[2]
        words = ops.cast(sequence, "float32") * ops.cast(ops.expand_dims(mask, -1), "float32")
        sentence = ops.concatenate(
            [ops.cast(forward_h, "float32"), ops.cast(backward_h, "float32")], axis=-1
        )
        return words, sentence

    def compute_output_spec(self, inputs, training=None):
        width = 2 * self.hidden_per_direction
        return (
            keras.KerasTensor(tuple(inputs.shape) + (width,), dtype="float32"),
            keras.KerasTensor((inputs.shape[0], width), dtype="float32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "word_dim": self.word_dim,
                "hidden_per_direction": self.hidden_per_direction,
                "dropout": self.dropout,
                "rnn_type": self.rnn_type,
            }
        )
        return config
