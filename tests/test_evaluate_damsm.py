"""Which DAMSM encoders scored a run: the record a run keeps (``run_dir.record_damsm_encoders``),
the protocol of ``python -m msmt_tf.evaluate`` and its warning when the encoders differ."""

import json
import logging
import os

import pytest

from msmt_tf import configlib, evaluate
from msmt_tf.evaluation.config import EvalConfig
from msmt_tf.models import damsm
from msmt_tf.training import run_dir as run_dir_lib

WARNING = "not the ones"


def _fp(path, sha):
    return {"path": path, "sha256": sha}


def test_record_keeps_the_encoders_the_run_started_with(tmp_path, caplog):
    run = str(tmp_path / "run")
    assert run_dir_lib.read_damsm_record(run) is None  # runs written before the record
    # A worker that is not the chief writes nothing.
    run_dir_lib.record_damsm_encoders(run, _fp("/enc/a", "a" * 64), is_chief=False)
    assert not os.path.exists(os.path.join(run, run_dir_lib.DAMSM_FILE))
    first = run_dir_lib.record_damsm_encoders(run, _fp("/enc/a", "a" * 64))
    assert run_dir_lib.read_damsm_record(run) == first == _fp("/enc/a", "a" * 64)
    with caplog.at_level(logging.WARNING):
        # Resumed with the same encoders (moved): nothing to say, the first record stays.
        assert run_dir_lib.record_damsm_encoders(run, _fp("/moved/a", "a" * 64)) == first
        assert not caplog.records
        # Resumed with other encoders: one warning, the first record stays.
        assert run_dir_lib.record_damsm_encoders(run, _fp("/enc/b", "b" * 64)) == first
    assert len(caplog.records) == 1 and "aaaaaaaaaaaa" in caplog.messages[0]
    assert "bbbbbbbbbbbb" in caplog.messages[0]
    assert run_dir_lib.read_damsm_record(run) == first
    with open(os.path.join(run, run_dir_lib.DAMSM_FILE), "w") as f:
        f.write("{not json")
    assert run_dir_lib.read_damsm_record(run) is None  # logged, treated as unknown


def _save_other_encoders(directory, like_dir, model_cfg, seed):
    """Encoders of the same architecture and vocabulary as ``like_dir``, other weights."""
    vocab = damsm.load_vocab(like_dir)
    text = damsm.build_text_encoder(model_cfg, len(vocab))
    image = damsm.build_image_encoder(model_cfg, load_trunk_weights=False, seed=seed)
    with open(os.path.join(like_dir, damsm.META_FILE)) as f:
        meta = json.load(f)
    damsm.save_encoders(directory, text, image, vocab, meta)


def _evaluate(run, tmp_path, caplog):
    # IS without --inception_graph is skipped: nothing is generated, the protocol is complete.
    eval_cfg = EvalConfig(metrics=("is",), num_images=2, stats_cache_dir=str(tmp_path / "stats"))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        path, result = evaluate.evaluate_run(eval_cfg, run_dir=run.run_dir, progress=False)
    warnings = [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]
    with open(path) as f:
        assert json.load(f)["protocol"]["damsm"] == result["protocol"]["damsm"]
    return result["protocol"], warnings


def test_evaluate_records_the_encoders_and_warns_when_they_are_not_the_runs(tmp_path, caplog):
    from msmt_tf.testing.tiny_run import make_tiny_run

    run = make_tiny_run(tmp_path, with_data=True)
    trained = run_dir_lib.record_damsm_encoders(run.run_dir, damsm.fingerprint(run.damsm_dir))

    protocol, warnings = _evaluate(run, tmp_path, caplog)
    assert warnings == []
    assert protocol["damsm"] == {**trained, "trained_with": trained, "same_as_training": True}
    assert protocol["r_precision"]["damsm_sha256"] == trained["sha256"]

    # The run's config now points at other encoders (same architecture and vocabulary).
    other = str(tmp_path / "other_damsm")
    _save_other_encoders(other, run.damsm_dir, run.configs.model, seed=11)
    config_path = os.path.join(run.run_dir, run_dir_lib.CONFIG_FILE)
    with open(config_path) as f:
        config = json.load(f)
    config["damsm"]["damsm_dir"] = other
    with open(config_path, "w") as f:
        json.dump(config, f)
    protocol, warnings = _evaluate(run, tmp_path, caplog)
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert other in warnings[0] and trained["path"] in warnings[0]
    now = damsm.fingerprint(other)
    assert now["sha256"] != trained["sha256"]
    assert protocol["damsm"] == {**now, "trained_with": trained, "same_as_training": False}
    assert protocol["r_precision"]["damsm_sha256"] == now["sha256"]

    # Back to the run's directory, whose encoders were re-written in place since training
    # (e.g. pretrained again): the content changed, so does the fingerprint.
    config["damsm"]["damsm_dir"] = run.damsm_dir
    with open(config_path, "w") as f:
        json.dump(config, f)
    _save_other_encoders(run.damsm_dir, other, run.configs.model, seed=12)
    protocol, warnings = _evaluate(run, tmp_path, caplog)
    assert len(warnings) == 1 and protocol["damsm"]["same_as_training"] is False

    # A run without a record (written before it existed): unknown, no warning.
    os.remove(os.path.join(run.run_dir, run_dir_lib.DAMSM_FILE))
    protocol, warnings = _evaluate(run, tmp_path, caplog)
    assert warnings == [] and protocol["damsm"]["trained_with"] is None
    assert protocol["damsm"]["same_as_training"] is None


def test_evaluate_refuses_a_damsm_dir_flag(tmp_path):
    from absl import flags
    from absl.testing import flagsaver

    evaluate.define_flags()
    with flagsaver.flagsaver():
        flags.FLAGS(["evaluate", f"--run_dir={tmp_path}", f"--damsm_dir={tmp_path / 'enc'}"])
        with pytest.raises(configlib.ConfigError, match="--damsm_dir: the evaluation uses"):
            evaluate.main(["evaluate"])
