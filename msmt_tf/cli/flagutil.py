"""absl flags <-> frozen config dataclasses. Imported only by entry points.

``define_flags(ConfigClass)`` defines one absl flag per dataclass field (name, default, help,
choices all come from the dataclass; ``--help`` lists them under the class's group, see
``group_module``), and ``from_flags(ConfigClass)`` builds the frozen,
validated object from the parsed flags. Configs of one entry point do not share field names:
a field has one owner, and a flag feeds the one config that has the field (``TrainConfig``,
``SampleConfig`` and the FID tool's config each have a ``seed``, but no entry point defines two
of them).
"""

import dataclasses
import typing

from absl import flags

from msmt_tf import configlib

FLAGS = flags.FLAGS


def _base_type(tp):
    """Returns (python type, optional) for a field annotation resolved by
    ``typing.get_type_hints``."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])[0], True
    if origin in (tuple, typing.Tuple):
        return tuple, False
    return tp, False


GROUP_SUFFIX = " flags"


def group_name(config_cls):
    """``DataConfig`` -> ``"data"``: the heading of the class's flags in ``--help``."""
    name = config_cls.__name__
    return (name[: -len("Config")] if name.endswith("Config") else name).lower()


def group_module(group):
    """The absl "module name" the flags of ``group`` are registered under (``"data flags"``).

    absl lists flags by defining module; naming the group instead of ``msmt_tf.cli.flagutil``
    (which calls ``DEFINE_*``) makes ``--help`` and ``--helpfull`` show one section per config.
    """
    return group + GROUP_SUFFIX


def define_flags(config_cls, flag_values=FLAGS, group=None, fields=None):
    """Defines an absl flag for each field of ``config_cls`` not yet defined (only those named
    in ``fields`` if given).

    The flags are listed under ``group`` (default ``group_name(config_cls)``) in ``--help``.
    """
    hints = typing.get_type_hints(config_cls)
    module = group_module(group or group_name(config_cls))
    kw = {"flag_values": flag_values, "module_name": module}
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(fields or ()) - known)
    if unknown:
        raise ValueError(f"{config_cls.__name__} has no fields {unknown}.")
    for f in dataclasses.fields(config_cls):
        if f.name in flag_values or (fields is not None and f.name not in fields):
            continue
        tp, _ = _base_type(hints[f.name])
        help_text = f.metadata.get("help", f.name)
        default = f.default
        choices = f.metadata.get("choices")
        if tp is bool:
            flags.DEFINE_bool(f.name, default, help_text, **kw)
        elif choices is not None and tp is str:
            flags.DEFINE_enum(f.name, default, list(choices), help_text, **kw)
        elif tp is int:
            flags.DEFINE_integer(f.name, default, help_text, **kw)
        elif tp is float:
            flags.DEFINE_float(f.name, default, help_text, **kw)
        elif tp is tuple:
            flags.DEFINE_list(
                f.name, None if default is None else [str(v) for v in default], help_text, **kw)
        else:
            flags.DEFINE_string(f.name, default, help_text, **kw)


def from_flags(config_cls, flag_values=FLAGS, **overrides):
    """Builds a frozen config from parsed flags; ``overrides`` win over flags.

    A bad value raises ``configlib.ConfigError`` naming the flag.
    """
    hints = typing.get_type_hints(config_cls)
    kwargs = {}
    for f in dataclasses.fields(config_cls):
        value = flag_values[f.name].value
        tp, _ = _base_type(hints[f.name])
        if tp is tuple and value is not None:
            elem = type(f.default[0]) if f.default else str
            try:
                value = tuple(elem(v) for v in value)
            except ValueError as e:
                raise configlib.ConfigError(f"--{f.name}: {e}") from None
        kwargs[f.name] = value
    kwargs.update(overrides)
    return config_cls(**kwargs)
