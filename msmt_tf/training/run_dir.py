"""The run directory: create it, or resume it after checking the configuration.

Layout (StyleGAN2-ADA's contract, see ``docs/training.md``)::

    <run_dir>/config.json          resolved config of every domain {"train": {...}, "data": ...}
    <run_dir>/config_changes.jsonl one line per resume that changed a harmless key
    <run_dir>/checkpoints/         last K periodic checkpoints (tf.train.CheckpointManager)
    <run_dir>/best/                best-by-metric checkpoint (+ best.json)
    <run_dir>/tensorboard/         tf.summary event files
    <run_dir>/metrics.jsonl        the same scalars, one JSON object per logging step
    <run_dir>/grids/               PNG image grids
    <run_dir>/damsm_encoders.json  the DAMSM encoders the run trained with (path, SHA-256)

The default directory is deterministic, ``runs/<dataset>_<preset>`` (``default_run_dir``), so
running the same command again resumes. On resume the stored ``config.json`` is compared
with the new configuration: a difference in a key outside ``HARMLESS_KEYS`` (loop length,
logging intervals, execution options) is an error naming every differing key, except the
changes ``CONDITIONAL_KEYS`` accepts: ``precision`` (stored resolved, next to
``precision_requested``) may change between policies whose checkpoints restore into each
other (float32 <-> mixed_bfloat16), so ``--precision=auto`` resuming on another machine is
not refused; to or from mixed_float16 (a loss-scaled optimizer) it may not. With
``resume=False`` (``--noresume``) an existing directory is moved aside to
``<run_dir>.old-<UTC time>``; nothing is ever deleted.
"""

import dataclasses
import datetime
import json
import logging
import os
import re
from typing import Mapping, Optional

from msmt_tf import errors
from msmt_tf import configlib
from msmt_tf.io import atomic

CONFIG_FILE = "config.json"
CHANGES_FILE = "config_changes.jsonl"
DAMSM_FILE = "damsm_encoders.json"

# Keys (plain field names, any domain) that may change between a run and its resume.
HARMLESS_KEYS = frozenset(
    {
        "run_dir",
        "resume",
        "max_steps",
        "epochs",
        "log_every",
        "image_every",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
        "max_nonfinite_steps",
        "jit_compile",
        "inception_jit",
        "strategy",
        "deterministic",
        "precision_requested",  # "auto" or the explicit --precision; see CONDITIONAL_KEYS
        # data loading performance and locations do not change what is learnt
        "data_dir",
        "tfrecord_dir",
        "num_parallel_calls",
        "cache",
        "skip_bad_images",
    }
)


def _evaluation_keys():
    # How a run is *scored* never changes what it learns: every evaluation field is harmless.
    from msmt_tf.evaluation.config import EvalConfig

    return frozenset(f.name for f in dataclasses.fields(EvalConfig))


HARMLESS_KEYS = HARMLESS_KEYS | _evaluation_keys()


def _precision_change(old, new):
    from msmt_tf.training import precision

    if old == precision.AUTO:  # stored unresolved (a library caller, a converted run)
        return None
    new = precision.concrete(new)  # a library caller may pass the unresolved value
    known = old in precision.PRECISIONS and new in precision.PRECISIONS
    if known and precision.checkpoint_compatible(old, new):
        return None
    return (f"mixed_float16 checkpoints hold a loss-scaled optimizer, the others do not: pass "
            f"--precision={old} to resume" if known else "")


# Keys that may change when ``check(old, new)`` returns None; otherwise it returns why not.
CONDITIONAL_KEYS = {"precision": _precision_change}


# Fields that config.json files of earlier versions also stored in a second section, before
# each field had one owner: (section, key) -> the section of the owner. ``load_config_json``
# moves them there, the owner's value winning when both are present (runs built from flags had
# equal values: one flag fed both), so an old run directory resumes and restores.
MOVED_KEYS = {
    ("data", "base_size"): "model",
    ("data", "stages"): "model",
    ("data", "seed"): "train",
    ("data", "deterministic"): "train",
}


def upgrade_config(data: Mapping) -> dict:
    """``config.json`` contents with the ``MOVED_KEYS`` of earlier versions in their owner's
    section (dropped where the owner's section is absent)."""
    out = {name: dict(v) if isinstance(v, Mapping) else v for name, v in data.items()}
    for (section, key), owner in MOVED_KEYS.items():
        old = out.get(section)
        if isinstance(old, dict) and key in old:
            value = old.pop(key)
            if isinstance(out.get(owner), dict):
                out[owner].setdefault(key, value)
    return out


class RunDirError(errors.UserError, ValueError):
    """The run directory cannot be created or resumed; the message says what to do."""


def default_run_dir(dataset: str, preset: str, root: str = "runs") -> str:
    """``<root>/<dataset>_<preset>`` with characters outside ``[A-Za-z0-9._-]`` replaced."""

    def clean(s):
        s = re.sub(r"[^A-Za-z0-9._-]+", "-", str(s)).strip("-")
        return s or "default"

    return os.path.join(root, f"{clean(dataset)}_{clean(preset)}")


@dataclasses.dataclass(frozen=True)
class RunDir:
    """Paths of a prepared run directory.

    Attributes:
        path: the run directory.
        resumed: True if ``config.json`` already existed (the run continues).
        moved_to: where an older run was moved by ``resume=False``, else None.
        changes: harmless keys whose value changed at this resume, as
            ``{"domain.key": [old, new]}``.
    """

    path: str
    resumed: bool
    moved_to: Optional[str] = None
    changes: Mapping[str, list] = dataclasses.field(default_factory=dict)

    @property
    def checkpoint_dir(self):
        return os.path.join(self.path, "checkpoints")

    @property
    def best_dir(self):
        return os.path.join(self.path, "best")

    @property
    def tensorboard_dir(self):
        return os.path.join(self.path, "tensorboard")

    @property
    def metrics_path(self):
        return os.path.join(self.path, "metrics.jsonl")

    @property
    def grids_dir(self):
        return os.path.join(self.path, "grids")


def _as_dict(config):
    if isinstance(config, configlib.ConfigBase):
        return config.to_dict()
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"config sections must be ConfigBase objects or dicts, got {type(config).__name__}")


def _jsonable(d):
    # Round trip through JSON so tuples become lists, as they are read back.
    return json.loads(json.dumps(d, sort_keys=True))


def resolved_config(configs: Mapping[str, object]) -> dict:
    """``{"train": {...}, "data": {...}, ...}`` as stored in ``config.json``."""
    return _jsonable({name: _as_dict(c) for name, c in configs.items()})


def load_config_json(path: str) -> dict:
    """Reads ``config.json`` (a run directory or the file itself), keys of earlier versions
    moved to their owner (``upgrade_config``)."""
    if os.path.isdir(path):
        path = os.path.join(path, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise RunDirError(f"{path}: no such file; is this a run directory?") from None
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path}: not valid JSON ({e}); restore it or start over with --noresume.") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object of config sections.")
    return upgrade_config(data)


def diff_configs(old: Mapping, new: Mapping) -> dict:
    """``{"section.key": [old, new]}`` for every key whose value differs (missing -> None)."""
    diffs = {}
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section), new.get(section)
        if not isinstance(a, Mapping) or not isinstance(b, Mapping):
            if a != b:
                diffs[section] = [a, b]
            continue
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                diffs[f"{section}.{key}"] = [a.get(key), b.get(key)]
    return diffs


def _write_json(path, data):
    with atomic.replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def _utc_stamp(now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ")


def _move_aside(path, now=None):
    base = f"{os.path.normpath(path)}.old-{_utc_stamp(now)}"
    target, i = base, 1
    while os.path.exists(target):
        target, i = f"{base}-{i}", i + 1
    os.rename(path, target)
    return target


def _refusal(key, values, allowed_changes):
    """False if the change of ``key`` is allowed, else its reason (None: a plain change)."""
    name = key.split(".")[-1]
    if name in allowed_changes:
        return False
    check = CONDITIONAL_KEYS.get(name)
    if check is None:
        return None
    why = check(*values)
    return False if why is None else why


def prepare_run_dir(
    path: str,
    configs: Mapping[str, object],
    resume: bool = True,
    allowed_changes=HARMLESS_KEYS,
    is_chief: bool = True,
    now: Optional[datetime.datetime] = None,
) -> RunDir:
    """Creates ``path`` with ``config.json``, or checks and resumes an existing run.

    Args:
        path: the run directory.
        configs: ``{"train": TrainConfig, "data": DataConfig, ...}`` (config objects or dicts).
        resume: continue an existing run (True) or move it aside and start over (False).
        allowed_changes: plain key names that may differ from the stored config.
        is_chief: only the chief worker writes or moves anything; other workers only read.
        now: time used for the moved-aside name (tests).

    Returns:
        A ``RunDir``.

    Raises:
        RunDirError: the stored config differs in a key not in ``allowed_changes`` (every such
            key is named), ``path`` is a file, or a non-empty directory without ``config.json``.
    """
    new = resolved_config(configs)
    cfg_path = os.path.join(path, CONFIG_FILE)
    moved_to = None
    if os.path.exists(path) and not os.path.isdir(path):
        raise RunDirError(f"--run_dir={path} is a file; give a directory.")

    if os.path.isdir(path) and not resume and os.listdir(path):
        if is_chief:
            moved_to = _move_aside(path, now)
            logging.warning("--noresume: moved the previous run %s to %s", path, moved_to)
    elif os.path.isdir(path) and os.listdir(path):
        if not os.path.exists(cfg_path):
            if not is_chief:
                # The chief may be creating the directory right now (between its makedirs and
                # the atomic write of config.json): it alone checks and writes.
                return RunDir(path=path, resumed=False)
            raise RunDirError(
                f"--run_dir={path} exists, is not empty and has no {CONFIG_FILE}: "
                "give another --run_dir, or pass --noresume to move it aside."
            )
        old = load_config_json(cfg_path)
        diffs = diff_configs(old, new)
        bad = {k: (v, _refusal(k, v, allowed_changes)) for k, v in diffs.items()}
        bad = {k: v for k, v in bad.items() if v[1] is not False}
        if bad:
            listed = "; ".join(f"{k}: {v[0]!r} -> {v[1]!r}" + (f" ({why})" if why else "")
                               for k, (v, why) in bad.items())
            raise RunDirError(
                f"--run_dir={path} was created with a different configuration ({listed}). "
                "Use the stored values to resume, another --run_dir for a new run, or "
                "--noresume to move the old run aside and start over."
            )
        if diffs and is_chief:
            logging.info("Resuming %s with changed settings: %s", path, diffs)
            with open(os.path.join(path, CHANGES_FILE), "a", encoding="utf-8") as f:
                f.write(json.dumps({"time": _utc_stamp(now), "changes": diffs}, sort_keys=True) + "\n")
            _write_json(cfg_path, new)
        return RunDir(path=path, resumed=True, changes=diffs)

    if is_chief:
        os.makedirs(path, exist_ok=True)
        _write_json(cfg_path, new)
    return RunDir(path=path, resumed=False, moved_to=moved_to)


def load_configs(path: str, classes: Mapping[str, type], strict: bool = False) -> dict:
    """Rebuilds config objects from a run's ``config.json``.

    Args:
        path: run directory or ``config.json``.
        classes: ``{"train": TrainConfig, ...}``; sections not listed are returned as dicts.
        strict: unknown keys are an error (else ignored, for runs written by newer versions).
    """
    data = load_config_json(path)
    out = {}
    for name, values in data.items():
        cls = classes.get(name)
        out[name] = cls.from_dict(values, strict=strict) if cls is not None else values
    return out


def read_damsm_record(path: str) -> Optional[dict]:
    """The ``damsm_encoders.json`` of a run (``{"path", "sha256"}``), or None if the run has
    none (written before the record existed) or it is unreadable (logged)."""
    file = os.path.join(path, DAMSM_FILE)
    if not os.path.isfile(file):
        return None
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        logging.warning("%s: unreadable (%s); the run's DAMSM encoders are unknown.", file, e)
        return None
    return data if isinstance(data, dict) and data.get("sha256") else None


def record_damsm_encoders(path: str, fingerprint: Mapping, is_chief: bool = True) -> dict:
    """Records which DAMSM encoders the run trains with (``models.damsm.fingerprint``).

    The first record stays: a resume with other encoders logs a warning (its metrics then mix
    two text encoders) and the file keeps the encoders the run started with, the ones
    ``python -m msmt_tf.evaluate`` compares against. Returns the record in force.
    """
    old = read_damsm_record(path)
    if old is not None:
        if old["sha256"] != fingerprint["sha256"]:
            logging.warning(
                "%s started with the DAMSM encoders %s (sha256 %s) and now trains with %s "
                "(sha256 %s); %s keeps the first.", path, old.get("path"), old["sha256"][:12],
                fingerprint["path"], fingerprint["sha256"][:12], DAMSM_FILE)
        return old
    record = {"path": fingerprint["path"], "sha256": fingerprint["sha256"]}
    if is_chief:
        os.makedirs(path, exist_ok=True)
        _write_json(os.path.join(path, DAMSM_FILE), record)
    return record
