"""Flags <-> config dataclass plumbing."""

import dataclasses
from typing import Optional

import pytest
from absl import flags

from msmt_tf import configlib
from msmt_tf.cli import flagutil


@dataclasses.dataclass(frozen=True)
class _Cfg(configlib.ConfigBase):
    name: str = configlib.option("a", "a choice", choices=("a", "b"))
    count: int = configlib.option(3, "a count", lower=1)
    rate: float = configlib.option(0.5, "a rate", upper=1.0)
    flag: bool = configlib.option(True, "a switch")
    path: Optional[str] = configlib.option(None, "a path")
    sizes: tuple = configlib.option((64, 128), "sizes")


def _parse(argv):
    fv = flags.FlagValues()
    flagutil.define_flags(_Cfg, fv)
    fv(["prog"] + argv)
    return flagutil.from_flags(_Cfg, fv)


def test_defaults_and_overrides():
    assert _parse([]) == _Cfg()
    cfg = _parse(["--name=b", "--count=7", "--rate=0.25", "--noflag", "--path=/x", "--sizes=32,64,128"])
    assert cfg == _Cfg("b", 7, 0.25, False, "/x", (32, 64, 128))


def test_bounds_are_checked_with_flag_name():
    with pytest.raises(configlib.ConfigError, match="--count=0"):
        _parse(["--count=0"])
    with pytest.raises(configlib.ConfigError, match="--rate"):
        _Cfg(rate=2.0)


def test_enum_rejected_by_absl():
    with pytest.raises(flags.IllegalFlagValueError):
        _parse(["--name=c"])


def test_frozen_and_json_roundtrip():
    cfg = _Cfg(count=5, sizes=(1, 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.count = 2  # type: ignore[misc]
    from msmt_tf.training import run_dir

    # As a run's config.json stores it (tuples become lists) and reads it back.
    assert _Cfg.from_dict(run_dir.resolved_config({"c": cfg})["c"]) == cfg
    with pytest.raises(configlib.ConfigError, match="unknown keys"):
        _Cfg.from_dict({"bogus": 1})
    assert _Cfg.from_dict({"bogus": 1}, strict=False) == _Cfg()


def test_define_only_some_fields():
    fv = flags.FlagValues()
    flagutil.define_flags(_Cfg, fv, group="other", fields=("count", "flag"))
    assert sorted(fv) == ["count", "flag"]
    assert [f.name for f in fv.flags_by_module_dict()["other flags"]] == ["count", "flag"]
    fv(["prog", "--count=4", "--noflag"])
    assert (fv.count, fv.flag) == (4, False)
    with pytest.raises(ValueError, match=r"_Cfg has no fields \['seed'\]"):
        flagutil.define_flags(_Cfg, flags.FlagValues(), fields=("count", "seed"))
