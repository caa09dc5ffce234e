"""DAMSM encoders: construction, saving with their vocabulary, and checked loading.

An encoder directory (written by `msmt_tf.pretrain_damsm`) holds:
- `text_encoder.npz`, `image_encoder.npz`: every variable of the two encoders by Keras path
  (the frozen Inception trunk included, so a directory is self-contained);
- `vocab.json`: the vocabulary in index order and its SHA-1;
- `damsm.json`: the architecture (sizes, RNN type, trunk variant, resize) and how it was trained
  (or, for AttnGAN's released encoders converted by `tools/convert_reference.py`, the source
  files).
Loading against a dataset whose vocabulary differs is a clear error naming both sizes.

`fingerprint(directory)` identifies the encoders of a directory by a SHA-256 over their
contents (see `_content_hash`); a run records it when training starts and every evaluation
protocol carries it, so a number can be traced to the encoders that scored it.
"""

import hashlib
import json
import os

import numpy as np

from msmt_tf import errors
from msmt_tf.data.vocabulary import Vocabulary
from msmt_tf.io import atomic

TEXT_FILE = "text_encoder.npz"
IMAGE_FILE = "image_encoder.npz"
VOCAB_FILE = "vocab.json"
META_FILE = "damsm.json"


class DAMSMLoadError(errors.UserError, ValueError):
    """An encoder directory is missing, incomplete, or does not fit the dataset."""


def build_text_encoder(model_cfg, vocab_size):
    """A built `TextEncoder` for `model_cfg` (random weights)."""
    from msmt_tf.layers.text_encoder import TextEncoder

    text = TextEncoder(
        int(vocab_size),
        word_dim=model_cfg.word_embedding_dim,
        hidden_per_direction=model_cfg.embedding_dim // 2,
        rnn_type=model_cfg.rnn_type,
        name="text_encoder",
    )
    text(np.ones((1, 4), "int32"), training=False)
    return text


def build_image_encoder(model_cfg, variant="tf2015", resize="bilinear", seed=None,
                        load_trunk_weights=True, weights=None):
    """A built `DAMSMImageEncoder`; with `load_trunk_weights` the frozen trunk gets the offline
    2015 Inception weights (variant `tf2015`, see `msmt_tf.models.inception_weights`)."""
    from msmt_tf.models import inception
    from msmt_tf.models.damsm_image_encoder import DAMSMImageEncoder

    image = DAMSMImageEncoder(
        embedding_dim=model_cfg.embedding_dim,
        image_size=model_cfg.damsm_image_size,
        variant=variant,
        resize=resize,
        seed=seed,
        name="image_encoder",
    )
    image.build((None, model_cfg.damsm_image_size, model_cfg.damsm_image_size, 3))
    if load_trunk_weights:
        if variant != "tf2015":
            raise DAMSMLoadError(
                f"--damsm_image_variant={variant}: only the tf2015 trunk has offline weights; "
                "torchvision trunks come from a converted released image_encoder*.pth.")
        from msmt_tf.models import inception_weights

        arrays = inception_weights.load_fid_weights(weights)
        inception.set_trunk_weights(image.trunk, arrays, source="Inception 2015 weights")
    return image


def _variables(layer):
    return {v.path: v for v in layer.weights}


def save_layer(layer, path):
    """Saves every variable of `layer` by path into an `.npz` (atomic rename)."""
    arrays = {k: np.asarray(v.numpy()) for k, v in _variables(layer).items()}
    with atomic.replacing(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def read_npz(path):
    """``{name: array}`` of an encoder ``.npz`` (no pickles); a missing or unreadable file is a
    `DAMSMLoadError` naming it."""
    if not os.path.exists(path):
        raise DAMSMLoadError(f"{path} is missing: run `python -m msmt_tf.pretrain_damsm` first.")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as e:
        raise DAMSMLoadError(f"{path}: not a readable .npz ({e}); write the encoder directory "
                             "again (pretrain_damsm or tools/convert_reference.py).") from None


def load_layer(layer, path, stored=None):
    """Loads an `.npz` written by `save_layer` (or its arrays `stored`, already read);
    missing/unexpected/mis-shaped are errors."""
    if stored is None:
        stored = read_npz(path)
    variables = _variables(layer)
    missing = sorted(set(variables) - set(stored))
    unexpected = sorted(set(stored) - set(variables))
    if missing or unexpected:
        raise DAMSMLoadError(
            f"{path} does not fit {layer.name}: missing {missing[:5]}, unexpected {unexpected[:5]} "
            "(was it written with other --embedding_dim/--rnn_type/--damsm_image_size?).")
    for key, var in variables.items():
        if tuple(var.shape) != stored[key].shape:
            raise DAMSMLoadError(
                f"{path}: {key} has shape {stored[key].shape}, the model expects {tuple(var.shape)} "
                "(different vocabulary or widths).")
        var.assign(stored[key])


def save_vocab(directory, vocab):
    with open(os.path.join(directory, VOCAB_FILE), "w") as f:
        json.dump({"words": vocab.words(), "sha1": vocab.sha1()}, f)


def load_vocab(directory):
    path = os.path.join(directory, VOCAB_FILE)
    if not os.path.exists(path):
        raise DAMSMLoadError(f"{path} is missing: the encoder directory is incomplete.")
    with open(path) as f:
        data = json.load(f)
    vocab = Vocabulary(dict(enumerate(data["words"])))
    if vocab.sha1() != data["sha1"]:
        raise DAMSMLoadError(f"{path}: the word list does not match its stored SHA-1 (edited file?).")
    return vocab


def save_encoders(directory, text, image, vocab, meta):
    """Writes the encoder directory (see module docstring)."""
    os.makedirs(directory, exist_ok=True)
    save_layer(text, os.path.join(directory, TEXT_FILE))
    save_layer(image, os.path.join(directory, IMAGE_FILE))
    save_vocab(directory, vocab)
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)


def encoder_meta(model_cfg, damsm_cfg):
    return {
        "embedding_dim": model_cfg.embedding_dim,
        "word_embedding_dim": model_cfg.word_embedding_dim,
        "rnn_type": model_cfg.rnn_type,
        "damsm_image_size": model_cfg.damsm_image_size,
        "damsm_image_variant": damsm_cfg.damsm_image_variant,
        "damsm_resize": damsm_cfg.damsm_resize,
    }


def exists(directory):
    return all(os.path.exists(os.path.join(directory, f))
               for f in (TEXT_FILE, IMAGE_FILE, VOCAB_FILE, META_FILE))


def check_vocab(directory, dataset_vocab):
    """Raises unless the encoder vocabulary equals the dataset's."""
    vocab = load_vocab(directory)
    if dataset_vocab is not None and vocab.sha1() != dataset_vocab.sha1():
        raise DAMSMLoadError(
            f"the DAMSM encoders in {directory} were trained with a {len(vocab):,}-word vocabulary "
            f"but the dataset has {len(dataset_vocab):,} words (or other indices): pretrain the "
            "encoders on this dataset (python -m msmt_tf.pretrain_damsm) or point --damsm_dir at "
            "matching ones.")
    return vocab


# ---------------------------------------------------------------------------------------
# Fingerprint: which encoders are these?

# `damsm.json` fields that change what the encoders compute without changing a weight.
_HASHED_META = ("damsm_image_variant", "damsm_resize", "damsm_image_size")
_FINGERPRINTS = {}  # (directory, file stats) -> sha256, filled by load_encoders / fingerprint


def _content_hash(text_arrays, image_arrays, vocab_sha1, meta):
    """SHA-256 over both encoders' arrays (name, dtype, shape, bytes; sorted by name), the
    vocabulary's SHA-1 and the meta fields that change the image encoder's input (`_HASHED_META`).

    The arrays, not the `.npz` bytes, are hashed: `np.savez` stamps the write time into the
    zip, and the same weights written twice (e.g. the released files converted twice) must give
    the same fingerprint.
    """
    h = hashlib.sha256()
    for name, arrays in ((TEXT_FILE, text_arrays), (IMAGE_FILE, image_arrays)):
        for key in sorted(arrays):
            a = np.ascontiguousarray(arrays[key])
            h.update(f"{name}/{key}:{a.dtype.str}:{a.shape}\n".encode())
            h.update(a.tobytes())
    h.update(f"vocab:{vocab_sha1}\n".encode())
    h.update(json.dumps({k: meta.get(k) for k in _HASHED_META}, sort_keys=True).encode())
    return h.hexdigest()


def _cache_key(directory):
    stats = []
    for name in (TEXT_FILE, IMAGE_FILE, VOCAB_FILE, META_FILE):
        st = os.stat(os.path.join(directory, name))
        # save_layer writes through a rename (msmt_tf.io.atomic): a rewritten file is a new inode.
        stats.append((name, st.st_ino, st.st_mtime_ns, st.st_size))
    return os.path.realpath(directory), tuple(stats)


def _read_meta(directory):
    path = os.path.join(directory, META_FILE)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DAMSMLoadError(
            f"{path}: unreadable ({e}); write the encoder directory again.") from None


def fingerprint(directory):
    """`{"path": absolute directory, "sha256": content hash}` of an encoder directory.

    Computed once per directory state: `load_encoders` stores the hash of what it loaded, and
    a later call for the same, unchanged files (same modification times and sizes) reuses it.
    """
    if not exists(directory):
        raise DAMSMLoadError(f"no DAMSM encoders in {directory} (text_encoder.npz, "
                             "image_encoder.npz, vocab.json, damsm.json).")
    key = _cache_key(directory)
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = _content_hash(
            read_npz(os.path.join(directory, TEXT_FILE)),
            read_npz(os.path.join(directory, IMAGE_FILE)),
            load_vocab(directory).sha1(), _read_meta(directory))
    return {"path": os.path.abspath(directory), "sha256": _FINGERPRINTS[key]}


def load_encoders(directory, model_cfg, dataset_vocab=None):
    """Loads `(text_encoder, image_encoder, vocab, meta)` from an encoder directory.

    The architecture comes from `damsm.json`; it must agree with `model_cfg` on the feature
    width (`--embedding_dim`) used by the generator. `meta` also holds `"fingerprint"`, the
    directory's `fingerprint` (computed from the arrays loaded here).
    """
    if not exists(directory):
        raise DAMSMLoadError(
            f"no DAMSM encoders in {directory}: run `python -m msmt_tf.pretrain_damsm "
            f"--damsm_dir={directory}` (same --dataset/--data_dir) first.")
    key = _cache_key(directory)
    vocab = check_vocab(directory, dataset_vocab)
    meta = _read_meta(directory)
    if meta["embedding_dim"] != model_cfg.embedding_dim:
        raise DAMSMLoadError(
            f"{directory}: encoders have --embedding_dim={meta['embedding_dim']}, the run asks for "
            f"{model_cfg.embedding_dim}.")
    cfg = model_cfg.replace(
        word_embedding_dim=meta["word_embedding_dim"], rnn_type=meta["rnn_type"],
        damsm_image_size=meta["damsm_image_size"])
    text = build_text_encoder(cfg, len(vocab))
    image = build_image_encoder(cfg, variant=meta["damsm_image_variant"],
                                resize=meta["damsm_resize"], load_trunk_weights=False)
    text_arrays = read_npz(os.path.join(directory, TEXT_FILE))
    image_arrays = read_npz(os.path.join(directory, IMAGE_FILE))
    load_layer(text, os.path.join(directory, TEXT_FILE), text_arrays)
    load_layer(image, os.path.join(directory, IMAGE_FILE), image_arrays)
    text.trainable = False
    image.trainable = False
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = _content_hash(text_arrays, image_arrays, vocab.sha1(), meta)
    meta["fingerprint"] = {"path": os.path.abspath(directory), "sha256": _FINGERPRINTS[key]}
    return text, image, vocab, meta
