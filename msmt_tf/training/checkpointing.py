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

Keras objects are saved as ``VariableMap``s: each variable under a key naming what it is, its
Keras path relative to its model (``refine_1/imhm/sdm_0/key/kernel``), optimizer slots under
their model variable (``generator/ca/fc/kernel/momentum``), so reordering layers in the code
cannot load weights into the wrong variables. ``read_checkpoint`` (used by ``TrainCheckpoint``,
``inference.load_for_inference``) compares keys and shapes first and raises a one-line
``CheckpointError`` listing the differences; checkpoints of earlier versions, keyed by position
(``by_index/v00042``), are read by position with shape checks and a warning.

``StopSignal`` installs SIGTERM/SIGINT handlers that only set a flag; the loop checks
``stop.requested`` after each step, saves and returns. A second SIGINT interrupts at once.
"""

import json
import logging
import os
import re
import shutil
import signal
import threading
from typing import Mapping, Optional, Sequence

import keras
import tensorflow as tf

from msmt_tf import errors
from msmt_tf.io import atomic

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


# ------------------------------------------------------------------ variable keys
# A ``VariableMap`` stores each variable under ``<object>/by_path/<key>``, ``<key>`` naming what
# the variable *is* (its Keras path), so reordering layers or variables in the code cannot load
# a value into the wrong variable. Checkpoints written before keyed by position
# (``<object>/by_index/v00042``, ``obj.variables`` order); ``read_checkpoint`` still reads those.
PATH_KEYS = "by_path"
INDEX_KEYS = "by_index"  # the old positional layout
_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_SHOW = 5  # mismatches listed per kind in an error message


def _escape(name):
    """A checkpoint object name as TensorFlow writes it in variable keys ("." -> "..", "/" -> ".S")."""
    return name.replace(".", "..").replace("/", ".S")


def _unescape(name):
    return re.sub(r"\.(.)", lambda m: "/" if m.group(1) == "S" else m.group(1), name)


def _is_auto_name(obj):
    """True if a Keras built-in layer or seed generator has a name of Keras' own numbering:
    the class name in snake case with an optional ``_<n>`` (``dense_7``, ``seed_generator_3``),
    which a process-wide counter assigns, so it differs between two builds in one process."""
    from keras.src.utils.naming import to_snake_case  # no public accessor exists

    cls = type(obj)
    if not cls.__module__.startswith("keras."):
        return False
    return re.fullmatch(re.escape(to_snake_case(cls.__name__)) + r"(_\d+)?", str(obj.name)) is not None


def _auto_names(layer):
    """``{auto-generated name: its base}`` of every layer and seed generator under ``layer``."""
    from keras.src.utils.naming import to_snake_case

    out = {}
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        for obj in [sub] + list(getattr(sub, "_seed_generators", [])):
            if _is_auto_name(obj):
                out[str(obj.name)] = to_snake_case(type(obj).__name__)
    return out


def _disambiguate(keys, what):
    """Unique keys: the k-th repeat (k >= 2) of a key becomes ``<key>#<k>``, in the given order."""
    seen, out = {}, []
    for k in keys:
        seen[k] = seen.get(k, 0) + 1
        out.append(k if seen[k] == 1 else f"{k}#{seen[k]}")
    repeated = sorted(k for k, n in seen.items() if n > 1)
    if repeated:
        logging.warning(
            "%s: %d variable paths occur more than once (%s); their repeats are keyed <path>#2, "
            "#3, ... in variable order, so only those depend on the order.", what,
            len(repeated), ", ".join(repeated[:_SHOW]))
    return out


def layer_variable_keys(layer):
    """``[(key, variable)]`` of every variable of a Keras layer/model, in ``layer.variables`` order.

    The key is the variable's Keras path (``generator/stage0/dense/kernel``) relative to the layer
    (``stage0/dense/kernel``: the live and the EMA generator share keys whatever their names).
    Names of Keras' own numbering (``dense_7``, ``seed_generator_3``: a built-in layer or seed
    generator named as its class in snake case, from a process-wide counter) are renumbered by
    their first appearance in the layer (``dense``, ``dense_1``, ... as a fresh process names
    them), so two builds in one process get the same keys; every other name is kept as it is
    (msmt_tf's networks name their layers). Paths that still repeat get ``#2``, ``#3``, ... in
    variable order (``_disambiguate``; none in msmt_tf's networks).
    """
    variables = list(layer.variables)
    prefix = f"{layer.name}/"
    auto = _auto_names(layer)
    rank, renamed = {}, {}
    keys = []
    for v in variables:
        path = str(getattr(v, "path", None) or v.name)
        parts = (path[len(prefix):] if path.startswith(prefix) else path).split("/")
        for i, part in enumerate(parts[:-1]):
            if part in auto:
                if part not in renamed:
                    base = auto[part]
                    n = rank[base] = rank.get(base, -1) + 1
                    renamed[part] = base if n == 0 else f"{base}_{n}"
                parts[i] = renamed[part]
        keys.append("/".join(parts))
    return list(zip(_disambiguate(keys, f"model {layer.name!r}"), variables))


def _slot_of(name, refs_by_prefix):
    """``(reference variable, slot name)`` of an optimizer variable named by Keras'
    ``add_variable_from_reference`` (``<reference path with / as _>_<slot>``), or None."""
    pos = len(name)
    while True:
        pos = name.rfind("_", 0, pos)
        if pos <= 0:
            return None
        refs = refs_by_prefix.get(name[:pos])
        if refs is not None:
            return (refs[0], name[pos + 1:]) if len(refs) == 1 else None


def optimizer_variable_keys(optimizer, owners=None):
    """``[(key, variable)]`` of every variable of a built Keras optimizer.

    A slot (Adam's momentum/velocity, ...) is keyed by the model variable it belongs to:
    ``<owner>/<key of the variable in that model>/<slot>`` (``generator/ca/fc/kernel/momentum``)
    with ``owners`` ``{name: Keras layer/model}`` (``TrainCheckpoint`` passes its models), else
    ``<variable path>/<slot>``; the optimizer's own variables by name (``iteration``,
    ``learning_rate``); a wrapped optimizer's (``LossScaleOptimizer``) under ``inner_optimizer/``.
    The optimizer's own auto-numbered name (``adam_3``) is never part of a key.
    """
    owners = owners or {}
    ref_keys = {}
    for owner, layer in owners.items():
        for key, v in layer_variable_keys(layer):
            ref_keys.setdefault(id(v), f"{owner}/{key}")
    refs = list(getattr(optimizer, "_trainable_variables", []))
    refs_by_prefix = {}
    for r in refs:
        refs_by_prefix.setdefault(str(r.path).replace("/", "_"), []).append(r)
    inner = getattr(optimizer, "inner_optimizer", None)
    inner_items = optimizer_variable_keys(inner, owners) if inner is not None else []
    inner_ids = {id(v) for _, v in inner_items}
    keys, variables = [], []
    for v in optimizer.variables:
        if id(v) in inner_ids:
            continue
        name = str(v.name)
        slot = _slot_of(name, refs_by_prefix)
        if slot is not None and tuple(slot[0].shape) == tuple(v.shape):
            ref, slot_name = slot
            name = f"{ref_keys.get(id(ref), str(ref.path))}/{slot_name}"
        keys.append(name)
        variables.append(v)
    keys += [f"inner_optimizer/{k}" for k, _ in inner_items]
    variables += [v for _, v in inner_items]
    return list(zip(_disambiguate(keys, f"optimizer {optimizer.name!r}"), variables))


def variable_keys(obj, owners=None):
    """``[(key, variable)]`` of a Keras layer/model or optimizer (see the two functions above)."""
    if isinstance(obj, keras.optimizers.Optimizer):
        return optimizer_variable_keys(obj, owners)
    return layer_variable_keys(obj)


class VariableMap(tf.Module):
    """Every variable of a Keras layer/model/optimizer, checkpointed under a stable key.

    Keras 3 objects are only partly reachable through ``tf.train.Checkpoint``'s object graph:
    sublayers held in Python lists or dicts (upsampling stacks, IMHM heads, Inception blocks)
    are tracked by Keras' own tracker, which TensorFlow's checkpointing does not follow, so
    their BatchNorm statistics and spectral-norm vectors would silently be left out. This
    module lists every variable under ``by_path/<key>`` (``variable_keys``: the Keras path
    relative to the model; optimizer slots by their model variable), so nothing is lost,
    reordering variables in the code changes nothing, and a renamed or reshaped variable is
    a clear error in ``read_checkpoint``. ``keys`` is in ``obj.variables`` order, the order of
    the old positional layout (``by_index/v00042``) that ``read_checkpoint`` still reads.

    Args:
        obj: a Keras layer/model or a built optimizer.
        owners: for an optimizer, ``{name: model}`` whose variables it updates (slot keys).
    """

    def __init__(self, obj, name=None, owners=None):
        super().__init__(name=name)
        items = variable_keys(obj, owners)
        self.keys = [k for k, _ in items]
        self.by_path = dict(items)


class _PositionalView(tf.Module):
    """The variables of a ``VariableMap`` in the old positional layout (``by_index/v00042``)."""

    def __init__(self, vmap):
        super().__init__()
        self.by_index = {f"v{i:05d}": vmap.by_path[k] for i, k in enumerate(vmap.keys)}


def wrap_for_checkpoint(obj, owners=None):
    """A ``VariableMap`` for Keras layers/models/optimizers; anything else unchanged."""
    if isinstance(obj, (keras.layers.Layer, keras.optimizers.Optimizer)):
        return VariableMap(obj, owners=owners)
    return obj


def wrap_all(objects):
    """``wrap_for_checkpoint`` of each ``{name: object}``; optimizer slots are keyed by the
    models among ``objects`` (``<model name>/<variable key>/<slot>``)."""
    owners = {n: o for n, o in objects.items() if isinstance(o, keras.layers.Layer)}
    return {n: wrap_for_checkpoint(o, owners) for n, o in objects.items()}


def _stored(shapes, name, layout):
    """``{key: shape}`` stored for object ``name`` in ``layout`` (``by_path``/``by_index``)."""
    head = f"{_escape(name)}/{layout}/"
    out = {}
    for k, shape in shapes.items():
        if k.startswith(head) and k.endswith(_VALUE_SUFFIX):
            out[_unescape(k[len(head):-len(_VALUE_SUFFIX)])] = tuple(shape)
    return out


def _compare(name, vmap, shapes):
    """``(layout, missing, unexpected, misshaped)`` of one ``VariableMap`` against a checkpoint."""
    want = {k: tuple(v.shape) for k, v in vmap.by_path.items()}
    stored = _stored(shapes, name, PATH_KEYS)
    layout = PATH_KEYS
    if not stored:
        old = _stored(shapes, name, INDEX_KEYS)
        if old:  # the positional layout: compare position by position, keys shown for clarity
            layout = INDEX_KEYS
            stored = {}
            for idx, shape in old.items():
                i = int(idx[1:]) if re.fullmatch(r"v\d+", idx) else None
                label = vmap.keys[i] if i is not None and i < len(vmap.keys) else idx
                stored[label if label in want else f"{idx} (no such position)"] = shape
    missing = [f"{name}:{k}" for k in want if k not in stored]
    unexpected = [f"{name}:{k}" for k in stored if k not in want]
    misshaped = [f"{name}:{k} checkpoint {stored[k]} vs model {s}" for k, s in want.items()
                 if k in stored and stored[k] != s]
    return layout, missing, unexpected, misshaped


def _listed(label, items):
    if not items:
        return None
    more = f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return f"{len(items)} {label} [{', '.join(items[:_SHOW])}{more}]"


def read_checkpoint(prefix, objects, root=None, error=None,
                    what="the models/optimizers being restored",
                    hint="Was it written with another model configuration?"):
    """Restores ``objects`` (``{name: trackable}`` as saved) from checkpoint ``prefix``.

    Keras layers/models/optimizers are wrapped in ``VariableMap``s (``wrap_all``) unless they
    already are; other trackables (``tf.Variable``, ``tf.random.Generator``, ``RngState``) are
    restored as ``tf.train.Checkpoint`` does. Objects of the checkpoint that are not asked for are
    ignored. Before anything is assigned, each ``VariableMap``'s keys and shapes are compared
    with the checkpoint: any difference raises ``error`` (default ``CheckpointError``), one
    line listing up to 5 variables missing in the checkpoint, unexpected in it and of another
    shape, with counts, then ``hint``. A checkpoint in the old positional layout
    (``by_index/v00042``, msmt_tf before path keys) is read by position, with the same count
    and shape checks, and a warning.

    Args:
        root: the ``tf.train.Checkpoint`` that holds these objects (``TrainCheckpoint`` passes its
            own so that its save counter is restored too); default: a new one.

    Returns:
        The load status (``expect_partial`` already called).
    """
    error = error or CheckpointError
    objects = dict(objects)
    wrapped = wrap_all({n: o for n, o in objects.items() if not isinstance(o, VariableMap)})
    if any(wrapped[n] is not objects[n] for n in wrapped):
        objects.update(wrapped)
        root = None
    try:
        shapes = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as e:
        raise error(f"cannot read checkpoint {prefix} ({_first_line(e)}): is it a checkpoint "
                    "prefix such as runs/x/checkpoints/ckpt-1000?") from e
    legacy, missing, unexpected, misshaped = [], [], [], []
    for name, obj in objects.items():
        if isinstance(obj, VariableMap):
            layout, m, u, s = _compare(name, obj, shapes)
            if layout == INDEX_KEYS:
                legacy.append(name)
            missing += m
            unexpected += u
            misshaped += s
    problems = [p for p in (_listed("missing in checkpoint", missing),
                            _listed("unexpected in checkpoint", unexpected),
                            _listed("shape mismatch", misshaped)) if p]
    if problems:
        raise error(f"checkpoint {prefix} does not match {what}: {'; '.join(problems)}. {hint}")
    if legacy:
        logging.warning(
            "%s keeps %s in the old positional layout (by_index/v00042): loading by position, "
            "with count and shape checks; this is right only if the model code has not "
            "reordered its variables since it was written. Checkpoints saved from now on are "
            "keyed by variable path.", prefix, ", ".join(legacy))
        objects.update({n: _PositionalView(objects[n]) for n in legacy})
        root = None
    if root is None:
        root = tf.train.Checkpoint(**objects)
    try:
        status = root.read(prefix)
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise error(f"checkpoint {prefix} does not match {what} ({_first_line(e)}). {hint}") from e
    status.expect_partial()
    return status


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


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
        restore_hint: the end of the error message of a checkpoint that does not match.
        optional: names of objects (``rng``, one of ``objects``) that a checkpoint may lack
            (written before they were saved): they keep their values on restore, with a log
            line. ``best_value`` is always optional.
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
        restore_hint: str = ("Was the run created with another model configuration? Use the "
                             "same flags, another --run_dir, or --noresume to start over."),
        optional: Sequence[str] = (),
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
        self.restore_hint = restore_hint
        self.optional = frozenset(optional) | {"best_value"}
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        # The best metric value so far lives in the checkpoint (not only in best.json), so every
        # worker of a multi-worker run takes the same save-or-not decision without reading files
        # that another worker may be writing.
        self.best_value = tf.Variable(float("nan"), dtype=tf.float64, trainable=False, name="best_value")
        tracked = wrap_all(objects)
        if rng is not None:
            tracked["rng"] = rng
        self.rng = rng
        self._tracked = dict(step=self.step, epoch=self.epoch, best_value=self.best_value, **tracked)
        self.checkpoint = tf.train.Checkpoint(**self._tracked)
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
        """Restores ``path`` (``read_checkpoint``: every variable must have its key and shape in
        it; the old positional layout is read by position). Returns the restored step."""
        tracked, root = self._tracked, self.checkpoint
        try:
            stored = tf.train.load_checkpoint(path).get_variable_to_shape_map()
        except (tf.errors.OpError, ValueError):
            stored = None  # read_checkpoint names the problem
        if stored is not None:
            absent = [n for n in sorted(self.optional & set(tracked))
                      if not any(k.startswith(_escape(n) + "/") for k in stored)]
            if absent:
                logging.info("%s has no %s (written before they were saved): kept as they are.",
                             path, ", ".join(absent))
                tracked = {n: o for n, o in tracked.items() if n not in absent}
                root = None
        read_checkpoint(path, tracked, root=root, hint=self.restore_hint)
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

    def maybe_save(self, step: Optional[int] = None) -> Optional[str]:
        """Saves if the current step is a multiple of ``checkpoint_every`` (0: never).

        Args:
            step: the current step if the caller counts it (``loop.Loop``), so that no other
                step than a saving one reads the ``step`` variable.
        """
        step = int(self.step.numpy()) if step is None else int(step)
        if step > 0 and self.checkpoint_every and step % self.checkpoint_every == 0:
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
            with atomic.replacing(self.best_json_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
                json.dump(record, f, indent=2, sort_keys=True)
            logging.info("New best %s %.4f at step %d: %s", metric, value, step, path)
        else:
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
        return True
