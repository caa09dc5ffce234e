"""Loading a trained run for inference: EMA generator, DAMSM encoders, vocabulary, configs.

Used by `msmt_tf.evaluate`, `msmt_tf.sample`, `msmt_tf.export` and `tools/fid.py`.
"""

import dataclasses
import os

import tensorflow as tf

from msmt_tf import errors
from msmt_tf.models import damsm
from msmt_tf.models.generator import build_generator
from msmt_tf.models.param_count import dummy_generator_inputs
from msmt_tf.training import checkpointing, run_dir as run_dir_lib


class RestoreError(errors.UserError, ValueError):
    """A run directory or checkpoint cannot be loaded; the message says what to do."""


class CheckpointMismatchError(RestoreError, checkpointing.CheckpointError):
    """The checkpoint's variables (keys or shapes) do not match the generator of the run's
    config; caught as either a ``RestoreError`` (entry points) or a ``CheckpointError``."""


@dataclasses.dataclass
class Inference:
    """What inference needs from a run (see `load_for_inference`)."""

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


def resolve_damsm_dir(configs):
    return configs.damsm.damsm_dir or os.path.join("runs", f"{configs.data.dataset}_damsm")


def load_for_inference(run_dir=None, checkpoint=None, which="latest", use_ema=True):
    """Loads the generator (EMA weights by default) and the encoders of a run.

    Args:
        run_dir: a run directory (its latest checkpoint, or the best-by-FID with
            `which="best"`).
        checkpoint: a checkpoint prefix inside a run's `checkpoints/` or `best/` directory
            (overrides `run_dir`).
        which: "latest" or "best".
        use_ema: load the EMA generator (sampling/evaluation) instead of the live one.

    Returns:
        `Inference`.
    """
    from msmt_tf.cli import common

    run, prefix = _find(run_dir, checkpoint, which)
    loaded = run_dir_lib.load_configs(run, dict(common.config_classes()), strict=False)
    configs = common.Configs(**{k: v for k, v in loaded.items() if not isinstance(v, dict)})
    model_cfg = configs.model
    damsm_dir = resolve_damsm_dir(configs)
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
