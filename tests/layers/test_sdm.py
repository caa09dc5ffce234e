"""Tests for msmt_tf.layers.sdm (Spatial Dynamic Memory, paper eqs 5-14)."""

import keras
import numpy as np
import pytest

from msmt_tf.layers.sdm import SpatialDynamicMemory
from msmt_tf.testing.layer_test import run_serialization_test

# Tiny case of the issue: s = 4, h = 2 (p = 2), L = 3, tiny widths.
B, S, H, L = 2, 4, 2, 3
N_R, N_M, N_W = 3, 4, 5


def _inputs(seed=0, batch=B, size=S, num_words=L, lengths=(3, 2)):
    rng = np.random.default_rng(seed)
    r_mem = rng.normal(size=(batch, size, size, N_R)).astype("float32")
    q_src = rng.normal(size=(batch, size, size, N_R)).astype("float32")
    words = rng.normal(size=(batch, num_words, N_W)).astype("float32")
    mask = np.arange(num_words)[None, :] < np.asarray(lengths)[:, None]
    words[~mask] = 0.0
    return r_mem, q_src, words, mask


def _randomize(layer, seed=1, scale=0.5):
    """Random weights everywhere (biases too, so that their handling is tested)."""
    rng = np.random.default_rng(seed)
    layer.set_weights(
        [scale * rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()]
    )


# ---------------------------------------------------------------- NumPy reference
def _relu(x):
    return np.maximum(x, 0.0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _conv_same(x, kernel, bias):
    """Loop-based stride-1 'same' 2-D convolution of one image x [H, W, Cin]."""
    k = kernel.shape[0]
    r = k // 2
    height, width, _ = x.shape
    out = np.zeros((height, width, kernel.shape[-1]))
    for u in range(height):
        for v in range(width):
            acc = np.array(bias, dtype=np.float64)
            for du in range(k):
                for dv in range(k):
                    uu, vv = u + du - r, v + dv - r
                    if 0 <= uu < height and 0 <= vv < width:
                        acc = acc + x[uu, vv] @ kernel[du, dv]
            out[u, v] = acc
    return out


def _weights(layer):
    def kb(sub):
        return np.float64(sub.kernel.numpy()), np.float64(sub.bias.numpy())

    return {
        "A": np.float64(layer.word_gate.numpy()),
        "B": np.float64(layer.cell_gate.numpy()),
        "M_w": kb(layer.memory_word),
        "M_c": kb(layer.memory_cell),
        "K": kb(layer.key_conv),
        "V": kb(layer.value_conv),
        "Qg": kb(layer.query_global),
        "Qr": kb(layer.query_grid),
        "Qp": kb(layer.query_pixel),
    }


def reference_sdm(r_mem, q_src, words, mask, wts, grid, key_reading):
    """Eqs 5-14 written out with explicit loops over samples, words, cells and pixels."""
    r_mem, q_src, words = (np.float64(a) for a in (r_mem, q_src, words))
    batch, s, _, n_r = r_mem.shape
    num_words = words.shape[1]
    h = grid
    p = s // h
    out = np.zeros((batch, s, s, n_r))
    alpha_map = np.zeros((batch, s, s, num_words))
    for b in range(batch):
        # eq 5: grid-level features.
        cells = np.zeros((h, h, n_r))
        for i in range(h):
            for j in range(h):
                cells[i, j] = r_mem[b, i * p : (i + 1) * p, j * p : (j + 1) * p].mean((0, 1))
        mc = _relu(_conv_same(cells, *wts["M_c"]))
        # eqs 6-7: one slot per word and cell.
        memory = np.zeros((num_words, h, h, wts["M_w"][0].shape[1]))
        for l in range(num_words):
            mw = _relu(words[b, l] @ wts["M_w"][0] + wts["M_w"][1])
            for i in range(h):
                for j in range(h):
                    g = _sigmoid(words[b, l] @ wts["A"] + cells[i, j] @ wts["B"][i, j])
                    memory[l, i, j] = mw * g + mc[i, j] * (1.0 - g)
        # phi_K is linear; the ReLU (DM-GAN's key) is on the filters dotted with the query
        # only: all 3 N_r of "concat", the first N_r of "positional" (its p^2 filters are logits).
        keys = np.stack([_conv_same(memory[l], *wts["K"]) for l in range(num_words)])
        n_key = keys.shape[-1] if key_reading == "concat" else n_r
        keys[..., :n_key] = _relu(keys[..., :n_key])
        values = np.stack([_relu(_conv_same(memory[l], *wts["V"])) for l in range(num_words)])
        # eqs 9-12: queries.
        q_glob_map = _conv_same(q_src[b], *wts["Qg"])
        q_grid_map = _conv_same(q_src[b], *wts["Qr"])
        q_pix_map = _conv_same(q_src[b], *wts["Qp"])
        q_glob = q_glob_map.mean((0, 1))
        real = [l for l in range(num_words) if mask[b, l]]
        for i in range(h):
            for j in range(h):
                q_grid = q_grid_map[i * p : (i + 1) * p, j * p : (j + 1) * p].mean((0, 1))
                for a in range(p):
                    for c in range(p):
                        u, v = i * p + a, j * p + c
                        q_pix = q_pix_map[u, v]
                        scores = {}
                        for l in real:
                            k = keys[l, i, j]
                            if key_reading == "concat":
                                q = np.concatenate([q_glob, q_grid, q_pix])
                                scores[l] = k @ q
                            else:
                                q = q_glob + q_grid + q_pix
                                scores[l] = k[:n_r] @ q + k[n_r + a * p + c]
                        # eq 8: softmax over the real words only.
                        top = max(scores.values())
                        z = sum(np.exp(sc - top) for sc in scores.values())
                        for l in real:
                            weight = np.exp(scores[l] - top) / z
                            alpha_map[b, u, v, l] = weight
                            # eqs 13-14.
                            out[b, u, v] += weight * values[l, i, j]
    return out, alpha_map


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("key_reading", ["concat", "positional"])
@pytest.mark.parametrize("kernel_size", [3, 1])
def test_matches_loop_reference(key_reading, kernel_size):
    layer = SpatialDynamicMemory(
        N_R, memory_dim=N_M, grid=H, kernel_size=kernel_size, key_reading=key_reading,
        word_dim=N_W,
    )
    inputs = _inputs()
    layer(inputs)
    _randomize(layer)
    out, alpha = layer(inputs)
    ref_out, ref_alpha = reference_sdm(*inputs, _weights(layer), H, key_reading)
    assert out.shape == (B, S, S, N_R) and alpha.shape == (B, S, S, L)
    np.testing.assert_allclose(np.asarray(alpha), ref_alpha, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), ref_out, atol=1e-5)
    # The reference is not degenerate: weights vary over words and pixels.
    assert np.std(ref_alpha[0, ..., 0]) > 1e-3
    assert np.std(ref_out) > 1e-2


def test_positional_logits_can_be_negative():
    """Eq 8 exponentiates the score itself, so phi_K's p^2 positional filters (the logits of
    the pixels of a cell) must not be clipped at 0. With zero queries the logits are the
    positional filters alone; lowering their bias by 100 makes every one of them negative but
    keeps their differences over words, so alpha must not change (under a ReLU every logit
    would become 0 and alpha uniform)."""
    layer = SpatialDynamicMemory(N_R, memory_dim=N_M, grid=H, kernel_size=1,
                                 key_reading="positional", word_dim=N_W)
    inputs = _inputs(lengths=(3, 3))
    layer(inputs)
    _randomize(layer, scale=1.0)
    for conv in (layer.query_global, layer.query_grid, layer.query_pixel):
        conv.set_weights([np.zeros_like(w) for w in conv.get_weights()])
    _, alpha = layer(inputs)
    alpha = np.asarray(alpha)
    assert np.abs(alpha - 1.0 / L).max() > 1e-2  # the positional logits order the words
    kernel, bias = (np.asarray(w) for w in layer.key_conv.get_weights())
    layer.key_conv.set_weights([kernel, bias - 100.0 * (np.arange(bias.size) >= N_R)])
    _, alpha_low = layer(inputs)
    np.testing.assert_allclose(np.asarray(alpha_low), alpha, atol=1e-5)


@pytest.mark.parametrize("key_reading", ["concat", "positional"])
def test_key_width(key_reading):
    layer = SpatialDynamicMemory(N_R, memory_dim=N_M, grid=2, key_reading=key_reading,
                                 word_dim=N_W)
    layer(_inputs(size=8))  # p = 4
    expected = 3 * N_R if key_reading == "concat" else N_R + 16
    assert layer.key_conv.kernel.shape == (3, 3, N_M, expected)
    assert layer.cell_gate.shape == (2, 2, N_R)
    assert layer.word_gate.shape == (N_W,)


@pytest.mark.parametrize("key_reading", ["concat", "positional"])
def test_padding_words_change_nothing(key_reading):
    layer = SpatialDynamicMemory(N_R, memory_dim=N_M, grid=H, key_reading=key_reading,
                                 word_dim=N_W)
    r_mem, q_src, words, mask = _inputs(lengths=(3, 1))
    layer((r_mem, q_src, words, mask))
    _randomize(layer)
    out, alpha = layer((r_mem, q_src, words, mask))
    pad = 4
    words_long = np.concatenate([words, np.zeros((B, pad, N_W), "float32")], axis=1)
    mask_long = np.concatenate([mask, np.zeros((B, pad), bool)], axis=1)
    out_long, alpha_long = layer((r_mem, q_src, words_long, mask_long))
    np.testing.assert_allclose(np.asarray(out_long), np.asarray(out), atol=1e-6)
    np.testing.assert_allclose(np.asarray(alpha_long)[..., :L], np.asarray(alpha), atol=1e-6)
    assert np.all(np.asarray(alpha_long)[..., L:] == 0.0)
    # Garbage in masked positions is ignored too (the mask, not zero words, decides).
    words_noise = words.copy()
    words_noise[~mask] = 7.0
    out_noise, _ = layer((r_mem, q_src, words_noise, mask))
    np.testing.assert_allclose(np.asarray(out_noise), np.asarray(out), atol=1e-6)
    # Per pixel, a distribution over the real words.
    np.testing.assert_allclose(np.asarray(alpha).sum(-1), 1.0, atol=1e-6)
    assert np.all(np.asarray(alpha)[1, ..., 1:] == 0.0)


def test_mask_none_means_every_word_is_real():
    layer = SpatialDynamicMemory(N_R, memory_dim=N_M, grid=H, word_dim=N_W)
    r_mem, q_src, words, _ = _inputs(lengths=(3, 3))
    out_none, alpha_none = layer((r_mem, q_src, words, None))
    out, alpha = layer((r_mem, q_src, words, np.ones((B, L), bool)))
    np.testing.assert_allclose(np.asarray(out_none), np.asarray(out), atol=1e-7)
    np.testing.assert_allclose(np.asarray(alpha_none), np.asarray(alpha), atol=1e-7)
    _, alpha_short = layer((r_mem, q_src, words, np.arange(L)[None] < 2))
    assert np.abs(np.asarray(alpha_short) - np.asarray(alpha)).max() > 1e-3


def test_caption_without_real_words_gives_zero_not_nan():
    layer = SpatialDynamicMemory(N_R, memory_dim=N_M, grid=H, word_dim=N_W)
    r_mem, q_src, words, mask = _inputs(lengths=(3, 0))
    out, alpha = layer((r_mem, q_src, words, mask))
    assert np.all(np.isfinite(np.asarray(out)))
    assert np.all(np.asarray(out)[1] == 0.0) and np.all(np.asarray(alpha)[1] == 0.0)
    assert np.abs(np.asarray(out)[0]).sum() > 0


def test_queries_come_from_q_src_and_memory_from_r_mem():
    layer = SpatialDynamicMemory(N_R, memory_dim=N_M, grid=H, word_dim=N_W)
    r_mem, q_src, words, mask = _inputs()
    layer((r_mem, q_src, words, mask))
    _randomize(layer)
    base, base_alpha = layer((r_mem, q_src, words, mask))
    # Changing the query source changes the addressing.
    _, alpha_q2 = layer((r_mem, q_src + 1.0, words, mask))
    assert np.abs(np.asarray(alpha_q2) - np.asarray(base_alpha)).max() > 1e-3
    # R_mem enters only through the grid means C (eq 5): a permutation of pixels inside
    # each cell keeps the output.
    r_perm = r_mem.reshape(B, H, 2, H, 2, N_R)[:, :, ::-1, :, ::-1].reshape(r_mem.shape)
    out_perm, _ = layer((r_perm, q_src, words, mask))
    np.testing.assert_allclose(np.asarray(out_perm), np.asarray(base), atol=1e-6)
    out_r, _ = layer((r_mem + 1.0, q_src, words, mask))
    assert np.abs(np.asarray(out_r) - np.asarray(base)).max() > 1e-3


def test_symbolic_call_shapes():
    layer = SpatialDynamicMemory(N_R, memory_dim=N_M, grid=2, word_dim=N_W)
    r = keras.Input((8, 8, N_R))
    w = keras.Input((L, N_W))
    m = keras.Input((L,), dtype="bool")
    out, alpha = layer((r, r, w, m))
    assert tuple(out.shape) == (None, 8, 8, N_R)
    assert tuple(alpha.shape) == (None, 8, 8, L)
    assert alpha.dtype == "float32"


def test_mixed_precision_keeps_softmax_float32():
    inputs = _inputs()
    ref = SpatialDynamicMemory(N_R, memory_dim=N_M, grid=H, word_dim=N_W)
    mixed = SpatialDynamicMemory(N_R, memory_dim=N_M, grid=H, word_dim=N_W,
                                 dtype="mixed_float16")
    ref(inputs)
    mixed(inputs)
    _randomize(ref, scale=0.3)
    mixed.set_weights(ref.get_weights())
    out, alpha = ref(inputs)
    out16, alpha16 = mixed(inputs)
    assert out16.dtype == "float16" and alpha16.dtype == "float32"
    assert mixed.word_gate.dtype == "float32"
    np.testing.assert_allclose(np.asarray(alpha16), np.asarray(alpha), atol=2e-2)
    np.testing.assert_allclose(np.float32(out16), np.asarray(out), atol=5e-2)


def test_size_not_divisible_by_grid_is_a_clear_error():
    layer = SpatialDynamicMemory(N_R, memory_dim=N_M, grid=4, word_dim=N_W)
    with pytest.raises(ValueError, match=r"s=6 is not divisible by grid=4"):
        layer(_inputs(size=6))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"key_reading": "sum"}, "key_reading"),
        ({"kernel_size": 2}, "kernel_size=2 must be odd"),
        ({"grid": 0}, "grid=0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpatialDynamicMemory(N_R, **kwargs)


def test_wrong_word_width_is_a_clear_error():
    layer = SpatialDynamicMemory(N_R, memory_dim=N_M, grid=H, word_dim=N_W + 1)
    with pytest.raises(ValueError, match="word_dim"):
        layer(_inputs())


@pytest.mark.parametrize("key_reading", ["concat", "positional"])
def test_serialization_round_trip(key_reading):
    layer = SpatialDynamicMemory(
        N_R, memory_dim=N_M, grid=H, kernel_size=1, key_reading=key_reading, word_dim=N_W,
        name="sdm_head",
    )
    out = run_serialization_test(layer, _inputs())
    assert out[0].shape == (B, S, S, N_R)


ONEDNN_SCRIPT = """
import sys
import numpy as np
from tensorflow.python.util import _pywrap_util_port
from msmt_tf.layers.sdm import SpatialDynamicMemory
assert _pywrap_util_port.IsMklEnabled()
r_mem, q_src, words, mask = (np.load(sys.argv[1])[k] for k in ("r", "q", "w", "m"))
layer = SpatialDynamicMemory(3, memory_dim=4, grid=2, word_dim=5)
layer((r_mem, q_src, words, mask))
with np.load(sys.argv[2]) as f:
    layer.set_weights([f[f"w{i}"] for i in range(len(f.files))])
read, alpha = layer((r_mem, q_src, words, mask))
np.savez(sys.argv[3], read=np.asarray(read), alpha=np.asarray(alpha))
"""


def test_runs_under_onednn_kernels(tmp_path):
    """TensorFlow's oneDNN Softmax rejects rank > 5; oneDNN is on by default on AVX-512
    VNNI/AMX CPUs and ``tools/fid.py`` / ``evaluate`` switch it on, so the 6-D softmax over
    words must not reach it. Fresh process: TensorFlow reads the switch at import."""
    import os
    import subprocess
    import sys

    r_mem, q_src, words, mask = _inputs()
    layer = SpatialDynamicMemory(N_R, memory_dim=N_M, grid=H, word_dim=N_W)
    layer((r_mem, q_src, words, mask))
    _randomize(layer)
    want = [keras.ops.convert_to_numpy(t) for t in layer((r_mem, q_src, words, mask))]
    np.savez(tmp_path / "x.npz", r=r_mem, q=q_src, w=words, m=mask)
    np.savez(tmp_path / "w.npz", **{f"w{i}": w for i, w in enumerate(layer.get_weights())})
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", ONEDNN_SCRIPT, str(tmp_path / "x.npz"), str(tmp_path / "w.npz"),
         str(tmp_path / "out.npz")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp_path / "out.npz") as got:
        np.testing.assert_allclose(got["read"], want[0], atol=1e-5)
        np.testing.assert_allclose(got["alpha"], want[1], atol=1e-5)
