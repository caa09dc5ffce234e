"""``runner.train`` (the library side of ``python -m msmt_tf.train``) and an interrupted DAMSM
pretraining: a directory with ``pretraining_stopped.json`` is resumed from its checkpoint,
not started over, and the GAN starts only once the pretraining is finished (the marker gone).

The DAMSM task is the real one (the tiniest shapes data and encoders, an untrained Inception
trunk); the GAN trainer and the in-training evaluator are stand-ins that record when the GAN
would start, so no GAN step is traced.
"""

import io
import json
import os
import signal
import types

import pytest
import tensorflow as tf

from msmt_tf.cli import common
from msmt_tf.data.config import DataConfig
from msmt_tf.evaluation.config import EvalConfig
from msmt_tf.models import damsm
from msmt_tf.models.config import ModelConfig
from msmt_tf.training import damsm_trainer, distribute, gan_trainer, runner
from msmt_tf.training.config import TrainConfig
from msmt_tf.training.damsm_config import DAMSMConfig

# 4 training images in batches of 2: epochs of 2 steps; 4 steps in all.
TOTAL = 4


def _configs(root):
    data = DataConfig(dataset="shapes", data_dir=str(root / "shapes"), shapes_num_train=4,
                      shapes_num_test=2, shapes_size=32, words_num=6)
    model = ModelConfig(stages=1, base_size=32, gf_dim=4, df_dim=4, z_dim=8, condition_dim=6,
                        embedding_dim=16, word_embedding_dim=8, r_num=1)
    train = TrainConfig(seed=3, batch_size=2, max_steps=1, log_every=1, checkpoint_every=1000,
                        precision="float32", run_dir=str(root / "run"))
    damsm_cfg = DAMSMConfig(damsm_dir=str(root / "damsm"), damsm_batch_size=2,
                            damsm_max_steps=TOTAL, damsm_max_eval_batches=1)
    return common.Configs(data=data, model=model, train=train, damsm=damsm_cfg,
                          eval=EvalConfig())


def _ckpt_step(damsm_dir):
    """The step of the newest DAMSM checkpoint (None without one)."""
    path = tf.train.latest_checkpoint(os.path.join(damsm_dir, "ckpt"))
    return None if path is None else int(path.rsplit("-", 1)[1])


@pytest.fixture
def recorded(monkeypatch):
    """Patches the DAMSM trainer (records the step variable before each step; SIGTERM after
    the ``kill_after``-th step of a trainer), the GAN trainer and the evaluator (record that the
    GAN starts, with the DAMSM directory's state then); returns ``(events, options)``."""
    events, options = [], {"kill_after": None}

    class RecordingDAMSM(damsm_trainer.DAMSMTrainer):
        def __init__(self, *args, **kwargs):
            kwargs["load_trunk_weights"] = False  # an untrained trunk: the test needs no Inception
            super().__init__(*args, **kwargs)
            self.calls = 0

        def train_step(self, batch):
            events.append(("damsm_step", int(self.checkpoint.step.numpy())))
            out = super().train_step(batch)
            self.calls += 1
            if self.calls == options["kill_after"]:
                os.kill(os.getpid(), signal.SIGTERM)  # caught by the loop's StopSignal
            return out

    class GANStandIn:
        def __init__(self, configs, run, *args, **kwargs):
            damsm_dir = configs.damsm.damsm_dir
            events.append(("gan_built", damsm_trainer.interrupted(damsm_dir),
                           _ckpt_step(damsm_dir)))
            self.checkpoint = types.SimpleNamespace(latest=None)
            self.ema_generator = None

        def train(self, stream=None):
            events.append(("gan_train",))
            return {"step": 1, "stopped": False, "logs": {}, "eval": None}

    monkeypatch.setattr(damsm_trainer, "DAMSMTrainer", RecordingDAMSM)
    monkeypatch.setattr(gan_trainer, "GANTrainer", GANStandIn)
    monkeypatch.setattr(runner, "make_evaluator", lambda *args, **kwargs: None)
    return events, options


def test_train_resumes_an_interrupted_pretraining_before_the_gan(tmp_path, recorded):
    events, options = recorded
    configs = _configs(tmp_path)
    damsm_dir = configs.damsm.damsm_dir
    marker = os.path.join(damsm_dir, damsm_trainer.STOPPED_FILE)

    def train(kill_after):
        del events[:]
        options["kill_after"] = kill_after
        out = io.StringIO()
        return runner.train(configs, stream=io.StringIO(), out=out), out.getvalue()

    # 1. No encoders: train pretrains them first; SIGTERM after step 1 stops it there, the
    # marker says so, and train returns without starting the GAN.
    result, out = train(kill_after=1)
    assert result["stopped"] and events == [("damsm_step", 0)]
    assert "no DAMSM encoders" in out and "stopped early by a signal" in out
    assert json.load(open(marker)) == {"step": 1, "total": TOTAL}
    assert not damsm.exists(damsm_dir) and not os.path.exists(configs.train.run_dir)

    # 2. Again, stopped after 2 more steps: it went on from step 1 (steps 2 and 3, not 1 and 2
    # again); epoch 0 ended at step 2, so encoders of an intermediate validation exist now.
    result, out = train(kill_after=2)
    assert "was stopped before its end: resuming it" in out and "no DAMSM encoders" not in out
    assert result["stopped"] and events == [("damsm_step", 1), ("damsm_step", 2)]
    assert json.load(open(marker)) == {"step": 3, "total": TOTAL}
    assert damsm.exists(damsm_dir) and not os.path.exists(configs.train.run_dir)

    # 3. Again: the encoders exist but the marker says they are intermediate, so the
    # pretraining is resumed (step 4, the last), finished (marker removed), and only then
    # the GAN is built and trained.
    result, out = train(kill_after=None)
    assert "was stopped before its end: resuming it" in out
    assert not result["stopped"]
    assert events == [("damsm_step", 3), ("gan_built", False, TOTAL), ("gan_train",)]
    assert not os.path.exists(marker)
    # Each training step is logged once; the validations fall at the ends of epochs 0 and 1
    # (steps 2 and 4), as in a straight run.
    lines = [json.loads(x) for x in open(os.path.join(damsm_dir, "metrics.jsonl"))]
    assert [(x["step"], "damsm_val/loss" in x) for x in lines] == [
        (1, False), (2, False), (2, True), (3, False), (4, False), (4, True)]
    assert [x["damsm_val/epoch"] for x in lines if "damsm_val/epoch" in x] == [1, 2]

    # 4. Once more: the encoders are finished, the GAN run goes on without pretraining.
    result, out = train(kill_after=None)
    assert "DAMSM" not in out
    assert events == [("gan_built", False, TOTAL), ("gan_train",)]


def test_a_worker_decides_on_the_stop_it_agreed_on_not_on_the_chiefs_marker(
        tmp_path, recorded, monkeypatch):
    """Under --strategy=multiworker only the chief writes ``pretraining_stopped.json``, after
    the loop; another worker that looked for it would find it missing (not written yet), go on
    to the GAN and wait there forever for the chief. Here the process is a non-chief worker:
    after the stop by SIGTERM it must return as stopped, without building the GAN."""
    events, options = recorded
    configs = _configs(tmp_path)
    monkeypatch.setattr(distribute, "worker_info", lambda strategy: (1, False))
    options["kill_after"] = 1
    result = runner.train(configs, stream=io.StringIO(), out=io.StringIO())
    assert result["stopped"]
    assert events == [("damsm_step", 0)]
    assert not os.path.exists(os.path.join(configs.damsm.damsm_dir, damsm_trainer.STOPPED_FILE))
