"""End-to-end jobs behind the entry points: DAMSM pretraining and GAN training.

The entry points (`msmt_tf.pretrain_damsm`, `msmt_tf.train`) parse flags into configs and call
these functions; everything here takes frozen configs only.
"""

import json
import logging
import os
import sys

import numpy as np

from msmt_tf import data as data_lib
from msmt_tf.configlib import ConfigError
from msmt_tf.models import damsm
from msmt_tf.training import run_dir as run_dir_lib

log = logging.getLogger(__name__)

BASELINE_FILE = "untrained_metrics.json"


def prepare_data(configs, stream=sys.stdout):
    """Generates/validates the dataset and prints what was prepared; returns the splits."""
    cfg = configs.data
    root = data_lib.ensure_dataset(cfg)
    train = data_lib.load_split(cfg, "train")
    test = data_lib.load_split(cfg, "test")
    print(f"data: {cfg.dataset} in {root}: {len(train):,} train / {len(test):,} test images, "
          f"{len(train.captions):,} + {len(test.captions):,} captions, vocabulary "
          f"{len(train.vocab):,} words, {len(set(train.class_ids.tolist())):,} train classes, "
          f"stage sizes {list(configs.model.image_sizes)}", file=stream)
    return train, test


def pretrain_damsm(configs, train_split=None, test_split=None, stream=sys.stderr, strategy=None):
    """Trains (or resumes) the DAMSM encoders under ``strategy`` (default: ``--strategy``'s);
    returns `(directory, best validation metrics)`. A run stopped by SIGTERM/SIGINT saved a
    resumable checkpoint (`damsm_trainer.interrupted(directory)` is then True)."""
    trainer = damsm_pretraining(configs, train_split, test_split, strategy=strategy)
    best = trainer.train(progress_stream=stream)
    return trainer.out_dir, best


def damsm_pretraining(configs, train_split=None, test_split=None, strategy=None):
    """The `damsm_trainer.DAMSMTrainer` of `pretrain_damsm`, built (data, encoders, restore
    target) but not run: `.train()` runs it, `.stopped` then says whether a signal stopped it,
    as every worker agreed (the `pretraining_stopped.json` marker is the chief's file)."""
    from msmt_tf.training import distribute
    from msmt_tf.training.damsm_trainer import DAMSMTrainer

    cfg = configs.damsm
    if strategy is None:
        strategy = distribute.make_strategy(configs.train.strategy)
    _, is_chief = distribute.worker_info(strategy)
    if train_split is None:
        data_lib.ensure_dataset(configs.data)
        train_split = data_lib.load_split(configs.data, "train")
        test_split = data_lib.load_split(configs.data, "test")
    out_dir = cfg.resolved_damsm_dir(configs.data.dataset)
    batch = cfg.damsm_batch_size
    steps_per_epoch = len(train_split) // batch
    if steps_per_epoch < 1:
        raise ConfigError(f"--damsm_batch_size={batch} exceeds the {len(train_split)} training "
                          "images: lower it.")
    replicas = strategy.num_replicas_in_sync
    if batch % replicas:
        raise ConfigError(f"--damsm_batch_size={batch} is not divisible by the {replicas} "
                          f"replicas of --strategy={configs.train.strategy}: use a multiple.")
    seed, sizes = configs.train.pipeline_seed, configs.model.image_sizes
    train_ds = data_lib.make_dataset(configs.data, train_split, batch, training=True,
                                     image_sizes=sizes, seed=seed)
    test_ds = data_lib.make_dataset(configs.data, test_split, batch, training=False,
                                    image_sizes=sizes, seed=seed)
    return DAMSMTrainer(configs.data, configs.model, configs.train, cfg, out_dir, train_ds,
                        test_ds, train_split.vocab, steps_per_epoch, strategy=strategy,
                        is_chief=is_chief)


def fixed_batch(configs, test_split):
    """The first 8 test examples whose captions and noise every image grid of a run shows.

    The pipeline's caption choice is seeded (seed 0), but TensorFlow combines an op seed with
    the global seed of the moment; setting it here (to the run's seed, as the trainer does
    next anyway) keeps the choice the same in a fresh run, after the DAMSM pretraining of the
    same process, and on resume.
    """
    import keras

    keras.utils.set_random_seed(configs.train.seed)
    ds = data_lib.make_dataset(configs.data, test_split, 8, training=False,
                               image_sizes=configs.model.image_sizes, seed=0)
    for batch in ds.take(1):
        return {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in batch.items()
                if k != "images"}
    return None


def make_evaluator(configs, text_encoder, image_encoder, vocab, test_split=None,
                   reference_images=None, damsm_fingerprint=None):
    """The in-training evaluator (FID, KID, R-precision, attribute accuracy on shapes).

    `reference_images` real test images give the FID reference statistics (default: the whole
    test split, as `python -m msmt_tf.evaluate`); training uses `--eval_num_images` of them so
    the held-out evaluation stays cheap. The evaluator is adaptive: a metric the test split
    cannot support (e.g. R-precision on a split of one class) is skipped or shrunk with the
    reason logged and recorded in the result, and the run trains on. `damsm_fingerprint`
    (`damsm.fingerprint` of the encoders) goes into the protocol of every result.
    """
    from msmt_tf.evaluation.evaluator import Evaluator

    return Evaluator(configs.data, configs.model, configs.eval, text_encoder, image_encoder,
                     vocab=vocab, split=test_split, reference_images=reference_images,
                     mode="adaptive", damsm=damsm_fingerprint)


def resolve_precision(configs):
    """``(configs with --precision resolved, the dict for config.json)``.

    ``--precision=auto`` becomes this machine's policy (``precision.resolve``, logged);
    config.json stores the resolved value as ``train.precision`` and the flag's value as
    ``train.precision_requested``.
    """
    from msmt_tf.training import precision

    requested = configs.train.precision
    train_cfg = precision.resolve_train_config(configs.train)
    precision.resolve(requested)  # the INFO line (once per process) for explicit values too
    configs = type(configs)(**{**dict(configs.items()), "train": train_cfg})
    stored = configs.to_dict()
    stored["train"]["precision_requested"] = requested
    return configs, stored


def evaluation_encoders(damsm_dir, model_cfg, vocab, precision_name, encoders):
    """The DAMSM ``(text, image)`` encoders of the evaluator: ``encoders`` themselves under
    float32, else float32 copies loaded from ``damsm_dir`` (R-precision must not depend on the
    machine's precision)."""
    from msmt_tf.training import precision

    if precision_name == "float32":
        return encoders
    with precision.policy_scope("float32"):
        text, image, _, _ = damsm.load_encoders(damsm_dir, model_cfg, vocab)
    return text, image


def train(configs, stream=sys.stderr, out=sys.stdout):
    """The whole GAN job: data, DAMSM encoders (pretrained if missing), run dir, loop, report."""
    import tensorflow as tf

    from msmt_tf.training import damsm_trainer, distribute, precision
    from msmt_tf.training.gan_trainer import GANTrainer

    tcfg = configs.train
    # First: a multi-worker strategy must exist before any other TF op (the DAMSM pretraining).
    strategy = distribute.make_strategy(tcfg.strategy)
    if tcfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    train_split, test_split = prepare_data(configs, stream=out)
    damsm_dir = configs.damsm.resolved_damsm_dir(configs.data.dataset)
    resuming = damsm_trainer.interrupted(damsm_dir)
    if resuming or not damsm.exists(damsm_dir):
        what = ("the DAMSM pretraining in {} was stopped before its end: resuming it"
                if resuming else "no DAMSM encoders in {}: pretraining them first")
        print(what.format(damsm_dir) + " (python -m msmt_tf.pretrain_damsm)", file=out)
        pretraining = damsm_pretraining(configs, train_split, test_split, strategy=strategy)
        best = pretraining.train(progress_stream=stream)
        # The stop every worker agreed on, not the marker file: the chief writes (or removes)
        # it after the loop, possibly after another worker has got here.
        if pretraining.stopped:
            print("  DAMSM pretraining stopped early by a signal: run the same command again "
                  "to resume.", file=out)
            return {"step": 0, "stopped": True, "logs": {}}
        print(f"DAMSM encoders: {damsm_dir} (validation: {json.dumps(best)})", file=out)
    configs, stored = resolve_precision(configs)
    tcfg = configs.train
    _, is_chief = distribute.worker_info(strategy)
    path = tcfg.run_dir or run_dir_lib.default_run_dir(configs.data.dataset,
                                                        configs.model.preset_name)
    run = run_dir_lib.prepare_run_dir(path, stored, resume=tcfg.resume, is_chief=is_chief)
    # The encoders of the DAMSM loss compute in the run's precision (the step's costliest
    # part); the evaluator's (R-precision) in float32, as python -m msmt_tf.evaluate.
    with precision.policy_scope(tcfg.precision), strategy.scope():
        text, image, vocab, meta = damsm.load_encoders(damsm_dir, configs.model, train_split.vocab)
    eval_text, eval_image = evaluation_encoders(damsm_dir, configs.model, vocab, tcfg.precision,
                                                (text, image))
    run_dir_lib.record_damsm_encoders(run.path, meta["fingerprint"], is_chief=is_chief)
    steps_per_epoch = len(train_split) // tcfg.batch_size
    train_ds = data_lib.make_dataset(configs.data, train_split, tcfg.batch_size, training=True,
                                     image_sizes=configs.model.image_sizes,
                                     seed=tcfg.pipeline_seed)
    eval_images = min(tcfg.eval_num_images, len(test_split))
    evaluator = make_evaluator(configs, eval_text, eval_image, vocab, test_split,
                               reference_images=eval_images, damsm_fingerprint=meta["fingerprint"])
    trainer = GANTrainer(configs, run, strategy, text, image, vocab, train_ds, steps_per_epoch,
                         fixed_batch=fixed_batch(configs, test_split), evaluator=evaluator,
                         eval_num_images=eval_images, is_chief=is_chief)
    baseline = None
    baseline_path = os.path.join(run.path, BASELINE_FILE)
    if evaluator is not None and not os.path.exists(baseline_path) and trainer.checkpoint.latest is None:
        baseline = evaluator.evaluate(trainer.ema_generator, num_images=eval_images,
                                      batch_size=min(50, eval_images), seed=tcfg.seed)
        if is_chief:
            with open(baseline_path, "w") as f:
                json.dump(baseline, f, indent=2, sort_keys=True, default=_numpy_to_builtin)
    elif os.path.exists(baseline_path):
        with open(baseline_path) as f:
            baseline = json.load(f)
    result = trainer.train(stream=stream)
    report(run.path, result, baseline, out)
    return result


def _numpy_to_builtin(value):
    """`json.dump` fallback for the NumPy scalars and arrays in evaluation results."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def report(run_path, result, baseline, out=sys.stdout):
    """Prints where the outputs are and the final metrics next to the untrained generator's."""
    print(f"\nrun directory: {run_path}", file=out)
    print(f"  checkpoints: {os.path.join(run_path, 'checkpoints')}  image grids: "
          f"{os.path.join(run_path, 'grids')}  TensorBoard: --logdir {os.path.join(run_path, 'tensorboard')}",
          file=out)
    final = result.get("eval") or {}
    rows = [("FID", "fid"), ("KID", "kid_mean"), ("R-precision (%)", "r_precision_mean"),
            ("attribute accuracy", "attribute_accuracy"), ("binding accuracy", "binding_accuracy")]
    if final or baseline:
        print(f"  {'metric':<20} {'untrained':>12} {'trained':>12}", file=out)
        for label, key in rows:
            a = (baseline or {}).get(key)
            b = final.get(key)
            if a is None and b is None:
                continue
            fa = f"{a:12.4f}" if isinstance(a, (int, float)) else f"{'-':>12}"
            fb = f"{b:12.4f}" if isinstance(b, (int, float)) else f"{'-':>12}"
            print(f"  {label:<20} {fa} {fb}", file=out)
    skipped = {**(baseline or {}).get("skipped", {}), **final.get("skipped", {})}
    for metric, reason in sorted(skipped.items()):
        print(f"  {metric} skipped: {reason}", file=out)
    if result.get("stopped"):
        print("  stopped early by a signal: run the same command again to resume.", file=out)
