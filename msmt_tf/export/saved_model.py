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
  CA noise of row r are ``stateless_normal([Z + C], seed=[seed, r])``
  (``inference.seeded_noise`` of caption index r, sample 0), so row r is the image of
  ``python -m msmt_tf.sample --seed=seed`` (sample 0 of caption r) and of the evaluation's
  image r with ``--eval_seed=seed`` for the same caption, and the same seed always gives the
  same images.
* ``generate_float(captions, noise: float32 [N, Z], ca_eps: float32 [N, C])`` -> ``images``
  float32 in [-1, 1] before quantisation (full control of both noises; for checks).
* ``tokenize(captions)`` -> ``ids`` int32 [N, W], ``length`` int32 [N], ``unknown_words``
  string [N, U] (padded with "").

Every signature also returns, per caption (the contract for captions the model cannot draw):

* ``valid`` bool [N]: the caption has at least one word of the vocabulary;
* ``length`` int32 [N]: the words the generator sees, ``min(known_words, W)``;
* ``known_words`` int32 [N]: the caption's vocabulary words before truncation
  (``known_words > W``: the caption was cut).

An invalid caption (empty, blank, punctuation only, or only unknown words) never fails the
call: its row of ``images`` is ``BLANK_UINT8`` (0, black) in ``generate`` /
``generate_seeded`` and ``BLANK_FLOAT`` (-1.0, which quantises to 0) in ``generate_float``,
its ``valid`` is false and its ``ids`` are all 0. The generator runs on the valid rows only
(gathered, then scattered back): a valid row goes through the same computation, on the same
inputs, as in a batch without the invalid rows (bitwise equal images on CPU,
``tests/export/test_saved_model.py``). Row r's noise stays keyed by
its position r in the request, invalid rows included (``generate_seeded``: ``seed=[seed, r]``):
an image depends only on its own caption, its noise (seed, r) and the weights, never on the
other captions of the batch. A batch of invalid captions only returns blank images.

Long captions: the whole caption is tokenised (no character limit) and the first W vocabulary
words are kept (the pipeline's evaluation rule), so a 5,000-character caption is generated from
its first W known words. No message of these signatures quotes a caption; the only remaining
errors are ``noise`` / ``ca_eps`` with a row count different from ``captions``
(``InvalidArgumentError``).

Quantisation is ``inference.quantize`` (as the evaluation and sampling):
``uint8(clip((x + 1) * 127.5, 0, 255))`` truncated. The forward pass is ``inference.forward_fn``,
the traced text encoder + generator that sampling and the evaluation run too. The
``ConditioningAugmentation`` layer would draw its noise from a stateful ``SeedGenerator`` when
given none; every endpoint passes ``ca_eps`` explicitly, so the graph holds no RNG state.

``assets.extra/msmt_tf.json`` (TF Serving's place for extra files) records the run,
checkpoint, sizes, vocabulary hash, the outputs of each signature and this contract.
"""

import json
import os
import shutil

import tensorflow as tf

from msmt_tf import errors
from msmt_tf.export.tokenizer import CaptionTokenizer
from msmt_tf.inference import NOISE_RULE, QUANTIZE_RULES, forward_fn, quantize, seeded_noise

INFO_FILE = os.path.join("assets.extra", "msmt_tf.json")
SIGNATURES = ("generate", "generate_seeded", "generate_float", "tokenize")
PER_CAPTION_OUTPUTS = ("valid", "length", "known_words")
OUTPUTS = {
    "generate": ("images",) + PER_CAPTION_OUTPUTS,
    "generate_seeded": ("images",) + PER_CAPTION_OUTPUTS,
    "generate_float": ("images",) + PER_CAPTION_OUTPUTS,
    "tokenize": ("ids", "unknown_words") + PER_CAPTION_OUTPUTS,
}
BLANK_FLOAT = -1.0  # the image of an invalid caption in generate_float (black)
BLANK_UINT8 = 0  # ... in generate / generate_seeded: quantize(BLANK_FLOAT)


class ExportError(errors.UserError, ValueError):
    """The export cannot be written; the message says what to do."""


def captions_spec():
    return tf.TensorSpec([None], tf.string, name="captions")


def noise_spec(z_dim):
    return tf.TensorSpec([None, z_dim], tf.float32, name="noise")


def eps_spec(condition_dim):
    return tf.TensorSpec([None, condition_dim], tf.float32, name="ca_eps")


class _Endpoints:
    """The endpoint functions over one generator, text encoder and tokenizer."""

    def __init__(self, generator, text_encoder, tokenizer):
        # Strong references: ``forward_fn`` holds weak ones only.
        self.networks = (generator, text_encoder)
        self.tokenizer = tokenizer
        self.z_dim = int(generator.z_dim)
        self.condition_dim = int(generator.condition_dim)
        # The one traced graph of text encoder + generator (``inference.forward_fn``, shared
        # with sampling and the evaluation) that every endpoint calls; it sees the valid rows.
        self.forward = forward_fn(text_encoder, generator, tokenizer.words_num)
        self.image_shape = (
            self.forward.get_concrete_function().structured_outputs["images"][-1].shape[1:])

    def images(self, ids, noise, ca_eps):
        return self.forward(ids, noise, ca_eps)["images"][-1]

    @staticmethod
    def _per_caption(tok):
        """The per-caption outputs every signature returns (module docstring)."""
        return {"valid": tok["valid"], "length": tok["length"], "known_words": tok["known"]}

    def _generate(self, captions, noise, ca_eps):
        """float32 images ``[N, S, S, 3]`` of the valid captions, ``BLANK_FLOAT`` rows for the
        invalid ones, and the per-caption outputs."""
        tok = self.tokenizer(captions)
        n = tf.shape(captions)[0]
        checks = [
            tf.debugging.assert_equal(tf.shape(noise)[0], n,
                                      message="noise needs one row per caption"),
            tf.debugging.assert_equal(tf.shape(ca_eps)[0], n,
                                      message="ca_eps needs one row per caption"),
        ]
        with tf.control_dependencies(checks):
            rows = tf.where(tok["valid"])  # [M, 1] int64, increasing
        ids, noise, ca_eps = (tf.gather_nd(x, rows) for x in (tok["ids"], noise, ca_eps))
        shape = self.image_shape
        # The generator cannot run on an empty batch (SDM reshapes), hence the cond.
        valid_images = tf.cond(
            tf.shape(rows)[0] > 0, lambda: self.images(ids, noise, ca_eps),
            lambda: tf.zeros([0] + shape.as_list(), tf.float32))
        blank = tf.fill(tf.concat([[n], tf.constant(shape.as_list())], 0), BLANK_FLOAT)
        images = tf.ensure_shape(tf.tensor_scatter_nd_update(blank, rows, valid_images),
                                 [None] + shape.as_list())
        return dict(images=images, **self._per_caption(tok))

    def generate(self, captions, noise):
        eps = tf.zeros([tf.shape(noise)[0], self.condition_dim], tf.float32)
        out = self._generate(captions, noise, eps)
        return dict(out, images=quantize(out["images"]))

    def generate_seeded(self, captions, seed):
        rows = tf.range(tf.shape(captions, out_type=tf.int64)[0])
        noise, eps = seeded_noise(seed, rows, z_dim=self.z_dim, condition_dim=self.condition_dim)
        out = self._generate(captions, noise, eps)
        return dict(out, images=quantize(out["images"]))

    def generate_float(self, captions, noise, ca_eps):
        return self._generate(captions, noise, ca_eps)

    def tokenize(self, captions):
        tok = self.tokenizer(captions)
        return dict(ids=tok["ids"], unknown_words=tok["unknown_words"].to_tensor(default_value=""),
                    **self._per_caption(tok))


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
    """Writes the SavedModel of a loaded run (``inference.load_for_inference``) to ``out_dir``.

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
                     "generate_seeded": f"{NOISE_RULE}; row r is caption i = r, j = 0",
                     "generate_float": "the ca_eps input"},
        "quantize": QUANTIZE_RULES["truncate"],
        "outputs": {name: list(keys) for name, keys in OUTPUTS.items()},
        "invalid_caption": f"a caption with no vocabulary word (empty included): valid=false, "
                           f"a blank image ({BLANK_UINT8} in uint8, {BLANK_FLOAT} in float); "
                           "the other rows are unchanged",
        "long_caption": f"the first {words_num} vocabulary words are kept",
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
        from msmt_tf.inference import load_for_inference as load
    inference = load(run_dir=cfg.run_dir, checkpoint=cfg.checkpoint, which=cfg.which)
    return export_saved_model(inference, cfg.out, overwrite=cfg.overwrite)
