"""Flags shared by every entry point: one flag per field of every config dataclass.

Every entry point defines the same flag set, so any flagfile in `flags/` (which mixes data,
model, training and evaluation fields) can be passed to any entry point.
"""

import importlib

from msmt_tf.cli import flagutil

# (attribute on the returned bundle, module, class)
_CONFIGS = (
    ("data", "msmt_tf.data.config", "DataConfig"),
    ("model", "msmt_tf.models.config", "ModelConfig"),
    ("train", "msmt_tf.training.config", "TrainConfig"),
    ("damsm", "msmt_tf.training.damsm_config", "DAMSMConfig"),
    ("eval", "msmt_tf.evaluation.config", "EvalConfig"),
)


def config_classes():
    """Yields `(name, class)` for every config domain."""
    for attr, module, cls in _CONFIGS:
        yield attr, getattr(importlib.import_module(module), cls)


def define_all_flags():
    """Defines the flags of every config class (idempotent)."""
    for attr, cls in config_classes():
        flagutil.define_flags(cls, group=attr)


class Configs:
    """The frozen configs of one invocation: `.data`, `.model`, `.train`, `.damsm`, `.eval`."""

    def __init__(self, **configs):
        self.__dict__.update(configs)

    def to_dict(self):
        return {name: cfg.to_dict() for name, cfg in self.__dict__.items()}

    def items(self):
        return self.__dict__.items()


def configs_from_flags(**overrides_by_config):
    """Builds every config from the parsed flags. `overrides_by_config={'model': {...}}`."""
    built = {}
    for attr, cls in config_classes():
        built[attr] = flagutil.from_flags(cls, **overrides_by_config.get(attr, {}))
    return Configs(**built)
