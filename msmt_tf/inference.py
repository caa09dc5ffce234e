"""The one inference path: restore a run, seeded noise, the traced forward pass, uint8 images.

``python -m msmt_tf.sample`` (``sampling.py``), ``python -m msmt_tf.evaluate`` and the
in-training evaluation (``evaluation/generation.py``), ``tools/fid.py`` on a run or checkpoint
(``fid.py``) and the SavedModel of ``python -m msmt_tf.export`` (``export/saved_model.py``) all
generate through this module, so the same run, caption index and seed give the same image in
every one of them (``tests/export/test_saved_model.py``,
``test_sample_evaluation_and_generate_seeded_draw_the_same_images``):

* ``load_for_inference(run_dir=..., checkpoint=..., which=...)``: the EMA generator (or the live
  one), the DAMSM encoders, the vocabulary and the configs of a run (``Inference``).
* ``seeded_noise(seed, caption_index, sample_index)``: image ``j`` of caption ``i`` draws
  ``tf.random.stateless_normal([z_dim + condition_dim], seed=[seed, i + j * 2**32])``, split
  into the noise ``z`` (first ``z_dim``) and the conditioning-augmentation noise ``ca_eps``.
  One stateless draw per image: an image depends on its seed, its caption index and sample
  index only, never on the batch size or on the other captions of the request. The
  evaluation's image ``i`` is caption index ``i``, sample 0; the SavedModel's
  ``generate_seeded`` row ``r`` is caption index ``r``, sample 0 (``seed=[seed, r]``, its
  contract since the export was written); ``sample --num_per_caption=K`` gives caption ``i``
  the samples ``j = 0 .. K - 1``, so its first sample is the evaluation's / SavedModel's
  image and raising ``K`` keeps the earlier samples.
* ``forward_fn(text_encoder, generator, words_num)``: one ``tf.function`` of text encoder +
  generator (``training=False``: BN moving statistics), traced once per pair of networks and
  reused by every caller, the SavedModel included.
* ``generate_batches(...)``: ids -> ``Batch`` es of float images in [-1, 1] (every stage on
  request), attention maps and sentence features.
* ``quantize(images, mode)``: float [-1, 1] -> uint8, eagerly (NumPy out) or inside a graph
  (the SavedModel). ``truncate`` (default) = ``uint8(clip((x + 1) * 127.5, 0, 255))``, DM-GAN's
  PNG saving (``Image.fromarray(((x + 1) * 127.5).astype(np.uint8))``, MinfengZhu/DM-GAN
  d515995 ``code/trainer.py:condGANTrainer.sampling``); ``round`` rounds to nearest (ties to
  even) first.
"""

import dataclasses
import os
import weakref

import numpy as np
import tensorflow as tf

from msmt_tf import errors, experiment_config
from msmt_tf.models import damsm
from msmt_tf.models.generator import build_generator
from msmt_tf.models.param_count import dummy_generator_inputs
from msmt_tf.training import checkpointing, run_dir as run_dir_lib


# ---------------------------------------------------------------------- restore
class RestoreError(errors.UserError, ValueError):
    """A run directory or checkpoint cannot be loaded; the message says what to do."""


class CheckpointMismatchError(RestoreError, checkpointing.CheckpointError):
    """The checkpoint's variables (keys or shapes) do not match the generator of the run's
    config; caught as either a ``RestoreError`` (entry points) or a ``CheckpointError``."""


@dataclasses.dataclass
class Inference:
    """What inference needs from a run (see ``load_for_inference``)."""

    generator: object
    configs: object
    text_encoder: object
    image_encoder: object
    vocab: object
    checkpoint: str
    run_dir: str
    damsm_dir: str


def _find(run_dir, checkpoint, which):
    if checkpoint:
        prefix = checkpoint
        if os.path.isdir(checkpoint):
            prefix = tf.train.latest_checkpoint(checkpoint)
            if prefix is None:
                raise RestoreError(f"--checkpoint={checkpoint}: no checkpoint in that directory.")
        if not tf.io.gfile.exists(prefix + ".index"):
            raise RestoreError(f"--checkpoint={checkpoint}: no {prefix}.index; give a checkpoint "
                               "prefix such as runs/x/checkpoints/ckpt-1000.")
        run = os.path.dirname(os.path.dirname(os.path.abspath(prefix)))
        return run, prefix
    if not run_dir:
        raise RestoreError("give --run_dir (a training run) or --checkpoint (a checkpoint prefix).")
    if not os.path.exists(os.path.join(run_dir, run_dir_lib.CONFIG_FILE)):
        raise RestoreError(f"--run_dir={run_dir} has no {run_dir_lib.CONFIG_FILE}: is it a run "
                           "directory written by python -m msmt_tf.train?")
    sub = "best" if which == "best" else "checkpoints"
    prefix = tf.train.latest_checkpoint(os.path.join(run_dir, sub))
    if prefix is None and which == "best":
        prefix = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    if prefix is None:
        raise RestoreError(f"--run_dir={run_dir} has no checkpoint yet: train first.")
    return run_dir, prefix


def load_for_inference(run_dir=None, checkpoint=None, which="latest", use_ema=True):
    """Loads the generator (EMA weights by default) and the encoders of a run.

    Args:
        run_dir: a run directory (its latest checkpoint, or the best-by-FID with
            ``which="best"``).
        checkpoint: a checkpoint prefix inside a run's ``checkpoints/`` or ``best/`` directory
            (overrides ``run_dir``).
        which: "latest" or "best".
        use_ema: load the EMA generator (sampling/evaluation) instead of the live one.

    Returns:
        ``Inference``.
    """
    run, prefix = _find(run_dir, checkpoint, which)
    loaded = run_dir_lib.load_configs(run, dict(experiment_config.config_classes()), strict=False)
    configs = experiment_config.Configs(
        **{k: v for k, v in loaded.items() if not isinstance(v, dict)})
    model_cfg = configs.model
    damsm_dir = configs.damsm.resolved_damsm_dir(configs.data.dataset)
    if not os.path.isabs(damsm_dir):
        # A relative --damsm_dir inside the run (converted reference runs store "damsm")
        # wins over the same path under the working directory.
        candidate = os.path.join(run, damsm_dir)
        damsm_dir = candidate if damsm.exists(candidate) else damsm_dir
    text, image, vocab, _ = damsm.load_encoders(damsm_dir, model_cfg)
    generator = build_generator(model_cfg, seed=configs.train.seed, name="generator")
    generator(dummy_generator_inputs(model_cfg, words_num=configs.data.words_num), training=False)
    key = "ema_generator" if use_ema else "generator"
    checkpointing.read_checkpoint(
        prefix, {key: generator}, error=CheckpointMismatchError,
        what=f"the generator built from {run}/config.json",
        hint="Give the run directory that wrote this checkpoint (--run_dir/--checkpoint).")
    return Inference(generator=generator, configs=configs, text_encoder=text, image_encoder=image,
                     vocab=vocab, checkpoint=prefix, run_dir=run, damsm_dir=damsm_dir)


# ---------------------------------------------------------------------- noise
SAMPLE_STRIDE = 2**32  # seed=[seed, caption_index + sample_index * SAMPLE_STRIDE]
NOISE_RULE = ("image j of caption i: tf.random.stateless_normal([z_dim + condition_dim], "
              "seed=[seed, i + j * 2**32]) = [z | ca_eps]")


# Every argument a tensor of fixed rank, the batch None: one trace for every batch size (the
# smaller last batch of an evaluation included) and every noise width.
@tf.function(autograph=False, input_signature=[
    tf.TensorSpec([], tf.int64, name="seed"),
    tf.TensorSpec([None], tf.int64, name="caption_index"),
    tf.TensorSpec([None], tf.int64, name="sample_index"),
    tf.TensorSpec([], tf.int32, name="width")])
def _draw(seed, caption_index, sample_index, width):
    keys = tf.stack([tf.fill(tf.shape(caption_index), seed),
                     caption_index + sample_index * SAMPLE_STRIDE], axis=1)
    draws = tf.map_fn(lambda key: tf.random.stateless_normal([width], seed=key, dtype=tf.float32),
                      keys, fn_output_signature=tf.TensorSpec([None], tf.float32))
    return tf.reshape(draws, [-1, width])


def seeded_noise(seed, caption_index, sample_index=0, *, z_dim, condition_dim):
    """``(z [n, z_dim], ca_eps [n, condition_dim])`` float32 of the images
    ``(caption_index[k], sample_index[k])`` (the module docstring's rule).

    Args:
        seed: int (or int64 scalar tensor).
        caption_index: int ``[n]`` (array or tensor), the caption of each image.
        sample_index: int ``[n]`` or a scalar for all (default 0: the first sample).
        z_dim, condition_dim: the generator's noise and CA sizes.

    Graph-compatible: the SavedModel's ``generate_seeded`` calls it inside its graph.
    """
    caption_index = tf.cast(caption_index, tf.int64)
    sample_index = tf.broadcast_to(tf.cast(sample_index, tf.int64), tf.shape(caption_index))
    width = int(z_dim) + int(condition_dim)
    draws = tf.ensure_shape(  # the static width the trace cannot know
        _draw(tf.cast(seed, tf.int64), caption_index, sample_index, tf.constant(width, tf.int32)),
        [None, width])
    return draws[:, : int(z_dim)], draws[:, int(z_dim):]


# ---------------------------------------------------------------------- quantiser
QUANTIZE_MODES = ("truncate", "round")
QUANTIZE_RULES = {"truncate": "uint8(clip((x + 1) * 127.5, 0, 255)), truncated",
                  "round": "uint8(clip(round((x + 1) * 127.5), 0, 255))"}


def quantize(images, mode="truncate"):
    """Float images in [-1, 1] -> uint8 (``QUANTIZE_RULES[mode]``).

    ``truncate``: DM-GAN's PNG saving, which truncates toward zero; the clip only guards against
    values outside [-1, 1]. ``round``: to nearest, ties to even (``np.rint``). Eagerly the
    result is a NumPy array; inside a ``tf.function`` a tensor.
    """
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize: mode={mode!r} is not 'truncate' or 'round'.")
    x = (tf.cast(images, tf.float32) + 1.0) * 127.5
    if mode == "round":
        x = tf.round(x)
    out = tf.cast(tf.clip_by_value(x, 0.0, 255.0), tf.uint8)
    return out.numpy() if tf.executing_eagerly() else out


# ---------------------------------------------------------------------- forward pass
# generator -> text_encoder -> words_num -> traced forward: one trace per pair of networks,
# reused by every call. Weak keys, and weak references inside the function, so the cache keeps
# no network alive.
_FORWARD = weakref.WeakKeyDictionary()


def forward_fn(text_encoder, generator, words_num):
    """The traced forward pass ``(ids int32 [B, words_num], z [B, z_dim], ca_eps [B,
    condition_dim]) -> {"images": per stage [B, S_k, S_k, 3], "attention": per refinement
    stage, "sentence": [B, D]}``, text encoder and generator with ``training=False``."""
    per_encoder = _FORWARD.setdefault(generator, weakref.WeakKeyDictionary())
    cache = per_encoder.setdefault(text_encoder, {})
    words_num = int(words_num)
    if words_num not in cache:
        generator_ref, text_encoder_ref = weakref.ref(generator), weakref.ref(text_encoder)

        @tf.function(autograph=False, input_signature=[
            tf.TensorSpec([None, words_num], tf.int32, name="ids"),
            tf.TensorSpec([None, int(generator.z_dim)], tf.float32, name="noise"),
            tf.TensorSpec([None, int(generator.condition_dim)], tf.float32, name="ca_eps")])
        def forward(ids, noise, ca_eps):
            words, sentence = text_encoder_ref()(ids, training=False)
            out = generator_ref()({"noise": noise, "sentence": sentence, "words": words,
                                   "mask": tf.not_equal(ids, 0), "ca_eps": ca_eps},
                                  training=False)
            return {"images": list(out["images"]), "attention": list(out.get("attention", [])),
                    "sentence": sentence}

        cache[words_num] = forward
    return cache[words_num]


# ---------------------------------------------------------------------- generation
@dataclasses.dataclass
class Batch:
    """One forward pass of ``generate_batches``.

    Attributes:
        start: the row of ``ids`` of the first image.
        ids: int32 ``[b, words_num]``.
        images: float32 ``[b, S_k, S_k, 3]`` in [-1, 1] of the stages ``stage_indices`` (the
            final one only unless ``stages=True``), lowest first.
        stage_indices: the stage index of each entry of ``images``.
        attention: float32 ``[b, s, s, words_num]`` per refinement stage (``maps=True``) or [].
        sentence: float32 ``[b, D]``, the sentence features.
    """

    start: int
    ids: np.ndarray
    images: list
    stage_indices: list
    attention: list
    sentence: np.ndarray

    @property
    def final(self):
        return self.images[-1]


def generate_batches(text_encoder, generator, ids, seed, batch_size, caption_index=None,
                     sample_index=None, stages=False, maps=False):
    """Generates one image per row of ``ids``, ``batch_size`` rows per forward pass.

    Args:
        text_encoder, generator: the networks (``Inference.text_encoder``, ``.generator``).
        ids: int32 ``[N, words_num]``, the caption of each image (0 = padding).
        seed: the noise seed (``seeded_noise``).
        batch_size: images per forward pass (the images do not depend on it).
        caption_index: int ``[N]``, the caption index of each image (default ``0 .. N - 1``:
            image ``i`` is caption ``i``, as the evaluation and ``generate_seeded``).
        sample_index: int ``[N]``, its sample index (default 0).
        stages: keep the images of every stage, not only the last.
        maps: keep the attention/addressing maps of the refinement stages.

    Yields:
        ``Batch``.
    """
    ids = np.asarray(ids, np.int32)
    n = len(ids)
    caption_index = np.arange(n) if caption_index is None else np.asarray(caption_index)
    sample_index = np.zeros(n, np.int64) if sample_index is None else np.asarray(sample_index)
    z_dim, c_dim = int(generator.z_dim), int(generator.condition_dim)
    forward = forward_fn(text_encoder, generator, ids.shape[1])
    seed = tf.constant(seed, tf.int64)  # a tensor: one trace of the noise for every seed
    for start in range(0, n, int(batch_size)):
        rows = slice(start, start + int(batch_size))
        noise, eps = seeded_noise(seed, caption_index[rows], sample_index[rows], z_dim=z_dim,
                                  condition_dim=c_dim)
        out = forward(tf.constant(ids[rows]), noise, eps)
        count = len(out["images"])
        kept = list(range(count)) if stages else [count - 1]
        yield Batch(
            start=start, ids=ids[rows],
            images=[np.asarray(out["images"][k], np.float32) for k in kept], stage_indices=kept,
            attention=[np.asarray(a, np.float32) for a in out["attention"]] if maps else [],
            sentence=np.asarray(out["sentence"], np.float32))
