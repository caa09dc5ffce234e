"""The prepare_data entry point and the data fields of the flagfiles."""

import dataclasses
import glob
import os
import subprocess
import sys

import pytest
from absl import flags

from msmt_tf import configlib, errors
from msmt_tf.cli import flagutil
from msmt_tf.data.config import DataConfig
from msmt_tf.prepare_data import prepare

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "msmt_tf.prepare_data", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_shapes_summary_and_missing_dir_error(tmp_path):
    r = _run("--shapes_num_train=12", "--shapes_num_test=3", "--shapes_size=32", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(": ", 1) for line in r.stdout.strip().split("\n"))
    assert lines["dataset"] == "shapes" and lines["data_dir"] == os.path.join("data", "shapes")
    assert lines["num_train"] == "12" and lines["num_test"] == "3"
    assert os.path.isfile(tmp_path / "data" / "shapes" / "meta.json")
    r = _run("--dataset=cub", "--data_dir=nowhere", cwd=tmp_path)
    assert r.returncode == errors.EXIT_CODE
    assert r.stderr.startswith("Error: nowhere: dataset directory not found (--data_dir)")
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr


def test_prepare_folder_with_tfrecords_and_vocab(tmp_path, helpers):
    root = tmp_path / "f"
    for i in range(4):
        helpers.write_image(str(root / f"a{i}.jpg"), helpers.gradient_image(12, 12, i))
        (root / f"a{i}.txt").write_text(f"a red bird {i}\n")
    cfg = DataConfig(dataset="folder", data_dir=str(root), captions_per_image=1, test_fraction=0.25)
    summary = prepare(cfg, tfrecord=True)
    assert summary["num_train"] + summary["num_test"] == 4 and summary["num_test"] >= 1
    assert os.path.isfile(os.path.join(summary["tfrecord_dir"], "train.json"))
    assert len(glob.glob(os.path.join(summary["tfrecord_dir"], "train-*.tfrecord"))) == 1
    # a released vocabulary is kept verbatim
    other = tmp_path / "g"
    helpers.write_image(str(other / "b.jpg"), helpers.gradient_image(12, 12))
    (other / "b.txt").write_text("a red bird\n")
    cfg2 = cfg.replace(data_dir=str(other), test_fraction=0.0)
    s2 = prepare(cfg2, vocab_from=os.path.join(str(root), "prepared", "captions.pickle"))
    assert s2["vocab_sha1"] == summary["vocab_sha1"]
    with pytest.raises(configlib.ConfigError, match="--vocab_from is only used with --dataset=folder"):
        prepare(DataConfig(dataset="cub", data_dir=str(root)), vocab_from="x")


def _flag_name(line):
    name = line[2:].split("=")[0]
    return name[2:] if name.startswith("no") and "=" not in line else name


def test_flagfiles_data_fields_parse():
    files = [os.path.join(REPO, "flags", f"{n}.flags") for n in ("shapes", "cub", "coco", "folder")]
    names = {f.name for f in dataclasses.fields(DataConfig)}
    for path in files:
        fv = flags.FlagValues()
        flagutil.define_flags(DataConfig, fv)
        with open(path) as f:
            lines = [ln.strip() for ln in f if ln.strip() and not ln.strip().startswith("#")]
        assert all(ln.startswith("--") for ln in lines), path
        # other parts append their own fields later: parse only the data ones here
        lines = [ln for ln in lines if _flag_name(ln) in names]
        fv(["prog", *lines])
        cfg = flagutil.from_flags(DataConfig, fv)
        assert cfg.dataset == os.path.basename(path).split(".")[0]
        if cfg.dataset == "coco":
            assert cfg.captions_per_image == 5 and cfg.words_num == 12
        if cfg.dataset == "cub":
            assert cfg.captions_per_image == 10 and cfg.words_num == 18
