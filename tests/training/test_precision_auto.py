"""--precision=auto: the choice from a machine's facts, its record and resume rule, finite
mixed_bfloat16 steps of every preset, and an evaluation (FID Inception, R-precision encoders)
that stays float32 whatever the policy."""

import json
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from msmt_tf import configlib
from msmt_tf.cli import common, entry, flagutil
from msmt_tf.models import damsm, inception
from msmt_tf.training import ema as ema_lib, precision, run_dir as rd, runner
from msmt_tf.training.config import TrainConfig
from msmt_tf.training.gan_step import GANStep
from msmt_tf.training.gan_trainer import build_networks, make_optimizer
from tests.training import gan_fixtures as fx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def restore_policy():
    policy = keras.mixed_precision.dtype_policy()
    yield
    keras.mixed_precision.set_dtype_policy(policy)


# ------------------------------------------------------------------ the choice


@pytest.mark.parametrize("cpu, gpus, onednn, expected, reason", [
    ({"sse2", "avx512f"}, [], True, "float32", "no GPU, and the CPU has no avx512_bf16/amx_bf16"),
    ({"avx512f", "avx512_bf16"}, [], True, "mixed_bfloat16", "CPU has avx512_bf16"),
    ({"amx_bf16", "amx_tile"}, [], True, "mixed_bfloat16", "CPU has amx_bf16"),
    ({"avx512_bf16"}, [], False, "float32", "CPU has avx512_bf16, but TensorFlow's oneDNN "
     "kernels are off (TF_ENABLE_ONEDNN_OPTS=0)"),
    # GPUs run the step: the CPU's bfloat16 does not matter then.
    ({"avx512_bf16"}, [(8, 6)], True, "mixed_float16",
     "GPU compute capability 8.6 >= 7.0: tensor cores"),
    (set(), [(7, 0), (7, 5)], True, "mixed_float16",
     "GPU compute capability 7.0 >= 7.0: tensor cores"),
    ({"avx512_bf16"}, [(6, 1)], True, "float32",
     "GPU compute capability 6.1 < 7.0: no tensor cores"),
    (set(), [(8, 0), (6, 0)], True, "float32", "GPU compute capability 6.0 < 7.0: no tensor cores"),
    (set(), [None], True, "float32", "GPU compute capability unknown"),
])
def test_auto_follows_the_hardware(cpu, gpus, onednn, expected, reason):
    res = precision.choose_precision("auto", cpu, gpus, onednn)
    assert (res.requested, res.precision, res.reason) == ("auto", expected, reason)
    assert res.message() == f"precision auto -> {expected} ({reason})"


@pytest.mark.parametrize("explicit", precision.PRECISIONS)
def test_an_explicit_precision_always_wins(explicit):
    for facts in (({"avx512_bf16"}, []), (set(), [(9, 0)]), (set(), [])):
        res = precision.choose_precision(explicit, *facts)
        assert res.precision == explicit
        assert res.message() == f"precision {explicit} (set by --precision)"
    with pytest.raises(ValueError, match="--precision='fp8'"):
        precision.choose_precision("fp8")


def test_an_explicit_mixed_policy_without_native_support_is_warned():
    warn = precision.explicit_warning
    assert warn("mixed_bfloat16", {"avx512f"}, []) == (
        "--precision=mixed_bfloat16 needs GPUs of compute capability >= 8.0 or a CPU with "
        "avx512_bf16/amx_bf16 to run natively; here it is emulated and likely slower than "
        "float32 (--precision=auto picks what this machine runs fast).")
    assert warn("mixed_bfloat16", {"avx512_bf16"}, []) is None
    assert warn("mixed_bfloat16", {"avx512_bf16"}, [], onednn=False) is not None
    assert warn("mixed_bfloat16", set(), [(8, 0)]) is None  # A100: native bfloat16
    assert warn("mixed_bfloat16", {"avx512_bf16"}, [(7, 0)]) is not None  # V100: the GPU runs it
    assert warn("mixed_float16", {"avx512_bf16"}, []) is not None  # no GPU
    assert warn("mixed_float16", set(), [(7, 0), (8, 6)]) is None
    assert warn("mixed_float16", set(), [(6, 1)]) is not None
    assert warn("mixed_float16", set(), [None]) is not None
    assert warn("float32", set(), []) is None  # the safe choice is never warned


def test_multiworker_needs_an_explicit_precision():
    with pytest.raises(configlib.ConfigError, match="--precision=auto with --strategy=multiworker"):
        TrainConfig(strategy="multiworker")
    assert TrainConfig(strategy="multiworker", precision="float32").precision == "float32"


def test_cpu_flags_come_from_proc_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\n"
                    "flags\t\t: fpu sse2 avx512f avx512_bf16\nbugs\t\t: spectre\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert precision.cpu_flags(str(info)) == {"fpu", "sse2", "avx512f", "avx512_bf16"}
    assert precision.cpu_flags(str(tmp_path / "missing")) == frozenset()  # not Linux: not native


def test_resolve_logs_one_line_and_resolves_the_config(monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    monkeypatch.setattr(precision, "gpu_capabilities", lambda: [])
    precision.resolve.cache_clear()
    try:
        with caplog.at_level(logging.INFO):
            cfg = precision.resolve_train_config(TrainConfig())
            assert precision.concrete("auto") == "mixed_bfloat16"
        assert cfg.precision == "mixed_bfloat16"
        lines = [r.getMessage() for r in caplog.records if "precision" in r.getMessage()]
        assert lines == ["precision auto -> mixed_bfloat16 (CPU has amx_bf16)"]  # once
        explicit = TrainConfig(precision="float32")
        assert precision.resolve_train_config(explicit) is explicit
    finally:
        precision.resolve.cache_clear()


# ------------------------------------------------------------------ config.json and resume


def test_config_json_stores_the_resolved_and_the_requested_precision(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "concrete",
                        lambda p: "mixed_bfloat16" if p == "auto" else p)
    monkeypatch.setattr(precision, "resolve", lambda p: precision.choose_precision(
        p, {"avx512_bf16"}, []))
    configs = fx.configs(precision="auto")
    resolved, stored = runner.resolve_precision(configs)
    assert resolved.train.precision == "mixed_bfloat16"
    assert configs.train.precision == "auto"  # the caller's configs are not changed
    assert (stored["train"]["precision"], stored["train"]["precision_requested"]) == (
        "mixed_bfloat16", "auto")
    run = rd.prepare_run_dir(str(tmp_path / "run"), stored)
    with open(os.path.join(run.path, rd.CONFIG_FILE)) as f:
        train = json.load(f)["train"]
    assert (train["precision"], train["precision_requested"]) == ("mixed_bfloat16", "auto")
    # An explicit value is stored as given, twice.
    _, stored = runner.resolve_precision(fx.configs(precision="mixed_float16"))
    assert (stored["train"]["precision"], stored["train"]["precision_requested"]) == (
        "mixed_float16", "mixed_float16")


def _stored(prec, requested="auto", **train):
    return {"train": dict(TrainConfig(precision=prec, **train).to_dict(),
                          precision_requested=requested)}


def test_resume_where_auto_resolves_differently_is_not_refused(tmp_path):
    path = str(tmp_path / "run")
    rd.prepare_run_dir(path, _stored("mixed_bfloat16"))
    r = rd.prepare_run_dir(path, _stored("float32"))  # a CPU without bfloat16
    assert r.resumed and r.changes == {"train.precision": ["mixed_bfloat16", "float32"]}
    with open(os.path.join(path, rd.CHANGES_FILE)) as f:
        assert json.loads(f.readline())["changes"] == r.changes
    assert rd.load_config_json(path)["train"]["precision"] == "float32"
    # A run of an older version (float32, no precision_requested) resumed with the default.
    old = str(tmp_path / "old")
    rd.prepare_run_dir(old, {"train": TrainConfig(precision="float32").to_dict()})
    r = rd.prepare_run_dir(old, _stored("mixed_bfloat16"))
    assert r.changes == {"train.precision": ["float32", "mixed_bfloat16"],
                         "train.precision_requested": [None, "auto"]}


@pytest.mark.parametrize("old, new", [("mixed_float16", "mixed_bfloat16"),
                                      ("float32", "mixed_float16")])
def test_resume_across_loss_scaling_is_refused_with_the_flag_to_pass(tmp_path, old, new):
    path = str(tmp_path / "run")
    rd.prepare_run_dir(path, _stored(old))
    with pytest.raises(rd.RunDirError, match=(
            rf"train.precision: '{old}' -> '{new}' \(mixed_float16 checkpoints hold a "
            rf"loss-scaled optimizer, the others do not: pass --precision={old} to resume\)")):
        rd.prepare_run_dir(path, _stored(new))
    # Another real change is still named next to it.
    with pytest.raises(rd.RunDirError, match=r"train.g_lr: 0.0002 -> 0.001"):
        rd.prepare_run_dir(path, _stored(old, g_lr=1e-3))


# ------------------------------------------------------------------ every preset in bf16

# attngan_coco/dmgan_coco differ from their CUB presets in what TINY overrides and in
# lambda3 50, which msmt_coco covers.
PRESETS = ("attngan_cub", "dmgan_cub", "msmt_cub", "msmt_coco")
# Two stages (the refinement stage runs too) at 32/64 px, tiny widths, fx's batch and words.
TINY = ["--base_size=32", "--stages=2", "--gf_dim=6", "--df_dim=4", "--n_m=12", "--z_dim=8",
        "--condition_dim=6", "--embedding_dim=16", "--word_embedding_dim=8", "--r_num=1",
        f"--words_num={fx.WORDS}", f"--batch_size={fx.BATCH}", "--damsm_image_size=75"]


def _preset(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    fv = flags.FlagValues()
    for _, cls in common.config_classes():
        flagutil.define_flags(cls, fv)
    entry.parse(["prog", f"--flagfile=flags/{name}.flags", *TINY], fv)
    return common.Configs(**{n: flagutil.from_flags(cls, fv) for n, cls in common.config_classes()})


@pytest.mark.parametrize("name", PRESETS)
def test_one_mixed_bfloat16_step_of_every_preset_is_finite(name, monkeypatch, restore_policy):
    cfgs = _preset(name, monkeypatch)
    m, t = cfgs.model, cfgs.train.replace(precision="mixed_bfloat16")
    assert (t.lambda3 > 0, m.stages, m.image_sizes) == (True, 2, (32, 64))
    keras.utils.set_random_seed(0)
    with precision.policy_scope(t.precision):
        text, image = fx.encoders(m)
        gen, ema_gen, ds = build_networks(m, t, fx.WORDS, fx.BATCH)
    assert keras.mixed_precision.dtype_policy().name == "float32"  # the scope is left
    assert (gen.compute_dtype, image.compute_dtype, ds[-1].compute_dtype) == ("bfloat16",) * 3
    g_opt = make_optimizer(t.g_lr, t, gen.trainable_variables)
    d_opts = [make_optimizer(t.d_lr, t, d.trainable_variables) for d in ds]
    step = GANStep(gen, ds, text, image, g_opt, d_opts,
                   ema_lib.ExponentialMovingAverage(gen, ema_gen, t.ema_decay),
                   tf.random.Generator.from_seed(0), t, m.z_dim)
    logs = {k: float(v) for k, v in step(fx.batch(m)).items()}  # eager: no tracing
    assert logs["finite"] == 1.0
    for key in ("g_loss", "g_kl", "g_adv/stage1", "g_damsm_word/stage1", "d_loss/stage0",
                "d_loss/stage1"):
        assert np.isfinite(logs[key]) and logs[key] != 0.0, (key, logs[key])
    assert all(v.dtype == "float32" for v in gen.trainable_variables)


# ------------------------------------------------------------------ evaluation stays float32


def _images(n=2, size=40, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=(n, size, size, 3)).astype("float32")


def _fid_layer(arrays, folded, **kwargs):
    layer = inception.FIDInception(folded=folded, merge_1x1=folded, **kwargs)
    layer.build((None, 299, 299, 3))
    inception.set_trunk_weights(layer.trunk, arrays)
    return layer


def test_fid_inception_computes_in_float32_under_a_bfloat16_policy(restore_policy):
    folded = True  # FeatureExtractor's default; the unfolded layer has the same dtype
    from msmt_tf.evaluation import fid

    keras.utils.set_random_seed(1)
    source = inception.FIDInception()
    source.build((None, 299, 299, 3))
    arrays = inception.trunk_weights_numpy(source.trunk)  # random weights, float32 policy
    x = _images()
    b = fid.FeatureExtractor(layer=_fid_layer(arrays, folded))(x)
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    under = _fid_layer(arrays, folded)
    assert {layer.compute_dtype for layer in under._flatten_layers()} == {"float32"}
    a = fid.FeatureExtractor(layer=under)(x)
    # The same layer asked for bfloat16 explicitly: what the policy would otherwise give.
    c = fid.FeatureExtractor(layer=_fid_layer(arrays, folded, dtype="mixed_bfloat16"))(x)
    scale = np.abs(b).max()  # random weights: pool_3 features of ~1e-3
    assert a.dtype == np.float32 and scale > 1e-3
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * scale)
    assert np.abs(c - b).max() > 1e-3 * scale  # bfloat16 would fail the comparison above


def test_fold_batch_norm_keeps_the_trunks_float32(restore_policy):
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    trunk = inception.FIDInception().trunk
    trunk.build((None, 299, 299, 3))
    folded = inception.fold_batch_norm(trunk)
    assert {layer.compute_dtype for layer in folded._flatten_layers()} == {"float32"}


def test_the_evaluators_damsm_encoders_are_float32_copies(tmp_path, restore_policy):
    """R-precision's encoders compute in float32 under a bfloat16 run; the DAMSM loss's in
    bfloat16 (runner.train's split)."""
    m = fx.configs().model
    keras.utils.set_random_seed(2)
    text, image = fx.encoders(m)
    directory = str(tmp_path / "damsm")
    damsm.save_encoders(directory, text, image, fx.vocab(),
                        damsm.encoder_meta(m, fx.configs().damsm))
    caps = fx.batch(m)["captions"]
    x = np.random.default_rng(3).uniform(-1, 1, size=(2, 32, 32, 3)).astype("float32")
    f32_text, f32_image, vocab, _ = damsm.load_encoders(directory, m)
    want = [np.asarray(t) for t in (*f32_image(x), *f32_text(caps))]

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")  # what a policy leak would do
    with precision.policy_scope("mixed_bfloat16"):
        train_text, train_image, _, _ = damsm.load_encoders(directory, m)
    assert train_image.compute_dtype == "bfloat16"
    eval_text, eval_image = runner.evaluation_encoders(directory, m, vocab, "mixed_bfloat16",
                                                       (train_text, train_image))
    assert (eval_text.compute_dtype, eval_image.compute_dtype) == ("float32", "float32")
    got = [np.asarray(t) for t in (*eval_image(x), *eval_text(caps))]
    for g, w in zip(got, want):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-6 * np.abs(w).max())
    # The training copy really computes in bfloat16 (so the comparison above can fail).
    region = np.asarray(train_image(x)[0], np.float32)
    assert np.abs(region - want[0]).max() > 1e-3 * np.abs(want[0]).max()
    # A float32 run shares its encoders.
    shared = runner.evaluation_encoders(directory, m, vocab, "float32", (text, image))
    assert shared == (text, image)


def test_the_trainer_resolves_auto_and_scopes_the_policy(tmp_path, monkeypatch, restore_policy):
    """GANTrainer given --precision=auto (on a machine that resolves to mixed_bfloat16) builds
    its networks in bfloat16 and leaves the global policy float32 for what is built later (the
    evaluator's networks). Its step in bfloat16: the preset test above (eager, no tracing)."""
    from msmt_tf.training.gan_trainer import GANTrainer

    monkeypatch.setattr(precision, "concrete", lambda p: "mixed_bfloat16" if p == "auto" else p)
    cfgs = fx.configs(precision="auto")
    text, image = fx.encoders(cfgs.model)
    run = rd.prepare_run_dir(str(tmp_path / "run"), cfgs.to_dict())
    trainer = GANTrainer(cfgs, run, tf.distribute.get_strategy(), text, image, fx.vocab(),
                         fx.dataset(cfgs.model, repeats=2), steps_per_epoch=2)
    assert trainer.cfg.precision == "mixed_bfloat16"
    assert keras.mixed_precision.dtype_policy().name == "float32"
    networks = [trainer.generator, trainer.ema_generator, *trainer.discriminators]
    assert {net.dtype_policy.name for net in networks} == {"mixed_bfloat16"}
    convs = [layer for net in networks for layer in net._flatten_layers()
             if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    assert convs and {layer.compute_dtype for layer in convs} == {"bfloat16"}
    logs = {k: float(v) for k, v in trainer.step_fn(fx.batch(cfgs.model)).items()}  # eager
    assert logs["finite"] == 1.0 and np.isfinite(logs["g_loss"])
    assert keras.mixed_precision.dtype_policy().name == "float32"
