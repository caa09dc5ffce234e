"""``SampleConfig`` and ``ExportConfig``: what ``python -m msmt_tf.sample`` and
``python -m msmt_tf.export`` do with a trained run.

Field name == absl flag name (see ``msmt_tf.cli.flagutil``). These two entry points define
only their own flags, not the training/data/model flags of the other entry points: the run's
``config.json`` supplies the model, and ``--stages`` here is a switch (write the intermediate
stages), not the number of generator stages. Fields shared by name with the training and
evaluation configs (``run_dir``, ``checkpoint``, ``out``, ``seed``, ``batch_size``) keep
their meaning.
"""

import dataclasses
from typing import Optional

from msmt_tf import configlib
from msmt_tf.configlib import option

UNKNOWN_POLICIES = ("drop", "error")
WHICH = ("latest", "best")


@dataclasses.dataclass(frozen=True)
class _RunSource(configlib.ConfigBase):
    """Where the trained generator comes from (both entry points)."""

    run_dir: Optional[str] = option(
        None, "Run directory written by python -m msmt_tf.train (its latest checkpoint, or the "
        "best-by-FID one with --which=best).")
    checkpoint: Optional[str] = option(
        None, "A checkpoint prefix (runs/x/checkpoints/ckpt-1000) or directory; overrides "
        "--run_dir.")
    which: str = option("latest", "Checkpoint of --run_dir: latest or best.", choices=WHICH)

    def validate(self):
        super().validate()
        if not self.run_dir and not self.checkpoint:
            raise configlib.ConfigError(
                "give --run_dir (a training run) or --checkpoint (a checkpoint prefix).")


@dataclasses.dataclass(frozen=True)
class SampleConfig(_RunSource):
    """Images from your own captions with the EMA generator of a run (frozen, validated)."""

    text: tuple = option(
        (), "A caption to draw (repeat the flag for several: --text='a red bird' --text='...').")
    captions_file: Optional[str] = option(
        None, "A UTF-8 text file with one caption per line (blank lines are skipped); used after "
        "the --text captions.")
    num_per_caption: int = option(4, "Images per caption (different noise).", lower=1)
    seed: int = option(
        0, "Seed of the noise and conditioning-augmentation noise: the same seed gives the same "
        "images (image j of caption i draws stateless_normal(seed=[seed, i + j * 2**32]); the "
        "first samples are the images of evaluate --eval_seed and the SavedModel's "
        "generate_seeded for the same captions).")
    out: Optional[str] = option(
        None, "Output directory (created); default <run_dir>/samples.")
    stages: bool = option(False, "Also write the images of the intermediate stages.")
    maps: bool = option(
        False, "Also write the word attention / memory addressing maps of every refinement stage.")
    unknown: str = option(
        "drop", "Words not in the vocabulary: drop (listed on stderr and in samples.json) or "
        "error. A caption with no known word is always an error.", choices=UNKNOWN_POLICIES)
    batch_size: int = option(16, "Images generated per forward pass.", lower=1)

    def validate(self):
        super().validate()
        if not self.text and not self.captions_file:
            raise configlib.ConfigError(
                "give at least one --text='a caption' or a --captions_file.")


@dataclasses.dataclass(frozen=True)
class ExportConfig(_RunSource):
    """SavedModel export of a run's EMA generator and text encoder (frozen, validated)."""

    out: Optional[str] = option(None, "Directory of the SavedModel (required).")
    overwrite: bool = option(False, "Replace --out if it exists and is not empty.")

    def validate(self):
        super().validate()
        if not self.out:
            raise configlib.ConfigError("give --out=DIR, the directory of the SavedModel.")
