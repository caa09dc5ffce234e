"""No pickle the torch reader reads can run code; corrupt files give one-line TorchFileErrors.

A hostile pickle here (``msmt_tf.testing.pickles.marker_pickle``) calls ``open(marker, "w")``
when a plain ``pickle.load`` reads it (checked once, so the payload is live); the restricted
unpickler must refuse the ``io.open`` global before anything is called.
"""

import io
import pickle
import random
import re
import sys
import types
import zipfile

import numpy as np
import pytest

from msmt_tf.io import safe_pickle
from msmt_tf.io import torch_serialization as ts
from msmt_tf.testing import pickles, torch_files

_MAGIC, _PROTOCOL = 0x1950A86A20F9469CFC6C, 1001
_SYS_INFO = {"protocol_version": 1001, "little_endian": True,
             "type_sizes": {"short": 2, "int": 4, "long": 4}}
_OPEN = pickles.OPEN_GLOBAL
hostile_pickle = pickles.marker_pickle


def test_the_payload_is_live(tmp_path):
    marker = tmp_path / "live"
    pickle.loads(hostile_pickle(marker)).close()
    assert marker.exists()  # so "marker absent" below really means "not executed"


def _legacy(**replace):
    """A legacy file holding ``{"meta": 1}`` (no tensors), with parts replaced by raw bytes."""
    parts = {
        "magic": pickle.dumps(_MAGIC, protocol=2),
        "protocol": pickle.dumps(_PROTOCOL, protocol=2),
        "sys_info": pickle.dumps(_SYS_INFO, protocol=2),
        "object": pickle.dumps({"meta": 1}, protocol=2),
        "keys": pickle.dumps([], protocol=2),
    }
    parts.update(replace)
    return b"".join(parts.values())


def test_plain_legacy_file_loads(tmp_path):
    path = tmp_path / "ok.pth"
    path.write_bytes(_legacy())
    assert ts.load(str(path)) == {"meta": 1}


@pytest.mark.parametrize("position", ["magic", "protocol", "sys_info", "object", "keys"])
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_hostile_legacy_pickle_is_refused(tmp_path, position, protocol):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy(**{position: hostile_pickle(marker, protocol)}))
    with pytest.raises(ts.TorchFileError) as info:
        ts.load(str(path))
    assert not marker.exists()
    message = str(info.value)
    assert message.startswith(f"{path}: refusing to unpickle the global {_OPEN} "), message
    assert "\n" not in message


@pytest.mark.parametrize("protocol", [2, 4])
def test_hostile_zip_data_pkl_is_refused(tmp_path, protocol):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", hostile_pickle(marker, protocol))
        zf.writestr("archive/version", "3\n")
    with pytest.raises(ts.TorchFileError,
                       match=f"^{re.escape(str(path))}: refusing to unpickle the global {_OPEN} "):
        ts.load(str(path))
    assert not marker.exists()


def test_hostile_global_inside_a_state_dict(tmp_path):
    """The refusal happens wherever the global sits, e.g. as a value next to real tensors."""
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    state = {"w": 1, "extra": [pickles.MarkerCreator(marker)]}
    path.write_bytes(_legacy(object=pickle.dumps(state, protocol=2)))
    with pytest.raises(ts.TorchFileError, match=f"refusing to unpickle the global {_OPEN}"):
        ts.load(str(path))
    assert not marker.exists()


# ----------------------------------------------------------------------------------------
# Corrupt and truncated files: always TorchFileError naming the file, never a raw error.


@pytest.mark.parametrize(
    "replace, match",
    [
        ({"keys": pickle.dumps(3, protocol=2)}, "legacy storage keys are int 3, not a list"),
        ({"keys": pickle.dumps([None], protocol=2)}, "legacy storage keys are list"),
        ({"sys_info": pickle.dumps([1, 2], protocol=2)}, "legacy sys_info is list"),
        ({"sys_info": pickle.dumps({"little_endian": "yes"}, protocol=2)}, "legacy sys_info is dict"),
        ({"protocol": pickle.dumps("1001", protocol=2)}, "unsupported legacy protocol version '1001'"),
        ({"protocol": b"\x80\x02K"}, r"cannot read the legacy protocol version \(UnpicklingError"),
        ({"sys_info": b"garbage!"}, r"cannot read the legacy sys_info"),
        ({"object": b"\x80\x02}q\x00(X"}, r"cannot read the legacy object pickle"),
        ({"keys": b""}, r"cannot read the legacy storage keys \(EOFError"),
        ({"magic": pickle.dumps(True, protocol=2)}, "not a PyTorch file"),
    ],
)
def test_corrupt_legacy_parts(tmp_path, replace, match):
    path = tmp_path / "bad.pth"
    path.write_bytes(_legacy(**replace))
    with pytest.raises(ts.TorchFileError, match=match) as info:
        ts.load(str(path))
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_every_truncation_of_a_legacy_file_is_a_torch_file_error(tmp_path):
    path = tmp_path / "full.pth"
    torch_files.write_state_dict(path, {"w": np.arange(6, dtype=np.float32).reshape(2, 3),
                                        "n": np.array(7, dtype=np.int64)}, fmt="legacy")
    data = path.read_bytes()
    np.testing.assert_array_equal(ts.load_state_dict(data)["w"], np.arange(6).reshape(2, 3))
    for n in range(len(data)):
        cut = io.BytesIO(data[:n])
        cut.name = "cut.pth"  # what the reader names a file object by
        with pytest.raises(ts.TorchFileError) as info:
            ts.load(cut)
        assert str(info.value).startswith("cut.pth: "), (n, info.value)


def test_garbage_and_broken_zips(tmp_path):
    cases = {
        "garbage.pth": bytes(range(256)) * 3,
        "fake.pt": b"PK\x03\x04" + b"\x00" * 40,  # zip magic, no archive
    }
    good = tmp_path / "good.pt"
    torch_files.write_state_dict(good, {"w": np.ones(3, np.float32)}, fmt="zip")
    with zipfile.ZipFile(good) as zin:
        with zipfile.ZipFile(tmp_path / "badpkl.pt", "w") as zout:
            for info in zin.infolist():
                payload = zin.read(info)
                if info.filename.endswith("data.pkl"):
                    payload = payload[: len(payload) // 2]
                zout.writestr(info, payload)
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    for name in [*cases, "badpkl.pt"]:
        path = tmp_path / name
        with pytest.raises(ts.TorchFileError) as info:
            ts.load(str(path))
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value), info.value
    with pytest.raises(ts.TorchFileError, match=r"archive/data\.pkl \(UnpicklingError"):
        ts.load(str(tmp_path / "badpkl.pt"))


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_random_byte_flips_never_escape_as_raw_errors(tmp_path, fmt):
    """200 seeded single-byte corruptions: each loads or raises TorchFileError, nothing else."""
    path = tmp_path / "m.pt"
    torch_files.write_state_dict(path, {"a": np.arange(4, dtype=np.float32),
                                        "b": np.ones((2, 2), np.int64)}, fmt=fmt)
    data = bytearray(path.read_bytes())
    rng = random.Random(0)
    errors = 0
    for _ in range(200):
        corrupt = bytearray(data)
        corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        try:
            ts.load(bytes(corrupt))
        except ts.TorchFileError:
            errors += 1
    assert errors > 0  # the flips do hit the structure


def test_negative_stride_is_refused(tmp_path, monkeypatch):
    """A tensor record with a negative stride would read before its storage: refused."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    torch.FloatStorage, utils._rebuild_tensor_v2 = _StorageName, _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)  # importable while pickling only
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    storage, tensor = object(), object()

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", _StorageName, "0", "cpu", 4) if obj is storage else None

        def reducer_override(self, obj):
            if obj is tensor:  # elements 1, 0, -1, -2: two of them before the storage
                return (_rebuild_tensor_v2, (storage, 1, (4,), (-1,), False, {}))
            return NotImplemented

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"t": tensor})
    monkeypatch.delitem(sys.modules, "torch")
    path = tmp_path / "neg.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/data/0", np.arange(4, dtype=np.float32).tobytes())
    with pytest.raises(ts.TorchFileError, match=r"neg\.pt: tensor with negative offset, size"):
        ts.load(str(path))


def _rebuild_tensor_v2(*args):  # pragma: no cover - only its name is pickled
    raise AssertionError


_rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
_StorageName = type("FloatStorage", (), {"__module__": "torch"})


# ----------------------------------------------------------------------------------------
# The shared module itself.


def test_safe_pickle_refuses_non_latin1_codecs():
    allowed = safe_pickle.PY3_BYTES
    assert safe_pickle.load(io.BytesIO(pickle.dumps(b"\x00\xff", protocol=2)), "f", "x",
                            allowed) == b"\x00\xff"
    # _codecs.encode("...", "rot13") is what a hostile file could ask for instead.
    payload = b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00abX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(safe_pickle.errors.UserError, match=r"^f: cannot read x .*latin1"):
        safe_pickle.load(io.BytesIO(payload), "f", "x", allowed)


def test_python2_builtin_module_name_is_mapped_explicitly():
    """Python 2 writes ``__builtin__.set``; both spellings are in the allow-list, nothing else."""
    payload = b"\x80\x02c__builtin__\nset\n]q\x00(K\x01K\x02e\x85R."
    assert safe_pickle.load(io.BytesIO(payload), "f", "x", safe_pickle.BUILTIN_SETS) == {1, 2}
    with pytest.raises(safe_pickle.errors.UserError, match="global __builtin__.eval"):
        safe_pickle.load(io.BytesIO(b"\x80\x02c__builtin__\neval\nX\x01\x00\x00\x001\x85R."),
                         "f", "x", safe_pickle.BUILTIN_SETS)


def _str0(text):
    return b"S'" + text.encode() + b"'\n"


def _binunicode(text):
    raw = text.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


@pytest.mark.parametrize("opcode", ["GLOBAL", "INST", "OBJ", "STACK_GLOBAL", "EXT1"])
def test_every_opcode_that_names_a_global_is_checked(tmp_path, opcode, extension_code_240):
    """GLOBAL, INST, OBJ, STACK_GLOBAL and EXT* all reach find_class."""
    marker = tmp_path / "marker"
    args = _binunicode(str(marker)) + _binunicode("w")
    payload = {
        "GLOBAL": b"\x80\x02cio\nopen\n" + args + b"\x86R.",
        "INST": b"(" + _str0(str(marker)) + _str0("w") + b"iio\nopen\n.",
        "OBJ": b"\x80\x02(cio\nopen\n" + args + b"o.",
        "STACK_GLOBAL": b"\x80\x04" + _binunicode("io") + _binunicode("open") + b"\x93" + args
                        + b"\x86R.",
        "EXT1": b"\x80\x02\x82\xf0" + args + b"\x86R.",
    }[opcode]
    with pytest.raises(safe_pickle.errors.UserError, match=r"^f: refusing .* global io\.open "):
        safe_pickle.load(io.BytesIO(payload), "f", "x")
    assert not marker.exists()
    # Live: a plain unpickler creates the marker. (Only after the restricted load: CPython
    # caches a resolved extension code process-wide and then skips find_class.)
    pickle.loads(payload).close()
    assert marker.exists()


@pytest.fixture
def extension_code_240():
    """Registers io.open as copyreg extension code 240 (for the EXT1 case), then removes it
    (which also drops it from copyreg's process-wide extension cache)."""
    import copyreg

    copyreg.add_extension("io", "open", 240)
    yield
    copyreg.remove_extension("io", "open", 240)
