"""Writes PyTorch state-dict files without torch, for tests of the readers and converters.

``write_state_dict(path, state, fmt)`` saves ``OrderedDict`` name -> ``np.ndarray`` in the byte
layout of ``torch.save``:

* ``fmt="zip"``: the zip format of torch >= 1.6 (``archive/data.pkl`` + ``archive/data/<key>``);
* ``fmt="legacy"``: the pre-1.6 format of the 2018-2020 AttnGAN / DM-GAN releases (magic
  number, protocol, sys_info, the pickled object, the storage keys, then every storage as an
  int64 element count followed by its bytes).

The pickle names ``torch._utils._rebuild_tensor_v2`` (torch >= 0.4) or ``_rebuild_tensor``
(torch 0.3, ``rebuild="v1"``) and ``torch.FloatStorage`` & co. exactly as torch does: importable
stand-ins are put into ``sys.modules`` only while pickling. ``cuda=True`` names
``torch.cuda.FloatStorage`` on device ``cuda:0``, as files saved from a GPU model do.
Every array gets its own contiguous storage; zero-dimensional arrays (``num_batches_tracked``)
are written as 0-d tensors.
"""

import collections
import contextlib
import io
import pickle
import sys
import types
import zipfile

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_NAMES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}


class _Storage:
    def __init__(self, key, array, cuda):
        self.key = key
        self.array = np.ascontiguousarray(array).reshape(-1)
        self.cuda = cuda


class _Tensor:
    def __init__(self, storage, shape):
        self.storage = storage
        self.shape = tuple(int(s) for s in shape)
        strides, step = [], 1
        for s in reversed(self.shape):
            strides.append(step)
            step *= max(s, 1)
        self.stride = tuple(reversed(strides))


@contextlib.contextmanager
def _fake_torch():
    """Importable ``torch``, ``torch._utils`` and ``torch.cuda`` stand-ins while pickling."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    cuda = types.ModuleType("torch.cuda")

    def make_function(name):
        def function(*args):  # pragma: no cover - only its name is pickled
            raise AssertionError(name)

        function.__module__ = "torch._utils"
        function.__name__ = function.__qualname__ = name
        return function

    for name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
        setattr(utils, name, make_function(name))
    for name in set(_STORAGE_NAMES.values()):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
        setattr(cuda, name, type(name, (), {"__module__": "torch.cuda"}))
    torch._utils, torch.cuda = utils, cuda
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils", "torch.cuda")}
    sys.modules.update({"torch": torch, "torch._utils": utils, "torch.cuda": cuda})
    try:
        yield torch
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _pickler(buffer, torch, legacy, rebuild):
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                name = _STORAGE_NAMES[obj.array.dtype]
                cls = getattr(torch.cuda if obj.cuda else torch, name)
                location = "cuda:0" if obj.cuda else "cpu"
                pid = ("storage", cls, obj.key, location, obj.array.size)
                return pid + (None,) if legacy else pid
            return None

        def reducer_override(self, obj):
            if isinstance(obj, _Tensor):
                if rebuild == "v1":
                    return (torch._utils._rebuild_tensor,
                            (obj.storage, 0, obj.shape, obj.stride))
                return (
                    torch._utils._rebuild_tensor_v2,
                    (obj.storage, 0, obj.shape, obj.stride, False, collections.OrderedDict()),
                )
            return NotImplemented

    return Pickler(buffer, protocol=2)


def write_state_dict(path, state, fmt="zip", cuda=False, rebuild="v2"):
    """Saves ``state`` (name -> array) as ``torch.save(state_dict)`` would.

    Args:
      path: output file.
      state: mapping name -> ``np.ndarray`` (float32, float64, float16, int64, int32, uint8, bool).
      fmt: ``"zip"`` (torch >= 1.6) or ``"legacy"`` (torch < 1.6).
      cuda: name CUDA storages (a model saved on a GPU).
      rebuild: ``"v2"`` (torch >= 0.4) or ``"v1"`` (torch 0.3's ``_rebuild_tensor``).
    """
    if fmt not in ("zip", "legacy"):
        raise ValueError(f"fmt={fmt!r} must be 'zip' or 'legacy'.")
    if rebuild not in ("v1", "v2"):
        raise ValueError(f"rebuild={rebuild!r} must be 'v1' or 'v2'.")
    storages = []
    obj = collections.OrderedDict()
    for name, value in state.items():
        array = np.asarray(value)
        if array.dtype not in _STORAGE_NAMES:
            raise ValueError(f"{name}: unsupported dtype {array.dtype}.")
        storage = _Storage(str(len(storages)), array, cuda)
        storages.append(storage)
        obj[name] = _Tensor(storage, array.shape)
    buf = io.BytesIO()
    with _fake_torch() as torch:
        if fmt == "legacy":
            for header in (_LEGACY_MAGIC, _LEGACY_PROTOCOL,
                           {"protocol_version": _LEGACY_PROTOCOL, "little_endian": True,
                            "type_sizes": {"short": 2, "int": 4, "long": 4}}):
                pickle.dump(header, buf, protocol=2)
        _pickler(buf, torch, fmt == "legacy", rebuild).dump(obj)
    little = [s.array.astype(s.array.dtype.newbyteorder("<")) for s in storages]
    if fmt == "legacy":
        pickle.dump([s.key for s in storages], buf, protocol=2)
        for array in little:
            buf.write(np.int64(array.size).astype("<i8").tobytes())
            buf.write(array.tobytes())
        with open(path, "wb") as f:
            f.write(buf.getvalue())
        return
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/byteorder", "little")
        for s, array in zip(storages, little):
            zf.writestr(f"archive/data/{s.key}", array.tobytes())
        zf.writestr("archive/version", "3\n")
