"""Every flagfile parses with the entry points' flags and builds valid configs."""

import dataclasses
import glob
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from msmt_tf import losses
from msmt_tf.cli import common, entry, flagfiles, flagutil
from msmt_tf.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = sorted(glob.glob(os.path.join(ROOT, "flags", "**", "*.flags"), recursive=True))


def _parse(flagfile, monkeypatch):
    # Nested --flagfile paths are relative to the file naming them: parse from elsewhere.
    monkeypatch.chdir(os.path.dirname(ROOT))
    fv = flags.FlagValues()
    for _, cls in common.config_classes():
        flagutil.define_flags(cls, fv)
    entry.parse(["prog", f"--flagfile={flagfile}"], fv)
    built = {name: flagutil.from_flags(cls, fv) for name, cls in common.config_classes()}
    return common.Configs(**built)


def test_there_are_flagfiles():
    names = {os.path.relpath(f, ROOT) for f in FLAGFILES}
    for required in ("flags/cub.flags", "flags/coco.flags", "flags/shapes.flags",
                     "flags/msmt_cub.flags", "flags/msmt_coco.flags", "flags/dmgan_cub.flags",
                     "flags/attngan_cub.flags", "flags/ablations/mtwig_ks3.flags",
                     "flags/ablations/coco_ig_single.flags",
                     *(f"flags/ablations/coco_mtwig_ks{k}.flags" for k in (1, 2, 3))):
        assert required in names


def test_every_field_has_one_owner():
    """No two configs share a field: one flag feeds one config (base_size/stages are the
    model's, seed/deterministic the run's), so no check has to reconcile two copies."""
    owners = {}
    for name, cls in common.config_classes():
        for f in dataclasses.fields(cls):
            owners.setdefault(f.name, []).append(name)
    assert {k: v for k, v in owners.items() if len(v) > 1} == {}
    assert [owners[k] for k in ("base_size", "stages", "seed", "deterministic")] == [
        ["model"], ["model"], ["train"], ["train"]]


@pytest.mark.parametrize("flagfile", FLAGFILES, ids=lambda f: os.path.relpath(f, ROOT))
def test_flagfile_builds_configs(flagfile, monkeypatch):
    """Parses (a stale flag or a value a config refuses raises), and every scalar value the
    file itself sets (its last line per flag; nested flagfiles come before it) reaches its
    config unchanged."""
    configs = _parse(flagfile, monkeypatch)
    values = {}
    with open(flagfile, encoding="utf-8") as f:
        for line in f:
            name, sep, value = line.strip().lstrip("-").partition("=")
            if line.startswith("--") and sep and name != "flagfile":
                values[name] = value
    for name, value in values.items():
        owners = [c for _, c in configs.items() if name in {f.name for f in dataclasses.fields(c)}]
        assert len(owners) == 1, name
        got = getattr(owners[0], name)
        if isinstance(got, bool):
            assert got == (value.lower() in ("true", "1")), name
        elif isinstance(got, (int, float)):
            assert math.isclose(got, float(value)), name
        elif isinstance(got, str):
            assert got == value, name


def test_msmt_cub_preset_is_the_papers(monkeypatch):
    c = _parse(os.path.join(ROOT, "flags", "msmt_cub.flags"), monkeypatch)
    m, t = c.model, c.train
    # Sec. 4 "Implementation Details" and appendix 7.3.
    assert (m.initial, m.mtwig_kernel, m.refinement, m.heads, m.grid) == ("mtwig", 3, "sdm", 6, 8)
    assert (m.embedding_dim, m.gf_dim, m.n_m, m.stages, m.base_size) == (256, 48, 96, 3, 64)
    assert (t.lambda1, t.lambda2, t.lambda3, t.batch_size, t.g_lr, t.beta_1, t.beta_2) == (
        1.0, 0.5, 5.0, 20, 2e-4, 0.5, 0.999)
    assert (t.max_steps, t.epochs, t.ema_decay, t.ema_ramp) == (0, 1000, 0.999, False)
    assert (t.d_warmup_steps, c.data.mismatch_swap) == (0, 0.0)  # the references' D objective
    assert (c.data.dataset, c.data.captions_per_image, m.discriminator, m.df_dim) == (
        "cub", 10, "dmgan", 32)
    coco = _parse(os.path.join(ROOT, "flags", "msmt_coco.flags"), monkeypatch)
    assert (coco.train.lambda3, coco.train.epochs, coco.data.dataset) == (50.0, 210, "coco")


def test_reference_presets(monkeypatch):
    a = _parse(os.path.join(ROOT, "flags", "attngan_cub.flags"), monkeypatch)
    assert (a.model.initial, a.model.refinement, a.model.gf_dim, a.model.df_dim,
            a.model.discriminator, a.train.damsm_stages) == ("ig", "attn", 32, 64, "attngan", "last")
    d = _parse(os.path.join(ROOT, "flags", "dmgan_cub.flags"), monkeypatch)
    assert (d.model.refinement, d.model.gf_dim, d.model.df_dim, d.train.batch_size) == (
        "memory", 64, 32, 10)
    # taoxugit/AttnGAN code/cfg/coco_attn2.yml (commit 0d000e6) / MinfengZhu/DM-GAN
    # code/cfg/coco_DMGAN.yml (commit d515995), used by tools/convert_reference.py.
    ac = _parse(os.path.join(ROOT, "flags", "attngan_coco.flags"), monkeypatch)
    assert (ac.model.refinement, ac.model.gf_dim, ac.model.df_dim, ac.model.r_num,
            ac.train.batch_size, ac.train.lambda3, ac.data.dataset) == (
        "attn", 48, 96, 3, 14, 50.0, "coco")
    dc = _parse(os.path.join(ROOT, "flags", "dmgan_coco.flags"), monkeypatch)
    assert (dc.model.refinement, dc.model.gf_dim, dc.model.df_dim, dc.model.r_num,
            dc.train.batch_size, dc.train.lambda3, dc.data.words_num) == (
        "memory", 64, 32, 3, 16, 50.0, 12)


def test_defaults_are_the_quickstart():
    fv = flags.FlagValues()
    for _, cls in common.config_classes():
        flagutil.define_flags(cls, fv)
    fv(["prog"])
    built = {name: flagutil.from_flags(cls, fv) for name, cls in common.config_classes()}
    assert built["data"].dataset == "shapes"
    assert built["train"].max_steps > 0 and built["damsm"].damsm_max_steps > 0
    assert built["model"].image_sizes == (32, 64)
    assert built["data"].mismatch_swap == 0.5 and built["train"].d_warmup_steps == 500
    assert (built["train"].g_adv_factor, built["train"].d_mismatch_term,
            built["data"].mismatch_pairing) == (1.0, "on", "other_class")


DATA_ONLY = ("cub.flags", "coco.flags", "shapes.flags", "shapes_binding.flags", "folder.flags")
PRESETS = [f for f in FLAGFILES if os.path.basename(f) not in DATA_ONLY + ("paper_common.flags",)]


@pytest.mark.parametrize("flagfile", PRESETS, ids=lambda f: os.path.relpath(f, ROOT))
def test_presets_keep_the_references_discriminator_objective(flagfile, monkeypatch):
    c = _parse(flagfile, monkeypatch)
    assert (c.data.mismatch_swap, c.train.d_warmup_steps) == (0.0, 0)
    # Eqs 22-23 as the reference code runs them (docs/decisions.md, "Adversarial objective").
    assert (c.train.g_adv_factor, c.train.d_mismatch_term, c.data.mismatch_pairing) == (
        1.0, "on", "next_row")


@pytest.mark.parametrize("flagfile", PRESETS, ids=lambda f: os.path.relpath(f, ROOT))
def test_presets_state_their_objective(flagfile):
    with open(flagfile, encoding="utf-8") as f:
        assert any(line.startswith("# Objective") for line in f), (
            f"{flagfile}: say in a '# Objective ...' comment which eqs 22-23 form it uses")


def test_presets_found_under_ablations():
    assert {"ablations/ig_memory", "ablations/coco_ig_single", "ablations/coco_mtwig_ks3"} <= set(
        flagfiles.preset_names())
    assert flagfiles.preset_path("ablations/coco_mtwig_ks3") == os.path.join(
        ROOT, "flags", "ablations", "coco_mtwig_ks3.flags")


@pytest.mark.parametrize("name,initial,kernel", [("coco_ig_single", "ig", None),
                                                 ("coco_mtwig_ks1", "mtwig", 1),
                                                 ("coco_mtwig_ks2", "mtwig", 2),
                                                 ("coco_mtwig_ks3", "mtwig", 3)])
def test_table4_coco_presets(name, initial, kernel, monkeypatch):
    """Table 4's COCO columns: single stage, 60 epochs (appendix 7.2), lambda3 50 (7.3)."""
    c = _parse(os.path.join(ROOT, "flags", "ablations", f"{name}.flags"), monkeypatch)
    assert (c.data.dataset, c.data.captions_per_image, c.data.words_num) == ("coco", 5, 12)
    assert (c.model.stages, c.model.image_sizes) == (1, (64,))
    assert (c.train.lambda3, c.train.epochs, c.train.max_steps) == (50.0, 60, 0)
    assert c.model.initial == initial
    if kernel is not None:
        assert c.model.mtwig_kernel == kernel
    cub = _parse(os.path.join(ROOT, "flags", "ablations", name.replace("coco_", "") + ".flags"),
                 monkeypatch)  # the CUB column's preset of the same row
    assert (cub.data.dataset, cub.model.stages, cub.train.lambda3, cub.train.epochs) == (
        "cub", 1, 5.0, 300)
    assert (cub.model.initial, cub.model.mtwig_kernel if kernel else None) == (initial, kernel)


def _np_bce(x, label):
    x = np.asarray(x, "float64")
    return np.log1p(np.exp(-x)) if label else np.log1p(np.exp(x))


def _dmgan_reference_losses(real_u, fake_u, cond):
    """``discriminator_loss`` / ``generator_loss`` of MinfengZhu/DM-GAN ``code/miscc/losses.py``
    in NumPy on logits: ``cond[i, j]`` = D(image i, sentence j) for the reals, ``cond[B + i, i]``
    the fakes with their sentences; the wrong pairs are ``real_features[:B - 1]`` with
    ``conditions[1:B]``; BCELoss means."""
    b = len(real_u)
    real, fake = _np_bce(real_u, 1).mean(), _np_bce(fake_u, 0).mean()
    cond_real = _np_bce([cond[i, i] for i in range(b)], 1).mean()
    cond_fake = _np_bce([cond[b + i, i] for i in range(b)], 0).mean()
    cond_wrong = _np_bce([cond[i, i + 1] for i in range(b - 1)], 0).mean()
    err_d = (real + cond_real) / 2 + (fake + cond_fake + cond_wrong) / 3
    err_g = _np_bce(fake_u, 1).mean() + _np_bce([cond[b + i, i] for i in range(b)], 1).mean()
    return err_d, err_g


@pytest.mark.parametrize("preset", ["dmgan_cub", "attngan_cub", "msmt_cub"])
def test_preset_objective_is_the_reference_code(preset, monkeypatch):
    """The preset's flags, through the pipeline's pairing and the losses, give DM-GAN's errD and
    errG (AttnGAN's code is the same) on the same logits."""
    c = _parse(os.path.join(ROOT, "flags", f"{preset}.flags"), monkeypatch)
    b = 5
    rng = np.random.default_rng(7)
    real_u, fake_u = rng.normal(size=b), rng.normal(size=b)
    cond = rng.normal(size=(2 * b, b))
    class_ids = tf.constant([3, 3, 1, 3, 2])  # same-class neighbours: next_row keeps them
    partner, mask = pipeline.mismatch_partner(class_ids, c.data.mismatch_pairing)
    wrong = np.array([cond[i, j] for i, j in enumerate(partner.numpy())])
    diag = np.array([cond[i, i] for i in range(b)])
    fake_cond = np.array([cond[b + i, i] for i in range(b)])
    f32 = lambda x: np.asarray(x, "float32")  # noqa: E731
    d = losses.discriminator_loss(f32(real_u), f32(diag), f32(fake_u), f32(fake_cond), f32(wrong),
                                  mismatch_term=c.train.d_mismatch_term == "on", wrong_mask=mask)
    g = losses.generator_adversarial_loss(f32(fake_u), f32(fake_cond),
                                          factor=c.train.g_adv_factor)
    err_d, err_g = _dmgan_reference_losses(real_u, fake_u, cond)
    assert math.isclose(float(d["loss"]), err_d, rel_tol=1e-5)
    assert math.isclose(float(g["loss"]), err_g, rel_tol=1e-5)
