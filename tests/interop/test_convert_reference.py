"""Conversion of released AttnGAN / DM-GAN PyTorch weights (``msmt_tf.interop.reference``).

The state dicts are built here from the reference module structure (``code/model.py`` of
taoxugit/AttnGAN and MinfengZhu/DM-GAN: ``RNN_ENCODER``, ``CNN_ENCODER`` on torchvision's
Inception-v3, ``G_NET`` with ``CA_NET``, ``INIT_STAGE_G``, AttnGAN's / DM-GAN's ``NEXT_STAGE_G``
and ``GET_IMAGE_G``) with the exact key names; widths that scale (GF_DIM, nef, the word
embedding, the vocabulary) are small. They are written without torch in both file formats
(``msmt_tf.testing.torch_files``). The converted models are compared with independent NumPy
implementations of the reference forward passes (NCHW, the literal ``mask.repeat(queryL, 1)`` of
the attention, PyTorch's two LSTM biases and packed sequences).
"""

import collections
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

from msmt_tf.cli import common
from msmt_tf.data import attngan_format
from msmt_tf.data.config import DataConfig
from msmt_tf.evaluation.config import EvalConfig
from msmt_tf.interop import reference
from msmt_tf.models import damsm
from msmt_tf.models.config import ModelConfig
from msmt_tf.models.generator import build_generator
from msmt_tf.testing.torch_files import write_state_dict
from msmt_tf.training.config import TrainConfig
from msmt_tf.training import run_dir as run_dir_lib
from msmt_tf.training.damsm_config import DAMSMConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Tiny widths; base_size 64 because INIT_STAGE_G always has four upsampling blocks.
NEF, WORD_DIM, COND, ZDIM, GF, RNUM, STAGES, VOCAB = 8, 6, 3, 5, 2, 2, 3, 12


def tiny_model_cfg(refinement="memory", **changes):
    values = dict(initial="ig", refinement=refinement, gf_dim=GF, r_num=RNUM, stages=STAGES,
                  base_size=64, z_dim=ZDIM, condition_dim=COND, embedding_dim=NEF,
                  word_embedding_dim=WORD_DIM, rnn_type="lstm", mask_row_quirk=True,
                  damsm_image_size=75)
    values.update(changes)
    return ModelConfig(**values)


def tiny_configs(refinement="memory", **model_changes):
    return common.Configs(
        data=DataConfig(dataset="cub", words_num=6),
        model=tiny_model_cfg(refinement, **model_changes),
        train=TrainConfig(seed=3),
        damsm=DAMSMConfig(damsm_resize="align_corners"),
        eval=EvalConfig(),
    )


# ---------------------------------------------------------------------------------------
# Reference state dicts (key names and shapes of the PyTorch modules).


def _normal(rng, shape, scale=None):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    scale = (1.0 / np.sqrt(fan_in)) if scale is None else scale
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _bn(rng, state, prefix, c, tracked=True):
    state[f"{prefix}.weight"] = (1.0 + 0.2 * rng.standard_normal(c)).astype(np.float32)
    state[f"{prefix}.bias"] = (0.2 * rng.standard_normal(c)).astype(np.float32)
    state[f"{prefix}.running_mean"] = (0.3 * rng.standard_normal(c)).astype(np.float32)
    state[f"{prefix}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    if tracked:  # torch >= 0.4.1 saves it; the 2018 releases do not
        state[f"{prefix}.num_batches_tracked"] = np.array(1000, np.int64)


def text_encoder_state(rng, vocab=VOCAB, word_dim=WORD_DIM, nef=NEF, rnn="lstm"):
    h = nef // 2
    g = (4 if rnn == "lstm" else 3) * h
    s = collections.OrderedDict()
    s["encoder.weight"] = rng.uniform(-0.5, 0.5, (vocab, word_dim)).astype(np.float32)
    for suffix in ("", "_reverse"):
        s[f"rnn.weight_ih_l0{suffix}"] = _normal(rng, (g, word_dim), 0.5)
        s[f"rnn.weight_hh_l0{suffix}"] = _normal(rng, (g, h), 0.5)
        s[f"rnn.bias_ih_l0{suffix}"] = _normal(rng, (g,), 0.3)
        s[f"rnn.bias_hh_l0{suffix}"] = _normal(rng, (g,), 0.3)
    return s


def torchvision_inception_convs():
    """(name, in, out, kh, kw) of every BasicConv2d of torchvision's Inception3 trunk."""
    convs = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3),
             ("Conv2d_2b_3x3", 32, 64, 3, 3), ("Conv2d_3b_1x1", 64, 80, 1, 1),
             ("Conv2d_4a_3x3", 80, 192, 3, 3)]
    for name, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
        convs += [(f"{name}.branch1x1", cin, 64, 1, 1), (f"{name}.branch5x5_1", cin, 48, 1, 1),
                  (f"{name}.branch5x5_2", 48, 64, 5, 5), (f"{name}.branch3x3dbl_1", cin, 64, 1, 1),
                  (f"{name}.branch3x3dbl_2", 64, 96, 3, 3), (f"{name}.branch3x3dbl_3", 96, 96, 3, 3),
                  (f"{name}.branch_pool", cin, pool, 1, 1)]
    convs += [("Mixed_6a.branch3x3", 288, 384, 3, 3), ("Mixed_6a.branch3x3dbl_1", 288, 64, 1, 1),
              ("Mixed_6a.branch3x3dbl_2", 64, 96, 3, 3), ("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3)]
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        convs += [(f"{name}.branch1x1", 768, 192, 1, 1), (f"{name}.branch7x7_1", 768, c7, 1, 1),
                  (f"{name}.branch7x7_2", c7, c7, 1, 7), (f"{name}.branch7x7_3", c7, 192, 7, 1),
                  (f"{name}.branch7x7dbl_1", 768, c7, 1, 1), (f"{name}.branch7x7dbl_2", c7, c7, 7, 1),
                  (f"{name}.branch7x7dbl_3", c7, c7, 1, 7), (f"{name}.branch7x7dbl_4", c7, c7, 7, 1),
                  (f"{name}.branch7x7dbl_5", c7, 192, 1, 7), (f"{name}.branch_pool", 768, 192, 1, 1)]
    convs += [("Mixed_7a.branch3x3_1", 768, 192, 1, 1), ("Mixed_7a.branch3x3_2", 192, 320, 3, 3),
              ("Mixed_7a.branch7x7x3_1", 768, 192, 1, 1), ("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
              ("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1), ("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3)]
    for name, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
        convs += [(f"{name}.branch1x1", cin, 320, 1, 1), (f"{name}.branch3x3_1", cin, 384, 1, 1),
                  (f"{name}.branch3x3_2a", 384, 384, 1, 3), (f"{name}.branch3x3_2b", 384, 384, 3, 1),
                  (f"{name}.branch3x3dbl_1", cin, 448, 1, 1), (f"{name}.branch3x3dbl_2", 448, 384, 3, 3),
                  (f"{name}.branch3x3dbl_3a", 384, 384, 1, 3), (f"{name}.branch3x3dbl_3b", 384, 384, 3, 1),
                  (f"{name}.branch_pool", cin, 192, 1, 1)]
    return convs


def image_encoder_trunk_state(rng):
    s = collections.OrderedDict()
    for name, cin, cout, kh, kw in torchvision_inception_convs():
        s[f"{name}.conv.weight"] = _normal(rng, (cout, cin, kh, kw))
        _bn(rng, s, f"{name}.bn", cout)
    return s


def image_encoder_state(trunk, rng, nef=NEF):
    s = collections.OrderedDict(trunk)
    s["emb_features.weight"] = rng.uniform(-0.1, 0.1, (nef, 768, 1, 1)).astype(np.float32)
    s["emb_cnn_code.weight"] = rng.uniform(-0.1, 0.1, (nef, 2048)).astype(np.float32)
    s["emb_cnn_code.bias"] = rng.uniform(-0.02, 0.02, nef).astype(np.float32)
    return s


def _up_block(rng, s, prefix, cin, cout, tracked):
    s[f"{prefix}.1.weight"] = _normal(rng, (2 * cout, cin, 3, 3))
    _bn(rng, s, f"{prefix}.2", 2 * cout, tracked)


def netg_state(rng, kind, gf=GF, r_num=RNUM, stages=STAGES, nef=NEF, cond=COND, z=ZDIM,
               tracked=True):
    """``G_NET`` state dict in ``state_dict()`` order (the references' ``code/model.py``)."""
    ngf = 16 * gf
    s = collections.OrderedDict()
    s["ca_net.fc.weight"] = _normal(rng, (4 * cond, nef))
    s["ca_net.fc.bias"] = _normal(rng, (4 * cond,), 0.2)
    s["h_net1.fc.0.weight"] = _normal(rng, (ngf * 4 * 4 * 2, cond + z))
    _bn(rng, s, "h_net1.fc.1", ngf * 32, tracked)
    for i in range(4):
        _up_block(rng, s, f"h_net1.upsample{i + 1}", ngf // 2**i, ngf // 2 ** (i + 1), tracked)
    s["img_net1.img.0.weight"] = _normal(rng, (3, gf, 3, 3))
    for k in range(2, stages + 1):
        p = f"h_net{k}"
        if kind == "attn":
            s[f"{p}.att.conv_context.weight"] = _normal(rng, (gf, nef, 1, 1))
        else:
            s[f"{p}.A.weight"] = _normal(rng, (1, nef))
            s[f"{p}.B.weight"] = _normal(rng, (1, gf))
            s[f"{p}.M_r.0.weight"] = _normal(rng, (2 * gf, gf, 1))
            s[f"{p}.M_r.0.bias"] = _normal(rng, (2 * gf,), 0.2)
            s[f"{p}.M_w.0.weight"] = _normal(rng, (2 * gf, nef, 1))
            s[f"{p}.M_w.0.bias"] = _normal(rng, (2 * gf,), 0.2)
            s[f"{p}.key.0.weight"] = _normal(rng, (gf, 2 * gf, 1))
            s[f"{p}.key.0.bias"] = _normal(rng, (gf,), 0.2)
            s[f"{p}.value.0.weight"] = _normal(rng, (gf, 2 * gf, 1))
            s[f"{p}.value.0.bias"] = _normal(rng, (gf,), 0.2)
            s[f"{p}.response_gate.0.weight"] = _normal(rng, (1, 2 * gf, 1, 1))
            s[f"{p}.response_gate.0.bias"] = _normal(rng, (1,), 0.2)
        for i in range(r_num):
            b = f"{p}.residual.{i}.block"
            s[f"{b}.0.weight"] = _normal(rng, (4 * gf, 2 * gf, 3, 3))
            _bn(rng, s, f"{b}.1", 4 * gf, tracked)
            s[f"{b}.3.weight"] = _normal(rng, (2 * gf, 2 * gf, 3, 3))
            _bn(rng, s, f"{b}.4", 2 * gf, tracked)
        _up_block(rng, s, f"{p}.upsample", 2 * gf, gf, tracked)
        s[f"img_net{k}.img.0.weight"] = _normal(rng, (3, gf, 3, 3))
    return s


def write_captions_pickle(path, vocab=VOCAB):
    ixtoword = {0: "<end>"}
    ixtoword.update({i: f"word{i}" for i in range(1, vocab)})
    wordtoix = {w: i for i, w in ixtoword.items()}
    with open(path, "wb") as f:
        pickle.dump([[[1, 2, 3]], [[4, 5]], ixtoword, wordtoix], f, protocol=2)
    return ixtoword


# ---------------------------------------------------------------------------------------
# NumPy reference forward passes (NCHW, eval mode).


def np_conv(x, w, stride=1, pad=None):
    """``nn.Conv2d`` without bias: x ``[B, C, H, W]``, w ``[O, C, kh, kw]``."""
    _, _, kh, kw = w.shape
    ph, pw = (kh // 2, kw // 2) if pad is None else pad
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho = (xp.shape[2] - kh) // stride + 1
    wo = (xp.shape[3] - kw) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], ho, wo))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            out += np.einsum("bchw,oc->bohw", patch, w[:, :, i, j])
    return out


def np_bn(x, s, prefix, eps=1e-5):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = s[f"{prefix}.running_mean"].reshape(shape), s[f"{prefix}.running_var"].reshape(shape)
    w, b = s[f"{prefix}.weight"].reshape(shape), s[f"{prefix}.bias"].reshape(shape)
    return (x - mean) / np.sqrt(var + eps) * w + b


def np_glu(x):
    nc = x.shape[1] // 2
    return x[:, :nc] / (1.0 + np.exp(-x[:, nc:]))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_up(x, s, prefix):
    x = x.repeat(2, axis=2).repeat(2, axis=3)
    return np_glu(np_bn(np_conv(x, s[f"{prefix}.1.weight"]), s, f"{prefix}.2"))


def np_res(x, s, prefix):
    y = np_glu(np_bn(np_conv(x, s[f"{prefix}.0.weight"]), s, f"{prefix}.1"))
    return np_bn(np_conv(y, s[f"{prefix}.3.weight"]), s, f"{prefix}.4") + x


def np_softmax_rows(logits, pad_mask, queries):
    """The reference: ``(B*Q) x T`` logits, ``mask.repeat(queryL, 1)``, ``-inf``, softmax."""
    b, q, t = logits.shape
    flat = logits.reshape(b * q, t).copy()
    rows = np.tile(pad_mask, (queries, 1))  # torch .repeat(queryL, 1)
    flat[rows] = -np.inf
    flat = np.exp(flat - flat.max(axis=1, keepdims=True))
    return (flat / flat.sum(axis=1, keepdims=True)).reshape(b, q, t)


def np_generator(s, kind, z, sent, words, pad_mask, eps, stages=STAGES, r_num=RNUM):
    """G_NET.forward in NumPy; words ``[B, nef, T]``, pad_mask bool ``[B, T]`` (True = pad)."""
    x = sent @ s["ca_net.fc.weight"].T + s["ca_net.fc.bias"]
    x = np_glu(x)
    mu, logvar = x[:, :COND], x[:, COND:]
    c = eps * np.exp(0.5 * logvar) + mu
    h = np.concatenate([c, z], 1) @ s["h_net1.fc.0.weight"].T
    h = np_glu(np_bn(h, s, "h_net1.fc.1"))
    h = h.reshape(h.shape[0], -1, 4, 4)
    for i in range(4):
        h = np_up(h, s, f"h_net1.upsample{i + 1}")
    images = [np.tanh(np_conv(h, s["img_net1.img.0.weight"]))]
    for k in range(2, stages + 1):
        p = f"h_net{k}"
        b, ngf, ih, iw = h.shape
        q = ih * iw
        target = h.reshape(b, ngf, q).transpose(0, 2, 1)  # B x Q x ngf
        if kind == "attn":
            source = np.einsum("oc,bct->bot", s[f"{p}.att.conv_context.weight"][:, :, 0, 0], words)
            attn = np_softmax_rows(target @ source, pad_mask, q)
            context = (source @ attn.transpose(0, 2, 1)).reshape(b, ngf, ih, iw)
            x = np.concatenate([h, context], 1)
        else:
            def conv1d(prefix, v):
                w = s[f"{prefix}.weight"][:, :, 0]
                return np.einsum("oc,bct->bot", w, v) + s[f"{prefix}.bias"][None, :, None]

            t = words.shape[2]
            avg = h.mean(axis=(2, 3))[:, :, None]  # B x ngf x 1
            gate1 = np.einsum("oc,bct->bot", s[f"{p}.A.weight"], words)  # B x 1 x T
            gate2 = np.einsum("oc,bct->bot", s[f"{p}.B.weight"], avg)  # B x 1 x 1
            g = sigmoid(gate1 + gate2)
            memory = (np.maximum(conv1d(f"{p}.M_w.0", words), 0) * g
                      + np.maximum(conv1d(f"{p}.M_r.0", np.repeat(avg, t, 2)), 0) * (1 - g))
            key = np.maximum(conv1d(f"{p}.key.0", memory), 0)
            value = np.maximum(conv1d(f"{p}.value.0", memory), 0)
            attn = np_softmax_rows(target @ key, pad_mask, q)
            out = (value @ attn.transpose(0, 2, 1)).reshape(b, ngf, ih, iw)
            cat = np.concatenate([h, out], 1)
            gate = sigmoid(np.einsum("oc,bchw->bohw", s[f"{p}.response_gate.0.weight"][:, :, 0, 0], cat)
                           + s[f"{p}.response_gate.0.bias"][None, :, None, None])
            h_new = h * (1 - gate) + gate * out
            x = np.concatenate([h_new, h_new], 1)
        for i in range(r_num):
            x = np_res(x, s, f"{p}.residual.{i}.block")
        h = np_up(x, s, f"{p}.upsample")
        images.append(np.tanh(np_conv(h, s[f"img_net{k}.img.0.weight"])))
    return images


def np_rnn(s, tokens, lengths, rnn="lstm"):
    """``RNN_ENCODER.forward`` (packed, bidirectional): words ``[B, T, 2H]``, sentence ``[B, 2H]``."""
    emb = s["encoder.weight"][tokens]
    b, t, _ = emb.shape
    hdim = s["rnn.weight_hh_l0"].shape[1]
    words = np.zeros((b, t, 2 * hdim))
    sent = np.zeros((b, 2 * hdim))
    for d, suffix in enumerate(("", "_reverse")):
        w_ih, w_hh = s[f"rnn.weight_ih_l0{suffix}"], s[f"rnn.weight_hh_l0{suffix}"]
        b_ih, b_hh = s[f"rnn.bias_ih_l0{suffix}"], s[f"rnn.bias_hh_l0{suffix}"]
        for n in range(b):
            h, c = np.zeros(hdim), np.zeros(hdim)
            steps = range(lengths[n]) if d == 0 else reversed(range(lengths[n]))
            for step in steps:
                gx, gh = w_ih @ emb[n, step] + b_ih, w_hh @ h + b_hh
                if rnn == "lstm":
                    i, f, g, o = np.split(gx + gh, 4)
                    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
                    h = sigmoid(o) * np.tanh(c)
                else:
                    xr, xz, xn = np.split(gx, 3)
                    hr, hz, hn = np.split(gh, 3)
                    r, z = sigmoid(xr + hr), sigmoid(xz + hz)
                    h = (1 - z) * np.tanh(xn + r * hn) + z * h
                words[n, step, d * hdim:(d + 1) * hdim] = h
            sent[n, d * hdim:(d + 1) * hdim] = h
    return words, sent


# ---------------------------------------------------------------------------------------
# Fixtures.


@pytest.fixture(scope="module")
def trunk_state():
    return image_encoder_trunk_state(np.random.default_rng(7))


def _inputs(rng, batch=3, t=6, lengths=(6, 4, 2)):
    pad = np.arange(t)[None, :] >= np.asarray(lengths)[:, None]  # sorted, longest first
    words = rng.standard_normal((batch, NEF, t)).astype(np.float32)
    words = words * (~pad)[:, None, :]  # RNN_ENCODER outputs exact zeros at padding
    return {
        "z": rng.standard_normal((batch, ZDIM)).astype(np.float32),
        "sent": rng.standard_normal((batch, NEF)).astype(np.float32),
        "words": words,
        "pad": pad,
        "eps": rng.standard_normal((batch, COND)).astype(np.float32),
    }


def _run_keras(generator, x):
    out = generator({
        "noise": x["z"], "sentence": x["sent"], "words": np.transpose(x["words"], (0, 2, 1)),
        "mask": ~x["pad"], "ca_eps": x["eps"],
    }, training=False)
    return [np.transpose(np.asarray(img), (0, 3, 1, 2)) for img in out["images"]]


# ---------------------------------------------------------------------------------------
# Tests.


def test_torchvision_key_list_has_the_reference_parameter_count():
    # torchvision's inception_v3 trunk (the frozen backbone of CNN_ENCODER): 21,785,568 parameters.
    n = sum(cout * cin * kh * kw + 2 * cout for _, cin, cout, kh, kw in torchvision_inception_convs())
    assert n == 21_785_568


@pytest.mark.parametrize("kind", ["attn", "memory"])
def test_generator_reproduces_numpy_reference(kind):
    rng = np.random.default_rng(11)
    state = netg_state(rng, kind)
    cfg = tiny_model_cfg(kind)
    generator = build_generator(cfg, seed=0)
    x = _inputs(rng)
    _run_keras(generator, x)  # build
    used = reference.load_generator(generator, state, source="netG.pth")
    assert set(used) == {k for k in state if not k.endswith("num_batches_tracked")}
    got = _run_keras(generator, x)
    want = np_generator(state, kind, x["z"], x["sent"], x["words"], x["pad"], x["eps"])
    assert [g.shape for g in got] == [(3, 3, 64, 64), (3, 3, 128, 128), (3, 3, 256, 256)]
    for g, w in zip(got, want):
        assert np.abs(w).max() > 0.05  # not a trivially saturated or zero image
        np.testing.assert_allclose(g, w, atol=2e-5)


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_text_encoder_reproduces_numpy_rnn(rnn):
    rng = np.random.default_rng(5)
    state = text_encoder_state(rng, rnn=rnn)
    cfg = tiny_model_cfg(rnn_type=rnn)
    text = damsm.build_text_encoder(cfg, VOCAB)
    reference.load_text_encoder(text, state, source="text_encoder.pth")
    tokens = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 0, 0], [5, 0, 0, 0, 0]], np.int32)
    words, sent = text(tokens, training=False)
    want_words, want_sent = np_rnn(state, tokens, [5, 3, 1], rnn)
    np.testing.assert_allclose(np.asarray(words), want_words, atol=1e-5)
    np.testing.assert_allclose(np.asarray(sent), want_sent, atol=1e-5)


def test_image_encoder_mapping_conv_bn_and_projections(trunk_state):
    rng = np.random.default_rng(9)
    state = image_encoder_state(trunk_state, rng)
    cfg = tiny_model_cfg()
    image = damsm.build_image_encoder(cfg, variant="torchvision", resize="align_corners",
                                      load_trunk_weights=False)
    used = reference.load_image_encoder(image, state, source="image_encoder.pth")
    assert len(used) == 94 * 5 + 3  # 94 BasicConv2d (conv + 4 BN tensors) + 3 projection tensors
    # One BasicConv2d (conv 3x3 stride 2, no bias + BN eps 1e-3 + ReLU) against NumPy.
    x = rng.uniform(-1, 1, (1, 3, 9, 9)).astype(np.float32)
    conv = image.trunk.convs["Conv2d_1a_3x3"]
    got = np.transpose(np.asarray(conv(np.transpose(x, (0, 2, 3, 1)), training=False)), (0, 3, 1, 2))
    want = np.maximum(np_bn(np_conv(x, state["Conv2d_1a_3x3.conv.weight"], stride=2, pad=(0, 0)),
                            state, "Conv2d_1a_3x3.bn", eps=1e-3), 0)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # A 7x1 kernel keeps its orientation (OIHW -> HWIO, not a transpose of H and W).
    k = np.asarray(image.trunk.convs["Mixed_6b.branch7x7_3"].conv.kernel)
    np.testing.assert_array_equal(k, np.transpose(state["Mixed_6b.branch7x7_3.conv.weight"], (2, 3, 1, 0)))
    # The drifted BN statistics are the file's.
    bn = image.trunk.convs["Mixed_7c.branch_pool"].bn
    np.testing.assert_array_equal(np.asarray(bn.moving_variance), state["Mixed_7c.branch_pool.bn.running_var"])
    # The projections: region features (1x1 conv) and the global code (Linear).
    local = rng.standard_normal((1, 2, 2, 768)).astype(np.float32)
    pooled = rng.standard_normal((2, 2048)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(image.emb_features(local)),
        np.einsum("bhwc,oc->bhwo", local, state["emb_features.weight"][:, :, 0, 0]), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(image.emb_cnn_code(pooled)),
        pooled @ state["emb_cnn_code.weight"].T + state["emb_cnn_code.bias"], atol=1e-5)


def _write_reference_files(tmp_path, fmt, trunk_state, kind="memory", rng=None, **netg_kwargs):
    rng = rng or np.random.default_rng(13)
    states = {
        "text": text_encoder_state(rng),
        "image": image_encoder_state(trunk_state, rng),
        "netG": netg_state(rng, kind, tracked=fmt == "zip", **netg_kwargs),
    }
    paths = {
        "text": str(tmp_path / "text_encoder200.pth"),
        "image": str(tmp_path / "image_encoder200.pth"),
        "netG": str(tmp_path / "netG_epoch_600.pth"),
        "captions": str(tmp_path / "captions.pickle"),
    }
    for name in ("text", "image"):
        write_state_dict(paths[name], states[name], fmt)
    # The 2018 AttnGAN release was saved from a GPU by torch 0.3 (_rebuild_tensor, cuda storages).
    legacy_2018 = dict(cuda=True, rebuild="v1") if fmt == "legacy" else {}
    write_state_dict(paths["netG"], states["netG"], fmt, **legacy_2018)
    write_captions_pickle(paths["captions"])
    return states, paths


@pytest.mark.parametrize("fmt,kind", [("zip", "memory"), ("legacy", "attn")])
def test_converted_run_dir_loads_for_inference(tmp_path, trunk_state, fmt, kind):
    from msmt_tf import inference

    states, paths = _write_reference_files(tmp_path, fmt, trunk_state, kind)
    run = str(tmp_path / "run")
    report = reference.convert_reference(
        tiny_configs(kind), run, text_encoder=paths["text"], image_encoder=paths["image"],
        netg=paths["netG"], captions_pickle=paths["captions"])
    assert report["generator"]["refinement"] == kind and report["vocab_size"] == VOCAB
    assert sorted(os.listdir(run)) == ["checkpoints", "config.json", "conversion.json", "damsm",
                                       "damsm_encoders.json"]
    assert not os.path.exists(run + ".converting")
    # The run records the encoders its generator was trained with, as training does.
    recorded = run_dir_lib.read_damsm_record(run)
    assert recorded == damsm.fingerprint(os.path.join(run, "damsm"))
    assert report["sources"]["netG"]["sha1"] == reference.file_sha1(paths["netG"])

    loaded = inference.load_for_inference(run_dir=run)
    assert loaded.checkpoint.endswith("ckpt-0")
    assert loaded.configs.model.mask_row_quirk and loaded.configs.model.refinement == kind
    assert loaded.configs.damsm.damsm_image_variant == "torchvision"
    assert loaded.image_encoder.resize == "align_corners"
    assert loaded.vocab.words() == ["<end>"] + [f"word{i}" for i in range(1, VOCAB)]
    assert os.path.samefile(loaded.damsm_dir, os.path.join(run, "damsm"))
    # The restored EMA generator reproduces the reference forward pass.
    x = _inputs(np.random.default_rng(1))
    got = _run_keras(loaded.generator, x)
    want = np_generator(states["netG"], kind, x["z"], x["sent"], x["words"], x["pad"], x["eps"])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=2e-5)
    # The restored encoders carry the file's weights.
    np.testing.assert_array_equal(np.asarray(loaded.text_encoder.embedding.embeddings),
                                  states["text"]["encoder.weight"])
    np.testing.assert_array_equal(np.asarray(loaded.image_encoder.emb_cnn_code.bias),
                                  states["image"]["emb_cnn_code.bias"])
    # The live generator is stored too (what load_for_inference(use_ema=False) reads).
    import tensorflow as tf

    from msmt_tf.training.checkpointing import VariableMap

    status = tf.train.Checkpoint(generator=VariableMap(loaded.generator)).read(loaded.checkpoint)
    status.assert_existing_objects_matched()


def test_missing_unexpected_and_misshaped_keys_are_listed(trunk_state):
    rng = np.random.default_rng(2)
    generator = build_generator(tiny_model_cfg("memory"), seed=0)
    _run_keras(generator, _inputs(rng))
    state = netg_state(rng, "memory")
    del state["h_net2.key.0.bias"], state["img_net3.img.0.weight"]
    state["h_net2.extra.weight"] = np.zeros(3, np.float32)
    state["h_net3.M_w.0.weight"] = np.zeros((2 * GF, NEF + 1, 1), np.float32)
    before = np.asarray(generator.ca.fc.kernel).copy()
    with pytest.raises(reference.ConversionError) as e:
        reference.load_generator(generator, state, source="netG_bad.pth")
    msg = str(e.value)
    assert "netG_bad.pth" in msg
    assert "2 missing keys: h_net2.key.0.bias, img_net3.img.0.weight" in msg
    assert "1 unexpected keys: h_net2.extra.weight" in msg
    assert "h_net3.M_w.0.weight (4, 9, 1) (expected (4, 8, 1))" in msg
    np.testing.assert_array_equal(np.asarray(generator.ca.fc.kernel), before)  # nothing assigned

    text = damsm.build_text_encoder(tiny_model_cfg(), VOCAB)
    tstate = text_encoder_state(rng)
    del tstate["rnn.bias_hh_l0_reverse"]
    with pytest.raises(reference.ConversionError, match=r"1 missing keys: rnn.bias_hh_l0_reverse"):
        reference.load_text_encoder(text, tstate)

    image = damsm.build_image_encoder(tiny_model_cfg(), variant="torchvision", load_trunk_weights=False)
    istate = image_encoder_state(trunk_state, rng)
    del istate["Mixed_6e.branch7x7dbl_5.bn.running_var"]
    istate["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)
    with pytest.raises(reference.ConversionError,
                       match=r"missing keys: Mixed_6e.branch7x7dbl_5.bn.running_var; "
                             r"1 unexpected keys: AuxLogits.fc.weight"):
        reference.load_image_encoder(image, istate)


def test_vocabulary_size_mismatch_names_both_sizes(tmp_path, trunk_state):
    _, paths = _write_reference_files(tmp_path, "zip", trunk_state)
    write_captions_pickle(paths["captions"], vocab=VOCAB + 3)
    with pytest.raises(reference.ConversionError) as e:
        reference.convert_reference(
            tiny_configs(), str(tmp_path / "run"), text_encoder=paths["text"],
            image_encoder=paths["image"], netg=paths["netG"], captions_pickle=paths["captions"])
    assert f"{VOCAB} rows" in str(e.value) and f"{VOCAB + 3} words" in str(e.value)
    assert not os.path.exists(tmp_path / "run")


def _convert_encoders(paths, out, configs=None, **changes):
    kwargs = dict(text_encoder=paths["text"], image_encoder=paths["image"],
                  captions_pickle=paths["captions"])
    kwargs.update(changes)
    return reference.convert_encoders(configs or tiny_configs(), str(out), **kwargs)


def _resave_npz(path, **replace):
    """Rewrites an encoder ``.npz`` compressed (other bytes), with some arrays replaced."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.update(replace)
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return arrays


def test_encoders_alone_give_a_damsm_dir_the_loader_rebuilds(tmp_path, trunk_state):
    states, paths = _write_reference_files(tmp_path, "legacy", trunk_state)
    out = str(tmp_path / "damsm_released")
    report = _convert_encoders(paths, out)
    assert sorted(os.listdir(out)) == sorted(
        [damsm.TEXT_FILE, damsm.IMAGE_FILE, damsm.VOCAB_FILE, damsm.META_FILE])
    assert not os.path.exists(out + ".converting")
    with open(os.path.join(out, damsm.META_FILE)) as f:
        meta = json.load(f)
    # tiny_configs: the default tf2015 trunk is replaced by the released encoders' torchvision.
    assert (meta["damsm_image_variant"], meta["damsm_resize"], meta["damsm_image_size"]) == (
        "torchvision", "align_corners", 75)
    assert meta["converted_from"]["image_encoder"]["sha1"] == reference.file_sha1(paths["image"])
    assert sorted(meta["converted_from"]) == ["captions_pickle", "image_encoder", "text_encoder"]

    # The normal loader (what msmt_tf.train --damsm_dir and load_for_inference call).
    vocab = attngan_format.load_vocabulary(paths["captions"], "--captions_pickle")
    text, image, loaded_vocab, loaded_meta = damsm.load_encoders(out, tiny_model_cfg(), vocab)
    assert loaded_vocab.words() == vocab.words()
    assert loaded_meta["fingerprint"] == report["fingerprint"] == damsm.fingerprint(out)
    assert loaded_meta["fingerprint"]["path"] == os.path.abspath(out)
    # The text encoder computes the reference RNN_ENCODER (independent NumPy LSTM).
    tokens = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 0, 0], [5, 0, 0, 0, 0]], np.int32)
    words, sent = text(tokens, training=False)
    want_words, want_sent = np_rnn(states["text"], tokens, [5, 3, 1])
    np.testing.assert_allclose(np.asarray(words), want_words, atol=1e-5)
    np.testing.assert_allclose(np.asarray(sent), want_sent, atol=1e-5)
    # The image encoder is rebuilt as converted: torchvision trunk, the recorded resize, and
    # the outputs of the encoder converted straight from the file (64 px in: resized to 75).
    assert (image.variant, image.resize, image.image_size) == ("torchvision", "align_corners", 75)
    direct = damsm.build_image_encoder(tiny_model_cfg(), variant="torchvision",
                                       resize="align_corners", load_trunk_weights=False)
    reference.load_image_encoder(direct, states["image"])
    x = np.random.default_rng(3).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    for got, want in zip(image(x, training=False), direct(x, training=False)):
        assert np.abs(np.asarray(want)).max() > 1e-3
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)


def test_fingerprint_hashes_contents_not_file_bytes(tmp_path, trunk_state):
    _, paths = _write_reference_files(tmp_path, "zip", trunk_state)
    a, b = tmp_path / "a", tmp_path / "b"
    first = _convert_encoders(paths, a)["fingerprint"]["sha256"]
    assert len(first) == 64
    # The same weights in a file with other bytes (compressed; np.savez also stamps the time).
    shutil.copytree(a, b)
    text_path = str(b / damsm.TEXT_FILE)
    before = open(text_path, "rb").read()
    arrays = _resave_npz(text_path)
    assert open(text_path, "rb").read() != before
    assert damsm.fingerprint(str(b))["sha256"] == first
    # One changed weight, the same directory rewritten: a new fingerprint (no stale cache).
    key = next(k for k in sorted(arrays) if arrays[k].ndim == 2)
    _resave_npz(text_path, **{key: arrays[key] + np.float32(1e-3)})
    assert damsm.fingerprint(str(b))["sha256"] != first
    # Another resize of the image input is another encoder.
    meta_path = str(a / damsm.META_FILE)
    with open(meta_path) as f:
        meta = json.load(f)
    meta["damsm_resize"] = "bilinear"
    with open(meta_path + ".tmp", "w") as f:
        json.dump(meta, f)
    os.replace(meta_path + ".tmp", meta_path)
    assert damsm.fingerprint(str(a))["sha256"] != first


def test_encoders_alone_errors_are_one_line_and_write_nothing(tmp_path, trunk_state):
    from msmt_tf.errors import UserError

    _, paths = _write_reference_files(tmp_path, "zip", trunk_state)
    out = tmp_path / "damsm"
    cases = [
        (dict(text_encoder=str(tmp_path / "missing.pth")), "missing.pth: no such file"),
        (dict(image_encoder=paths["text"]), "no 'emb_cnn_code.weight'"),
        (dict(configs=tiny_configs(embedding_dim=16)), "--embedding_dim=8.*--embedding_dim=16"),
    ]
    for changes, message in cases:
        with pytest.raises(reference.ConversionError, match=message) as e:
            _convert_encoders(paths, out, **changes)
        assert isinstance(e.value, UserError) and "\n" not in str(e.value)
        assert not out.exists() and not os.path.exists(str(out) + ".converting")
    write_captions_pickle(str(tmp_path / "other.pickle"), vocab=VOCAB + 3)
    with pytest.raises(reference.ConversionError, match=f"{VOCAB} rows.*{VOCAB + 3} words"):
        _convert_encoders(paths, out, captions_pickle=str(tmp_path / "other.pickle"))

    # A converted directory that does not fit: one-line DAMSMLoadErrors.
    _convert_encoders(paths, out)
    with pytest.raises(damsm.DAMSMLoadError, match="--embedding_dim=8, the run asks for 16"):
        damsm.load_encoders(str(out), tiny_model_cfg(embedding_dim=16))
    other_vocab = attngan_format.load_vocabulary(str(tmp_path / "other.pickle"),
                                                  "--captions_pickle")
    with pytest.raises(damsm.DAMSMLoadError, match=f"{VOCAB}-word vocabulary"):
        damsm.load_encoders(str(out), tiny_model_cfg(), other_vocab)
    with pytest.raises(reference.ConversionError, match="not empty"):
        _convert_encoders(paths, out)
    os.remove(out / damsm.IMAGE_FILE)
    for call in (lambda: damsm.load_encoders(str(out), tiny_model_cfg()),
                 lambda: damsm.fingerprint(str(out))):
        with pytest.raises(damsm.DAMSMLoadError, match="no DAMSM encoders in") as e:
            call()
        assert isinstance(e.value, UserError) and "\n" not in str(e.value)


def test_wrong_preset_names_the_flags(tmp_path, trunk_state):
    _, paths = _write_reference_files(tmp_path, "zip", trunk_state, kind="memory")
    with pytest.raises(reference.ConversionError) as e:
        reference.convert_reference(
            tiny_configs("attn", gf_dim=4, r_num=1), str(tmp_path / "run"),
            text_encoder=paths["text"], image_encoder=paths["image"], netg=paths["netG"],
            captions_pickle=paths["captions"])
    msg = str(e.value)
    assert "--refinement=memory --gf_dim=2 --r_num=2" in msg
    assert "--refinement=attn --gf_dim=4 --r_num=1" in msg
    with pytest.raises(reference.ConversionError, match="only AttnGAN"):
        reference.check_generator({}, tiny_model_cfg("sdm"))
    text = text_encoder_state(np.random.default_rng(0), word_dim=7)
    with pytest.raises(reference.ConversionError, match="--word_embedding_dim=7.*--word_embedding_dim=6"):
        reference.check_text_encoder(text, tiny_model_cfg(), VOCAB)
    os.makedirs(tmp_path / "busy")
    open(tmp_path / "busy" / "x", "w").close()
    with pytest.raises(reference.ConversionError, match="not empty"):
        reference.convert_reference(
            tiny_configs(), str(tmp_path / "busy"), text_encoder=paths["text"],
            image_encoder=paths["image"], netg=paths["netG"], captions_pickle=paths["captions"])


def test_cli_with_preset(tmp_path, trunk_state):
    """tools/convert_reference.py --preset=dmgan_cub with the cub widths (GF_DIM reduced)."""
    rng = np.random.default_rng(4)
    text = text_encoder_state(rng, vocab=VOCAB, word_dim=300, nef=256)
    image = image_encoder_state(trunk_state, rng, nef=256)
    netg = netg_state(rng, "memory", gf=1, nef=256, cond=100, z=100)
    os.makedirs(tmp_path / "DAMSMencoders")
    for name, state in (("text_encoder200.pth", text), ("image_encoder200.pth", image)):
        write_state_dict(str(tmp_path / "DAMSMencoders" / name), state, "legacy")
    write_state_dict(str(tmp_path / "bird_DMGAN.pth"), netg, "legacy")
    write_captions_pickle(str(tmp_path / "captions.pickle"))
    run = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "convert_reference.py"), "--preset", "dmgan_cub",
           "--gf_dim=1", "--damsm_image_size=75", "--mask_row_quirk", "--damsm_resize=align_corners",
           f"--text_encoder={tmp_path / 'DAMSMencoders' / 'text_encoder200.pth'}",
           f"--netG={tmp_path / 'bird_DMGAN.pth'}", f"--captions_pickle={tmp_path / 'captions.pickle'}",
           f"--out={run}"]
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((run / "config.json").read_text())
    assert (config["model"]["refinement"], config["model"]["gf_dim"], config["data"]["dataset"],
            config["model"]["mask_row_quirk"], config["damsm"]["damsm_dir"]) == (
        "memory", 1, "cub", True, "damsm")
    report = json.loads((run / "conversion.json").read_text())
    assert report["sources"]["image_encoder"]["path"].endswith("image_encoder200.pth")
    # A wrong preset fails with the flags to change and writes nothing.
    bad = cmd[:3] + ["attngan_cub"] + cmd[4:-1] + [f"--out={tmp_path / 'run2'}"]
    proc = subprocess.run(bad, cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "--refinement=memory" in proc.stderr
    assert not os.path.exists(tmp_path / "run2")


def test_cli_encoders_alone(tmp_path, trunk_state):
    """tools/convert_reference.py without --netG: the paper's protocol, --preset=msmt_cub."""
    rng = np.random.default_rng(8)
    text = text_encoder_state(rng, vocab=VOCAB, word_dim=300, nef=256)
    image = image_encoder_state(trunk_state, rng, nef=256)
    os.makedirs(tmp_path / "DAMSMencoders" / "bird")
    for name, state in (("text_encoder200.pth", text), ("image_encoder200.pth", image)):
        write_state_dict(str(tmp_path / "DAMSMencoders" / "bird" / name), state, "legacy",
                         cuda=True, rebuild="v1")
    write_captions_pickle(str(tmp_path / "captions.pickle"))
    out = tmp_path / "cub_damsm_attngan"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "convert_reference.py"), "--preset=msmt_cub",
           "--damsm_image_size=75",
           f"--text_encoder={tmp_path / 'DAMSMencoders' / 'bird' / 'text_encoder200.pth'}",
           f"--captions_pickle={tmp_path / 'captions.pickle'}", f"--out={out}"]
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # One warning naming both settings that differ from the released encoders' (no generator:
    # --mask_row_quirk is not mentioned).
    warnings = [line for line in proc.stderr.splitlines() if "the released weights were" in line]
    assert len(warnings) == 1 and "mask_row_quirk" not in warnings[0]
    assert "--damsm_resize=bilinear --damsm_image_size=75" in warnings[0]
    assert "--damsm_resize=align_corners --damsm_image_size=299" in warnings[0]
    assert f"train with --damsm_dir={out}" in proc.stdout
    meta = json.loads((out / damsm.META_FILE).read_text())
    assert (meta["damsm_image_variant"], meta["damsm_resize"], meta["embedding_dim"],
            meta["word_embedding_dim"]) == ("torchvision", "bilinear", 256, 300)
    assert meta["converted_from"]["image_encoder"]["path"].endswith(
        os.path.join("bird", "image_encoder200.pth"))  # derived from --text_encoder
    loaded_text, _, _, _ = damsm.load_encoders(
        str(out), tiny_model_cfg(embedding_dim=256, word_embedding_dim=300))
    tokens = np.array([[2, 7, 1], [4, 0, 0]], np.int32)
    _, sent = loaded_text(tokens, training=False)
    np.testing.assert_allclose(np.asarray(sent), np_rnn(text, tokens, [3, 1])[1], atol=1e-5)
