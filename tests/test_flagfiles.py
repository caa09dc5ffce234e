"""Every flagfile parses with the entry points' flags and builds valid configs."""

import glob
import os

import pytest
from absl import flags

from msmt_tf.cli import common, entry, flagutil

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
                     "flags/attngan_cub.flags", "flags/ablations/mtwig_ks3.flags"):
        assert required in names


@pytest.mark.parametrize("flagfile", FLAGFILES, ids=lambda f: os.path.relpath(f, ROOT))
def test_flagfile_builds_configs(flagfile, monkeypatch):
    configs = _parse(flagfile, monkeypatch)
    assert configs.data.base_size == configs.model.base_size
    assert configs.data.stages == configs.model.stages


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
    # coco_attn2.yml / coco_DMGAN.yml (facts §1.2), used by tools/convert_reference.py.
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


@pytest.mark.parametrize("flagfile", [f for f in FLAGFILES if "shapes" not in f and "folder" not in f
                                      and os.path.basename(f) not in ("cub.flags", "coco.flags")],
                         ids=lambda f: os.path.relpath(f, ROOT))
def test_presets_keep_the_references_discriminator_objective(flagfile, monkeypatch):
    c = _parse(flagfile, monkeypatch)
    assert (c.data.mismatch_swap, c.train.d_warmup_steps) == (0.0, 0)
