"""Checkpoints of a training run: step, epoch, models, optimizers, EMA and RNG state.

``TrainCheckpoint`` wraps one ``tf.train.Checkpoint`` and two ``tf.train.CheckpointManager``s:

* ``<run_dir>/checkpoints/ckpt-<step>``: periodic saves (``maybe_save``), the final save and the
  save on SIGTERM/SIGINT; the last ``keep`` are kept (rotation deletes older ones).
* ``<run_dir>/best/best-<step>`` + ``best.json``: the checkpoint with the best value of one
  metric (lower is better by default, as FID); never touched by the rotation.

What is saved is whatever trackable objects are passed in (Keras models and optimizers, an
EMA model, ``tf.random.Generator``s), plus ``RngState``: Keras 3 does *not* put the
``keras.random.SeedGenerator`` states (Dropout, noise layers, the global generator) into
``tf.train.Checkpoint``, so ``RngState`` tracks those variables explicitly. Optimizers must be
built (``optimizer.build(model.trainable_variables)``) before the checkpoint is created so
that their slots exist when it is restored.

``StopSignal`` installs SIGTERM/SIGINT handlers that only set a flag; the loop checks
``stop.requested`` after each step, saves and returns. A second SIGINT interrupts at once.
"""

import json
import logging
import os
import shutil
import signal
import threading
from typing import Mapping, Optional, Sequence

import keras
import tensorflow as tf

from msmt_tf import errors

SEED_STATE_NAME = "seed_generator_state"


class CheckpointError(errors.UserError, RuntimeError):
    """A checkpoint cannot be written or does not match the objects being restored."""


def _seed_state_variables(model):
    """Seed-generator state variables of a Keras layer/model in a deterministic order."""
    out = []
    for v in model.variables:
        name = getattr(v, "name", "")
        if name == SEED_STATE_NAME or str(getattr(v, "path", "")).endswith("/" + SEED_STATE_NAME):
            out.append(v)
    return out


class RngState(tf.Module):
    """Everything random that must continue the same sequence after a resume.

    Args:
        generators: ``{name: tf.random.Generator}`` used by the data pipeline or the loop.
        models: Keras layers/models whose ``keras.random.SeedGenerator`` states to track.
        seed_generators: extra ``keras.random.SeedGenerator`` objects.
        include_global: also track Keras' global seed generator (used by ``keras.random.*``
            calls with ``seed=None``); it is created if it does not exist yet.
    """

    def __init__(
        self,
        generators: Optional[Mapping[str, tf.random.Generator]] = None,
        models: Sequence[keras.layers.Layer] = (),
        seed_generators: Sequence[keras.random.SeedGenerator] = (),
        include_global: bool = True,
        name: str = "rng_state",
    ):
        super().__init__(name=name)
        self.generators = dict(generators or {})
        states = []
        for m in models:
            states.extend(_seed_state_variables(m))
        states.extend(sg.state for sg in seed_generators)
        if include_global:
            from keras.src.random import seed_generator as _sg  # no public accessor exists

            states.append(_sg.global_seed_generator().state)
        # tf.train.Checkpoint tracks Keras variables directly (they are Trackable).
        self.seed_states = list({id(v): v for v in states}.values())

    def numpy(self):
        """Current states as NumPy arrays (for tests and logging)."""
        return {
            "generators": {k: g.state.numpy() for k, g in self.generators.items()},
            "seed_states": [keras.ops.convert_to_numpy(v) for v in self.seed_states],
        }


class StopSignal:
    """SIGTERM/SIGINT -> ``requested`` flag; the loop saves and exits cleanly.

    Use as a context manager around the loop (handlers are restored on exit). The first
    signal only sets the flag and logs; a second SIGINT raises ``KeyboardInterrupt``.
    Handlers can only be installed from the main thread; elsewhere this is a no-op flag.
    """

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signals = tuple(signals)
        self.received = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum, frame):
        del frame
        name = signal.Signals(signum).name
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = name
        logging.warning("Received %s: saving a checkpoint after this step, then stopping.", name)

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def uninstall(self):
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.uninstall()
        return False


def _task_index_from_env():
    try:
        return int(json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {}).get("index", 0))
    except (ValueError, TypeError, AttributeError):
        return 0


class VariableMap(tf.Module):
    """Every variable of a Keras layer/model/optimizer, checkpointed by its position.

    Keras 3 objects are only partly reachable through ``tf.train.Checkpoint``'s object graph:
    sublayers held in Python lists or dicts (upsampling stacks, IMHM heads, Inception blocks)
    are tracked by Keras' own tracker, which TensorFlow's checkpointing does not follow, so
    their BatchNorm statistics and spectral-norm vectors would silently be left out. This
    module lists every variable in ``obj.variables`` order, which is fixed by how the model is
    built (auto-numbered layer names such as ``dense_8`` are not), so nothing is lost and any
    code that builds the same model can read the checkpoint; a model of another shape fails
    the restore with a shape mismatch. The Keras paths are kept for error messages.
    """

    def __init__(self, obj, name=None):
        super().__init__(name=name)
        variables = list(obj.variables)
        self.paths = [str(getattr(v, "path", v.name)) for v in variables]
        self.by_index = {f"v{i:05d}": v for i, v in enumerate(variables)}


def wrap_for_checkpoint(obj):
    """A ``VariableMap`` for Keras layers/models/optimizers; anything else unchanged."""
    if isinstance(obj, (keras.layers.Layer, keras.optimizers.Optimizer)):
        return VariableMap(obj)
    return obj


def _check_built(name, obj):
    if isinstance(obj, keras.optimizers.Optimizer) and not obj.built:
        raise CheckpointError(
            f"optimizer {name!r} is not built: call {name}.build(model.trainable_variables) "
            "before creating the TrainCheckpoint, so that its slots can be restored."
        )


class TrainCheckpoint:
    """Periodic, final, on-signal and best-by-metric checkpoints of a training run.

    Args:
        directory: directory of the periodic checkpoints (``RunDir.checkpoint_dir``).
        keep: number of periodic checkpoints kept (older ones are deleted by rotation).
        best_directory: directory of the best-by-metric checkpoint (``RunDir.best_dir``);
            None disables ``update_best``.
        checkpoint_every: ``maybe_save(step)`` saves when ``step % checkpoint_every == 0``.
        best_mode: "min" (FID, losses) or "max" (R-precision, accuracy).
        rng: an ``RngState`` (or None).
        is_chief: False on non-chief workers of a multi-worker run: they write to a
            temporary directory that is removed afterwards (every worker must call ``save``).
        worker_id: names that temporary directory (``.worker_<id>``); default: the task
            index in ``TF_CONFIG`` (0 without it).
        **objects: trackables to save: Keras models, built optimizers, tf.random.Generator, ...

    Attributes:
        step, epoch: int64 ``tf.Variable``s saved with the checkpoint; the loop increments
            ``step`` (``step.assign_add(1)``) after each optimiser step.
    """

    def __init__(
        self,
        directory: str,
        keep: int = 3,
        best_directory: Optional[str] = None,
        checkpoint_every: int = 500,
        best_mode: str = "min",
        rng: Optional[RngState] = None,
        is_chief: bool = True,
        worker_id: Optional[int] = None,
        **objects,
    ):
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode={best_mode!r} must be 'min' or 'max'.")
        if keep < 1:
            raise ValueError(f"keep={keep} must be >= 1 (--keep_checkpoints).")
        for reserved in ("step", "epoch", "rng", "best_value"):
            if reserved in objects:
                raise ValueError(f"{reserved!r} is reserved; pass the object under another name.")
        for name, obj in objects.items():
            _check_built(name, obj)
        self.directory = directory
        self.best_directory = best_directory
        self.checkpoint_every = int(checkpoint_every)
        self.best_mode = best_mode
        self.is_chief = is_chief
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        # The best metric value so far lives in the checkpoint (not only in best.json), so every
        # worker of a multi-worker run takes the same save-or-not decision without reading files
        # that another worker may be writing.
        self.best_value = tf.Variable(float("nan"), dtype=tf.float64, trainable=False, name="best_value")
        tracked = {name: wrap_for_checkpoint(obj) for name, obj in objects.items()}
        if rng is not None:
            tracked["rng"] = rng
        self.rng = rng
        self.checkpoint = tf.train.Checkpoint(
            step=self.step, epoch=self.epoch, best_value=self.best_value, **tracked
        )
        if worker_id is None:
            worker_id = _task_index_from_env()
        write_dir = directory if is_chief else os.path.join(directory, f".worker_{worker_id}")
        self._write_dir = write_dir
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, write_dir, max_to_keep=keep, checkpoint_name="ckpt", step_counter=self.step
        )
        self.best_manager = None
        if best_directory is not None:
            best_write = best_directory if is_chief else os.path.join(best_directory, f".worker_{worker_id}")
            self.best_manager = tf.train.CheckpointManager(
                self.checkpoint, best_write, max_to_keep=1, checkpoint_name="best"
            )
        self._last_saved_step = None
        self._sync_best()

    def _sync_best(self):
        """Best value = better of the checkpointed variable and ``best.json`` (read now only)."""
        record = self.best()
        known = float(self.best_value.numpy())
        if record is not None and (known != known or self._better(record["value"], known)):
            self.best_value.assign(record["value"])
            self._best_metric = record.get("metric")
        else:
            self._best_metric = record.get("metric") if record else None

    # ---------------------------------------------------------------- restore
    @property
    def latest(self) -> Optional[str]:
        """Path prefix of the newest periodic checkpoint, or None."""
        return tf.train.latest_checkpoint(self.directory)

    def restore(self, path: str) -> int:
        """Restores ``path``; every existing object must match. Returns the restored step."""
        try:
            status = self.checkpoint.read(path)
            status.assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"checkpoint {path} does not match the models/optimizers being restored "
                f"({first}). Was the run created with another model configuration? Use the "
                "same flags, another --run_dir, or --noresume to start over."
            ) from e
        status.expect_partial()
        self._last_saved_step = int(self.step.numpy())
        self._sync_best()
        logging.info("Restored %s (step %d, epoch %d).", path, self._last_saved_step, int(self.epoch.numpy()))
        return self._last_saved_step

    def restore_latest(self) -> int:
        """Restores the newest periodic checkpoint if there is one; returns the step (0 if none)."""
        path = self.latest
        if path is None:
            return 0
        return self.restore(path)

    def restore_best(self) -> int:
        """Restores the best-by-metric checkpoint; returns its step."""
        path = tf.train.latest_checkpoint(self.best_directory) if self.best_directory else None
        if path is None:
            raise CheckpointError(f"no best checkpoint in {self.best_directory}; run an evaluation first.")
        return self.restore(path)

    # ------------------------------------------------------------------- save
    def save(self, reason: str = "periodic") -> str:
        """Saves a checkpoint numbered by the current step (skipped if already saved)."""
        step = int(self.step.numpy())
        if self._last_saved_step == step and self.manager.latest_checkpoint:
            return self.manager.latest_checkpoint
        path = self.manager.save(checkpoint_number=step)
        self._last_saved_step = step
        if not self.is_chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
        logging.info("Saved checkpoint %s (%s).", path, reason)
        return path

    def maybe_save(self) -> Optional[str]:
        """Saves if the current step is a multiple of ``checkpoint_every``."""
        step = int(self.step.numpy())
        if step > 0 and step % self.checkpoint_every == 0:
            return self.save("periodic")
        return None

    # ------------------------------------------------------------------- best
    @property
    def best_json_path(self):
        return os.path.join(self.best_directory, "best.json") if self.best_directory else None

    def best(self) -> Optional[dict]:
        """``{"metric", "value", "step", "path"}`` of the best checkpoint, or None."""
        p = self.best_json_path
        if p is None or not os.path.exists(p):
            return None
        with open(p, encoding="utf-8") as f:
            return json.load(f)

    def _better(self, value, old):
        return value < old if self.best_mode == "min" else value > old

    def update_best(self, value: float, metric: str = "fid") -> bool:
        """Saves a best checkpoint if ``value`` beats the stored best; returns True if saved."""
        if self.best_manager is None:
            raise CheckpointError("TrainCheckpoint was created without best_directory.")
        value = float(value)
        if value != value:  # NaN never becomes the best
            return False
        current = float(self.best_value.numpy())
        same_metric = self._best_metric in (None, metric)
        if current == current and same_metric and not self._better(value, current):
            return False
        self.best_value.assign(value)
        self._best_metric = metric
        step = int(self.step.numpy())
        path = self.best_manager.save(checkpoint_number=step)
        if self.is_chief:
            record = {"metric": metric, "value": value, "step": step, "path": os.path.basename(path)}
            tmp = self.best_json_path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(record, f, indent=2, sort_keys=True)
            os.replace(tmp, self.best_json_path)
            logging.info("New best %s %.4f at step %d: %s", metric, value, step, path)
        else:
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
        return True
