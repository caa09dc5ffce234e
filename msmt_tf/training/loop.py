"""The training loop shared by GAN training and DAMSM pretraining.

The split of tensorflow/models' Model Garden (``official/core/base_trainer.py`` and
``base_task.py``, with orbit's ``Controller`` running the steps): a ``Task`` says what one
kind of training is (its networks, optimizers, checkpointed objects, compiled step and the
hooks below); ``Loop`` runs any task: restore or start, step counting, epochs, periodic saves
(every ``TrainCheckpoint.checkpoint_every`` steps), the save on SIGTERM/SIGINT
(``checkpointing.StopSignal``, agreed by every worker: ``distribute.any_replica``), scalars to
TensorBoard + ``metrics.jsonl`` every ``log_every`` steps (``logger.MetricsLogger``), the
progress line (``progress.Progress``), the count of skipped non-finite steps
(``precision.NonFiniteCounter``) and the final save.
``gan_trainer.GANTrainer`` and ``damsm_trainer.DAMSMTrainer`` are the two tasks.

Host reads: the step's outputs stay tensors; the loop reads them (``read``) only at log steps
and at the end, so a GPU is not made to wait for the host after every step (a save reads the
step variable, at its own cadence). The non-finite flags of the steps in between are kept
(device scalars) and read together then, so every skipped step is still counted and warned
about with its step number; an abort (``--max_nonfinite_steps`` in a row) comes at the next
read.
``step_seconds`` is the mean wall time per step since the previous log step, the hooks' work
in between included (an evaluation, image grids, a DAMSM validation or a save inflates the next
log step's value; the steady step is the median over log steps). (Under
``--strategy=multiworker`` the workers agree on a stop after every step, one scalar all-reduce.)

Epochs: epoch ``e`` is steps ``e * steps_per_epoch + 1 .. (e + 1) * steps_per_epoch`` (or
until the data runs out, or the last step). The checkpoint's ``epoch`` counts finished epochs,
so a run stopped mid-epoch resumes with the rest of that epoch (the data order of a resumed
epoch is not replayed: the pipeline starts a new pass). Checkpoints of the loop before the split
could count fewer epochs than done; they are recounted as ``step // steps_per_epoch`` (and one
saved on a signal could count one more: its epoch numbers then stay one ahead). The last step
ends its epoch even mid-epoch (the DAMSM task validates and saves there).
"""

import logging
import time

import numpy as np

from msmt_tf import errors
from msmt_tf.training import checkpointing, distribute, logger as logger_lib
from msmt_tf.training import progress as progress_lib

log = logging.getLogger(__name__)


class LoopError(errors.UserError, ValueError):
    """The loop cannot run as asked (no training data)."""


def read(values):
    """``{name: float}`` of a dict of scalar tensors: the loop's one device -> host read."""
    return {k: float(np.asarray(v.numpy() if hasattr(v, "numpy") else v)) for k, v in values.items()}


class Task:
    """One kind of training, run by ``Loop`` (Model Garden's ``base_task.Task``).

    A task sets ``checkpoint`` (a ``checkpointing.TrainCheckpoint`` holding its ``step`` and
    ``epoch`` and every trackable of the task) and implements ``train_step``; the hooks are
    optional. Hooks get the running ``Loop`` (``loop.logger``, ``loop.progress``,
    ``loop.step``) and are called on every worker (a hook that writes files checks
    ``loop.is_chief``).
    """

    checkpoint = None
    log_prefix = ""  # put before the names of the step outputs in the logged tags

    def train_step(self, batch):
        """One optimiser step on a (distributed) batch; returns ``{name: scalar tensor}``.
        Nothing here may read a tensor on the host."""
        raise NotImplementedError

    def begin(self, loop, new_run):
        """Once, after the restore (``new_run``: nothing was restored)."""

    def epoch_begin(self, loop, epoch):
        """Before the first step of epoch ``epoch`` (0-based; also a resumed, partial one)."""

    def log_scalars(self, loop, logs):
        """Extra scalars to log with ``logs`` (``{name: float}`` of a log step's outputs)."""
        return {}

    def progress_metrics(self, logs):
        """The few values the progress line shows, from a log step's ``{name: float}``."""
        return {}

    def after_step(self, loop, step):
        """After each step (host cadences such as image grids or evaluations: decide from
        ``step``, an int, without reading tensors on other steps)."""

    def epoch_end(self, loop, epoch):
        """After epoch ``epoch`` (0-based) is finished (``loop.checkpoint.epoch`` counts it);
        returns True to have the loop save a checkpoint now."""
        return False

    def end(self, loop):
        """After the last step, before the final save; returns extra result entries."""
        return {}


class Loop:
    """Runs (or resumes) a ``Task`` for ``total_steps`` steps (Model Garden's trainer + orbit's
    controller).

    Args:
        task: the ``Task``.
        strategy: the ``tf.distribute.Strategy`` the task was built under.
        train_ds: the task's training data, already distributed
            (``distribute.distribute_dataset``); one pass is at most one epoch.
        total_steps: steps of the whole run (resumed runs stop there too).
        steps_per_epoch: steps of one epoch.
        log_dir: directory of ``tensorboard/`` and ``metrics.jsonl``.
        log_every: scalars and a progress line every N steps (and at the last step).
        examples_per_step: global batch size (``examples_per_second`` is logged with it).
        nonfinite: a ``precision.NonFiniteCounter`` fed with the ``finite_key`` output of each
            step, or None.
        is_chief: whether this worker writes logs.
        stream: where the progress goes (default stderr).
    """

    def __init__(self, task, strategy, train_ds, total_steps, steps_per_epoch, log_dir,
                 log_every=25, examples_per_step=None, nonfinite=None,
                 finite_key="finite", is_chief=True, stream=None):
        self.task = task
        self.strategy = strategy
        self.train_ds = train_ds
        self.total = int(total_steps)
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.log_dir = log_dir
        self.log_every = max(1, int(log_every))
        self.examples_per_step = examples_per_step
        self.nonfinite = nonfinite
        self.finite_key = finite_key
        self.is_chief = is_chief
        self.stream = stream
        self.checkpoint = task.checkpoint
        self.step = 0
        self.logger = None
        self.progress = None
        self.last_logs = {}
        self._pending = []  # (step, finite flag tensor) not read yet
        self._interval = (0, time.time())  # (step, time) of the previous log step

    # ------------------------------------------------------------------ host reads
    def _drain(self, logs=None):
        """Reads the pending finite flags (after the log step's read, so nothing waits) and
        counts them; the
        current step's flag is taken from ``logs`` (its outputs, already read) if given.
        Returns whether the last step was finite."""
        pending, self._pending = self._pending, []
        last = None
        if logs is not None and pending and pending[-1][0] == self.step:
            last = pending.pop()
        values = read(dict(enumerate(flag for _, flag in pending)))
        finite = True
        for i, (step, _) in enumerate(pending):
            finite = self.nonfinite.update(values[i] > 0.5, step)
        if last is not None:
            finite = self.nonfinite.update(logs[self.finite_key] > 0.5, last[0])
        return finite

    def _log(self, step, outputs):
        """A log step: reads the outputs, writes the scalars, updates the progress line."""
        logs = read(outputs)
        finite = self._drain(logs) if self.nonfinite is not None else True
        start, t0 = self._interval
        now = time.time()
        seconds = (now - t0) / max(step - start, 1)
        self._interval = (step, now)
        scalars = {self.task.log_prefix + k: v for k, v in logs.items()}
        scalars.update(self.task.log_scalars(self, logs))
        scalars["step_seconds"] = seconds
        if self.examples_per_step:
            scalars["examples_per_second"] = self.examples_per_step / max(seconds, 1e-9)
        if self.nonfinite is not None:
            scalars["nonfinite_total"] = self.nonfinite.total
        self.logger.scalars(step, scalars)
        self.last_logs = scalars
        if finite:
            self.progress.update(step, self.task.progress_metrics(logs))

    def _end_epoch(self, epoch):
        self.checkpoint.epoch.assign_add(1)
        if self.task.epoch_end(self, epoch):
            self.checkpoint.save("epoch")
        return epoch + 1

    # ------------------------------------------------------------------ run
    def run(self):
        """Runs or resumes the task; returns ``{"step", "stopped", "logs", ...task.end()}``."""
        ckpt = self.checkpoint
        start = ckpt.restore_latest()
        epoch = int(ckpt.epoch.numpy())
        self.step = step = start
        self.logger = logger_lib.MetricsLogger(self.log_dir, resume_step=start or None,
                                               enabled=self.is_chief)
        self.progress = progress_lib.Progress(self.total, initial=start, every=self.log_every,
                                              stream=self.stream)
        stopping = False
        with checkpointing.StopSignal() as stop, self.logger:
            self.task.begin(self, new_run=start == 0)
            self._interval = (start, time.time())  # the begin hook's work is not step time
            while step < self.total and not stopping:
                done = step - epoch * self.steps_per_epoch
                if done >= self.steps_per_epoch:  # an older run's count lags: recount
                    epoch = step // self.steps_per_epoch
                    ckpt.epoch.assign(epoch)
                    done = step - epoch * self.steps_per_epoch
                steps = min(self.steps_per_epoch - max(done, 0), self.total - step)
                self.task.epoch_begin(self, epoch)
                ran, finished = 0, False
                for batch in self.train_ds:
                    outputs = self.task.train_step(batch)
                    ckpt.step.assign_add(1)
                    step += 1
                    ran += 1
                    self.step = step
                    if self.nonfinite is not None:
                        self._pending.append((step, outputs[self.finite_key]))
                    if step % self.log_every == 0 or step == self.total:
                        self._log(step, outputs)
                    self.task.after_step(self, step)
                    finished = ran >= steps
                    if finished:  # counted before a save at this step
                        epoch = self._end_epoch(epoch)
                    ckpt.maybe_save(step)  # every checkpoint.checkpoint_every steps
                    # A signal on any worker stops every worker after this same step (a worker
                    # that went on alone would wait forever in the next step's all-reduce).
                    stopping = distribute.any_replica(self.strategy, stop.requested)
                    if finished or stopping:
                        break
                if ran == 0:
                    raise LoopError(f"the training data gives no batch at step {step} of "
                                    f"{self.total}: check the dataset split and lower the batch size.")
                if not finished and not stopping:  # the data ran out before the epoch's steps
                    epoch = self._end_epoch(epoch)
            if stopping:
                self.progress.write(f"stop requested: saving step {step} and exiting")
                ckpt.save("signal")
                if self.nonfinite is not None:
                    self._drain()  # warns about the skipped steps since the last log step
                return {"step": step, "stopped": True, "logs": self.last_logs}
            if self.nonfinite is not None:
                self._drain()
            result = {"step": step, "stopped": False, "logs": self.last_logs}
            result.update(self.task.end(self) or {})
            ckpt.save("final")
            self.progress.close()
        return result
