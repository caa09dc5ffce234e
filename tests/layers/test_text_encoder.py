"""Tests for msmt_tf.layers.text_encoder (DAMSM bidirectional LSTM encoder)."""

import keras
import numpy as np
import pytest

from msmt_tf.layers.text_encoder import TextEncoder
from msmt_tf.testing.layer_test import run_serialization_test

TOKENS = np.array([[3, 4, 5, 6, 0], [1, 2, 3, 4, 5], [7, 0, 0, 0, 0]], "int32")


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_lstm(x, kernel, recurrent, bias):
    """Keras gate order (i, f, c, o) = PyTorch (i, f, g, o); returns all h and the last h."""
    units = recurrent.shape[0]
    h, c = np.zeros(units), np.zeros(units)
    outs = []
    for t in range(len(x)):
        z = x[t] @ kernel + h @ recurrent + bias
        i, f, g, o = (z[k * units : (k + 1) * units] for k in range(4))
        c = _sig(f) * c + _sig(i) * np.tanh(g)
        h = _sig(o) * np.tanh(c)
        outs.append(h)
    return np.array(outs), h


def test_matches_numpy_lstm_on_real_words_only():
    layer = TextEncoder(10, word_dim=4, hidden_per_direction=3)
    words, sentence = (np.asarray(t) for t in layer(TOKENS, training=False))
    emb = np.asarray(layer.embedding.embeddings).astype("float64")
    fwd = [np.asarray(w) for w in layer.rnn.forward_layer.weights]
    bwd = [np.asarray(w) for w in layer.rnn.backward_layer.weights]
    for i, row in enumerate(TOKENS):
        real = row[row != 0]
        x = emb[real]
        f_out, f_last = np_lstm(x, *fwd)
        b_out, b_last = np_lstm(x[::-1], *bwd)  # backward starts at the last real word
        np.testing.assert_allclose(sentence[i], np.concatenate([f_last, b_last]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(words[i, : len(real), :3], f_out, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(words[i, : len(real), 3:], b_out[::-1], rtol=1e-5, atol=1e-6)
        assert np.all(words[i, len(real) :] == 0.0)


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
def test_extra_padding_changes_nothing(rnn_type):
    layer = TextEncoder(10, word_dim=4, hidden_per_direction=3, rnn_type=rnn_type)
    words, sentence = layer(TOKENS)
    padded = np.concatenate([TOKENS, np.zeros((3, 4), "int32")], 1)
    words2, sentence2 = layer(padded)
    np.testing.assert_allclose(sentence2, sentence, atol=1e-6)
    np.testing.assert_allclose(np.asarray(words2)[:, :5], words, atol=1e-6)
    assert np.all(np.asarray(words2)[:, 5:] == 0.0)


def test_dropout_only_in_training():
    layer = TextEncoder(10, word_dim=8, hidden_per_direction=3, dropout=0.5)
    _, s_eval = layer(TOKENS, training=False)
    _, s_eval2 = layer(TOKENS, training=False)
    _, s_train = layer(TOKENS, training=True)
    np.testing.assert_allclose(s_eval, s_eval2)
    assert np.abs(np.asarray(s_train) - np.asarray(s_eval)).max() > 1e-4


def test_reference_parameter_count():
    layer = TextEncoder(5450)
    layer.build((None, 18))
    # PyTorch's 2,075,320 minus one bias vector of 4 x 128 per direction.
    assert layer.count_params() == 2_075_320 - 1_024
    assert np.asarray(layer.embedding.embeddings).max() <= 0.1


def test_float32_outputs_and_shapes():
    words, sentence = TextEncoder(10, word_dim=4, hidden_per_direction=3, dtype="mixed_float16")(TOKENS)
    assert words.dtype == sentence.dtype == "float32"
    assert words.shape == (3, 5, 6) and sentence.shape == (3, 6)
    sym_words, sym_sent = TextEncoder(10, word_dim=4, hidden_per_direction=3)(keras.Input((5,), dtype="int32"))
    assert sym_words.shape == (None, 5, 6) and sym_sent.shape == (None, 6)


def test_serialization_and_errors():
    run_serialization_test(
        TextEncoder(12, word_dim=5, hidden_per_direction=2, dropout=0.2, rnn_type="gru", name="te"),
        TOKENS,
    )
    with pytest.raises(ValueError, match="rnn_type='rnn'"):
        TextEncoder(10, rnn_type="rnn")
