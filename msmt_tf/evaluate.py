"""Evaluates a trained run: FID, KID, R-precision, IS and attribute accuracy -> metrics.json.

Usage:
  python -m msmt_tf.evaluate --run_dir=runs/shapes_msmt [--num_images=30000] [--eval_seed=100]
  python -m msmt_tf.evaluate --checkpoint=runs/shapes_msmt/checkpoints/ckpt-5000 --out=m.json
  python -m msmt_tf.evaluate --run_dir=runs/shapes_msmt --real   # -> metrics_real.json

Loads the EMA generator and the DAMSM encoders of the run (``load_for_inference``), samples
``--num_images`` images from the test captions and writes the numbers with the full protocol
(sample count, reference set, Inception weights hash, resize, quantisation, seeds) to
``<run_dir>/metrics.json`` (or ``--out``). Data/evaluation flags given on the command line
override the run's ``config.json`` (e.g. ``--data_dir`` when the data moved).

``--real`` scores the real test images instead, with the captions the generator would get and
the run's encoders (``Evaluator.evaluate_real``): the ceiling a generator can reach on
R-precision and attribute accuracy (FID 0 on the whole test split), written to
``<run_dir>/metrics_real.json`` (or ``--out``).

The protocol's ``damsm`` entry names the DAMSM encoders that conditioned the generator and
scored R-precision (directory and content SHA-256, ``models.damsm.fingerprint``) next to the
ones the run recorded when it started training (``<run_dir>/damsm_encoders.json``); when they
differ (the run's ``--damsm_dir`` now holds other encoders, or resolves to another directory
from this working directory) one warning is logged: such numbers are not the run's.
"""

import dataclasses
import json
import os
import sys

from absl import flags, logging

from msmt_tf import configlib
from msmt_tf.cli import common, entry, flagutil
from msmt_tf.evaluation.config import EvalConfig
from msmt_tf.io import atomic

FLAGS = flags.FLAGS
METRICS_FILE = "metrics.json"
REAL_METRICS_FILE = "metrics_real.json"


def _load_for_inference(run_dir, checkpoint):
    # Imported here so tests can monkeypatch ``msmt_tf.inference.load_for_inference``.
    from msmt_tf import inference

    return inference.load_for_inference(run_dir=run_dir, checkpoint=checkpoint)


def _data_config(run_data_cfg):
    """The run's DataConfig with the data flags given explicitly on the command line."""
    from msmt_tf.data.config import DataConfig

    changes = {f.name: FLAGS[f.name].value for f in dataclasses.fields(DataConfig)
               if f.name in FLAGS and FLAGS[f.name].present}
    return run_data_cfg.replace(**changes) if changes else run_data_cfg


def output_path(eval_cfg, run_dir, real=False):
    """``--out`` (a .json file or a directory) or ``<run_dir>/metrics.json``
    (``metrics_real.json`` with ``real``)."""
    name = REAL_METRICS_FILE if real else METRICS_FILE
    if eval_cfg.out:
        if eval_cfg.out.lower().endswith(".json"):
            return eval_cfg.out
        return os.path.join(eval_cfg.out, name)
    return os.path.join(run_dir, name)


def damsm_provenance(loaded):
    """``(used, trained_with)``: ``damsm.fingerprint`` of the encoders ``loaded`` holds (None if
    it names no directory) and the record the run wrote when training started (None for runs
    without one)."""
    from msmt_tf.models import damsm
    from msmt_tf.training import run_dir as run_dir_lib

    damsm_dir = getattr(loaded, "damsm_dir", None)
    used = damsm.fingerprint(damsm_dir) if damsm_dir else None
    run = getattr(loaded, "run_dir", None)
    trained_with = run_dir_lib.read_damsm_record(run) if run else None
    return used, trained_with


def check_damsm_encoders(used, trained_with, run_dir):
    """Whether the encoders ``used`` are the ones the run trained with (None: unknown); logs
    one warning line when they are not."""
    if not used or not trained_with:
        return None
    if used["sha256"] == trained_with["sha256"]:
        return True
    logging.warning(
        "R-precision and the generator's text conditioning come from the DAMSM encoders in %s "
        "(sha256 %s), not the ones %s trained with (%s, sha256 %s): these numbers are not the "
        "run's; evaluate with the encoders it trained with.", used["path"], used["sha256"][:12],
        run_dir, trained_with.get("path"), trained_with["sha256"][:12])
    return False


def evaluate_run(eval_cfg, run_dir=None, progress=True, real=False):
    """Library entry of the CLI: loads the run, evaluates its generator (or, with ``real``, the
    real test images), writes metrics.json (metrics_real.json); returns ``(path, result)``."""
    from msmt_tf.evaluation.evaluator import Evaluator

    loaded = _load_for_inference(run_dir, eval_cfg.checkpoint)
    configs = loaded.configs
    data_cfg = _data_config(configs.data)
    used, trained_with = damsm_provenance(loaded)
    same = check_damsm_encoders(used, trained_with, getattr(loaded, "run_dir", run_dir))
    evaluator = Evaluator(data_cfg, configs.model, eval_cfg, loaded.text_encoder,
                          loaded.image_encoder, vocab=loaded.vocab, damsm=used)
    if real:
        result = evaluator.evaluate_real(progress=progress)
    else:
        result = evaluator.evaluate(loaded.generator, progress=progress,
                                    save_dir=eval_cfg.save_images_dir)
        result["protocol"]["generator"] += " (EMA weights)"
    result["protocol"]["checkpoint"] = getattr(loaded, "checkpoint", eval_cfg.checkpoint)
    result["protocol"]["run_dir"] = getattr(loaded, "run_dir", run_dir)
    result["protocol"]["eval_config"] = eval_cfg.to_dict()
    result["protocol"]["data_config"] = data_cfg.to_dict()
    result["protocol"]["damsm"] = {**(used or {"path": None, "sha256": None}),
                                   "trained_with": trained_with, "same_as_training": same}
    path = output_path(eval_cfg, getattr(loaded, "run_dir", None) or run_dir or ".", real)
    with atomic.replacing(path) as tmp, open(tmp, "w") as f:
        json.dump(result, f, indent=2, sort_keys=True, default=float)
    return path, result


def _summary(result):
    keys = ("fid", "kid_mean", "r_precision_mean", "r_precision_std", "is_mean",
            "attribute_accuracy", "binding_accuracy")
    return ", ".join(f"{k} {result[k]:.4f}" for k in keys if k in result)


def main(argv):
    entry.no_arguments(argv, "--run_dir, --checkpoint")
    eval_cfg = flagutil.from_flags(EvalConfig)
    if not FLAGS.run_dir and not eval_cfg.checkpoint:
        raise configlib.ConfigError("give --run_dir (a training run) or --checkpoint.")
    if FLAGS["damsm_dir"].present:
        raise configlib.ConfigError(
            "--damsm_dir: the evaluation uses the DAMSM encoders of the run's config.json (the "
            "generator is conditioned by the text encoder it trained with); drop the flag.")
    if FLAGS.real and eval_cfg.save_images_dir:
        raise configlib.ConfigError(
            "--save_images_dir writes generated images; --real generates none: drop one of them.")
    path, result = evaluate_run(eval_cfg, run_dir=FLAGS.run_dir, real=FLAGS.real)
    for metric, reason in result["skipped"].items():
        logging.info("%s skipped: %s", metric, reason)
    print(f"{_summary(result)}", file=sys.stderr)
    print(f"Wrote {path}")


def define_flags():
    common.define_all_flags()
    flagutil.define_flags(EvalConfig)
    if "real" not in FLAGS:
        flags.DEFINE_bool(
            "real", False, "Score the real test images (the captions the generator would get, "
            "the run's encoders) instead of the generator: the ceiling of R-precision and "
            "attribute accuracy; writes <run_dir>/metrics_real.json (or --out).")


def run():
    define_flags()
    entry.run(main, onednn=True)


if __name__ == "__main__":
    run()
