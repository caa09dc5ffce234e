"""The shared loop (``msmt_tf.training.loop``) on a task of scripted outputs: when it reads
them on the host, how it counts non-finite steps, epochs and resumes."""

import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from msmt_tf.training import checkpointing, loop as loop_lib, precision


class Probe:
    """A step output that records the loop step at which the host reads it."""

    def __init__(self, value, reads, task):
        self.value, self.reads, self.task = value, reads, task

    def numpy(self):
        self.reads.append(self.task.loop.step)
        return np.float32(self.value)


class ScriptedTask(loop_lib.Task):
    """Step k (1-based) returns ``loss = k`` and ``finite = finite[k]`` as probes; records
    the hook calls."""

    def __init__(self, directory, finite=None, checkpoint_every=0):
        self.weight = tf.Variable(0.0)
        self.checkpoint = checkpointing.TrainCheckpoint(
            directory, keep=2, checkpoint_every=checkpoint_every, w=self.weight)
        self.finite = finite or {}
        self.reads, self.calls, self.loop = [], [], None

    def train_step(self, batch):
        self.weight.assign_add(float(batch))
        k = self.loop.step + 1  # the loop counts the step after this call
        return {"loss": Probe(k, self.reads, self), "finite": Probe(self.finite.get(k, 1.0),
                                                                       self.reads, self)}

    def begin(self, loop, new_run):
        self.loop = loop
        self.calls.append(("begin", new_run))

    def epoch_begin(self, loop, epoch):
        self.calls.append(("epoch_begin", epoch, loop.step))

    def epoch_end(self, loop, epoch):
        self.calls.append(("epoch_end", epoch, loop.step))

    def progress_metrics(self, logs):
        return {"loss": logs["loss"]}


def _run(task, directory, total, nonfinite=None):
    return loop_lib.Loop(task, tf.distribute.get_strategy(), [1.0, 1.0, 1.0, 1.0], total,
                         steps_per_epoch=4, log_dir=str(directory), log_every=3,
                         examples_per_step=2,
                         nonfinite=nonfinite, stream=open(os.devnull, "w")).run()


def test_outputs_are_read_only_at_log_steps_and_non_finite_steps_are_all_counted(tmp_path, caplog):
    task = ScriptedTask(str(tmp_path / "ckpt"), finite={2: 0.0})
    counter = precision.NonFiniteCounter(max_in_row=3)
    with caplog.at_level(logging.WARNING):
        result = _run(task, tmp_path, total=7, nonfinite=counter)
    # Steps 3, 6 and 7 (the last) are log steps: their loss and the finite flags of the steps
    # since the previous read (3 + 3 + 1) are read then, and never another output.
    assert sorted(task.reads) == [3] * 4 + [6] * 4 + [7] * 2
    assert counter.total == 1 and "Non-finite loss or gradient at step 2" in caplog.text
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert [(x["step"], x["loss"], x["nonfinite_total"]) for x in lines] == [
        (3, 3.0, 1), (6, 6.0, 1), (7, 7.0, 1)]
    assert lines[0]["examples_per_second"] == pytest.approx(2 / lines[0]["step_seconds"])
    # epochs of 4 steps; the last, partial one ends at the last step
    assert task.calls == [("begin", True), ("epoch_begin", 0, 0), ("epoch_end", 0, 4),
                          ("epoch_begin", 1, 4), ("epoch_end", 1, 7)]
    assert result["step"] == 7 and not result["stopped"] and result["logs"]["loss"] == 7.0
    assert int(task.checkpoint.step.numpy()) == 7 and int(task.checkpoint.epoch.numpy()) == 2
    assert float(task.weight.numpy()) == 7.0


def test_too_many_non_finite_steps_abort_at_the_next_read(tmp_path):
    task = ScriptedTask(str(tmp_path / "ckpt"), finite={4: 0.0, 5: 0.0})
    with pytest.raises(precision.NonFiniteError, match="2 non-finite steps in a row at step 5"):
        _run(task, tmp_path, total=7, nonfinite=precision.NonFiniteCounter(max_in_row=2))
    assert max(task.reads) == 6  # found when step 6 was logged


def test_a_resume_mid_epoch_finishes_that_epoch(tmp_path):
    first = ScriptedTask(str(tmp_path / "ckpt"), checkpoint_every=2)
    _run(first, tmp_path, total=2)
    # the last, partial epoch of a run counts: a longer run goes on with a whole epoch 1
    assert int(first.checkpoint.epoch.numpy()) == 1
    task = ScriptedTask(str(tmp_path / "ckpt"))
    result = _run(task, tmp_path, total=9)
    assert result["step"] == 9 and float(task.weight.numpy()) == 9.0
    assert task.calls == [("begin", False), ("epoch_begin", 1, 2), ("epoch_end", 1, 6),
                          ("epoch_begin", 2, 6), ("epoch_end", 2, 9)]


def test_a_lagging_epoch_count_of_an_older_run_is_recounted(tmp_path):
    """Checkpoints of the loop before the split could count fewer epochs than done (a resume
    restarted the epoch): step 6 of epochs of 4 with 0 epochs counted resumes in epoch 1."""
    old = ScriptedTask(str(tmp_path / "ckpt"))
    old.checkpoint.step.assign(6)
    old.weight.assign(6.0)
    old.checkpoint.manager.save(checkpoint_number=6)  # epoch 0
    task = ScriptedTask(str(tmp_path / "ckpt"))
    assert _run(task, tmp_path, total=10)["step"] == 10
    assert task.calls == [("begin", False), ("epoch_begin", 1, 6), ("epoch_end", 1, 8),
                          ("epoch_begin", 2, 8), ("epoch_end", 2, 10)]
    assert int(task.checkpoint.epoch.numpy()) == 3 and float(task.weight.numpy()) == 10.0
