"""msmt_tf.io.atomic.replacing: a reader sees the old file or the whole new one."""

import os

import numpy as np
import pytest

from msmt_tf.io import atomic


def test_block_writes_a_temporary_name_then_the_rename_publishes_it(tmp_path):
    path = tmp_path / "sub" / "f.json"  # the directory is created
    with atomic.replacing(str(path)) as tmp:
        assert os.path.dirname(tmp) == str(path.parent) and tmp != str(path)
        with open(tmp, "w") as f:
            f.write("new")
        assert not path.exists()  # nothing visible before the block ends
    assert path.read_text() == "new"
    assert os.listdir(path.parent) == ["f.json"]


def test_a_failing_block_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(ValueError):
        with atomic.replacing(str(path)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise ValueError("writer failed")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_two_writers_at_once_get_their_own_temporaries_and_the_last_rename_wins(tmp_path):
    path = str(tmp_path / "cache.npz")
    with atomic.replacing(path, suffix=".npz") as first:
        with atomic.replacing(path, suffix=".npz") as second:
            assert first != second
            np.savez(first, x=np.arange(3))
            np.savez(second, x=np.arange(5))  # np.savez keeps a name that ends in .npz
        with np.load(path) as d:  # the inner writer finished first
            np.testing.assert_array_equal(d["x"], np.arange(5))
    with np.load(path) as d:
        np.testing.assert_array_equal(d["x"], np.arange(3))
    assert os.listdir(tmp_path) == ["cache.npz"]
