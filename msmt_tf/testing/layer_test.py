"""Shared helpers for layer tests (keras-hub style).

``run_serialization_test(layer, inputs)`` round-trips a layer through ``get_config`` /
``from_config`` and ``keras.saving.serialize_keras_object``, copies the weights, and checks
that both layers give the same outputs; it also checks that ``get_config`` covers every
constructor argument.
"""

import inspect

import keras
import numpy as np


def _flatten(x):
    if isinstance(x, dict):
        return [v for k in sorted(x) for v in _flatten(x[k])]
    if isinstance(x, (list, tuple)):
        return [v for item in x for v in _flatten(item)]
    if x is None:
        return []
    return [keras.ops.convert_to_numpy(x)]


def assert_config_covers_init(layer):
    """Every named ``__init__`` argument of the layer's class appears in ``get_config``."""
    config = layer.get_config()
    params = inspect.signature(type(layer).__init__).parameters
    missing = [
        name
        for name, p in params.items()
        if name not in ("self", "kwargs", "args")
        and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        and name not in config
    ]
    assert not missing, f"{type(layer).__name__}.get_config() lacks {missing}"


def run_serialization_test(layer, inputs, call_kwargs=None, atol=1e-6):
    """Round-trips ``layer`` (already built or not) and compares outputs on ``inputs``."""
    call_kwargs = dict(call_kwargs or {})
    call_kwargs.setdefault("training", False)
    out = layer(inputs, **call_kwargs)
    assert_config_covers_init(layer)

    config = layer.get_config()
    clone = type(layer).from_config(config)
    clone(inputs, **call_kwargs)
    clone.set_weights(layer.get_weights())
    for a, b in zip(_flatten(out), _flatten(clone(inputs, **call_kwargs))):
        np.testing.assert_allclose(a, b, atol=atol)
    assert clone.get_config() == config

    serialized = keras.saving.serialize_keras_object(layer)
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(layer)
    assert revived.get_config() == config
    return out


def random_word_inputs(lengths, seq_len, size, channels, word_dim, seed=0):
    """``(h [B, size, size, channels], words [B, seq_len, word_dim], mask bool [B, seq_len])``
    of a layer that reads image features and words: normal draws (h first, then the words) of
    ``np.random.default_rng(seed)``, one row per caption length in ``lengths``, the padding
    words zero."""
    rng = np.random.default_rng(seed)
    b = len(lengths)
    h = rng.normal(size=(b, size, size, channels)).astype("float32")
    mask = np.arange(seq_len)[None, :] < np.asarray(lengths)[:, None]
    words = rng.normal(size=(b, seq_len, word_dim)).astype("float32") * mask[..., None]
    return h, words, mask


def np_conv_same(x, kernel):
    """Stride-1 'same' convolution in NumPy, the tests' independent reference:
    ``x [N, H, W, C]``, ``kernel [k, k, C, O]`` (odd k), no bias; float64."""
    k = kernel.shape[0]
    r = k // 2
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
    out = np.zeros((n, h, w, kernel.shape[-1]))
    for du in range(k):
        for dv in range(k):
            out += xp[:, du : du + h, dv : dv + w] @ kernel[du, dv]
    return out
