"""Import of released AttnGAN / DM-GAN PyTorch weights into msmt_tf models and run directories.

The released files are plain ``torch.save(module.state_dict())`` pickles, read here without
torch by ``msmt_tf.io.torch_serialization`` (zip and legacy formats). Three state dicts map
onto our layers (module structure: ``code/model.py`` of taoxugit/AttnGAN and MinfengZhu/DM-GAN):

* ``text_encoder*.pth`` (``RNN_ENCODER``) -> ``TextEncoder``: ``encoder.weight`` is the
  embedding; ``rnn.{weight_ih,weight_hh,bias_ih,bias_hh}_l0[_reverse]`` the two LSTM
  directions. PyTorch's gate order (i, f, g, o) is Keras' (i, f, c, o); Keras has one bias per
  gate, ``b_ih + b_hh``. A GRU (``RNN_TYPE: GRU``) is reordered from (r, z, n) to Keras'
  (z, r, h) and keeps both biases (``reset_after=True``).
* ``image_encoder*.pth`` (``CNN_ENCODER``) -> ``DAMSMImageEncoder(variant="torchvision")``:
  the whole torchvision Inception-v3 trunk, batch-norm running statistics included (they
  drifted during DAMSM training: AttnGAN's ``pretrain_DAMSM.py`` runs the trunk in train
  mode), ``emb_features`` (1x1 conv) and ``emb_cnn_code``.
* ``netG*.pth`` (``G_NET``) -> ``Generator(initial="ig", refinement="attn" | "memory")``:
  ``ca_net`` (CA), ``h_net1`` (``INIT_STAGE_G``), ``h_net2..`` (AttnGAN ``NEXT_STAGE_G`` with
  ``GlobalAttentionGeneral``, or DM-GAN's with the memory, gates and response gate) and
  ``img_net1..`` (``GET_IMAGE_G``).

Layout rules: conv kernels OIHW -> HWIO; ``Linear`` and 1x1 ``Conv1d``/``Conv2d`` used as
dense layers ``(out, in[, 1, 1]) -> (in, out)``; BN ``weight, bias, running_mean,
running_var`` -> ``gamma, beta, moving_mean, moving_variance`` (``num_batches_tracked`` is
ignored). The GLU halves, the ``view(B, ngf, 4, 4)`` of ``INIT_STAGE_G`` and the
``cat(h, memory_out)`` of the response gate are laid out by our layers so that no permutation
is needed (see ``SeedDecoder``, ``GLU``, ``MemoryRefinement``).

Every mapping is checked as a whole before anything is assigned: missing keys, unexpected keys
and shape mismatches are listed together in one ``ConversionError``; a generator or text
encoder whose sizes disagree with the configuration is named with the flags to change, and a
vocabulary whose size differs from the embedding is an error naming both sizes.

``convert_reference`` writes a run directory that ``msmt_tf.sample``, ``msmt_tf.evaluate`` and
``msmt_tf.export`` load through ``msmt_tf.inference.load_for_inference``;
``convert_encoders`` converts the two DAMSM encoders alone into an encoder directory for
``--damsm_dir`` (training and evaluating with AttnGAN's released encoders, the paper's protocol).
"""

import collections
import dataclasses
import datetime
import hashlib
import json
import os
import re
import shutil

import numpy as np

from msmt_tf import errors
from msmt_tf.data import attngan_format
from msmt_tf.io import torch_serialization

# Keys present in state dicts written by torch >= 0.4.1 that carry nothing we need.
_IGNORED = re.compile(r"(^|\.)num_batches_tracked$")
DAMSM_SUBDIR = "damsm"
REPORT_FILE = "conversion.json"
_MAX_LISTED = 25


class ConversionError(errors.UserError, ValueError):
    """A reference file does not fit the model or the configuration; the message says why."""


# ---------------------------------------------------------------------------------------
# Reading.


def read_state_dict(path, what="state dict"):
    """``OrderedDict`` name -> array of a ``.pth`` file (zip or legacy), without torch.

    A ``module.`` prefix on every key (a model saved inside ``nn.DataParallel``) is removed.
    """
    try:
        state = torch_serialization.load_state_dict(path)
    except torch_serialization.TorchFileError as e:
        raise ConversionError(f"{what}: {e}") from None
    if not state:
        raise ConversionError(f"{what} {path}: holds no tensors; is it a state dict?")
    if all(k.startswith("module.") for k in state):
        state = collections.OrderedDict((k[len("module."):], v) for k, v in state.items())
    return state


def file_sha1(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# A mapping from torch keys to Keras variables, checked as a whole.


@dataclasses.dataclass
class _Entry:
    keys: tuple  # torch keys feeding the variable
    shapes: tuple  # their expected torch shapes
    variable: object  # the Keras variable
    convert: object  # f(*arrays) -> array of the variable's shape


def _shape(variable):
    return tuple(int(s) for s in variable.shape)


def _linear_weight(w):
    """``(out, in)``, ``(out, in, 1)`` or ``(out, in, 1, 1)`` -> dense kernel ``(in, out)``."""
    return w.reshape(w.shape[0], w.shape[1]).T


def _conv_weight(w):
    return np.transpose(w, (2, 3, 1, 0))  # OIHW -> HWIO


class WeightMap:
    """Torch state-dict keys -> Keras variables of one model, with layout conversions.

    Build it with the helpers (``linear``, ``conv2d``, ``batch_norm`` ...), then ``apply`` a
    state dict: every expected key must be present with the expected shape and every key of the
    file must be expected (``num_batches_tracked`` aside); otherwise nothing is assigned and a
    ``ConversionError`` lists the problems.
    """

    def __init__(self):
        self.entries = []

    def add(self, keys, shapes, variable, convert):
        self.entries.append(_Entry(tuple(keys), tuple(tuple(s) for s in shapes), variable, convert))

    def linear(self, prefix, dense, bias=True, trailing=()):
        """``nn.Linear`` (``trailing=()``), ``Conv1d`` k=1 (``(1,)``) or ``Conv2d`` 1x1
        (``(1, 1)``) whose weights feed a Keras ``Dense``."""
        k_in, k_out = _shape(dense.kernel)
        shape = (k_out, k_in) + tuple(trailing)
        self.add([f"{prefix}.weight"], [shape], dense.kernel, _linear_weight)
        if bias:
            self.add([f"{prefix}.bias"], [(k_out,)], dense.bias, lambda b: b)

    def conv2d(self, key, conv):
        kh, kw, cin, cout = _shape(conv.kernel)
        self.add([key], [(cout, cin, kh, kw)], conv.kernel, _conv_weight)

    def batch_norm(self, prefix, bn):
        (c,) = _shape(bn.moving_mean)
        for name, var in (("weight", bn.gamma), ("bias", bn.beta), ("running_mean", bn.moving_mean),
                          ("running_var", bn.moving_variance)):
            self.add([f"{prefix}.{name}"], [(c,)], var, lambda a: a)

    def plain(self, key, variable):
        self.add([key], [_shape(variable)], variable, lambda a: a)

    @property
    def keys(self):
        return [k for e in self.entries for k in e.keys]

    def check(self, state, source):
        """Raises ``ConversionError`` listing missing / unexpected / mis-shaped keys."""
        expected = self.keys
        expected_set = set(expected)
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected_set and not _IGNORED.search(k)]
        wrong = []
        for entry in self.entries:
            for key, shape in zip(entry.keys, entry.shapes):
                if key in state and tuple(np.shape(state[key])) != shape:
                    wrong.append(f"{key} {tuple(np.shape(state[key]))} (expected {shape})")
        if missing or unexpected or wrong:
            parts = []
            for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                 ("shape mismatches", wrong)):
                if items:
                    shown = ", ".join(items[:_MAX_LISTED])
                    extra = len(items) - _MAX_LISTED
                    more = f" ... and {extra} more" if extra > 0 else ""
                    parts.append(f"{len(items)} {label}: {shown}{more}")
            raise ConversionError(f"{source} does not fit the model: " + "; ".join(parts) + ".")

    def apply(self, state, source):
        """Checks ``state`` (see ``check``) and assigns every variable; returns the keys used."""
        self.check(state, source)
        for entry in self.entries:
            arrays = [np.asarray(state[k], dtype=np.float32) for k in entry.keys]
            value = np.asarray(entry.convert(*arrays), dtype=np.float32)
            if value.shape != _shape(entry.variable):  # a bug in a mapping, not in the file
                raise AssertionError(f"{entry.keys}: converted to {value.shape}, variable "
                                     f"{entry.variable.path} is {_shape(entry.variable)}")
            entry.variable.assign(value)
        return self.keys


# ---------------------------------------------------------------------------------------
# Text encoder (RNN_ENCODER).


def _rnn_cells(text_encoder):
    rnn = text_encoder.rnn
    return {"": rnn.forward_layer.cell, "_reverse": rnn.backward_layer.cell}


def _gru_reorder(w):
    """PyTorch GRU gate blocks (r, z, n) along axis 0 -> Keras (z, r, h)."""
    r, z, n = np.split(w, 3, axis=0)
    return np.concatenate([z, r, n], axis=0)


def text_encoder_map(text_encoder):
    """``WeightMap`` of a built ``TextEncoder`` from ``RNN_ENCODER`` keys (AttnGAN ``model.py``)."""
    m = WeightMap()
    m.plain("encoder.weight", text_encoder.embedding.embeddings)
    for suffix, cell in _rnn_cells(text_encoder).items():
        units = cell.units
        in_dim = _shape(cell.kernel)[0]
        p = "rnn."
        if text_encoder.rnn_type == "lstm":
            g = 4 * units
            m.add([f"{p}weight_ih_l0{suffix}"], [(g, in_dim)], cell.kernel, lambda w: w.T)
            m.add([f"{p}weight_hh_l0{suffix}"], [(g, units)], cell.recurrent_kernel, lambda w: w.T)
            m.add([f"{p}bias_ih_l0{suffix}", f"{p}bias_hh_l0{suffix}"], [(g,), (g,)], cell.bias,
                  lambda b_ih, b_hh: b_ih + b_hh)
        else:
            g = 3 * units
            m.add([f"{p}weight_ih_l0{suffix}"], [(g, in_dim)], cell.kernel,
                  lambda w: _gru_reorder(w).T)
            m.add([f"{p}weight_hh_l0{suffix}"], [(g, units)], cell.recurrent_kernel,
                  lambda w: _gru_reorder(w).T)
            m.add([f"{p}bias_ih_l0{suffix}", f"{p}bias_hh_l0{suffix}"], [(g,), (g,)], cell.bias,
                  lambda b_ih, b_hh: np.stack([_gru_reorder(b_ih), _gru_reorder(b_hh)]))
    return m


def describe_text_encoder(state, source="text encoder"):
    """Sizes of an ``RNN_ENCODER`` state dict: vocabulary, word dim, hidden width, RNN type."""
    try:
        vocab_size, word_dim = np.shape(state["encoder.weight"])
        gates, hidden = np.shape(state["rnn.weight_hh_l0"])
    except (KeyError, ValueError):
        raise ConversionError(
            f"{source}: no 'encoder.weight' / 'rnn.weight_hh_l0' tensors of the expected rank; "
            f"is this an AttnGAN/DM-GAN text_encoder*.pth? Keys: {list(state)[:8]}") from None
    if gates == 4 * hidden:
        rnn_type = "lstm"
    elif gates == 3 * hidden:
        rnn_type = "gru"
    else:
        raise ConversionError(f"{source}: rnn.weight_hh_l0 has shape {(gates, hidden)}, neither "
                              "an LSTM (4H x H) nor a GRU (3H x H).")
    return {"vocab_size": int(vocab_size), "word_embedding_dim": int(word_dim),
            "embedding_dim": 2 * int(hidden), "rnn_type": rnn_type}


def check_text_encoder(state, model_cfg, vocab_size, source="text encoder"):
    """Raises unless the file fits ``model_cfg`` and the vocabulary (naming both sizes)."""
    found = describe_text_encoder(state, source)
    if found["vocab_size"] != vocab_size:
        raise ConversionError(
            f"{source}: the embedding encoder.weight has {found['vocab_size']:,} rows (words) but "
            f"the captions.pickle vocabulary has {vocab_size:,} words; use the captions.pickle "
            "these weights were trained with (--captions_pickle).")
    _check_fields(found, model_cfg, ("word_embedding_dim", "embedding_dim", "rnn_type"), source)
    return found


def _check_fields(found, model_cfg, fields, source):
    bad = [f for f in fields if getattr(model_cfg, f) != found[f]]
    if bad:
        have = " ".join(f"--{f}={found[f]}" for f in bad)
        given = " ".join(f"--{f}={getattr(model_cfg, f)}" for f in bad)
        raise ConversionError(f"{source} was trained with {have}, the configuration has {given}: "
                              "pass the file's values (or the matching --preset).")


def load_text_encoder(text_encoder, state, source="text encoder"):
    """Assigns an ``RNN_ENCODER`` state dict to a built ``TextEncoder``."""
    return text_encoder_map(text_encoder).apply(state, source)


# ---------------------------------------------------------------------------------------
# Image encoder (CNN_ENCODER).


def image_encoder_map(image_encoder):
    """``WeightMap`` of a built torchvision-variant ``DAMSMImageEncoder`` (``CNN_ENCODER``)."""
    if image_encoder.variant != "torchvision":
        raise ConversionError(
            f"the released image encoders wrap torchvision's Inception-v3; the encoder was built "
            f"with variant={image_encoder.variant!r} (--damsm_image_variant=torchvision).")
    m = WeightMap()
    for prefix, conv in image_encoder.trunk.convs.items():
        if conv.folded:
            raise ConversionError("the image encoder trunk is folded; convert an unfolded trunk.")
        m.conv2d(f"{prefix}.conv.weight", conv.conv)
        m.batch_norm(f"{prefix}.bn", conv.bn)
    m.conv2d("emb_features.weight", image_encoder.emb_features)
    m.linear("emb_cnn_code", image_encoder.emb_cnn_code)
    return m


def check_image_encoder(state, model_cfg, source="image encoder"):
    try:
        nef = int(np.shape(state["emb_cnn_code.weight"])[0])
    except (KeyError, IndexError):
        raise ConversionError(
            f"{source}: no 'emb_cnn_code.weight'; is this an AttnGAN/DM-GAN image_encoder*.pth? "
            f"Keys: {list(state)[:8]}") from None
    _check_fields({"embedding_dim": nef}, model_cfg, ("embedding_dim",), source)


def load_image_encoder(image_encoder, state, source="image encoder"):
    """Assigns a ``CNN_ENCODER`` state dict (trunk + projections) to a built encoder."""
    return image_encoder_map(image_encoder).apply(state, source)


# ---------------------------------------------------------------------------------------
# Generator (G_NET).


def _up_block(m, prefix, up):
    # upBlock = Sequential(Upsample, conv3x3, BatchNorm2d, GLU): indices 1 and 2.
    m.conv2d(f"{prefix}.1.weight", up.conv)
    m.batch_norm(f"{prefix}.2", up.norm)


def _res_blocks(m, prefix, blocks):
    # ResBlock.block = Sequential(conv3x3, BN, GLU, conv3x3, BN): indices 0, 1, 3, 4.
    for i, block in enumerate(blocks):
        p = f"{prefix}.residual.{i}.block"
        m.conv2d(f"{p}.0.weight", block.conv1)
        m.batch_norm(f"{p}.1", block.bn1)
        m.conv2d(f"{p}.3.weight", block.conv2)
        m.batch_norm(f"{p}.4", block.bn2)


def generator_map(generator):
    """``WeightMap`` of a built ``Generator`` (``initial="ig"``, refinement attn or memory)."""
    if generator.initial != "ig" or generator.refinement not in ("attn", "memory"):
        raise ConversionError(
            f"only AttnGAN (--initial=ig --refinement=attn) and DM-GAN (--initial=ig "
            f"--refinement=memory) generators have reference weights; got "
            f"--initial={generator.initial} --refinement={generator.refinement}.")
    m = WeightMap()
    m.linear("ca_net.fc", generator.ca.fc)
    ig = generator.initial_stage
    m.linear("h_net1.fc.0", ig.fc, bias=False)
    m.batch_norm("h_net1.fc.1", ig.decoder.norm)
    for i, up in enumerate(ig.decoder.ups):
        _up_block(m, f"h_net1.upsample{i + 1}", up)
    for k, refiner in enumerate(generator.refiners):
        p = f"h_net{k + 2}"
        if generator.refinement == "attn":
            m.linear(f"{p}.att.conv_context", refiner.attention.context_proj, bias=False,
                     trailing=(1, 1))
        else:
            mem = refiner.memory
            m.linear(f"{p}.A", mem.gate_words, bias=False)
            m.linear(f"{p}.B", mem.gate_image, bias=False)
            m.linear(f"{p}.M_r.0", mem.memory_image, trailing=(1,))
            m.linear(f"{p}.M_w.0", mem.memory_words, trailing=(1,))
            m.linear(f"{p}.key.0", mem.key, trailing=(1,))
            m.linear(f"{p}.value.0", mem.value, trailing=(1,))
            m.linear(f"{p}.response_gate.0", refiner.response_gate, trailing=(1, 1))
        _res_blocks(m, p, refiner.residual)
        _up_block(m, f"{p}.upsample", refiner.upsample)
    for k, head in enumerate(generator.image_heads):
        m.conv2d(f"img_net{k + 1}.img.0.weight", head.conv)
    return m


def describe_generator(state, source="generator"):
    """Architecture of a ``G_NET`` state dict: family, GF_DIM, R_NUM, stages, sizes."""
    keys = list(state)
    try:
        ca = np.shape(state["ca_net.fc.weight"])
        fc = np.shape(state["h_net1.fc.0.weight"])
        gf = int(np.shape(state["img_net1.img.0.weight"])[1])
    except (KeyError, IndexError):
        raise ConversionError(
            f"{source}: no ca_net / h_net1 / img_net1 tensors; is this an AttnGAN/DM-GAN "
            f"netG*.pth? Keys: {keys[:8]}") from None
    if any(re.match(r"h_net\d+\.att\.", k) for k in keys):
        refinement = "attn"
    elif any(re.match(r"h_net\d+\.M_w\.", k) for k in keys):
        refinement = "memory"
    else:
        refinement = None
    stages = len({k.split(".")[0] for k in keys if re.match(r"img_net\d+\.", k)})
    residual = {m.group(1) for m in (re.match(r"h_net2\.residual\.(\d+)\.", k) for k in keys) if m}
    upsamples = len({k.split(".")[1] for k in keys if re.match(r"h_net1\.upsample\d+\.", k)})
    condition_dim = int(ca[0]) // 4
    found = {"gf_dim": gf, "stages": stages, "embedding_dim": int(ca[1]),
             "condition_dim": condition_dim, "z_dim": int(fc[1]) - condition_dim,
             "base_size": 4 * 2**upsamples}
    if refinement is not None:
        found["refinement"] = refinement
    if stages > 1:
        found["r_num"] = len(residual)
    return found


def check_generator(state, model_cfg, source="generator"):
    """Raises, naming the flags to change, unless ``model_cfg`` describes the file's G_NET."""
    if model_cfg.initial != "ig" or model_cfg.refinement not in ("attn", "memory"):
        raise ConversionError(
            f"--initial={model_cfg.initial} --refinement={model_cfg.refinement}: only AttnGAN "
            "(--preset=attngan_*) and DM-GAN (--preset=dmgan_*) generators can be converted.")
    found = describe_generator(state, source)
    fields = [f for f in ("refinement", "gf_dim", "r_num", "stages", "base_size", "z_dim",
                          "condition_dim", "embedding_dim") if f in found]
    _check_fields(found, model_cfg, fields, source)
    return found


def load_generator(generator, state, source="generator"):
    """Assigns a ``G_NET`` state dict to a built ``Generator``."""
    return generator_map(generator).apply(state, source)


# ---------------------------------------------------------------------------------------
# The run directory.


def _run_configs(configs, out_dir):
    """The configs stored in ``config.json``: encoders in ``<run>/damsm``, torchvision trunk."""
    changes = {
        "train": {"run_dir": out_dir},
        "damsm": {"damsm_dir": DAMSM_SUBDIR, "damsm_image_variant": "torchvision"},
        "eval": {"checkpoint": None, "out": None},
    }
    updated = {}
    for name, cfg in configs.items():
        fields = {f.name for f in dataclasses.fields(cfg)}
        wanted = changes.get(name, {})
        updated[name] = cfg.replace(**{k: v for k, v in wanted.items() if k in fields})
    return type(configs)(**updated)


def _save_checkpoint(generator, directory):
    import tensorflow as tf

    from msmt_tf.training import checkpointing

    # The released netG holds the EMA parameters with the live model's BN statistics (the
    # references' save_model loads the averaged parameters into netG before torch.save); it
    # is stored as both the EMA and the live generator so either can be loaded.
    ckpt = tf.train.Checkpoint(
        step=tf.Variable(0, dtype=tf.int64, name="step"),
        generator=checkpointing.VariableMap(generator),
        ema_generator=checkpointing.VariableMap(generator),
    )
    manager = tf.train.CheckpointManager(ckpt, directory, max_to_keep=1, checkpoint_name="ckpt")
    return manager.save(checkpoint_number=0)


def _check_out(out_dir):
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise ConversionError(f"--out={out_dir} exists and is not empty; give a new directory.")


def _staging_dir(out_dir):
    """``<out>.converting``, emptied: everything is written there, then renamed (``_publish``)."""
    tmp = os.path.normpath(out_dir) + ".converting"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    return tmp


def _publish(tmp, out_dir):
    if os.path.isdir(out_dir):
        os.rmdir(out_dir)  # empty (checked by _check_out)
    os.replace(tmp, out_dir)


def _sources(**paths):
    """``{name: {"path": absolute path, "sha1": ...}}`` of the source files."""
    return {name: {"path": os.path.abspath(path), "sha1": file_sha1(path)}
            for name, path in paths.items() if path and os.path.isfile(path)}


def _encoder_configs(configs):
    """``damsm.damsm_image_variant`` forced to ``torchvision``: the released ``CNN_ENCODER``
    wraps torchvision's Inception-v3 (``damsm.json`` records it, so loading rebuilds it)."""
    return configs.damsm.replace(damsm_image_variant="torchvision")


def _read_encoders(configs, text_encoder, image_encoder, captions_pickle):
    """Reads and checks the two encoder files against the configuration and the vocabulary;
    returns ``(vocab, text_state, image_state)`` (nothing built yet)."""
    vocab = attngan_format.load_vocabulary(captions_pickle, "--captions_pickle")
    text_state = read_state_dict(text_encoder, f"text encoder {text_encoder}")
    image_state = read_state_dict(image_encoder, f"image encoder {image_encoder}")
    check_text_encoder(text_state, configs.model, len(vocab), source=text_encoder)
    check_image_encoder(image_state, configs.model, source=image_encoder)
    return vocab, text_state, image_state


def _build_encoders(configs, vocab, text_state, image_state, text_encoder, image_encoder):
    """The ``TextEncoder`` and torchvision ``DAMSMImageEncoder`` holding the files' weights."""
    from msmt_tf.models import damsm

    text = damsm.build_text_encoder(configs.model, len(vocab))
    load_text_encoder(text, text_state, source=text_encoder)
    image = damsm.build_image_encoder(configs.model, variant="torchvision",
                                      resize=configs.damsm.damsm_resize, load_trunk_weights=False)
    load_image_encoder(image, image_state, source=image_encoder)
    return text, image


def _save_damsm(directory, configs, text, image, vocab, sources):
    """Writes an encoder directory (``models.damsm`` layout) with the sources in ``damsm.json``."""
    from msmt_tf.models import damsm

    meta = damsm.encoder_meta(configs.model, _encoder_configs(configs))
    meta["converted_from"] = sources
    damsm.save_encoders(directory, text, image, vocab, meta)
    return meta


def convert_encoders(configs, out_dir, text_encoder, image_encoder, captions_pickle, log=None):
    """Converts AttnGAN's / DM-GAN's released DAMSM encoders alone into an encoder directory.

    ``out_dir`` is what ``msmt_tf.pretrain_damsm`` would write (``models.damsm``): give it as
    ``--damsm_dir`` to ``msmt_tf.train`` (the generator then trains against the released
    encoders, as the paper's ``L_DAMSM``) and the run's evaluations score R-precision with
    them. ``damsm.json`` records the torchvision trunk, ``configs.damsm.damsm_resize`` and
    ``configs.model.damsm_image_size`` (the references resize to 299 with the bilinear
    ``Upsample`` of 2018 PyTorch, ``--damsm_resize=align_corners``) and the source files.

    Args:
      configs: ``msmt_tf.cli.common.Configs``; ``model`` must have the files' sizes
        (``--embedding_dim=256 --word_embedding_dim=300 --rnn_type=lstm``, every paper preset).
      out_dir: the directory to create; it must not exist or be empty.
      text_encoder, image_encoder: ``text_encoder*.pth`` and ``image_encoder*.pth``.
      captions_pickle: the ``captions.pickle`` released with the encoders (the vocabulary).
      log: optional ``f(str)`` for progress lines.

    Returns:
      ``{"damsm_dir", "fingerprint", "vocab_size", "damsm_resize", "damsm_image_size",
      "sources"}``.

    Raises:
      ConversionError: a file does not fit the configuration or the others (nothing written).
      DataError: the captions pickle cannot be read.
    """
    from msmt_tf.models import damsm

    log = log or (lambda msg: None)
    _check_out(out_dir)
    configs = type(configs)(**{**dict(configs.items()), "damsm": _encoder_configs(configs)})
    vocab, text_state, image_state = _read_encoders(configs, text_encoder, image_encoder,
                                                    captions_pickle)
    text, image = _build_encoders(configs, vocab, text_state, image_state, text_encoder,
                                  image_encoder)
    sources = _sources(text_encoder=text_encoder, image_encoder=image_encoder,
                       captions_pickle=captions_pickle)
    tmp = _staging_dir(out_dir)
    _save_damsm(tmp, configs, text, image, vocab, sources)
    _publish(tmp, out_dir)
    fingerprint = damsm.fingerprint(out_dir)
    log(f"Wrote the DAMSM encoders {out_dir} (vocabulary {len(vocab):,} words, torchvision trunk, "
        f"--damsm_resize={configs.damsm.damsm_resize}, sha256 {fingerprint['sha256'][:12]}); "
        f"train with --damsm_dir={out_dir}.")
    return {"damsm_dir": out_dir, "fingerprint": fingerprint, "vocab_size": len(vocab),
            "damsm_resize": configs.damsm.damsm_resize,
            "damsm_image_size": configs.model.damsm_image_size, "sources": sources}


def convert_reference(configs, out_dir, text_encoder, image_encoder, netg, captions_pickle,
                      log=None):
    """Converts released AttnGAN / DM-GAN weights into a run directory ``out_dir``.

    Args:
      configs: ``msmt_tf.cli.common.Configs`` (data, model, train, damsm, eval) describing the
        reference model, e.g. built from ``--preset=dmgan_cub``; ``model.mask_row_quirk`` and
        ``damsm.damsm_resize`` choose the behaviours to reproduce.
      out_dir: the run directory to create; it must not exist or be empty.
      text_encoder, image_encoder, netg: paths of ``text_encoder*.pth``, ``image_encoder*.pth``
        and ``netG*.pth`` (zip or legacy torch format).
      captions_pickle: the ``captions.pickle`` released with the encoders (the vocabulary).
      log: optional ``f(str)`` for progress lines.

    Returns:
      The report dict also written to ``<out_dir>/conversion.json``. The run also records its
      encoders in ``damsm_encoders.json`` (``run_dir.record_damsm_encoders``), as training does.

    Raises:
      ConversionError: a file does not fit the configuration or the others (nothing written).
      DataError: the captions pickle cannot be read.
    """
    from msmt_tf.models import damsm
    from msmt_tf.models.generator import build_generator
    from msmt_tf.models.param_count import dummy_generator_inputs
    from msmt_tf.training import run_dir as run_dir_lib

    log = log or (lambda msg: None)
    _check_out(out_dir)
    configs = _run_configs(configs, out_dir)
    model_cfg = configs.model

    vocab, text_state, image_state = _read_encoders(configs, text_encoder, image_encoder,
                                                    captions_pickle)
    g_state = read_state_dict(netg, f"generator {netg}")
    found = check_generator(g_state, model_cfg, source=netg)
    log(f"{netg}: {model_cfg.preset_name} generator, GF_DIM {found['gf_dim']}, "
        f"R_NUM {found.get('r_num', 0)}, {found['stages']} stages; vocabulary "
        f"{len(vocab):,} words.")

    text, image = _build_encoders(configs, vocab, text_state, image_state, text_encoder,
                                  image_encoder)
    # Built exactly as load_for_inference builds it, so the variable paths (the checkpoint's
    # keys, see VariableMap) are the same.
    generator = build_generator(model_cfg, seed=configs.train.seed, name="generator")
    generator(dummy_generator_inputs(model_cfg, words_num=configs.data.words_num), training=False)
    load_generator(generator, g_state, source=netg)

    tmp = _staging_dir(out_dir)
    sources = _sources(text_encoder=text_encoder, image_encoder=image_encoder, netG=netg,
                       captions_pickle=captions_pickle)
    encoder_sources = {k: v for k, v in sources.items() if k != "netG"}
    _save_damsm(os.path.join(tmp, DAMSM_SUBDIR), configs, text, image, vocab, encoder_sources)
    prefix = _save_checkpoint(generator, os.path.join(tmp, "checkpoints"))
    with open(os.path.join(tmp, run_dir_lib.CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(run_dir_lib.resolved_config(dict(configs.items())), f, indent=2, sort_keys=True)
        f.write("\n")
    report = {
        "time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "preset": model_cfg.preset_name,
        "mask_row_quirk": model_cfg.mask_row_quirk,
        "damsm_resize": configs.damsm.damsm_resize,
        "vocab_size": len(vocab),
        "vocab_sha1": vocab.sha1(),
        "checkpoint": os.path.basename(prefix),
        "sources": sources,
        "generator": found,
    }
    with open(os.path.join(tmp, REPORT_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")
    _publish(tmp, out_dir)
    # The released generator was trained against these encoders: record them as training does,
    # so `msmt_tf.evaluate` can tell when a run is scored with other ones.
    run_dir_lib.record_damsm_encoders(out_dir, damsm.fingerprint(os.path.join(out_dir,
                                                                             DAMSM_SUBDIR)))
    log(f"Wrote {out_dir} (config.json, checkpoints/{report['checkpoint']}, {DAMSM_SUBDIR}/).")
    return report
