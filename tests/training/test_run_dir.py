"""Run directory: config.json round trip, resume checks, --noresume moves aside."""

import datetime
import json
import os

import pytest

from msmt_tf.training import run_dir as rd
from msmt_tf.training.config import TrainConfig

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
DATA = {"dataset": "shapes", "words_num": 12, "image_sizes": (32, 64)}


def test_default_run_dir_is_deterministic():
    assert rd.default_run_dir("cub", "msmt") == os.path.join("runs", "cub_msmt")
    assert rd.default_run_dir("my data/x", "dm gan", root="/r") == "/r/my-data-x_dm-gan"
    assert rd.default_run_dir("", "p") == os.path.join("runs", "default_p")


def test_create_and_round_trip(tmp_path):
    path = str(tmp_path / "run")
    train = TrainConfig(g_lr=1e-3, precision="mixed_bfloat16")
    r = rd.prepare_run_dir(path, {"train": train, "data": DATA})
    assert (r.resumed, r.moved_to) == (False, None)
    stored = json.load(open(os.path.join(r.path, rd.CONFIG_FILE)))
    assert stored["train"]["g_lr"] == 1e-3 and stored["data"]["image_sizes"] == [32, 64]
    back = rd.load_configs(path, {"train": TrainConfig})
    assert back["train"] == train and back["data"]["dataset"] == "shapes"
    assert r.checkpoint_dir == os.path.join(path, "checkpoints")
    assert r.metrics_path == os.path.join(path, "metrics.jsonl")


def test_resume_same_config_and_harmless_changes(tmp_path):
    path = str(tmp_path / "run")
    rd.prepare_run_dir(path, {"train": TrainConfig(), "data": DATA})
    again = rd.prepare_run_dir(path, {"train": TrainConfig(), "data": DATA})
    assert again.resumed and again.changes == {}
    assert not os.path.exists(os.path.join(path, rd.CHANGES_FILE))
    longer = TrainConfig(max_steps=5000, log_every=7, strategy="mirrored")
    r = rd.prepare_run_dir(path, {"train": longer, "data": DATA}, now=NOW)
    assert r.resumed
    default = TrainConfig()
    assert r.changes == {"train.log_every": [default.log_every, 7],
                         "train.max_steps": [default.max_steps, 5000],
                         "train.strategy": ["default", "mirrored"]}
    assert json.load(open(os.path.join(r.path, rd.CONFIG_FILE)))["train"]["max_steps"] == 5000
    log = [json.loads(l) for l in open(os.path.join(path, rd.CHANGES_FILE))]
    assert log == [{"time": "20260102T030405Z", "changes": r.changes}]


def test_changed_config_is_a_clear_error_naming_every_key(tmp_path):
    path = str(tmp_path / "run")
    rd.prepare_run_dir(path, {"train": TrainConfig(), "data": DATA})
    before = open(os.path.join(path, "config.json")).read()
    changed = {"train": TrainConfig(g_lr=1e-3, max_steps=9), "data": dict(DATA, words_num=18)}
    with pytest.raises(rd.RunDirError) as e:
        rd.prepare_run_dir(path, changed)
    msg = str(e.value)
    assert "train.g_lr: 0.0002 -> 0.001" in msg and "data.words_num: 12 -> 18" in msg
    assert "max_steps" not in msg and "--noresume" in msg and "\n" not in msg
    assert open(os.path.join(path, "config.json")).read() == before
    # A new domain section is a difference too.
    with pytest.raises(rd.RunDirError, match="model"):
        rd.prepare_run_dir(path, {"train": TrainConfig(), "data": DATA, "model": {"preset": "msmt"}})


def test_noresume_moves_the_old_run_aside(tmp_path):
    path = str(tmp_path / "run")
    rd.prepare_run_dir(path, {"train": TrainConfig()})
    os.makedirs(os.path.join(path, "checkpoints"))
    open(os.path.join(path, "checkpoints", "ckpt-5.index"), "w").close()
    r = rd.prepare_run_dir(path, {"train": TrainConfig(g_lr=1e-3, resume=False)}, resume=False, now=NOW)
    assert not r.resumed and r.moved_to == path + ".old-20260102T030405Z"
    assert os.listdir(path) == ["config.json"]
    assert os.path.exists(os.path.join(r.moved_to, "checkpoints", "ckpt-5.index"))
    r2 = rd.prepare_run_dir(path, {"train": TrainConfig()}, resume=False, now=NOW)
    assert r2.moved_to == path + ".old-20260102T030405Z-1"


def test_foreign_directory_and_file_are_errors(tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    with pytest.raises(rd.RunDirError, match="has no config.json"):
        rd.prepare_run_dir(str(other), {"train": TrainConfig()})
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(rd.RunDirError, match="is a file"):
        rd.prepare_run_dir(str(f), {"train": TrainConfig()})
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{oops")
    with pytest.raises(rd.RunDirError, match="not valid JSON"):
        rd.prepare_run_dir(str(bad), {"train": TrainConfig()})
    # Non-chief workers never write.
    r = rd.prepare_run_dir(str(tmp_path / "w1"), {"train": TrainConfig()}, is_chief=False)
    assert not r.resumed and not os.path.exists(tmp_path / "w1")


def test_evaluation_settings_never_block_a_resume(tmp_path):
    from msmt_tf.evaluation.config import EvalConfig

    path = str(tmp_path / "run")
    rd.prepare_run_dir(path, {"train": TrainConfig(), "data": DATA, "eval": EvalConfig()})
    r = rd.prepare_run_dir(path, {"train": TrainConfig(), "data": DATA,
                                  "eval": EvalConfig(attr_train_images=123, r_folds=3)})
    assert r.changes == {"eval.attr_train_images": [EvalConfig().attr_train_images, 123],
                         "eval.r_folds": [10, 3]}
    with pytest.raises(rd.RunDirError, match="lambda3"):
        rd.prepare_run_dir(path, {"train": TrainConfig(lambda3=1.0), "data": DATA,
                                  "eval": EvalConfig()})


def test_config_json_of_earlier_versions_resumes_and_loads(tmp_path):
    """Before each field had one owner, config.json held base_size/stages in "data" and "model"
    and seed/deterministic in "data" and "train": such a run resumes and loads today."""
    from msmt_tf.cli import common
    from msmt_tf.models.config import ModelConfig

    classes = dict(common.config_classes())
    configs = {name: cls() for name, cls in classes.items()}
    configs.update(model=ModelConfig(base_size=64, stages=3),
                   train=TrainConfig(seed=5, deterministic=True))
    old = rd.resolved_config(configs)
    old["data"].update(base_size=64, stages=3, seed=5, deterministic=True)  # the old layout
    path = tmp_path / "run"
    path.mkdir()
    (path / rd.CONFIG_FILE).write_text(json.dumps(old))
    r = rd.prepare_run_dir(str(path), configs)
    assert r.resumed and r.changes == {}
    assert rd.load_configs(str(path), classes, strict=True) == configs
    # The stored owner's value still counts: another --stages is refused.
    with pytest.raises(rd.RunDirError, match=r"model\.stages: 3 -> 2"):
        rd.prepare_run_dir(str(path), dict(configs, model=ModelConfig(base_size=64)))


def test_upgrade_config_moves_keys_to_their_owner():
    old = {"data": {"dataset": "shapes", "base_size": 32, "seed": 0, "deterministic": True},
           "model": {"base_size": 32}, "train": {"seed": 3}}
    assert rd.upgrade_config(old) == {"data": {"dataset": "shapes"}, "model": {"base_size": 32},
                                      "train": {"seed": 3, "deterministic": True}}
    assert old["data"]["seed"] == 0  # the argument is not changed
    assert rd.upgrade_config({"data": {"stages": 2}}) == {"data": {}}  # no owner section
