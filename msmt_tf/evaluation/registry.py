"""The metric registry: every metric the evaluation can compute, by its ``--metrics`` name.

As StyleGAN2-ADA's ``metric_main`` (NVlabs/stylegan2-ada-pytorch ``metrics/metric_main.py``:
a dict of registered metric functions by name, ``is_valid_metric``, ``list_valid_metrics``),
each metric is a ``Metric`` registered in ``METRICS`` with

* its ``name`` (the ``--metrics`` value) and a one-line ``description`` (``--help`` lists them);
* the ``keys`` of its numbers in the result (metrics.json keeps these names: ``fid``,
  ``kid_mean``, ``r_precision_mean``, ...) and its ``stems``: the reported (TensorBoard) name
  puts the image count after the stem, ``tag("kid_mean", 2000) == "kid2k_mean"``, so a
  200-image FID (``fid200``) is never plotted beside a 30,000-image one (``fid30k``);
* ``needs``: what the sampling loop of ``Evaluator._run`` collects for it (``features``: FID
  Inception pool_3 features; ``reference``: the real statistics; ``image_codes``: DAMSM
  R-precision hits; ``attributes``: the shapes attribute classifier's readings);
* ``check(evaluator, plan, num_images, image_idx)``: its requirements, checked by
  ``Evaluator._plan`` before anything is generated. An unmet need goes to ``evaluator._Plan``:
  strict mode raises an ``EvaluationError`` naming the flag to change, adaptive mode skips the
  metric with the reason or shrinks a setting where the number stays comparable;
* ``compute(evaluator, state, plan, protocol)``: its numbers from what the loop collected.

What each metric needs: FID 2 generated and 2 reference images (a covariance); KID subsets of
``min(--kid_subset_size, N_gen, N_ref) >= 2`` images (smaller than asked is recorded: KID stays
unbiased); R-precision the DAMSM image encoder, ``--r_negatives`` captions of other classes for
every query class (fewer negatives would inflate it: never shrunk) and an image per fold (fewer
folds keep the mean, so adaptive mode shrinks them); IS the official softmax and 10 images (its
10 splits; a split's score depends on its size, so fewer splits are not comparable); attribute
accuracy the shapes data and a classifier that passes ``--attr_min_accuracy`` (on
``--shapes_binding`` data it also reports the ``BINDING_METRICS``, docs/shapes_binding.md).
"""

import dataclasses
from typing import Callable

import numpy as np

from msmt_tf.evaluation import inception_score as is_lib
from msmt_tf.evaluation import kid as kid_lib
from msmt_tf.evaluation import r_precision as rp_lib

# The per-image scores of the binding set (``--shapes_binding``, docs/shapes_binding.md),
# reported by the ``attributes`` metric on that data.
BINDING_METRICS = ("binding_accuracy", "objects_present", "relation_accuracy", "scene_accuracy",
                   "object_count_accuracy")

_MORE = "raise --num_images or leave {} out of --metrics"


@dataclasses.dataclass(frozen=True)
class Metric:
    """One registered metric (see the module docstring)."""

    name: str
    description: str
    keys: tuple
    stems: tuple
    needs: frozenset
    check: Callable
    compute: Callable

    def reported_name(self, num_images):
        """``name`` with the image count: ``fid200``, ``fid2k``, ``fid30k``."""
        return f"{self.name}{count_suffix(num_images)}"


METRICS = {}


def register(metric):
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is registered twice.")
    METRICS[metric.name] = metric
    return metric


def names():
    """The registered ``--metrics`` names, in registration order."""
    return tuple(METRICS)


def get(name):
    return METRICS[name]


def unknown(requested):
    """The names of ``requested`` that are not registered."""
    return [m for m in requested if m not in METRICS]


def help_text():
    """``name (description)`` of every metric, for the ``--metrics`` flag's help."""
    return "; ".join(f"{m.name} ({m.description})" for m in METRICS.values())


def count_suffix(num_images):
    """The image count in a reported name: ``200`` -> ``200``, ``2000`` -> ``2k``, ``30000``
    -> ``30k``, ``1500`` -> ``1500`` (StyleGAN2-ADA's ``fid50k`` style)."""
    n = int(num_images)
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def tag(key, num_images):
    """The reported name of the result number ``key`` (a metrics.json key, or
    ``attribute_accuracy/<attribute>``) of ``num_images`` images: the image count after the
    stem of the metric that produces it (``fid`` -> ``fid200``, ``kid_mean`` -> ``kid2k_mean``,
    ``attribute_accuracy/colour`` -> ``attribute_accuracy200/colour``). None for a key no
    registered metric produces (``seconds``, ...)."""
    for metric in METRICS.values():
        for stem in sorted(metric.stems, key=len, reverse=True):
            if key == stem or key[len(stem):len(stem) + 1] in ("_", "/") and key.startswith(stem):
                return f"{stem}{count_suffix(num_images)}{key[len(stem):]}"
    return None


# ----------------------------------------------------------------------------- FID and KID
def _fid_lib():
    from msmt_tf.evaluation import fid as fid_lib  # scipy: imported when a metric runs

    return fid_lib


def _check_fid(ev, plan, num_images, image_idx):
    least, n_ref = _fid_lib().MIN_IMAGES, ev.reference_count()
    if num_images < least:
        plan.unmet("fid", f"FID needs at least {least} generated images for a covariance, got "
                   f"{num_images}", _MORE.format("fid"))
    elif n_ref < least:
        plan.unmet("fid", f"FID needs at least {least} real test images for the reference "
                   f"covariance, the test split gives {n_ref}",
                   "use a test split with more images or leave fid out of --metrics")


def _compute_fid(ev, state, plan, protocol):
    fid_lib = _fid_lib()
    mu_g, sigma_g = fid_lib.feature_statistics(state.features)
    mu_r, sigma_r, _ = state.reference
    return {"fid": fid_lib.frechet_distance(mu_g, sigma_g, mu_r, sigma_r)}


def _check_kid(ev, plan, num_images, image_idx):
    cfg, n_ref = ev.eval_cfg, ev.reference_count()
    m = kid_lib.subset_size_for(cfg.kid_subset_size, num_images, n_ref)
    if m < 2:
        plan.unmet("kid", f"KID needs subsets of at least 2 images, but only {num_images} "
                   f"generated and {n_ref} real test images are scored", _MORE.format("kid"))
    elif m < cfg.kid_subset_size:
        plan.kid_subset_size = m
        plan.adjusted["kid"] = (
            f"subsets of {m} images instead of --kid_subset_size={cfg.kid_subset_size} "
            f"({num_images} generated, {n_ref} real test images); KID is unbiased in the subset "
            "size, only its spread grows")


def _compute_kid(ev, state, plan, protocol):
    mean, std = kid_lib.kernel_inception_distance(
        state.features, state.reference[2], ev.eval_cfg.kid_subsets, plan.kid_subset_size,
        seed=state.stream_seed("kid"))
    return {"kid_mean": mean, "kid_std": std}


# ----------------------------------------------------------------------------- IS
def _check_is(ev, plan, num_images, image_idx):
    if ev.softmax() is None:
        plan.skip("is", is_lib.SKIPPED_MESSAGE)
    elif num_images < is_lib.SPLITS:
        plan.unmet("is", f"the Inception Score needs at least {is_lib.SPLITS} images (its "
                   f"{is_lib.SPLITS} splits), got {num_images}", _MORE.format("is"),
                   "fewer splits would not be comparable (a split's score depends on its size)")


def _compute_is(ev, state, plan, protocol):
    mean, std = is_lib.inception_score_from_features(state.features, ev.softmax())
    return {"is_mean": mean, "is_std": std}


# ----------------------------------------------------------------------------- R-precision
def _check_r_precision(ev, plan, num_images, image_idx):
    cfg = ev.eval_cfg
    if ev.image_encoder is None:
        plan.skip("r_precision", "no DAMSM image encoder was given")
        return
    query_classes = np.asarray(ev.split.class_ids)[image_idx]
    short = rp_lib.negative_shortfall(query_classes, ev.candidate_classes(), cfg.r_negatives)
    if short:
        c, available = min(short.items(), key=lambda kv: kv[1])
        classes = len(np.unique(ev.split.class_ids))
        plural = "class" if classes == 1 else f"classes, {len(short)} of them short"
        plan.unmet(
            "r_precision",
            f"R-precision needs --r_negatives={cfg.r_negatives} captions of other classes per "
            f"image, but the test split ({len(ev.split)} images, {classes} {plural}) has only "
            f"{available} captions of classes other than class {c}",
            "evaluate on a test split with more classes, lower --r_negatives (not comparable "
            "with the paper's 99) or leave r_precision out of --metrics",
            "fewer negatives would inflate R-precision (not comparable with the paper's 99)")
        return
    if num_images < cfg.r_folds:
        plan.shrink(
            "r_precision", f"--num_images={num_images} < --r_folds={cfg.r_folds} (R-precision "
            "needs at least one image per fold)",
            "raise --num_images or lower --r_folds",
            f"{num_images} folds; the mean over the same hits is unchanged, only the standard "
            "deviation comes from fewer, smaller folds")
        plan.r_folds = num_images


def _compute_r_precision(ev, state, plan, protocol):
    mean, std = rp_lib.fold_statistics(np.concatenate(state.hits), plan.r_folds,
                                       seed=state.stream_seed("folds"))
    return {"r_precision_mean": mean, "r_precision_std": std}


# ----------------------------------------------------------------------------- attributes
def _check_attributes(ev, plan, num_images, image_idx):
    if ev.data_cfg.dataset != "shapes":
        plan.skip("attributes", "attribute accuracy is defined only for --dataset=shapes "
                  f"(this is --dataset={ev.data_cfg.dataset})")
        return
    problem = ev.attribute_classifier_problem()
    if problem is not None:
        if plan.mode == "strict":
            raise problem
        plan.skip("attributes", f"the attribute classifier is unavailable: {problem}")


def _compute_attributes(ev, state, plan, protocol):
    totals, classifier = state.attr_totals, state.classifier
    found = sum(f for f, _ in totals.values())
    stated = sum(n for _, n in totals.values())
    result = {"attribute_accuracy": found / stated if stated else float("nan"),
              "attribute_accuracy_per_attribute": {
                  k: f / n for k, (f, n) in sorted(totals.items()) if n}}
    protocol["attributes"] = {
        "statements": int(stated),
        "classifier_heldout": classifier.report["heldout"],
        "classifier_train_images": classifier.report["train_images"],
        "classifier_dir": classifier.report.get("directory"),
    }
    if state.binding is not None:
        ev._binding_result(result, protocol, state.binding)
    return result




register(Metric("fid", "Frechet Inception Distance, TTUR", ("fid",), ("fid",),
                frozenset({"features", "reference"}), _check_fid, _compute_fid))
register(Metric("kid", "Kernel Inception Distance", ("kid_mean", "kid_std"), ("kid",),
                frozenset({"features", "reference"}), _check_kid, _compute_kid))
register(Metric("r_precision", "DAMSM R-precision, 99 negatives",
                ("r_precision_mean", "r_precision_std"), ("r_precision",),
                frozenset({"image_codes"}), _check_r_precision, _compute_r_precision))
register(Metric("is", "Inception Score, needs --inception_graph", ("is_mean", "is_std"), ("is",),
                frozenset({"features"}), _check_is, _compute_is))
register(Metric("attributes", "shapes attribute accuracy, and the binding scores on "
                "--shapes_binding data; --dataset=shapes only",
                ("attribute_accuracy", "attribute_accuracy_per_attribute") + BINDING_METRICS,
                ("attribute_accuracy",) + BINDING_METRICS,
                frozenset({"attributes"}), _check_attributes, _compute_attributes))
