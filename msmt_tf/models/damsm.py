"""DAMSM encoders: construction, saving with their vocabulary, and checked loading.

An encoder directory (written by `msmt_tf.pretrain_damsm`) holds:
- `text_encoder.npz`, `image_encoder.npz`: every variable of the two encoders by Keras path
  (the frozen Inception trunk included, so a directory is self-contained);
- `vocab.json`: the vocabulary in index order and its SHA-1;
- `damsm.json`: the architecture (sizes, RNN type, trunk variant, resize) and how it was trained.
Loading against a dataset whose vocabulary differs is a clear error naming both sizes.
"""

import json
import os

import numpy as np

from msmt_tf import errors
from msmt_tf.data.vocabulary import Vocabulary

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
    2015 Inception weights (variant `tf2015`, see `msmt_tf.evaluation.inception_weights`)."""
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
        from msmt_tf.evaluation import inception_weights

        arrays = inception_weights.load_fid_weights(weights)
        inception.set_trunk_weights(image.trunk, arrays, source="Inception 2015 weights")
    return image


def _variables(layer):
    return {v.path: v for v in layer.weights}


def save_layer(layer, path):
    """Saves every variable of `layer` by path into an `.npz` (atomic rename)."""
    arrays = {k: np.asarray(v.numpy()) for k, v in _variables(layer).items()}
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_layer(layer, path):
    """Loads an `.npz` written by `save_layer`; missing/unexpected/mis-shaped are errors."""
    if not os.path.exists(path):
        raise DAMSMLoadError(f"{path} is missing: run `python -m msmt_tf.pretrain_damsm` first.")
    with np.load(path) as data:
        stored = {k: data[k] for k in data.files}
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


def load_encoders(directory, model_cfg, dataset_vocab=None):
    """Loads `(text_encoder, image_encoder, vocab, meta)` from an encoder directory.

    The architecture comes from `damsm.json`; it must agree with `model_cfg` on the feature
    width (`--embedding_dim`) used by the generator.
    """
    if not exists(directory):
        raise DAMSMLoadError(
            f"no DAMSM encoders in {directory}: run `python -m msmt_tf.pretrain_damsm "
            f"--damsm_dir={directory}` (same --dataset/--data_dir) first.")
    vocab = check_vocab(directory, dataset_vocab)
    with open(os.path.join(directory, META_FILE)) as f:
        meta = json.load(f)
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
    load_layer(text, os.path.join(directory, TEXT_FILE))
    load_layer(image, os.path.join(directory, IMAGE_FILE))
    text.trainable = False
    image.trainable = False
    return text, image, vocab, meta
