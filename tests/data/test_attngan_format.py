"""captions.pickle / filenames.pickle / text files in the AttnGAN format."""

import logging
import os
import pickle

import numpy as np
import pytest

from msmt_tf.data import attngan_format as fmt
from msmt_tf.data.errors import DataError


def _text(root, key, lines):
    path = os.path.join(root, "text", key + ".txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _layout(root, helpers, train, test):
    helpers.write_pickle(os.path.join(root, "train", "filenames.pickle"), list(train))
    helpers.write_pickle(os.path.join(root, "test", "filenames.pickle"), list(test))
    for k, lines in {**train, **test}.items():
        _text(root, k, lines)


def test_py2_pickle_with_latin1_str_is_read(tmp_path, helpers):
    raw = helpers.py2_pickle([[[1, 2]], [[2]], {0: "<end>", 1: "caf\xe9", 2: "red"},
                              {"<end>": 0, "caf\xe9": 1, "red": 2}])
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(raw)  # what a Python 3 reader without an encoding sees
    path = tmp_path / "captions.pickle"
    path.write_bytes(raw)
    train, test, vocab = fmt.load_captions_pickle(str(tmp_path))
    assert train == [[1, 2]] and test == [[2]]
    assert vocab.ixtoword[1] == "café" and vocab.wordtoix["red"] == 2


def test_existing_pickle_indices_are_unchanged(tmp_path, helpers):
    # A vocabulary in an order no builder would produce: it must be reused verbatim.
    ixtoword = {0: "<end>", 1: "zebra", 2: "a", 3: "bird", 4: "red"}
    helpers.write_pickle(str(tmp_path / "captions.pickle"),
                         [[[2, 4, 3]], [[1]], ixtoword, {w: i for i, w in ixtoword.items()}],
                         py2=True)
    _layout(str(tmp_path), helpers, {"k1": ["a blue bird"]}, {"k2": ["zebra"]})
    before = (tmp_path / "captions.pickle").read_bytes()
    train, test, vocab = fmt.load_or_build_captions(str(tmp_path), 1)
    assert vocab.ixtoword == ixtoword and train == [[2, 4, 3]] and test == [[1]]
    assert (tmp_path / "captions.pickle").read_bytes() == before


def test_build_twice_gives_identical_files(tmp_path, helpers):
    root = str(tmp_path)
    _layout(root, helpers, {"a": ["red bird", "a blue bird"], "b": ["bird bird red"]},
            {"c": ["a tiny bird", "red"]})
    fmt.build_captions_pickle(root, 2)
    first = (tmp_path / "captions.pickle").read_bytes()
    os.remove(tmp_path / "captions.pickle")
    train, test, vocab = fmt.load_or_build_captions(root, 2)
    assert (tmp_path / "captions.pickle").read_bytes() == first
    # counts: bird 5, red 3, a 2, blue 1, tiny 1 -> frequency, then alphabetical
    assert vocab.words() == ["<end>", "bird", "red", "a", "blue", "tiny"]
    # "b" has one caption: reused to reach 2 per image; caption j of image k at k*2+j
    assert train == [[2, 1], [3, 4, 1], [1, 1, 2], [1, 1, 2]]
    assert test == [[3, 5, 1], [2]]


def test_caption_file_rules(tmp_path, caplog):
    path = tmp_path / "k.txt"
    path.write_text("\n  \nfirst caption\n!!!\nsecond one\nthird\n", encoding="utf-8")
    stats = {}
    with caplog.at_level(logging.WARNING):
        caps = fmt.read_caption_file(str(path), 2, stats)
    assert caps == [["first", "caption"], ["second", "one"]]
    assert stats["empty_lines"] == 2 and stats["no_token_lines"] == 1
    assert f"{path}:4: caption has no word token" in caplog.text
    stats = {}
    with caplog.at_level(logging.WARNING):
        caps = fmt.read_caption_file(str(path), 5, stats)
    assert [c[0] for c in caps] == ["first", "second", "third", "first", "second"]
    assert stats["reused"] == 1 and "fewer than --captions_per_image=5; reusing" in caplog.text


def test_caption_file_errors(tmp_path):
    with pytest.raises(DataError, match=r"missing\.txt: caption file not found"):
        fmt.read_caption_file(str(tmp_path / "missing.txt"), 2, {})
    (tmp_path / "empty.txt").write_text("\n...\n")
    with pytest.raises(DataError, match=r"empty\.txt: no caption with a word"):
        fmt.read_caption_file(str(tmp_path / "empty.txt"), 2, {})


def test_unknown_words_with_given_vocabulary_are_reported(tmp_path, helpers, caplog):
    from msmt_tf.data.vocabulary import Vocabulary

    root = str(tmp_path)
    _layout(root, helpers, {"a": ["red bird", "purple xyz"]}, {"b": ["bird"]})
    vocab = Vocabulary({0: "<end>", 1: "bird", 2: "red"})
    with caplog.at_level(logging.WARNING):
        train, test, v = fmt.build_captions_pickle(root, 2, vocab=vocab)
    assert v is vocab and train == [[2, 1], [2, 1]] and test == [[1], [1]]
    assert "a.txt:2: caption has no known word, skipped: 'purple xyz'" in caplog.text
    assert "dropped 2 out-of-vocabulary words" in caplog.text


def test_bad_pickles(tmp_path, helpers):
    with pytest.raises(DataError, match="captions pickle not found"):
        fmt.load_captions_pickle(str(tmp_path))
    (tmp_path / "captions.pickle").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"captions\.pickle: cannot read"):
        fmt.load_captions_pickle(str(tmp_path))
    helpers.write_pickle(str(tmp_path / "captions.pickle"), [[[5]], [], {0: "<end>", 1: "a"},
                                                               {"<end>": 0, "a": 1}])
    with pytest.raises(DataError, match="outside 1..1"):
        fmt.load_captions_pickle(str(tmp_path))
    helpers.write_pickle(str(tmp_path / "train" / "class_info.pickle"), np.arange(3))
    with pytest.raises(DataError, match="3 class ids for 2 keys"):
        fmt.load_class_ids(str(tmp_path), "train", 2)
    assert fmt.load_class_ids(str(tmp_path), "test", 3).tolist() == [0, 1, 2]
