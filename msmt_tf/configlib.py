"""Frozen, validated configuration dataclasses: the one way config reaches library code.

Every configuration object in msmt_tf is a frozen dataclass whose fields carry their help
text and allowed values in ``field(metadata=...)``. Entry points turn absl flags into such an
object with ``msmt_tf.cli.flagutil``; library code only ever sees the object.

Use ``option(default, help, choices=...)`` to declare a field, and call ``check_choices(self)``
from ``__post_init__`` (``ConfigBase`` does both for you).
"""

import dataclasses
from typing import Any

from msmt_tf import errors


def option(default: Any, help: str, choices=None, lower=None, upper=None):
    """Declares a config field with its help text and constraints."""
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if lower is not None:
        meta["lower"] = lower
    if upper is not None:
        meta["upper"] = upper
    return dataclasses.field(default=default, metadata=meta)


class ConfigError(errors.UserError, ValueError):
    """A configuration value is invalid; the message names the flag and what to do."""


@dataclasses.dataclass(frozen=True)
class ConfigBase:
    """Base class: validates choices and bounds of every field after construction.

    Subclasses add cross-field checks by overriding ``validate`` (call ``super``).
    """

    def __post_init__(self):
        self.validate()

    def validate(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            if "choices" in meta and value not in meta["choices"]:
                raise ConfigError(
                    f"--{f.name}={value!r} is not one of {list(meta['choices'])}."
                )
            if value is None:
                continue
            if "lower" in meta and value < meta["lower"]:
                raise ConfigError(f"--{f.name}={value!r} must be >= {meta['lower']}.")
            if "upper" in meta and value > meta["upper"]:
                raise ConfigError(f"--{f.name}={value!r} must be <= {meta['upper']}.")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values, strict=True):
        """Builds the config from a dict (e.g. a run's ``config.json`` section).

        With ``strict`` unknown keys are an error; otherwise they are ignored (for reading
        run directories written by newer versions).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown and strict:
            raise ConfigError(f"{cls.__name__}: unknown keys {unknown}.")
        kwargs = {k: v for k, v in values.items() if k in names}
        for f in dataclasses.fields(cls):
            if f.name in kwargs and isinstance(f.default, tuple):
                kwargs[f.name] = tuple(kwargs[f.name])
        return cls(**kwargs)
