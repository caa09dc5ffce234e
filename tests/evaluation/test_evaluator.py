"""The evaluation library (``Evaluator``) and ``python -m msmt_tf.evaluate``.

Most tests inject cheap stand-ins whose answers are known (a bag-of-words text encoder, a
"generator" that paints its sentence feature into the image and an image encoder that reads it
back, a pooled-colour feature extractor); one test runs the real FID Inception on a handful of
images.
"""

import json
import types

import numpy as np
import pytest
import tensorflow as tf

from msmt_tf.data import DataConfig
from msmt_tf.data import shapes as shapes_lib
from msmt_tf.evaluation import fid as fid_lib
from msmt_tf.evaluation.config import EvalConfig
from msmt_tf.evaluation.evaluator import EvaluationError, Evaluator
from msmt_tf.inference import quantize
from msmt_tf.models.config import ModelConfig

DIM = 48  # = 4 x 4 x 3: the painted sentence fills a 4x4 RGB image exactly
NUM_TEST = 60


@pytest.fixture(scope="module")
def data_cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes_eval")
    directory = str(root / "shapes")
    shapes_lib.generate(directory, seed=3, num_train=5, num_test=NUM_TEST, size=32, processes=1)
    return DataConfig(dataset="shapes", data_dir=directory, shapes_seed=3, shapes_num_train=5,
                      shapes_num_test=NUM_TEST, shapes_size=32,
                      shapes_max_objects=3, shapes_textured=0.4, shapes_layout="grid",
                      shapes_names=",".join(shapes_lib.SHAPES),
                      shapes_colours=",".join(shapes_lib.COLOURS))


def _model_cfg():
    return ModelConfig(initial="ig", refinement="attn", stages=1, base_size=16, gf_dim=2, z_dim=4,
                       condition_dim=4, embedding_dim=DIM)


class BagOfWords:
    """Text encoder stand-in: words = a fixed random vector per word, sentence = their sum
    (TensorFlow ops: the generation traces it with the generator)."""

    def __init__(self, vocab_size, seed=0):
        self.table = np.random.default_rng(seed).standard_normal((vocab_size, DIM)).astype(np.float32)
        self.table[0] = 0.0

    def __call__(self, tokens, training=False):
        words = tf.gather(self.table, tokens)
        return words, tf.reduce_sum(words, axis=1)


class PaintSentence:
    """Generator stand-in: the image is tanh(sentence / 10) laid out 4x4x3, upsampled 4x.

    With ``use_text=False`` it paints the noise instead (an image unrelated to the caption).
    """

    z_dim = DIM
    condition_dim = 4

    def __init__(self, use_text=True):
        self.use_text = use_text

    def __call__(self, inputs, training=None):
        assert training is False
        source = inputs["sentence"] if self.use_text else inputs["noise"] * 10.0
        img = tf.reshape(tf.tanh(source / 10.0), [-1, 4, 4, 3])
        img = tf.repeat(tf.repeat(img, 4, axis=1), 4, axis=2)
        return {"images": [img]}


class ReadPaint:
    """Image-encoder stand-in: reads the painted code back (the inverse of ``PaintSentence``)."""

    def __call__(self, images, training=False):
        x = np.clip(np.asarray(images)[:, ::4, ::4, :], -0.999999, 0.999999)
        return None, np.arctanh(x).reshape(len(x), DIM) * 10.0


class PooledColour:
    """Feature-extractor stand-in: 4x4 block means of the uint8 image (48-d), counted calls."""

    def __init__(self, sha="weights-a"):
        self.weights_sha256 = sha
        self.images = 0

    def __call__(self, images):
        x = np.asarray(images, np.float64) / 255.0
        b, h, w, _ = x.shape
        self.images += b
        return x.reshape(b, 4, h // 4, 4, w // 4, 3).mean(axis=(2, 4)).reshape(b, 48)


def _evaluator(data_cfg, tmp_path, extractor=None, **eval_kwargs):
    eval_cfg = EvalConfig(stats_cache_dir=str(tmp_path / "stats"), eval_batch_size=16,
                          kid_subset_size=20, kid_subsets=5, **eval_kwargs)
    from msmt_tf.data import load_split

    split = load_split(data_cfg, "test")
    return Evaluator(data_cfg, _model_cfg(), eval_cfg, BagOfWords(len(split.vocab)), ReadPaint(),
                     feature_extractor=extractor or PooledColour(), split=split)


def test_quantize_truncates_like_dmgan_png_saving():
    x = np.array([-1.0, -0.999, 0.0, 0.5, 0.99999, 1.0, 1.2], np.float32)
    # (x + 1) * 127.5 = 0, 0.1275, 127.5, 191.25, 254.9987, 255, 280.5 -> truncated, clipped.
    np.testing.assert_array_equal(quantize(x), [0, 0, 127, 191, 254, 255, 255])
    np.testing.assert_array_equal(quantize(x, "round"), [0, 0, 128, 191, 255, 255, 255])
    with pytest.raises(ValueError, match="mode"):
        quantize(x, "floor")


def test_sampling_cycles_test_images_with_seeded_captions(data_cfg, tmp_path):
    ev = _evaluator(data_cfg, tmp_path)
    image_idx, caption_idx, tokens = ev.sample_captions(130, seed=7)
    np.testing.assert_array_equal(image_idx, np.arange(130) % NUM_TEST)
    assert np.all(caption_idx // 10 == image_idx)  # a caption of its own image
    assert len(set((caption_idx % 10).tolist())) > 5  # drawn, not always caption 0
    for row, c in zip(tokens, caption_idx):
        ids = ev.split.captions[c][: data_cfg.words_num]
        np.testing.assert_array_equal(row[: len(ids)], ids)
        assert not row[len(ids):].any()
    again = ev.sample_captions(130, seed=7)[1]
    np.testing.assert_array_equal(again, caption_idx)
    assert not np.array_equal(ev.sample_captions(130, seed=8)[1], caption_idx)


def test_fid_of_real_images_is_zero_and_a_generator_is_worse(data_cfg, tmp_path):
    ev = _evaluator(data_cfg, tmp_path)
    real = ev.evaluate_real(num_images=NUM_TEST, metrics=("fid", "kid"))
    assert abs(real["fid"]) < 1e-6
    fake = ev.evaluate(PaintSentence(), num_images=NUM_TEST, metrics=("fid", "kid"))
    assert fake["fid"] > 0.1
    assert fake["kid_mean"] > real["kid_mean"]
    # The cached reference equals statistics computed here from the same quantised images.
    mu, sigma, features, info = ev.real_statistics()
    assert info["cached"] and features.shape == (NUM_TEST, 48)
    ref_mu, ref_sigma = fid_lib.feature_statistics(features)
    np.testing.assert_allclose(mu, ref_mu)
    np.testing.assert_allclose(sigma, ref_sigma)


def test_stats_cache_hit_and_invalidation(data_cfg, tmp_path):
    extractor = PooledColour("weights-a")
    ev = _evaluator(data_cfg, tmp_path, extractor)
    first = ev.real_statistics(num_images=40)
    assert not first[3]["cached"] and extractor.images == 40 and ev.stats_computations == 1
    second = ev.real_statistics(num_images=40)
    assert second[3]["cached"] and extractor.images == 40 and ev.stats_computations == 1
    np.testing.assert_array_equal(first[0], second[0])
    ev.real_statistics(num_images=30)  # another image count: recomputed
    assert ev.stats_computations == 2 and extractor.images == 70
    extractor.weights_sha256 = "weights-b"  # other weights: recomputed
    ev.real_statistics(num_images=40)
    assert ev.stats_computations == 3 and extractor.images == 110
    # A fresh evaluator (new process) finds both files again.
    ev2 = _evaluator(data_cfg, tmp_path, PooledColour("weights-b"))
    assert ev2.real_statistics(num_images=40)[3]["cached"] and ev2.stats_computations == 0


def test_r_precision_with_a_known_answer(data_cfg, tmp_path):
    ev = _evaluator(data_cfg, tmp_path)
    perfect = ev.evaluate(PaintSentence(), num_images=200, metrics=("r_precision",))
    # Each image carries exactly its own sentence feature: ranked first unless a negative
    # caption has the same bag of words (essentially never).
    assert perfect["r_precision_mean"] >= 98.0
    blind = ev.evaluate(PaintSentence(use_text=False), num_images=200, metrics=("r_precision",))
    assert blind["r_precision_mean"] <= 6.0  # chance is 1 in 100
    assert blind["r_precision_std"] >= 0.0
    # Deterministic for a seed.
    again = ev.evaluate(PaintSentence(use_text=False), num_images=200, metrics=("r_precision",))
    assert again["r_precision_mean"] == blind["r_precision_mean"]


def test_same_seed_same_images_and_pngs(data_cfg, tmp_path):
    ev = _evaluator(data_cfg, tmp_path)
    a = ev.evaluate(PaintSentence(use_text=False), num_images=20, metrics=("fid",),
                    save_dir=str(tmp_path / "a"))
    b = ev.evaluate(PaintSentence(use_text=False), num_images=20, metrics=("fid",),
                    save_dir=str(tmp_path / "b"))
    c = ev.evaluate(PaintSentence(use_text=False), num_images=20, metrics=("fid",), seed=5)
    assert a["fid"] == b["fid"] != c["fid"]
    from PIL import Image

    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(files) == 20 and files[0].startswith("000000_test_000000")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / files[3])),
                                  np.asarray(Image.open(tmp_path / "b" / files[3])))


def test_protocol_and_skips(data_cfg, tmp_path):
    ev = _evaluator(data_cfg, tmp_path)
    result = ev.evaluate(PaintSentence(), num_images=20, metrics=("fid", "kid", "r_precision", "is"))
    for key in ("fid", "kid_mean", "kid_std", "r_precision_mean", "r_precision_std", "skipped",
                "protocol", "seconds"):
        assert key in result
    assert "inception_graph" in result["skipped"]["is"]
    p = result["protocol"]
    for key in ("num_images", "batch_size", "seed", "captions", "noise", "quantization",
                "inception", "reference", "r_precision", "kid", "image_size"):
        assert key in p, key
    assert p["num_images"] == 20 and p["seed"] == 100 and p["image_size"] == 16
    assert p["reference"]["num_images"] == NUM_TEST and p["reference"]["split"] == "test"
    assert p["inception"]["weights_sha256"] == "weights-a"
    assert "half_pixel_centers=False" in p["inception"]["resize"]
    assert p["quantization"]["mode"] == "truncate" and not p["quantization"]["png_round_trip"]
    json.dumps(result)  # metrics.json-ready


def test_protocol_names_the_damsm_encoders(data_cfg, tmp_path):
    from msmt_tf.data import load_split

    split = load_split(data_cfg, "test")
    encoders = {"path": "/runs/cub_damsm_attngan", "sha256": "ab" * 32}
    ev = Evaluator(data_cfg, _model_cfg(), EvalConfig(stats_cache_dir=str(tmp_path / "stats")),
                   BagOfWords(len(split.vocab)), ReadPaint(), feature_extractor=PooledColour(),
                   split=split, damsm=encoders)
    encoders["sha256"] = "changed by the caller afterwards"  # the evaluator keeps its copy
    p = ev.evaluate(PaintSentence(), num_images=20, metrics=("r_precision",))["protocol"]
    assert p["damsm"] == {"path": "/runs/cub_damsm_attngan", "sha256": "ab" * 32}
    assert p["r_precision"]["damsm_sha256"] == "ab" * 32
    # Stand-in encoders without a directory: unknown, said so.
    p = _evaluator(data_cfg, tmp_path).evaluate(PaintSentence(), num_images=20,
                                                metrics=("r_precision",))["protocol"]
    assert p["damsm"] is None and p["r_precision"]["damsm_sha256"] is None


def test_real_generator_in_inference_mode(data_cfg, tmp_path):
    from msmt_tf.models.generator import build_generator

    generator = build_generator(_model_cfg(), seed=1)
    ev = _evaluator(data_cfg, tmp_path)
    result = ev.evaluate(generator, num_images=12, batch_size=5, metrics=("fid",))
    assert result["protocol"]["image_size"] == 16 and np.isfinite(result["fid"])
    again = ev.evaluate(generator, num_images=12, batch_size=5, metrics=("fid",))
    assert again["fid"] == result["fid"]  # seeded noise and CA noise, BN in inference mode


def test_bad_arguments(data_cfg, tmp_path):
    ev = _evaluator(data_cfg, tmp_path)
    with pytest.raises(EvaluationError, match="num_images"):
        ev.evaluate(PaintSentence(), num_images=1)
    with pytest.raises(EvaluationError, match="r_folds"):
        ev.evaluate(PaintSentence(), num_images=5, metrics=("r_precision",))
    from msmt_tf import configlib

    with pytest.raises(configlib.ConfigError, match="--metrics") as e:
        EvalConfig(metrics=("fid", "psnr"))
    assert str(e.value) == ("--metrics=fid,psnr: unknown metric psnr; give a comma-separated "
                            "subset of the known metrics fid,kid,r_precision,is,attributes.")
    with pytest.raises(configlib.ConfigError, match="no metric given"):
        EvalConfig(metrics=())
    with pytest.raises(configlib.ConfigError, match="exclusive"):
        EvalConfig(inception_weights="a.npz", inception_graph="b.pb")


class _BlindClassifier:
    """Attribute-classifier stand-in that sees no object (every object statement fails)."""

    report = {"heldout": {"object_attributes": 1.0}, "train_images": 0, "directory": None}

    def check(self, min_accuracy):
        pass

    def read(self, images, batch_size=256):
        from msmt_tf.evaluation import attribute_classifier as ac

        return [ac.Reading({}, None) for _ in images]


def test_registry_lists_exactly_the_metrics_the_evaluator_computes(data_cfg, tmp_path):
    from msmt_tf.evaluation import registry

    # the metrics of the module docstring, by hand (StyleGAN2-ADA's metric_main: by name)
    assert registry.names() == ("fid", "kid", "r_precision", "is", "attributes")
    assert EvalConfig().metrics == registry.names()
    ev = _evaluator(data_cfg, tmp_path)
    ev._softmax, ev._classifier = _softmax_stub(), _BlindClassifier()
    not_numbers = {"skipped", "seconds", "protocol"}
    everything = ev.evaluate(PaintSentence(), num_images=20, metrics=registry.names())
    assert everything["skipped"] == {}
    assert everything["protocol"]["computed"] == list(registry.names())
    binding = set(registry.BINDING_METRICS)  # only on --shapes_binding data (test_binding_scores)
    assert set(everything) - not_numbers == {
        k for m in registry.METRICS.values() for k in m.keys} - binding
    for metric in registry.METRICS.values():  # each alone: its keys, the same numbers
        alone = ev.evaluate(PaintSentence(), num_images=20, metrics=(metric.name,))
        assert set(alone) - not_numbers == set(metric.keys) - binding, metric.name
        for key in set(metric.keys) - binding:
            assert alone[key] == everything[key], key


def test_the_metrics_flag_lists_the_registry():
    from absl import flags

    from msmt_tf import evaluate
    from msmt_tf.evaluation import registry

    evaluate.define_flags()
    text = flags.FLAGS["metrics"].help
    for metric in registry.METRICS.values():
        assert f"{metric.name} ({metric.description})" in text
    assert "eval/fid200" in text


def test_real_inception_on_a_handful_of_images(data_cfg, tmp_path, fid_weight_arrays):
    # The real FID network on 8 images; KID instead of FID because one 2048 x 2048 sqrtm of
    # rank-deficient statistics costs about a minute of CPU here (FID itself is covered above).
    from msmt_tf.data import load_split

    extractor = fid_lib.FeatureExtractor(jit_compile=False)
    split = load_split(data_cfg, "test")
    eval_cfg = EvalConfig(stats_cache_dir=str(tmp_path / "stats"), kid_subsets=4, metrics=("kid",))
    ev = Evaluator(data_cfg, _model_cfg(), eval_cfg, BagOfWords(len(split.vocab)), ReadPaint(),
                   feature_extractor=extractor, split=split, reference_images=8)
    real = ev.evaluate_real(num_images=8, batch_size=8)
    fake = ev.evaluate(PaintSentence(), num_images=8, batch_size=8)
    assert real["protocol"]["reference"]["num_images"] == 8
    assert real["protocol"]["inception"]["weights_sha256"] == extractor.weights_sha256
    mu, _, features, _ = ev.real_statistics(8)
    assert features.shape == (8, 2048) and np.isfinite(features).all()
    assert fake["kid_mean"] > 0.1 > abs(real["kid_mean"])


def test_cli_writes_metrics_json(data_cfg, tmp_path, monkeypatch):
    from absl import flags
    from absl.testing import flagsaver

    from msmt_tf import configlib, evaluate, inference
    from msmt_tf.data import load_split

    split = load_split(data_cfg, "test")
    loaded = types.SimpleNamespace(
        generator=PaintSentence(), text_encoder=BagOfWords(len(split.vocab)),
        image_encoder=ReadPaint(), vocab=split.vocab, checkpoint="ckpt-7",
        run_dir=str(tmp_path / "run"),
        configs=types.SimpleNamespace(data=data_cfg, model=_model_cfg()))
    calls = []

    def fake_load(run_dir=None, checkpoint=None, **kwargs):
        calls.append((run_dir, checkpoint))
        return loaded

    monkeypatch.setattr(inference, "load_for_inference", fake_load)
    evaluate.define_flags()
    with flagsaver.flagsaver():
        flags.FLAGS([
            "evaluate", f"--run_dir={tmp_path / 'run'}", "--num_images=30", "--eval_batch_size=16",
            "--metrics=r_precision", f"--stats_cache_dir={tmp_path / 'stats'}"])
        evaluate.main(["evaluate"])
    assert calls == [(str(tmp_path / "run"), None)]
    with open(tmp_path / "run" / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["r_precision_mean"] >= 90.0
    assert metrics["protocol"]["num_images"] == 30
    assert metrics["protocol"]["checkpoint"] == "ckpt-7"
    assert metrics["protocol"]["eval_config"]["metrics"] == ["r_precision"]
    assert metrics["skipped"] == {} and "fid" not in metrics
    with flagsaver.flagsaver():
        flags.FLAGS(["evaluate", "--num_images=30"])
        # main raises the UserError; the entry point (msmt_tf.cli.entry) prints it as one line
        with pytest.raises(configlib.ConfigError, match="--run_dir"):
            evaluate.main(["evaluate"])


# ----------------------------------------------------------------------------- small splits
def _small_split(data_cfg, class_ids):
    """The first ``len(class_ids)`` test images with these class ids (a user's small folder)."""
    import dataclasses

    from msmt_tf.data import load_split

    split = load_split(data_cfg, "test")
    n, cpi = len(class_ids), split.captions_per_image
    return dataclasses.replace(split, keys=split.keys[:n], image_paths=split.image_paths[:n],
                               captions=split.captions[: n * cpi],
                               class_ids=np.asarray(class_ids, np.int64), bboxes=None)


def _small_evaluator(data_cfg, tmp_path, class_ids, mode, classifier=None, **eval_kwargs):
    split = _small_split(data_cfg, class_ids)
    eval_cfg = EvalConfig(stats_cache_dir=str(tmp_path / "stats"), eval_batch_size=16,
                          kid_subset_size=20, kid_subsets=5, **eval_kwargs)
    return Evaluator(data_cfg, _model_cfg(), eval_cfg, BagOfWords(len(split.vocab)), ReadPaint(),
                     feature_extractor=PooledColour(), split=split, mode=mode,
                     attribute_classifier=classifier)


class _WeakClassifier:
    """Attribute-classifier stand-in below ``--attr_min_accuracy``."""

    def check(self, min_accuracy):
        from msmt_tf.evaluation.attribute_classifier import AttributeClassifierError

        raise AttributeClassifierError(f"held-out accuracy 50% < {min_accuracy:.0%}")


class _CountingGenerator(PaintSentence):
    calls = 0

    def __call__(self, inputs, training=None):
        type(self).calls += 1
        return super().__call__(inputs, training)


def _softmax_stub():
    # IS on 48-d stand-in features: a fixed [48, 1008] "softmax/weights"
    return {"weights": np.random.default_rng(0).standard_normal((DIM, 1008))}


ALL = ("fid", "kid", "r_precision", "is", "attributes")


def test_adaptive_mode_skips_what_three_images_of_one_class_cannot_support(data_cfg, tmp_path):
    ev = _small_evaluator(data_cfg, tmp_path, [17, 17, 17], "adaptive", _WeakClassifier())
    ev._softmax = _softmax_stub()
    result = ev.evaluate(PaintSentence(), num_images=3, metrics=ALL)
    skipped = result["skipped"]
    assert set(skipped) == {"r_precision", "is", "attributes"}
    assert "only 0 captions of classes other than class 17" in skipped["r_precision"]
    assert "not comparable" in skipped["r_precision"]
    assert "at least 10 images" in skipped["is"]
    assert "held-out accuracy 50%" in skipped["attributes"]
    for key in ("r_precision_mean", "is_mean", "attribute_accuracy"):
        assert key not in result
    # FID and KID are still computed, exactly as when they are the only metrics asked for
    alone = _small_evaluator(data_cfg, tmp_path, [17, 17, 17], "strict").evaluate(
        PaintSentence(), num_images=3, metrics=("fid", "kid"))
    assert np.isfinite(result["fid"]) and result["fid"] == alone["fid"]
    assert result["kid_mean"] == alone["kid_mean"]
    # KID ran on subsets of the 3 images (not the 20 asked for), and the protocol says so
    p = result["protocol"]
    assert p["kid"]["subset_size"] == 3 and p["kid"]["subset_size_requested"] == 20
    assert "subsets of 3 images" in p["adjusted"]["kid"]
    assert p["mode"] == "adaptive" and p["computed"] == ["fid", "kid"]
    assert p["reference"]["num_images"] == 3
    json.dumps(result)


def test_strict_mode_names_the_flag_to_change(data_cfg, tmp_path):
    from msmt_tf import errors
    from msmt_tf.evaluation.attribute_classifier import AttributeClassifierError

    ev = _small_evaluator(data_cfg, tmp_path, [17, 17, 17], "strict", _WeakClassifier())
    metrics = ("fid", "kid", "r_precision")
    # the user's two attempts: --num_images=3 (10 folds), then --r_folds=1
    with pytest.raises(EvaluationError, match="--r_negatives=99 .*other than class 17") as e:
        ev.evaluate(PaintSentence(), num_images=3, metrics=metrics)
    assert isinstance(e.value, errors.UserError) and "\n" not in str(e.value)
    ev1 = _small_evaluator(data_cfg, tmp_path, [17, 17, 17], "strict", r_folds=1)
    with pytest.raises(EvaluationError, match="lower --r_negatives"):
        ev1.evaluate(PaintSentence(), num_images=3, metrics=metrics)
    # enough classes for 5 negatives, too few images for 10 folds
    ev3 = _small_evaluator(data_cfg, tmp_path, [1, 2, 3], "strict", r_negatives=5)
    with pytest.raises(EvaluationError, match=r"--num_images=3 < --r_folds=10.*lower --r_folds"):
        ev3.evaluate(PaintSentence(), num_images=3, metrics=metrics)
    ev._softmax = _softmax_stub()
    with pytest.raises(EvaluationError, match="Score needs at least 10 images.*--num_images"):
        ev.evaluate(PaintSentence(), num_images=3, metrics=("fid", "is"))
    with pytest.raises(AttributeClassifierError, match="held-out"):
        ev.evaluate(PaintSentence(), num_images=3, metrics=("attributes",))


def test_adaptive_mode_shrinks_r_precision_folds_to_the_strict_result(data_cfg, tmp_path):
    blind = PaintSentence(use_text=False)
    ev = _small_evaluator(data_cfg, tmp_path, [1, 2, 3, 1, 2, 3, 1], "adaptive", r_negatives=5)
    adaptive = ev.evaluate(blind, num_images=7, metrics=("r_precision",))
    # the same as asking for 7 folds explicitly
    explicit = _small_evaluator(data_cfg, tmp_path, [1, 2, 3, 1, 2, 3, 1], "strict",
                                r_negatives=5, r_folds=7).evaluate(
        blind, num_images=7, metrics=("r_precision",))
    assert adaptive["r_precision_mean"] == explicit["r_precision_mean"]
    assert adaptive["r_precision_std"] == explicit["r_precision_std"]
    assert adaptive["skipped"] == {}
    p = adaptive["protocol"]["r_precision"]
    assert p["folds"] == 7 and p["folds_requested"] == 10
    assert "--r_folds=10" in adaptive["protocol"]["adjusted"]["r_precision"]


def test_adaptive_mode_generates_nothing_when_every_metric_is_skipped(data_cfg, tmp_path):
    ev = _small_evaluator(data_cfg, tmp_path, [17, 17, 17], "adaptive")
    _CountingGenerator.calls = 0
    result = ev.evaluate(_CountingGenerator(), num_images=1, metrics=("fid", "kid", "r_precision"))
    assert _CountingGenerator.calls == 0
    assert set(result["skipped"]) == {"fid", "kid", "r_precision"}
    assert "at least 2 generated images" in result["skipped"]["fid"]
    assert result["protocol"]["computed"] == []


def test_a_one_image_test_split_stops_fid_in_strict_mode_and_skips_it_in_adaptive(data_cfg,
                                                                                   tmp_path):
    # FID needs two real test images for the reference covariance; KID subsets of
    # min(20, 3 generated, 1 real) = 1 image
    strict = _small_evaluator(data_cfg, tmp_path, [17], "strict")
    _CountingGenerator.calls = 0
    with pytest.raises(EvaluationError, match="the test split gives 1.*leave fid out of --metrics"):
        strict.evaluate(_CountingGenerator(), num_images=3, metrics=("fid", "kid"))
    with pytest.raises(EvaluationError, match="KID needs subsets of at least 2 .*--num_images"):
        strict.evaluate(_CountingGenerator(), num_images=3, metrics=("kid",))
    assert _CountingGenerator.calls == 0  # checked before generating
    adaptive = _small_evaluator(data_cfg, tmp_path, [17], "adaptive").evaluate(
        _CountingGenerator(), num_images=3, metrics=("fid", "kid"))
    assert set(adaptive["skipped"]) == {"fid", "kid"} and _CountingGenerator.calls == 0
    assert "the test split gives 1" in adaptive["skipped"]["fid"]
