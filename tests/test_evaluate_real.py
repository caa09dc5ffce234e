"""``python -m msmt_tf.evaluate --real``: the real test images of a run scored through
``Evaluator.evaluate_real`` (the ceiling docs/metrics.md quotes), written next to, not over, the
generator's metrics.json."""

import json
import os

import pytest
from absl import flags
from absl.testing import flagsaver

from msmt_tf import configlib, evaluate
from msmt_tf.evaluation.config import EvalConfig
from msmt_tf.evaluation.evaluator import Evaluator
from msmt_tf.inference import load_for_inference

TINY_EVAL = ["--metrics=r_precision", "--num_images=6", "--eval_batch_size=4", "--r_folds=2",
             "--r_negatives=2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from msmt_tf.testing.tiny_run import make_tiny_run

    return make_tiny_run(tmp_path_factory.mktemp("real"), with_data=True)


def _main(args):
    evaluate.define_flags()
    with flagsaver.flagsaver():
        flags.FLAGS(["evaluate", *args])
        evaluate.main(["evaluate"])


def test_real_scores_the_test_images_into_metrics_real_json(run, tmp_path):
    stats = f"--stats_cache_dir={tmp_path / 'stats'}"
    _main([f"--run_dir={run.run_dir}", "--real", stats, *TINY_EVAL])
    assert not os.path.exists(os.path.join(run.run_dir, evaluate.METRICS_FILE))
    with open(os.path.join(run.run_dir, evaluate.REAL_METRICS_FILE)) as f:
        real = json.load(f)
    protocol = real["protocol"]
    assert protocol["images"] == "real test images"
    assert protocol["generator"] is None and protocol["noise"] is None
    assert protocol["computed"] == ["r_precision"] and protocol["num_images"] == 6
    # The same numbers as the evaluator run by hand on the run's data, model and encoders.
    loaded = load_for_inference(run_dir=run.run_dir)
    eval_cfg = EvalConfig(metrics=("r_precision",), num_images=6, eval_batch_size=4, r_folds=2,
                          r_negatives=2, stats_cache_dir=str(tmp_path / "stats"))
    by_hand = Evaluator(loaded.configs.data, loaded.configs.model, eval_cfg, loaded.text_encoder,
                        loaded.image_encoder, vocab=loaded.vocab).evaluate_real()
    assert real["r_precision_mean"] == by_hand["r_precision_mean"]
    assert real["r_precision_std"] == by_hand["r_precision_std"]
    # Without --real the generator is scored, into metrics.json.
    _main([f"--run_dir={run.run_dir}", stats, *TINY_EVAL])
    with open(os.path.join(run.run_dir, evaluate.METRICS_FILE)) as f:
        generated = json.load(f)["protocol"]
    assert generated["images"] == "generated images"
    assert generated["generator"].endswith("(EMA weights)")


def test_real_with_save_images_dir_is_a_clear_error(run, tmp_path):
    with pytest.raises(configlib.ConfigError, match="--save_images_dir writes generated images"):
        _main([f"--run_dir={run.run_dir}", "--real", f"--save_images_dir={tmp_path}"])
