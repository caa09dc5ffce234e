"""The prepare_data entry point and the data fields of the flagfiles."""

import glob
import json
import os
import subprocess
import sys

import pytest
from absl import flags

from msmt_tf import configlib, errors, prepare_data
from msmt_tf.cli import entry, flagutil
from msmt_tf.data import folder
from msmt_tf.data.config import DataConfig
from msmt_tf.data.dataset import load_split
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


DATA_FLAGFILES = ("shapes", "shapes_binding", "cub", "coco", "folder")


@pytest.mark.parametrize("name", DATA_FLAGFILES)
def test_data_flagfiles_parse_with_the_entry_points_flags(name):
    """Every line of the data flagfiles is a flag of prepare_data, the model's --base_size and
    --stages included (an unknown flag would fail the parse)."""
    fv = flags.FlagValues()
    prepare_data.define_config_flags(fv)
    entry.parse(["prog", f"--flagfile={os.path.join(REPO, 'flags', name + '.flags')}"], fv)
    cfg = flagutil.from_flags(DataConfig, fv)
    assert cfg.dataset == name.split("_")[0]
    if name == "coco":
        assert cfg.captions_per_image == 5 and cfg.words_num == 12
    if name == "cub":
        assert cfg.captions_per_image == 10 and cfg.words_num == 18
        assert (fv.base_size, fv.stages) == (64, 3)  # the model's, defined here as well


def test_cli_seed_draws_the_folder_split(tmp_path, helpers):
    root = tmp_path / "f"
    keys = [f"a{i}" for i in range(8)]
    for i, key in enumerate(keys):
        helpers.write_image(str(root / f"{key}.jpg"), helpers.gradient_image(12, 12, i))
        (root / f"{key}.txt").write_text(f"a red bird {i}\n")
    r = _run("--dataset=folder", f"--data_dir={root}", "--captions_per_image=1",
             "--test_fraction=0.5", "--seed=5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with open(root / "prepared" / "manifest.json") as f:
        assert json.load(f)["seed"] == 5
    test = load_split(DataConfig(dataset="folder", data_dir=str(root), captions_per_image=1),
                      "test").keys
    assert sorted(test) == [k for k in keys if folder.split_of(k, 5, 0.5) == "test"]
    assert sorted(test) != [k for k in keys if folder.split_of(k, 0, 0.5) == "test"]
