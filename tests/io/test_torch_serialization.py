"""The torch-free PyTorch file reader.

Two kinds of inputs:

* files this test writes itself from plain pickle structures (a stand-in ``torch`` module is
  put in ``sys.modules`` only while pickling, so the bytes name ``torch._utils`` etc. exactly
  as torch does), in both the zip and the legacy (< 1.6) layout, with contiguous,
  transposed and offset tensors sharing one storage;
* ``tests/io/fixtures/{state_zip.pt,state_legacy.pth,scripted.pt}``, written once by real
  torch 2.13 (``torch.save``, ``torch.save(..., _use_new_zipfile_serialization=False)`` and
  ``torch.jit.script(Conv2d(2,3,1)+BatchNorm2d(3)).save``) in a throw-away venv, with the
  expected values saved by torch's own ``.numpy()`` in ``*_expected.npz``. The script is not
  committed; it built an OrderedDict with a float32 2x3, ``big.t()[2:5]`` and ``big[1:3, 3:7]``
  views of ``big = arange(60).reshape(6,10)*0.5``, int64, float16, bfloat16, bool, a float64
  scalar, an empty tensor and an ``nn.Parameter``.
"""

import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from msmt_tf.io import torch_serialization as ts

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


# ----------------------------------------------------------------------------------------
# Writing torch-like files without torch.


class _Storage:
    """What the writer's persistent_id turns into a storage id."""

    def __init__(self, type_name, key, array):
        self.type_name, self.key, self.array = type_name, key, np.ascontiguousarray(array)


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


@pytest.fixture
def fake_torch(monkeypatch):
    """Puts importable stand-ins for the torch globals into sys.modules for pickling."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # pragma: no cover - only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in ("FloatStorage", "LongStorage"):
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
    cuda = types.ModuleType("torch.cuda")
    cuda.FloatStorage = type("FloatStorage", (), {"__module__": "torch.cuda"})
    torch.cuda = cuda
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    monkeypatch.setitem(sys.modules, "torch.cuda", cuda)
    return torch


def _pickler(buffer, torch, legacy):
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                owner, _, name = obj.type_name.rpartition(".")
                cls = getattr(torch.cuda if owner == "cuda" else torch, name)
                if legacy:
                    return ("storage", cls, obj.key, "cpu", obj.array.size, None)
                return ("storage", cls, obj.key, "cpu", obj.array.size)
            return None

        def reducer_override(self, obj):
            if isinstance(obj, _Tensor):
                return (
                    torch._utils._rebuild_tensor_v2,
                    (obj.storage, obj.offset, obj.size, obj.stride, False, collections.OrderedDict()),
                )
            return NotImplemented

    return P(buffer, protocol=2)


def _example(torch_module):
    base = np.arange(24, dtype=np.float32).reshape(4, 6) - 5.5
    s0 = _Storage("FloatStorage", "0", base.ravel())
    s1 = _Storage("LongStorage", "1", np.array([3, -4, 2**33], dtype=np.int64))
    obj = collections.OrderedDict(
        [
            ("layer.weight", _Tensor(s0, 0, (4, 6), (6, 1))),
            # transposed view with an offset of one row: base[1:, :].T
            ("layer.t", _Tensor(s0, 6, (6, 3), (1, 6))),
            # every second column of rows 2..3
            ("layer.strided", _Tensor(s0, 12, (2, 3), (6, 2))),
            ("counts", _Tensor(s1, 0, (3,), (1,))),
            ("meta", {"epoch": 3}),
        ]
    )
    expected = collections.OrderedDict(
        [
            ("layer.weight", base),
            ("layer.t", base[1:, :].T),
            ("layer.strided", base[2:4, 0::2]),
            ("counts", s1.array),
        ]
    )
    return obj, [s0, s1], expected


def _write_zip(path, torch_module, obj, storages, prefix="archive"):
    buf = io.BytesIO()
    _pickler(buf, torch_module, legacy=False).dump(obj)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{prefix}/data.pkl", buf.getvalue())
        zf.writestr(f"{prefix}/byteorder", "little")
        for s in storages:
            zf.writestr(f"{prefix}/data/{s.key}", s.array.astype(s.array.dtype.newbyteorder("<")).tobytes())
        zf.writestr(f"{prefix}/version", "3\n")


def _write_legacy(path, torch_module, obj, storages):
    buf = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    _pickler(buf, torch_module, legacy=True).dump(obj)
    pickle.dump([s.key for s in storages], buf, protocol=2)
    for s in storages:
        buf.write(struct.pack("<q", s.array.size))
        buf.write(s.array.tobytes())
    with open(path, "wb") as f:
        f.write(buf.getvalue())


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_self_written_files(tmp_path, fake_torch, layout):
    obj, storages, expected = _example(fake_torch)
    path = tmp_path / f"model.{layout}"
    (_write_zip if layout == "zip" else _write_legacy)(path, fake_torch, obj, storages)
    sys.modules.pop("torch")  # the reader must not need it
    loaded = ts.load(str(path))
    assert loaded["meta"] == {"epoch": 3}
    arrays = ts.load_state_dict(path)
    assert list(arrays) == list(expected)
    for name, want in expected.items():
        assert arrays[name].dtype == want.dtype
        np.testing.assert_array_equal(arrays[name], want, err_msg=name)
        assert arrays[name].flags.c_contiguous and arrays[name].flags.writeable


def test_legacy_gpu_saved_file_with_view(tmp_path, fake_torch):
    """A legacy file as saved from the GPU, with a storage *view* (offset 2, 4 elements)."""
    base = np.arange(8, dtype=np.float32) * 1.5
    storage = _Storage("cuda.FloatStorage", "140", base)
    buf = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, buf, protocol=2)

    class ViewPickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", fake_torch.cuda.FloatStorage, obj.key, "cuda:0", 8, ("141", 2, 4))
            return None

        def reducer_override(self, obj):
            if isinstance(obj, _Tensor):
                return (fake_torch._utils._rebuild_tensor_v2, (obj.storage, 1, (2, 1), (1, 1), False, {}))
            return NotImplemented

    ViewPickler(buf, protocol=2).dump({"emb.weight": _Tensor(storage, 0, (), ())})
    pickle.dump(["140"], buf, protocol=2)
    buf.write(struct.pack("<q", 8) + base.tobytes())
    arrays = ts.load_state_dict(buf.getvalue())
    # view starts at element 2 of the root; the tensor at offset 1 of the view -> base[3:5]
    np.testing.assert_array_equal(arrays["emb.weight"], base[3:5].reshape(2, 1))


def test_reads_from_bytes_and_file_objects(tmp_path, fake_torch):
    obj, storages, expected = _example(fake_torch)
    path = tmp_path / "m.pt"
    _write_zip(path, fake_torch, obj, storages, prefix="other_prefix")
    data = path.read_bytes()
    a = ts.load_state_dict(data)
    with open(path, "rb") as f:
        b = ts.load_state_dict(f)
    for name in expected:
        np.testing.assert_array_equal(a[name], expected[name])
        np.testing.assert_array_equal(b[name], expected[name])


def test_truncated_legacy_storage_is_reported(tmp_path, fake_torch):
    obj, storages, _ = _example(fake_torch)
    path = tmp_path / "cut.pth"
    _write_legacy(path, fake_torch, obj, storages)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ts.TorchFileError, match="truncated"):
        ts.load(str(path))


def test_unknown_global_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x/data.pkl", pickle.dumps(os.getcwd, protocol=2))
    with pytest.raises(ts.TorchFileError, match="refusing"):
        ts.load(str(path))


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "plain.bin"
    path.write_bytes(b"hello world")
    with pytest.raises(ts.TorchFileError, match="plain.bin: not a PyTorch file"):
        ts.load(str(path))
    with pytest.raises(ts.TorchFileError, match="no such file"):
        ts.load(str(tmp_path / "missing.pt"))


# ----------------------------------------------------------------------------------------
# Files written by real torch (committed fixtures).


@pytest.mark.parametrize("name", ["state_zip.pt", "state_legacy.pth"])
def test_torch_written_state_dicts(name):
    expected = np.load(os.path.join(FIXTURES, "state_expected.npz"))
    arrays = ts.load_state_dict(os.path.join(FIXTURES, name))
    assert list(arrays) == list(expected.files)
    for key in expected.files:
        got = arrays[key]
        if key == "bf16":
            assert got.dtype == np.float32  # bfloat16 widened exactly
        else:
            assert got.dtype == expected[key].dtype, key
        assert got.shape == expected[key].shape, key
        np.testing.assert_array_equal(got, expected[key], err_msg=key)


def test_torchscript_archive():
    expected = np.load(os.path.join(FIXTURES, "scripted_expected.npz"))
    tree = ts.load(os.path.join(FIXTURES, "scripted.pt"))
    assert isinstance(tree, ts.TorchScriptObject)
    assert tree.type_name.startswith("__torch__.")
    arrays = ts.named_arrays(tree)
    assert list(arrays) == list(expected.files)
    for key in expected.files:
        np.testing.assert_array_equal(arrays[key], expected[key], err_msg=key)
    assert tree.state["1"].state["training"] is False


def test_read_zip_member(tmp_path):
    wheel = tmp_path / "pkg.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(os.path.join(FIXTURES, "scripted.pt"), "pkg/model.pt")
    data = ts.read_zip_member(wheel, "pkg/model.pt")
    assert "0.weight" in ts.named_arrays(ts.load(data))
    with pytest.raises(ts.TorchFileError, match="has no member pkg/other.pt"):
        ts.read_zip_member(wheel, "pkg/other.pt")
