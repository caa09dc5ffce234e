"""Flags shared by every entry point: one flag per field of every config dataclass.

Every entry point defines the same flag set, so any flagfile in `flags/` (which mixes data,
model, training and evaluation fields) can be passed to any entry point. The configs
themselves, and the bundle they are built into, are ``msmt_tf.experiment_config``'s
(``Configs`` and ``config_classes`` are its, named here for the entry points).
"""

from msmt_tf.cli import flagutil
from msmt_tf.experiment_config import Configs, config_classes

__all__ = ["Configs", "config_classes", "configs_from_flags", "define_all_flags"]


def define_all_flags():
    """Defines the flags of every config class (idempotent)."""
    for attr, cls in config_classes():
        flagutil.define_flags(cls, group=attr)


def configs_from_flags(**overrides_by_config):
    """Builds every config from the parsed flags. `overrides_by_config={'model': {...}}`."""
    built = {}
    for attr, cls in config_classes():
        built[attr] = flagutil.from_flags(cls, **overrides_by_config.get(attr, {}))
    return Configs(**built)
