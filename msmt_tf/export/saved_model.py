"""SavedModel export of a trained run: captions in, uint8 images out, TensorFlow only.

``export_saved_model(inference, out_dir)`` writes a SavedModel (``InferenceModule``) of the
EMA generator, the DAMSM text encoder and the in-graph tokenizer
(``export/tokenizer.py``: the training tokenisation, vocabulary lookup and the first
``words_num`` ids). Signatures (N = batch, Z = ``z_dim``, C = ``condition_dim``, S = final
image size, W = ``words_num``):

* ``generate(captions: string [N], noise: float32 [N, Z])`` -> ``images`` uint8
  ``[N, S, S, 3]``. The conditioning-augmentation noise is 0, i.e. the sentence condition is
  the CA mean ``mu``: the output is a function of the inputs only, and smooth in ``noise``
  (interpolation works). Also ``serving_default``.
* ``generate_seeded(captions: string [N], seed: int64 [])`` -> ``images`` uint8: ``z`` and the
  CA noise of row r are ``stateless_normal([Z + C], seed=[seed, r])`` (``sampling.seeded_noise``),
  so it equals ``python -m msmt_tf.sample --seed=seed --num_per_caption=1`` on the same captions,
  and the same seed always gives the same images.
* ``generate_float(captions, noise: float32 [N, Z], ca_eps: float32 [N, C])`` -> ``images``
  float32 in [-1, 1] before quantisation (full control of both noises; for checks).
* ``tokenize(captions)`` -> ``ids`` int32 [N, W], ``length`` int32 [N], ``unknown_words``
  string [N, U] (padded with "").

Quantisation is the evaluation's: ``uint8(clip((x + 1) * 127.5, 0, 255))`` truncated. A caption
with no known word fails the call with ``InvalidArgumentError`` listing the captions. The
``ConditioningAugmentation`` layer would draw its noise from a stateful ``SeedGenerator`` when
given none; every endpoint passes ``ca_eps`` explicitly, so the graph holds no RNG state.

``assets.extra/msmt_tf.json`` (TF Serving's place for extra files) records the run,
checkpoint, sizes and vocabulary hash.
"""

import json
import os
import shutil

import tensorflow as tf

from msmt_tf import errors
from msmt_tf.export.tokenizer import CaptionTokenizer
from msmt_tf.sampling import seeded_noise

INFO_FILE = os.path.join("assets.extra", "msmt_tf.json")
SIGNATURES = ("generate", "generate_seeded", "generate_float", "tokenize")


class ExportError(errors.UserError, ValueError):
    """The export cannot be written; the message says what to do."""


def to_uint8(images):
    """[-1, 1] -> uint8 as ``evaluator.quantize(mode="truncate")``."""
    return tf.cast(tf.clip_by_value((images + 1.0) * 127.5, 0.0, 255.0), tf.uint8)


def captions_spec():
    return tf.TensorSpec([None], tf.string, name="captions")


def noise_spec(z_dim):
    return tf.TensorSpec([None, z_dim], tf.float32, name="noise")


def eps_spec(condition_dim):
    return tf.TensorSpec([None, condition_dim], tf.float32, name="ca_eps")


class _Endpoints:
    """The endpoint functions over one generator, text encoder and tokenizer."""

    def __init__(self, generator, text_encoder, tokenizer):
        self.generator = generator
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.z_dim = int(generator.z_dim)
        self.condition_dim = int(generator.condition_dim)
        # One traced graph of text encoder + generator that every endpoint calls (tracing the
        # generator once instead of once per endpoint).
        self.images = tf.function(self._images, autograph=False, input_signature=[
            captions_spec(), noise_spec(self.z_dim), eps_spec(self.condition_dim)])

    def _ids(self, captions):
        tok = self.tokenizer(captions)
        empty = tf.equal(tok["length"], 0)
        check = tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(empty)),
            ["captions with no word of the vocabulary:", tf.boolean_mask(captions, empty)],
            summarize=16)
        with tf.control_dependencies([check]):
            return tf.identity(tok["ids"])

    def _images(self, captions, noise, ca_eps):
        ids = self._ids(captions)
        n = tf.shape(ids)[0]
        checks = [
            tf.debugging.assert_equal(tf.shape(noise)[0], n,
                                      message="noise needs one row per caption"),
            tf.debugging.assert_equal(tf.shape(ca_eps)[0], n,
                                      message="ca_eps needs one row per caption"),
        ]
        with tf.control_dependencies(checks):
            words, sentence = self.text_encoder(ids, training=False)
        out = self.generator({"noise": noise, "sentence": sentence, "words": words,
                              "mask": tf.not_equal(ids, 0), "ca_eps": ca_eps}, training=False)
        return out["images"][-1]

    def generate(self, captions, noise):
        eps = tf.zeros([tf.shape(noise)[0], self.condition_dim], tf.float32)
        return {"images": to_uint8(self.images(captions, noise, eps))}

    def generate_seeded(self, captions, seed):
        noise, eps = seeded_noise(seed, tf.shape(captions)[0], self.z_dim, self.condition_dim)
        return {"images": to_uint8(self.images(captions, noise, eps))}

    def generate_float(self, captions, noise, ca_eps):
        return {"images": self.images(captions, noise, ca_eps)}

    def tokenize(self, captions):
        tok = self.tokenizer(captions)
        return {"ids": tok["ids"], "length": tok["length"],
                "unknown_words": tok["unknown_words"].to_tensor(default_value="")}


class InferenceModule(tf.Module):
    """What the SavedModel holds: the tokenizer (its lookup table), the variables of the
    generator and text encoder, and the four endpoint functions.

    The Keras networks are reached through the endpoint closures only: the module tracks
    their variables (a flat list, as ``keras.export.ExportArchive`` does) rather than the
    Keras objects, so saving does not serialise Keras layers. A plain ``tf.Module`` rather
    than ``ExportArchive``: the archive traces every endpoint once outside and once inside
    the save context, which made the export of the test model about twice as slow.
    """

    def __init__(self, generator, text_encoder, vocab, words_num, name="msmt_tf"):
        super().__init__(name=name)
        self.tokenizer = CaptionTokenizer(vocab.words(), words_num)
        self.network_variables = list(generator.variables) + list(text_encoder.variables)
        ep = _Endpoints(generator, text_encoder, self.tokenizer)
        captions, noise = captions_spec(), noise_spec(ep.z_dim)
        self.generate = tf.function(ep.generate, input_signature=[captions, noise],
                                    autograph=False)
        self.generate_seeded = tf.function(
            ep.generate_seeded, input_signature=[captions, tf.TensorSpec([], tf.int64, "seed")],
            autograph=False)
        self.generate_float = tf.function(
            ep.generate_float, input_signature=[captions, noise, eps_spec(ep.condition_dim)],
            autograph=False)
        self.tokenize = tf.function(ep.tokenize, input_signature=[captions], autograph=False)

    def signatures(self):
        """``{name: function}`` for ``tf.saved_model.save``; ``generate`` is also
        ``serving_default`` (TF Serving's default signature)."""
        sigs = {name: getattr(self, name) for name in SIGNATURES}
        sigs["serving_default"] = self.generate
        return sigs


def export_saved_model(inference, out_dir, overwrite=False):
    """Writes the SavedModel of a loaded run (``restore.load_for_inference``) to ``out_dir``.

    Returns the metadata dict also written to ``assets.extra/msmt_tf.json``.
    """
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        if not overwrite:
            raise ExportError(f"--out={out_dir} exists and is not empty: give a new directory or "
                              "pass --overwrite.")
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        else:
            os.remove(out_dir)
    generator = inference.generator
    words_num = int(inference.configs.data.words_num)
    module = InferenceModule(generator, inference.text_encoder, inference.vocab, words_num)
    tf.saved_model.save(module, out_dir, signatures=module.signatures())
    info = {
        "format": "msmt_tf SavedModel 1",
        "signatures": list(SIGNATURES),
        "run_dir": os.path.abspath(inference.run_dir),
        "checkpoint": inference.checkpoint,
        "generator": "EMA weights",
        "preset": inference.configs.model.preset_name,
        "words_num": words_num,
        "z_dim": int(generator.z_dim),
        "condition_dim": int(generator.condition_dim),
        "image_size": int(inference.configs.model.image_sizes[-1]),
        "vocab_size": len(inference.vocab),
        "vocab_sha1": inference.vocab.sha1(),
        "ca_noise": {"generate": "0 (the CA mean)",
                     "generate_seeded": "stateless_normal([z_dim + condition_dim], "
                                        "seed=[seed, row]) = [z | ca_eps]",
                     "generate_float": "the ca_eps input"},
        "quantize": "uint8(clip((x + 1) * 127.5, 0, 255)), truncated",
        "tensorflow_version": tf.__version__,
    }
    path = os.path.join(out_dir, INFO_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
    return info


def export_run(cfg, load=None):
    """Library entry of ``python -m msmt_tf.export``: loads the run (EMA generator) and writes
    the SavedModel to ``cfg.out``. Returns the metadata dict."""
    if load is None:
        from msmt_tf.training.restore import load_for_inference as load
    inference = load(run_dir=cfg.run_dir, checkpoint=cfg.checkpoint, which=cfg.which)
    return export_saved_model(inference, cfg.out, overwrite=cfg.overwrite)
