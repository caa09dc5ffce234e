"""Reads PyTorch files with pickle, zipfile and NumPy only (torch is never imported).

Two on-disk formats exist and both are handled by ``load``:

* the zip format of ``torch.save`` since torch 1.6 and of TorchScript archives
  (``torch.jit.save``): ``<prefix>/data.pkl`` is a pickle whose persistent ids
  ``('storage', StorageClass, key, location, numel)`` point at raw little-endian storages in
  ``<prefix>/data/<key>``;
* the legacy format (torch < 1.6, used by the 2018-2020 AttnGAN / DM-GAN ``.pth`` releases):
  five consecutive pickles -- magic number, protocol version, ``sys_info``, the object (whose
  persistent ids are ``('storage', StorageClass, key, location, numel, view_metadata)``) and
  the list of storage keys -- followed by every storage as an int64 element count and the
  raw bytes.

Tensors come back as ``np.ndarray`` (copies, so they own their memory). TorchScript modules
come back as ``TorchScriptObject`` nodes (the qualified class name and the pickled state
dict); ``named_arrays`` flattens any tree into ``OrderedDict`` dotted name -> array.

Every pickle of both formats goes through ``msmt_tf.io.safe_pickle``: the object pickle
resolves only the globals that torch files use (an allow-list), the legacy header pickles
(magic number, protocol, ``sys_info``, storage keys) resolve none; anything else raises
``TorchFileError`` naming the file and the global, so loading an untrusted file cannot run
arbitrary code. A corrupt or truncated file raises ``TorchFileError`` naming the file too.
"""

import collections
import io
import os
import struct
import zipfile

import numpy as np

from msmt_tf import errors
from msmt_tf.io import safe_pickle

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch storage class name -> numpy dtype (little-endian; byte order fixed up on read).
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,
    "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128,
}


class TorchFileError(errors.UserError, ValueError):
    """The file is not a PyTorch file this reader understands; the message says why."""


class TorchScriptObject:
    """A scripted module or class from a TorchScript archive: its type name and state.

    Each qualified TorchScript class gets its own subclass (pickle's NEWOBJ needs a type);
    ``type_name`` is e.g. ``"__torch__.inceptionv3.InceptionV3"``.
    """

    type_name = "?"

    def __init__(self, *unused):
        self.state = {}

    def __setstate__(self, state):
        self.state = state

    def __getattr__(self, name):
        state = self.__dict__.get("state", {})
        if name in state:
            return state[name]
        raise AttributeError(name)

    def __repr__(self):
        return f"TorchScriptObject({self.type_name}, keys={list(self.state)})"


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co: only carries the numpy dtype."""

    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _StorageRef:
    """A storage named by its key; bytes are attached later (legacy) or read lazily (zip)."""

    def __init__(self, key, storage_type, numel, view=None):
        self.key = key
        self.storage_type = storage_type
        self.numel = numel
        self.view = view  # (root_key, element offset, numel) for legacy storage views


class _LazyTensor:
    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    return func(*args)


def _identity(x):
    return x


_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.nn.parameter", "Parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.jit._pickle", "build_intlist"): _identity,
    ("torch.jit._pickle", "build_doublelist"): _identity,
    ("torch.jit._pickle", "build_boollist"): _identity,
    ("torch.jit._pickle", "build_tensorlist"): _identity,
    ("torch.jit._pickle", "build_intlist_list"): _identity,
    ("torch.jit._pickle", "restore_type_tag"): lambda value, tag: value,
    ("torch", "Size"): tuple,
    ("torch", "device"): str,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
}


_SCRIPT_CLASSES = {}


class _Unpickler(safe_pickle.RestrictedUnpickler):
    """The object pickle (``data.pkl`` or the legacy fourth pickle): torch's globals only."""

    def __init__(self, stream, source, persistent_load_fn):
        super().__init__(
            stream, source, _FUNCTIONS, TorchFileError, encoding="utf-8",
            needs="a torch weights file does not need it (is this a full pickled model rather "
                  "than a state dict or TorchScript archive?)",
        )
        self._persistent_load_fn = persistent_load_fn

    def resolve(self, module, name):
        if (module, name) in _FUNCTIONS:
            return _FUNCTIONS[(module, name)]
        # GPU-saved files (e.g. the 2018 AttnGAN releases) name torch.cuda.FloatStorage;
        # the bytes are the same and are read to the CPU.
        if module in ("torch", "torch.storage", "torch.cuda") and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module in ("torch", "torch.cuda") and name.endswith("Storage"):
            raise TorchFileError(f"{self.source}: unsupported tensor storage type torch.{name}.")
        if module.startswith("__torch__"):
            qualified = f"{module}.{name}"
            if qualified not in _SCRIPT_CLASSES:
                _SCRIPT_CLASSES[qualified] = type(
                    name, (TorchScriptObject,), {"type_name": qualified}
                )
            return _SCRIPT_CLASSES[qualified]
        return None

    def persistent_load(self, pid):
        return self._persistent_load_fn(pid)


def _header_unpickler(stream, name):
    """For the legacy format's plain-data pickles (magic, protocol, sys_info, keys): no globals."""
    return safe_pickle.RestrictedUnpickler(
        stream, name, None, TorchFileError, encoding="utf-8",
        needs="the header of a legacy torch file holds plain data only",
    )


def _parse_storage_pid(pid, source):
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
        raise TorchFileError(f"{source}: unexpected persistent id {pid!r}.")
    # pid[3] is the device ("cpu", "cuda:0"); everything is read to host memory.
    storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
    if not isinstance(storage_type, _StorageType):
        raise TorchFileError(f"{source}: persistent id names no storage type: {pid!r}.")
    view = None
    if len(pid) > 5 and pid[5] is not None:
        # Legacy storage view: (view key, element offset into the root storage, numel).
        _view_key, view_offset, view_size = pid[5]
        view = (int(view_offset), int(view_size))
    return key, storage_type, numel, view


def _bytes_to_array(raw, dtype, big_endian=False):
    if dtype == "bfloat16":
        halves = np.frombuffer(raw, dtype=">u2" if big_endian else "<u2").astype(np.uint32)
        return (halves << 16).view(np.float32)
    dt = np.dtype(dtype)
    if dt.itemsize > 1:
        dt = dt.newbyteorder(">" if big_endian else "<")
    return np.frombuffer(raw, dtype=dt).astype(dt.newbyteorder("="), copy=False)


def _materialize(tree, storages, source):
    """Replaces every ``_LazyTensor`` in the tree by an owned numpy array."""
    memo = {}

    def tensor(t):
        if t.offset < 0 or min(t.size + t.stride, default=0) < 0:
            raise TorchFileError(
                f"{source}: tensor with negative offset, size or stride ({t.offset}, {t.size}, "
                f"{t.stride}); torch never writes those, the file is corrupt."
            )
        data = storages(t.storage)
        itemsize = data.dtype.itemsize
        needed = t.offset + sum((s - 1) * st for s, st in zip(t.size, t.stride)) + 1
        if all(t.size) and needed > data.size:
            raise TorchFileError(
                f"{source}: tensor of size {t.size} at offset {t.offset} overruns its storage "
                f"of {data.size} elements; the file is truncated or corrupt."
            )
        if not all(t.size):
            return np.zeros(t.size, dtype=data.dtype)
        view = np.lib.stride_tricks.as_strided(
            data[t.offset :],
            shape=t.size,
            strides=tuple(st * itemsize for st in t.stride),
            writeable=False,
        )
        return np.array(view, copy=True, order="C")

    def walk(x):
        if id(x) in memo:
            return memo[id(x)]
        if isinstance(x, _LazyTensor):
            out = tensor(x)
        elif isinstance(x, dict):
            out = type(x)() if isinstance(x, collections.OrderedDict) else {}
            memo[id(x)] = out
            for k, v in x.items():
                out[k] = walk(v)
            return out
        elif isinstance(x, list):
            out = []
            memo[id(x)] = out
            out.extend(walk(v) for v in x)
            return out
        elif isinstance(x, tuple):
            out = tuple(walk(v) for v in x)
        elif isinstance(x, TorchScriptObject):
            memo[id(x)] = x
            x.state = walk(x.state)
            return x
        else:
            return x
        memo[id(x)] = out
        return out

    return walk(tree)


def _open_source(source):
    """Returns (bytes, display name) for a path, bytes or binary file object."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise TorchFileError(f"{path}: no such file.")
        with open(path, "rb") as f:
            return f.read(), path
    return source.read(), getattr(source, "name", "<file object>")


def _load_zip(data, name):
    zf = zipfile.ZipFile(io.BytesIO(data))
    pkls = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
    # A TorchScript archive may hold nested data.pkl under code/; the shortest is the root.
    pkls = [p for p in pkls if "/code/" not in p]
    if not pkls:
        raise TorchFileError(f"{name}: a zip file without data.pkl is not a PyTorch file.")
    pkl = min(pkls, key=len)
    prefix = pkl[: -len("data.pkl")]
    big_endian = False
    if prefix + "byteorder" in zf.namelist():
        big_endian = zf.read(prefix + "byteorder").decode().strip() == "big"
    refs = {}

    def persistent_load(pid):
        key, storage_type, numel, view = _parse_storage_pid(pid, name)
        return refs.setdefault(key, _StorageRef(key, storage_type, numel))

    obj = _Unpickler(io.BytesIO(zf.read(pkl)), name, persistent_load).load_or_raise(pkl)
    cache = {}

    def storages(ref):
        if ref.key not in cache:
            member = f"{prefix}data/{ref.key}"
            try:
                raw = zf.read(member)
            except KeyError:
                raise TorchFileError(f"{name}: storage {member} is missing.") from None
            cache[ref.key] = _bytes_to_array(raw, ref.storage_type.dtype, big_endian)
        return cache[ref.key]

    return _materialize(obj, storages, name)


def _load_legacy(data, name):
    stream = io.BytesIO(data)
    try:
        magic = _header_unpickler(stream, name).load()
    except TorchFileError:  # a refused global: a hostile first pickle is reported as such
        raise
    except Exception:  # noqa: BLE001 - any other failure means "not this format"
        magic = None
    if type(magic) is not int or magic != _LEGACY_MAGIC:
        raise TorchFileError(
            f"{name}: not a PyTorch file (neither a zip archive nor the legacy magic number)."
        )
    protocol = _header_unpickler(stream, name).load_or_raise("the legacy protocol version")
    if type(protocol) is not int or protocol != _LEGACY_PROTOCOL:
        raise TorchFileError(f"{name}: unsupported legacy protocol version {protocol!r}.")
    sys_info = _header_unpickler(stream, name).load_or_raise("the legacy sys_info")
    if not isinstance(sys_info, dict) or not isinstance(sys_info.get("little_endian", True), bool):
        raise TorchFileError(
            f"{name}: the legacy sys_info is {type(sys_info).__name__} {repr(sys_info)[:60]}, "
            "not a dict with a bool little_endian; the file is corrupt."
        )
    little = sys_info.get("little_endian", True)

    refs = {}

    def persistent_load(pid):
        key, storage_type, numel, view = _parse_storage_pid(pid, name)
        root = refs.setdefault(key, _StorageRef(key, storage_type, numel))
        if view is not None:
            return _StorageRef(key, storage_type, view[1], view=view)
        return root

    # The object is unpickled straight from the shared stream so the position advances.
    obj = _Unpickler(stream, name, persistent_load).load_or_raise("the legacy object pickle")
    keys = _header_unpickler(stream, name).load_or_raise("the legacy storage keys")
    if not isinstance(keys, list) or not all(isinstance(k, (str, int)) for k in keys):
        raise TorchFileError(
            f"{name}: the legacy storage keys are {type(keys).__name__} {repr(keys)[:60]}, not a "
            "list of str; the file is corrupt."
        )
    arrays = {}
    for key in keys:
        key = str(key)
        if key not in refs:
            raise TorchFileError(f"{name}: storage key {key!r} listed but never referenced.")
        ref = refs[key]
        header = stream.read(8)
        if len(header) != 8:
            raise TorchFileError(f"{name}: the file ends before storage {key!r}; it is truncated.")
        (count,) = struct.unpack("<q" if little else ">q", header)
        dtype = ref.storage_type.dtype
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        raw = stream.read(count * itemsize)
        if len(raw) != count * itemsize:
            raise TorchFileError(f"{name}: storage {key!r} is truncated.")
        arrays[key] = _bytes_to_array(raw, dtype, big_endian=not little)

    def storages(ref):
        if ref.key not in arrays:
            raise TorchFileError(f"{name}: storage {ref.key!r} has no data in the file.")
        if ref.view is not None:
            offset, numel = ref.view
            return arrays[ref.key][offset : offset + numel]
        return arrays[ref.key]

    return _materialize(obj, storages, name)


def load(source):
    """Loads a PyTorch file (zip or legacy format) without torch.

    Args:
      source: a path, the file's bytes, or a binary file object.

    Returns:
      The unpickled object with tensors as ``np.ndarray``: an ``OrderedDict`` for a saved
      state dict, a ``TorchScriptObject`` tree for a TorchScript archive.

    Raises:
      TorchFileError: the input is not a PyTorch file, is corrupt or truncated, uses an
        unsupported feature, or its pickle names a global outside the allow-list.
    """
    data, name = _open_source(source)
    try:
        if data[:4] == b"PK\x03\x04":
            return _load_zip(data, name)
        return _load_legacy(data, name)
    except errors.UserError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt zip or tensor record, never a raw traceback
        raise TorchFileError(
            f"{name}: cannot read this PyTorch file ({safe_pickle.describe(e)}); it is corrupt or "
            "truncated."
        ) from None


def named_arrays(tree, prefix=""):
    """Flattens a loaded tree into ``OrderedDict`` dotted name -> ``np.ndarray``.

    Dict and TorchScript-module entries are visited in stored order (the order of
    ``state_dict()``), so a TorchScript archive yields the names torch would give.
    """
    out = collections.OrderedDict()

    def walk(x, path):
        if isinstance(x, np.ndarray):
            out[path] = x
        elif isinstance(x, TorchScriptObject):
            walk(x.state, path)
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{path}.{k}" if path else str(k))

    walk(tree, prefix)
    return out


def load_state_dict(source):
    """Loads a state dict (or TorchScript archive) as ``OrderedDict`` name -> array.

    A checkpoint that wraps the state dict (``{"state_dict": ...}`` or ``{"model": ...}``) is
    unwrapped when that entry is the only one holding arrays.
    """
    obj = load(source)
    if isinstance(obj, dict):
        holders = [k for k, v in obj.items() if isinstance(v, dict) and named_arrays(v)]
        direct = [k for k, v in obj.items() if isinstance(v, np.ndarray)]
        if not direct and len(holders) == 1:
            obj = obj[holders[0]]
    return named_arrays(obj)


def read_zip_member(archive, member):
    """Returns the bytes of ``member`` inside a zip ``archive`` (e.g. a ``.whl``)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    except KeyError:
        raise TorchFileError(f"{archive}: has no member {member}.") from None
    except zipfile.BadZipFile:
        raise TorchFileError(f"{archive}: not a zip archive (corrupt download?).") from None
