"""--flagfile and --preset expansion (``msmt_tf.cli.flagfiles``), in process."""

import os

import pytest
from absl import flags

from msmt_tf import errors
from msmt_tf.cli import common, entry, flagfiles, flagutil

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS_DIR = os.path.join(ROOT, "flags")


def _write(path, *lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _configs(argv):
    fv = flags.FlagValues()
    for attr, cls in common.config_classes():
        flagutil.define_flags(cls, fv, group=attr)
    entry.parse(["prog", *argv], fv)
    return common.Configs(**{a: flagutil.from_flags(c, fv) for a, c in common.config_classes()})


def test_nested_flagfiles_are_relative_to_the_naming_file(tmp_path, monkeypatch):
    _write(tmp_path / "a" / "base.flags", "# a comment", "", "--x=1", "// another", "--y=base")
    top = _write(tmp_path / "a" / "b" / "top.flags", "--flagfile=../base.flags", "  --y=top  ")
    monkeypatch.chdir(tmp_path)  # neither file is relative to the working directory
    assert flagfiles.expand_args(["--z=0", f"--flagfile={top}", "pos"]) == [
        "--z=0", "--x=1", "--y=base", "--y=top", "pos"]
    # a command-line --flagfile is relative to the working directory; "--flagfile FILE" too
    assert flagfiles.expand_args(["--flagfile", "a/base.flags", "--", "--flagfile=zzz"]) == [
        "--x=1", "--y=base", "--", "--flagfile=zzz"]


def test_legacy_cwd_relative_nested_flagfile_still_works(tmp_path, monkeypatch):
    _write(tmp_path / "flags" / "cub.flags", "--dataset=cub")
    old = _write(tmp_path / "flags" / "old.flags", "--flagfile=flags/cub.flags")  # absl's rule
    monkeypatch.chdir(tmp_path)
    assert flagfiles.expand_args([f"--flagfile={old}"]) == ["--dataset=cub"]


def test_flagfile_errors_name_the_file(tmp_path):
    top = _write(tmp_path / "top.flags", "--flagfile=missing.flags")
    with pytest.raises(flagfiles.FlagfileError,
                       match=rf"--flagfile={tmp_path}/missing.flags \(named in {top}\): cannot "):
        flagfiles.expand_args([f"--flagfile={top}"])
    a = _write(tmp_path / "a.flags", "--flagfile=b.flags")
    _write(tmp_path / "b.flags", "--flagfile=a.flags")
    with pytest.raises(flagfiles.FlagfileError, match="cycle: .*a.flags -> .*b.flags -> .*a.flags"):
        flagfiles.expand_args([f"--flagfile={a}"])
    assert issubclass(flagfiles.FlagfileError, errors.UserError)
    with pytest.raises(flagfiles.FlagfileError, match="--flagfile needs a value"):
        flagfiles.expand_args(["--flagfile"])


def test_presets_are_the_files_under_flags():
    names = flagfiles.preset_names()
    on_disk = {os.path.relpath(os.path.join(r, f), FLAGS_DIR)[:-len(".flags")]
               for r, _, fs in os.walk(FLAGS_DIR) for f in fs if f.endswith(".flags")}
    assert set(names) == on_disk and "ablations/mtwig_ks3" in names and "dmgan_cub" in names
    assert flagfiles.preset_path("dmgan_cub.flags") == os.path.join(FLAGS_DIR, "dmgan_cub.flags")
    with pytest.raises(flagfiles.FlagfileError, match=r"--preset=\.\./setup: no such preset; "
                                                      r"available .*: ablations/coco_ig_single, .*ablations/ig_memory, "):
        flagfiles.preset_path("../setup")


def test_preset_goes_first_and_any_given_flag_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no flags/ here
    c = _configs(["--batch_size=3", "--preset=dmgan_cub"])
    assert (c.model.refinement, c.model.gf_dim, c.data.dataset, c.train.batch_size) == (
        "memory", 64, "cub", 3)
    same = _configs([f"--flagfile={FLAGS_DIR}/dmgan_cub.flags", "--batch_size=3"])
    assert same.to_dict() == c.to_dict()
    ablation = _configs(["--preset", "ablations/mtwig_ks3"])
    assert (ablation.model.stages, ablation.model.mtwig_kernel, ablation.model.initial) == (
        1, 3, "mtwig")
    # a later --flagfile beats the preset too
    override = _write(tmp_path / "mine.flags", "--gf_dim=8")
    assert _configs([f"--flagfile={override}", "--preset=dmgan_cub"]).model.gf_dim == 8


def test_installed_layout(tmp_path):
    """``pip install .`` ships flags/ as msmt_tf/presets (setup.py package_dir)."""
    presets = tmp_path / "msmt_tf" / "presets"
    _write(presets / "base.flags", "--stages=1")
    _write(presets / "sub" / "x.flags", "--flagfile=../base.flags", "--gf_dim=2")
    assert flagfiles.preset_names(str(presets)) == ["base", "sub/x"]
    assert flagfiles.expand_args(["--preset=sub/x", "--gf_dim=3"], str(presets)) == [
        "--stages=1", "--gf_dim=2", "--gf_dim=3"]


def test_setup_ships_the_presets():
    with open(os.path.join(ROOT, "setup.py")) as f:
        setup = f.read()
    assert '"msmt_tf.presets": "flags"' in setup and '"*/*.flags"' in setup
    assert flagfiles.SOURCE_PRESETS_DIR == "flags" and flagfiles.PRESETS_PACKAGE_DIR == "presets"
    depth = max(n.count("/") for n in flagfiles.preset_names())
    assert depth == 1  # package_data globs "*.flags" and "*/*.flags" cover every preset
