"""The GAN loop: resume equals a straight run, and the logs have the expected tags."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from msmt_tf.training import run_dir as run_dir_lib
from msmt_tf.training.gan_trainer import GANTrainer
from tests.training import gan_fixtures as fx


def _train(path, max_steps, text, image):
    cfgs = fx.configs(max_steps=max_steps, d_warmup_steps=3)
    run = run_dir_lib.prepare_run_dir(str(path), cfgs.to_dict(), resume=True)
    trainer = GANTrainer(cfgs, run, tf.distribute.get_strategy(), text, image, fx.vocab(),
                         fx.dataset(cfgs.model, repeats=2), steps_per_epoch=2,
                         fixed_batch=fx.batch(cfgs.model, seed=1))
    result = trainer.train(stream=open(os.devnull, "w"))
    return trainer, result


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tensorflow.python.framework import config as tf_config

    # Deterministic kernels (multi-threaded float sums otherwise differ in the last bits, which
    # Adam amplifies for near-zero gradients); switched back off for the rest of the suite.
    tf_config.enable_op_determinism()
    try:
        text, image = fx.encoders(fx.configs().model)
        root = tmp_path_factory.mktemp("gan")
        _train(root / "resumed", 2, text, image)
        resumed, result = _train(root / "resumed", 4, text, image)
        straight, _ = _train(root / "straight", 4, text, image)
    finally:
        tf_config.disable_op_determinism()
    return root, resumed, straight, result


def test_resume_equals_straight_run(runs):
    _, resumed, straight, result = runs
    assert result["step"] == 4 and not result["stopped"]
    assert int(resumed.checkpoint.step.numpy()) == 4
    # the noise generator continued the same sequence after the restore
    np.testing.assert_array_equal(resumed.noise_rng.state.numpy(), straight.noise_rng.state.numpy())
    for a, b in zip(resumed.generator.weights, straight.generator.weights):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-6, err_msg=a.path)
    for a, b in zip(resumed.ema_generator.weights, straight.ema_generator.weights):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-6, err_msg=a.path)
    for da, db in zip(resumed.discriminators, straight.discriminators):
        for a, b in zip(da.weights, db.weights):
            np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-6, err_msg=a.path)


def test_metrics_jsonl_and_tensorboard_tags(runs):
    root = runs[0]
    run = root / "straight"
    lines = [json.loads(x) for x in open(run / "metrics.jsonl")]
    # step 0: the discriminator warm-up (means over its steps), once: the resumed run has the
    # same weights as the straight one (test_resume_equals_straight_run), so it was not redone
    assert [x["step"] for x in lines] == [0, 1, 2, 3, 4]
    assert {"d_warmup_loss/stage0", "d_warmup_accuracy/stage1", "d_warmup_seconds"} <= set(lines[0])
    assert 0 < lines[0]["d_warmup_loss/stage1"] < 5
    resumed = [json.loads(x)["step"] for x in open(root / "resumed" / "metrics.jsonl")]
    assert resumed == [0, 1, 2, 3, 4]
    for tag in ("g_loss", "g_kl", "d_loss/stage0", "d_loss/stage1", "d_accuracy_real/stage1",
                "g_adv/stage0", "g_damsm_word/stage1", "g_redundancy/stage1", "lr/generator",
                "loss_scale", "step_seconds", "examples_per_second"):
        assert tag in lines[-1], tag
    tags = set()
    for path in glob.glob(str(run / "tensorboard" / "events.*")):
        for raw in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(raw.numpy())
            tags.update(v.tag for v in event.summary.value)
    assert {"g_loss", "d_loss/stage1", "samples/stage0", "samples/stage1",
            "attention/stage1"} <= tags
    grids = sorted(os.listdir(run / "grids"))
    assert any("samples_stage1" in g for g in grids)


def test_checkpoints_rotate_and_config_is_stored(runs):
    root = runs[0]
    ckpts = sorted(os.path.basename(p) for p in glob.glob(str(root / "straight" / "checkpoints" / "ckpt-*.index")))
    assert ckpts == ["ckpt-2.index", "ckpt-4.index"]
    stored = json.load(open(root / "straight" / "config.json"))
    assert stored["model"]["gf_dim"] == 4 and stored["train"]["max_steps"] == 4


def test_eval_scalars_name_metrics_with_the_image_count():
    from msmt_tf.training.gan_trainer import eval_scalars

    result = {"fid": 12.5, "kid_mean": 0.25, "num_images": 300, "is_skipped": True, "note": "text",
              "attribute_accuracy": 0.5, "binding_accuracy": 0.125,
              "attribute_accuracy_per_attribute": {"colour": 0.75, "shape": 0.25}}
    assert eval_scalars(result, 3, 200) == {
        "eval/fid200": 12.5, "eval/kid200_mean": 0.25, "eval/num_images": 300,
        "eval/attribute_accuracy200": 0.5, "eval/binding_accuracy200": 0.125,
        "eval/attribute_accuracy200/colour": 0.75, "eval/attribute_accuracy200/shape": 0.25,
        "eval/seconds": 3.0}
    # thousands as k (StyleGAN2-ADA's fid50k): 2,000 and 30,000 images are other tags
    assert set(eval_scalars({"fid": 1.0}, 0, 2000)) == {"eval/fid2k", "eval/seconds"}
    assert set(eval_scalars({"fid": 1.0}, 0, 30000)) == {"eval/fid30k", "eval/seconds"}
    assert set(eval_scalars({"fid": 1.0}, 0, 1500)) == {"eval/fid1500", "eval/seconds"}


def test_evaluation_on_a_one_class_test_split_skips_r_precision(runs, tmp_path, monkeypatch):
    """The in-training evaluation (``runner.make_evaluator``: adaptive) on 3 test images of one
    class: R-precision is skipped with the reason, FID/KID are logged, the run finishes. The
    finished straight run is resumed, so ``train`` goes directly to its final evaluation."""
    import dataclasses
    import io
    import shutil

    from msmt_tf.data import DataConfig, load_split
    from msmt_tf.data import shapes as shapes_lib
    from msmt_tf.evaluation import fid as fid_lib
    from msmt_tf.evaluation.config import EvalConfig
    from msmt_tf.training import runner

    class PooledColour:  # 48-d block means instead of the 2048-d Inception (seconds, not minutes)
        weights_sha256 = "pooled"

        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, images):
            x = np.asarray(images, np.float64) / 255.0
            b, h, w, _ = x.shape
            return x.reshape(b, 4, h // 4, 4, w // 4, 3).mean(axis=(2, 4)).reshape(b, 48)

    monkeypatch.setattr(fid_lib, "FeatureExtractor", PooledColour)
    directory = str(tmp_path / "shapes")
    shapes_lib.generate(directory, seed=3, num_train=2, num_test=3, size=64, processes=1)
    cfgs = fx.configs(max_steps=4, d_warmup_steps=3)
    cfgs.data = DataConfig(dataset="shapes", data_dir=directory, shapes_seed=3, shapes_num_train=2,
                           shapes_num_test=3, shapes_size=64,
                           shapes_max_objects=3, shapes_textured=0.4, shapes_layout="grid",
                           words_num=fx.WORDS, shapes_names=",".join(shapes_lib.SHAPES),
                           shapes_colours=",".join(shapes_lib.COLOURS))
    cfgs.eval = EvalConfig(stats_cache_dir=str(tmp_path / "stats"), kid_subsets=4)
    split = load_split(cfgs.data, "test")
    # one class, and token ids inside the fixture encoders' 30-word vocabulary
    split = dataclasses.replace(split, class_ids=np.full(3, 17, np.int64),
                                captions=[[(t - 1) % (fx.VOCAB - 1) + 1 for t in c]
                                          for c in split.captions])
    text, image = fx.encoders(cfgs.model)
    evaluator = runner.make_evaluator(cfgs, text, image, split.vocab, split, reference_images=3)
    path = str(tmp_path / "run")
    shutil.copytree(runs[0] / "straight", path)
    trainer = GANTrainer(cfgs, run_dir_lib.RunDir(path=path, resumed=True),
                         tf.distribute.get_strategy(), text, image, fx.vocab(),
                         fx.dataset(cfgs.model, repeats=2), steps_per_epoch=2,
                         evaluator=evaluator, eval_num_images=3)
    result = trainer.train(stream=open(os.devnull, "w"))
    assert result["step"] == 4 and not result["stopped"]
    final = result["eval"]
    assert "other than class 17" in final["skipped"]["r_precision"]
    assert "r_precision_mean" not in final and final["protocol"]["mode"] == "adaptive"
    assert final["protocol"]["kid"]["subset_size"] == 3
    logged = [json.loads(x) for x in open(os.path.join(path, "metrics.jsonl"))][-1]
    assert logged["step"] == 4 and "eval/r_precision3_mean" not in logged
    # eval_num_images=3: the tags carry the count (metrics.json keeps "fid")
    assert "eval/fid" not in logged and "eval/kid3_mean" in logged
    assert np.isfinite(logged["eval/fid3"]) and logged["eval/fid3"] == pytest.approx(final["fid"])
    # a periodic evaluation through the hook gives the same numbers (same seed, same images)
    scalars = _Scalars()
    again = trainer.evaluate(scalars, 5)
    assert again["fid"] == pytest.approx(final["fid"], rel=1e-6)
    assert scalars.logged[0][1]["eval/kid3_mean"] == pytest.approx(final["kid_mean"])
    out = io.StringIO()
    runner.report(path, result, None, out)
    assert "r_precision skipped: R-precision needs --r_negatives=99" in out.getvalue()


class _Scalars:
    """MetricsLogger stand-in that keeps the scalars."""

    def __init__(self):
        self.logged = []

    def scalars(self, step, values):
        self.logged.append((step, dict(values)))
