"""Dataset pickles go through the allow-list unpickler: no code runs, real formats still load.

The positive cases are written opcode by opcode in the layouts of the released files:
Python 2 protocol 2 (``captions.pickle``: py2 ``str`` as SHORT_BINSTRING, ``unicode`` as
BINUNICODE) and Python 2 protocol 0 (the StackGAN/AttnGAN birds ``train/class_info.pickle``:
a list of numpy int64 scalars, ``numpy.core.multiarray.scalar`` + ``numpy.dtype`` with the raw
bytes in a py2 ``str``). Each is also loaded by a plain ``pickle.loads(..., encoding="latin1")``
(safe: these bytes are ours) and the two results must agree.
"""

import os
import pickle
import re
import struct

import numpy as np
import pytest

from msmt_tf.data import attngan_format as fmt
from msmt_tf.data.errors import DataError
from msmt_tf.testing import pickles


def _hostile_layout(root, which, payload):
    """A valid birds-like layout with one pickle replaced by ``payload``."""
    fmt.write_pickle(fmt.filenames_path(root, "train"), ["k1"])
    fmt.write_pickle(fmt.class_info_path(root, "train"), [3])
    fmt.write_pickle(os.path.join(root, fmt.CAPTIONS_PICKLE),
                     [[[1]], [], {0: "<end>", 1: "bird"}, {"<end>": 0, "bird": 1}])
    path = {"captions": os.path.join(root, fmt.CAPTIONS_PICKLE),
            "filenames": fmt.filenames_path(root, "train"),
            "class_info": fmt.class_info_path(root, "train")}[which]
    with open(path, "wb") as f:
        f.write(payload)
    return path


def _read_all(root):
    fmt.load_keys(root, "train", "")
    fmt.load_class_ids(root, "train", 1)
    fmt.load_captions_pickle(root)


def test_layout_reads_before_tampering(tmp_path):
    root = str(tmp_path)
    _hostile_layout(root, "captions", pickle.dumps([[[1]], [], {0: "<end>", 1: "a"},
                                                    {"<end>": 0, "a": 1}], protocol=2))
    assert fmt.load_keys(root, "train", "") == ["k1"]
    assert fmt.load_class_ids(root, "train", 1).tolist() == [3]
    assert fmt.load_captions_pickle(root)[0] == [[1]]


@pytest.mark.parametrize("which", ["captions", "filenames", "class_info"])
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_hostile_dataset_pickle_is_refused(tmp_path, which, protocol):
    marker = tmp_path / "marker"
    path = _hostile_layout(str(tmp_path), which, pickles.marker_pickle(marker, protocol))
    with pytest.raises(DataError) as info:
        _read_all(str(tmp_path))
    assert not marker.exists()
    message = str(info.value)
    assert message.startswith(
        f"{path}: refusing to unpickle the global {pickles.OPEN_GLOBAL} "), message
    assert "\n" not in message


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_object_array_cannot_smuggle_a_global(tmp_path, protocol):
    """numpy object arrays are allowed, but their elements pass the same find_class."""
    marker = tmp_path / "marker"
    smuggler = np.array([1, pickles.MarkerCreator(marker)], dtype=object)
    path = _hostile_layout(str(tmp_path), "class_info", pickle.dumps(smuggler, protocol=protocol))
    with pytest.raises(DataError, match=f"refusing to unpickle the global {pickles.OPEN_GLOBAL} "):
        fmt.load_class_ids(str(tmp_path), "train", 2)
    assert not marker.exists()
    # ...while a harmless object array (ints, str) loads.
    fmt.write_pickle(path, np.array([4, "x"], dtype=object))
    assert fmt.read_pickle(path, "class ids", "").tolist() == [4, "x"]


def test_non_latin1_codec_is_refused(tmp_path):
    """Python 3 writes bytes as _codecs.encode(text, "latin1"); any other codec is refused."""
    path = tmp_path / "captions.pickle"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00abX\x06\x00\x00\x00base64\x86R.")
    with pytest.raises(DataError, match=r"captions\.pickle: cannot read captions pickle .*latin1"):
        fmt.load_captions_pickle(str(tmp_path))


@pytest.mark.parametrize("data", [b"", b"\x80\x02]q\x00(K\x01K\x02", b"\x80\x02X\xff\xff\x00\x00ab"])
def test_truncated_dataset_pickle_is_a_data_error(tmp_path, data):
    path = tmp_path / "train" / "filenames.pickle"
    path.parent.mkdir()
    path.write_bytes(data)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: cannot read the train file list \(") as info:
        fmt.load_keys(str(tmp_path), "train", "(hint)")
    assert str(info.value).endswith("corrupt or truncated. (hint)")


# ----------------------------------------------------------------------------------------
# Real layouts still load.


def _short_binstring(raw):
    return b"U" + bytes([len(raw)]) + raw


def _binunicode(text):
    raw = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def test_python2_captions_pickle_with_str_and_unicode(tmp_path):
    """[train, test, ixtoword, wordtoix] as Python 2 writes it: words as str *and* unicode."""
    words = [(1, _short_binstring(b"caf\xe9")), (2, _binunicode("red"))]
    out = [b"\x80\x02](", b"](](K\x01K\x02ee", b"](](K\x02ee",  # [ train, test,
           b"}(K\x00", _short_binstring(b"<end>")]
    for ix, op in words:
        out += [b"K" + bytes([ix]), op]
    out += [b"u}(", _short_binstring(b"<end>"), b"K\x00"]
    for ix, op in words:
        out += [op, b"K" + bytes([ix])]
    out += [b"ue."]  # ]
    raw = b"".join(out)
    (tmp_path / "captions.pickle").write_bytes(raw)
    train, test, vocab = fmt.load_captions_pickle(str(tmp_path))
    assert train == [[1, 2]] and test == [[2]]
    assert vocab.ixtoword == {0: "<end>", 1: "café", 2: "red"}
    assert vocab.wordtoix == {"<end>": 0, "café": 1, "red": 2}
    plain = pickle.loads(raw, encoding="latin1")
    assert fmt.read_pickle(str(tmp_path / "captions.pickle"), "x", "") == plain


def _py2_protocol0_numpy_scalars(ids):
    """A list of numpy int64 scalars as Python 2 numpy wrote the birds train class_info."""
    out = [b"(lp0\ncnumpy.core.multiarray\nscalar\np1\n(cnumpy\ndtype\np2\n(S'i8'\np3\nI0\nI1\n"
           b"tp4\nRp5\n(I3\nS'<'\np6\nNNNI-1\nI-1\nI0\ntp7\nb"]
    for i in ids:
        escaped = "".join(f"\\x{b:02x}" for b in struct.pack("<q", i)).encode("ascii")
        out.append(b"ag1\n(g5\nS'" + escaped + b"'\ntR" if out[1:] else b"S'" + escaped + b"'\ntR")
    out.append(b"a.")
    return b"".join(out)


def test_python2_class_info_of_numpy_scalars(tmp_path):
    ids = [2, 128, 200, 2]  # 128: the 0x80 byte behind AttnGAN issue #15's UnicodeDecodeError
    raw = _py2_protocol0_numpy_scalars(ids)
    plain = pickle.loads(raw, encoding="latin1")
    assert [type(x) for x in plain] == [np.int64] * 4 and plain == ids
    path = tmp_path / "train" / "class_info.pickle"
    path.parent.mkdir()
    path.write_bytes(raw)
    got = fmt.load_class_ids(str(tmp_path), "train", 4)
    assert got.dtype == np.int64 and got.tolist() == ids


def test_python2_numpy_array_protocol2(tmp_path):
    """An int64 ndarray as Python 2 numpy pickles it at protocol 2 (raw data in a py2 str)."""
    data = np.array([7, 300, -1], "<i8").tobytes()
    raw = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85"
           + _short_binstring(b"b") + b"\x87R(K\x01K\x03\x85cnumpy\ndtype\n"
           + _short_binstring(b"i8") + b"K\x00K\x01\x87R(K\x03" + _short_binstring(b"<")
           + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + _short_binstring(data) + b"tb.")
    np.testing.assert_array_equal(pickle.loads(raw, encoding="latin1"), [7, 300, -1])
    path = tmp_path / "test" / "class_info.pickle"
    path.parent.mkdir()
    path.write_bytes(raw)
    assert fmt.load_class_ids(str(tmp_path), "test", 3).tolist() == [7, 300, -1]


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("value", [np.arange(3, dtype=np.int64), [np.int64(5), np.int32(6)],
                                   {"ids": np.array([1.5], np.float32), "s": {1, 2}, "b": b"\x00\xff"}])
def test_python3_numpy_pickles_load_as_before(tmp_path, protocol, value):
    path = tmp_path / "x.pickle"
    raw = pickle.dumps(value, protocol=protocol)
    path.write_bytes(raw)
    got, plain = fmt.read_pickle(str(path), "x", ""), pickle.loads(raw, encoding="latin1")
    if isinstance(value, dict):
        assert got.keys() == plain.keys() and got["s"] == {1, 2} and got["b"] == b"\x00\xff"
        np.testing.assert_array_equal(got["ids"], plain["ids"])
        assert got["ids"].dtype == np.float32
    else:
        np.testing.assert_array_equal(np.asarray(got), np.asarray(plain))
        assert [type(x) for x in got] == [type(x) for x in plain]
