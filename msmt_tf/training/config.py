"""``TrainConfig``: the run, the loop and the GAN objective weights (one frozen dataclass).

Field name == absl flag name (see ``msmt_tf.cli.flagutil``). Optimiser and objective defaults
follow the reference GAN schedule (AttnGAN/DM-GAN ``code/trainer.py``: Adam 2e-4, betas
(0.5, 0.999), PyTorch eps 1e-8) and the CUB objective weights of the paper (lambda1 KL 1,
lambda2 redundancy 0.5; gamma 4/5/10); the DAMSM weight lambda3 (5 for CUB, 50 for COCO in the
presets), loop-length, batch and EMA defaults are the CPU quickstart's (no DAMSM term, 2,000
steps of batch 10, EMA 0.99 with a ramp), and
``flags/paper_common.flags`` plus the presets set the references' values (batch 20 or the
preset's, EMA 0.999 without a ramp, epochs). The run directory default is
deterministic (``runs/<dataset>_<preset>``, resolved by ``msmt_tf.training.run_dir``) so that
running the same command again resumes the same run.
"""

import dataclasses
from typing import Optional

from msmt_tf import configlib
from msmt_tf.configlib import option

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("default", "mirrored", "multiworker")


@dataclasses.dataclass(frozen=True)
class TrainConfig(configlib.ConfigBase):
    """Run-directory, loop, optimiser, precision, distribution and GAN-objective settings."""

    # --- run directory / resume -----------------------------------------------------------
    run_dir: Optional[str] = option(
        None,
        "Run directory (config.json, checkpoints, TensorBoard events, metrics.jsonl, grids). "
        "Default: runs/<dataset>_<preset>, so the same command resumes the same run.",
    )
    resume: bool = option(
        True,
        "Resume from the latest checkpoint in --run_dir if there is one. --noresume moves an "
        "existing run directory aside to <run_dir>.old-<UTC time> and starts over.",
    )
    # --- loop length ------------------------------------------------------------------------
    max_steps: int = option(
        2000, "Stop after this many optimiser steps in total (0: use --epochs).", lower=0
    )
    epochs: int = option(600, "Number of passes over the training split (if --max_steps=0).", lower=1)
    batch_size: int = option(
        10, "Global batch size (split across replicas with --strategy). The presets set the "
        "references' values; 10 is the CPU quickstart's (more, cheaper steps learn faster).",
        lower=1
    )
    # --- optimisers (one Adam for G, one per D) ----------------------------------------------
    g_lr: float = option(2e-4, "Generator Adam learning rate.", lower=0.0)
    d_lr: float = option(2e-4, "Discriminator Adam learning rate (each D).", lower=0.0)
    beta_1: float = option(0.5, "Adam beta_1.", lower=0.0, upper=1.0)
    beta_2: float = option(0.999, "Adam beta_2.", lower=0.0, upper=1.0)
    adam_epsilon: float = option(1e-8, "Adam epsilon (PyTorch default 1e-8; Keras default is 1e-7).", lower=0.0)
    ema_decay: float = option(
        0.99, "Decay of the generator EMA copy used for sampling/evaluation (0 disables). The "
        "references use 0.999 (flags/paper_common.flags); the quickstart's few hundred steps "
        "need a shorter window (and --ema_ramp).",
        lower=0.0, upper=1.0,
    )
    ema_ramp: bool = option(
        True, "Ramp the EMA decay up as min(--ema_decay, (1 + step) / (10 + step)) "
        "(tf.train.ExponentialMovingAverage's num_updates); the references have no ramp.")
    # --- checkpoints, logs, evaluation --------------------------------------------------------
    checkpoint_every: int = option(100, "Save a checkpoint every N steps (also at the end and on SIGTERM/SIGINT).", lower=1)
    keep_checkpoints: int = option(3, "Keep the last K periodic checkpoints (the best-by-FID one is kept apart).", lower=1)
    log_every: int = option(25, "Write scalars (TensorBoard + metrics.jsonl) and a progress line every N steps.", lower=1)
    image_every: int = option(100, "Write image grids from the fixed captions and noise every N steps.", lower=1)
    eval_every: int = option(0, "Compute FID / R-precision on the held-out subset every N steps (0: only at the end).", lower=0)
    eval_num_images: int = option(
        200, "Images of the held-out evaluation during training (FID is biased by N: compare runs "
        "only at the same count; the full protocol is python -m msmt_tf.evaluate).", lower=10)
    # --- numerics / execution ----------------------------------------------------------------
    precision: str = option(
        "auto", "Compute precision (Keras mixed precision: float32 weights, float16/bfloat16 "
        "compute; mixed_float16 adds dynamic loss scaling). auto: mixed_float16 on GPUs with "
        "tensor cores (compute capability >= 7.0), mixed_bfloat16 on CPUs with native bfloat16 "
        "(AVX512_BF16 or AMX-BF16), float32 otherwise; the choice is logged and stored in "
        "config.json (docs/training.md, 'Mixed precision').", choices=PRECISIONS)
    jit_compile: bool = option(False, "Compile the train step with XLA.")
    strategy: str = option(
        "default",
        "tf.distribute strategy: default (one device), mirrored (all local GPUs), multiworker "
        "(MultiWorkerMirroredStrategy from the TF_CONFIG environment variable).",
        choices=STRATEGIES,
    )
    max_nonfinite_steps: int = option(
        20, "Abort after this many non-finite (skipped) steps in a row.", lower=1
    )
    seed: int = option(
        0, "Seed of the run: model initialisation, noise, the input pipeline when --deterministic; "
        "python -m msmt_tf.prepare_data also draws a custom folder's train/test split with it "
        "(the synthetic shapes data has its own --shapes_seed).", lower=0
    )
    deterministic: bool = option(
        False, "Deterministic run: TF op determinism (tf.config.experimental.enable_op_determinism, "
        "slower) and a deterministic input pipeline seeded with --seed (same seed, same batches).",
    )
    d_warmup_steps: int = option(
        500, "Before the first GAN step of a new run, train every discriminator's conditional "
        "head for N steps on real images alone to tell an image's caption from its mismatched "
        "one (--mismatch_swap); not in the paper or references (0: the presets). Not "
        "checkpointed: a run stopped during it redoes it.", lower=0)
    # --- GAN objective (eqs 19-23 and DAMSM, read by the GAN trainer) -----------------------
    lambda1: float = option(1.0, "Weight of the conditioning-augmentation KL term (eq 19).", lower=0.0)
    lambda2: float = option(0.5, "Weight of the redundancy term (eqs 20-21).", lower=0.0)
    lambda3: float = option(
        0.0, "Weight of the DAMSM loss (eq 19): 5 for CUB, 50 for COCO (the presets). 0, the CPU "
        "quickstart's, drops the term: its tiny generator, pushed by the DAMSM loss (even at 1, "
        "or ramped in), learns Inception-fooling textures instead of images "
        "(docs/training.md).", lower=0.0)
    damsm_stages: str = option(
        "last", "DAMSM loss on every stage (all, as eq 19; the MSMT presets) or only the last stage "
        "(last, as the references and the CPU quickstart).",
        choices=("all", "last"),
    )
    g_adv_factor: float = option(
        1.0, "Factor of each stage's generator adversarial loss BCE(D(x), 1) + BCE(D(x, s), 1): "
        "1 as the references' code (generator_loss of AttnGAN/DM-GAN code/miscc/losses.py; the "
        "quickstart and every preset), 0.5 as eq 22 is printed (-1/2 [...]); "
        "docs/decisions.md, 'Adversarial objective'.", lower=0.0)
    d_mismatch_term: str = option(
        "on", "The discriminator loss's mismatched-caption term: on = the references' code "
        "((real + cond_real)/2 + (fake + cond_fake + cond_wrong)/3, discriminator_loss of "
        "AttnGAN/DM-GAN code/miscc/losses.py; the quickstart and every preset), off = eq 23 as "
        "printed ((real + fake)/2 + (cond_real + cond_fake)/2; cond_wrong is still logged). "
        "The pairs: --mismatch_pairing.", choices=("on", "off"))
    gamma1: float = option(4.0, "DAMSM attention sharpness gamma1.", lower=0.0)
    gamma2: float = option(5.0, "DAMSM word-region aggregation gamma2.", lower=0.0)
    gamma3: float = option(10.0, "DAMSM posterior smoothing gamma3.", lower=0.0)

    def validate(self):
        super().validate()
        if self.run_dir is not None and not str(self.run_dir).strip():
            raise configlib.ConfigError(
                "--run_dir is empty: give a directory or leave it unset for runs/<dataset>_<preset>."
            )
        if self.strategy == "multiworker" and self.precision == "auto":
            raise configlib.ConfigError(
                "--precision=auto with --strategy=multiworker: each worker would choose for its "
                "own machine; pass --precision explicitly (e.g. mixed_float16 on V100/A100 GPUs)."
            )

    @property
    def pipeline_seed(self) -> Optional[int]:
        """The seed of the training input pipeline: ``seed`` with ``--deterministic``, else None
        (a nondeterministic, faster pipeline)."""
        return self.seed if self.deterministic else None

    def total_steps(self, steps_per_epoch: int) -> int:
        """Number of optimiser steps of the whole run for a given epoch length."""
        if self.max_steps > 0:
            return self.max_steps
        if steps_per_epoch <= 0:
            raise configlib.ConfigError(
                f"the training split gives {steps_per_epoch} batches per epoch at "
                f"--batch_size={self.batch_size}: lower --batch_size or set --max_steps."
            )
        return self.epochs * steps_per_epoch
