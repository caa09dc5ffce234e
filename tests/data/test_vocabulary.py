"""Tokenizer and vocabulary (AttnGAN rules, deterministic order)."""

import pytest

from msmt_tf.data.vocabulary import END_TOKEN, Vocabulary, tokenize


def test_tokenize_attngan_rules():
    assert tokenize("This bird's wings are RED, and\tblack!") == [
        "this", "bird", "s", "wings", "are", "red", "and", "black"]
    # "\ufffd\ufffd" (a broken 2-byte character) separates words; a single one is dropped.
    assert tokenize("red\ufffd\ufffdwings") == ["red", "wings"]
    assert tokenize("red\ufffdwings") == ["red", "wings"]
    # Non-ASCII letters are word characters, then dropped by the ASCII encoding.
    assert tokenize("Café naïve ÉTÉ 北京") == ["caf", "nave", "t"]
    assert tokenize("...!!! ,,, ;-)") == []
    assert tokenize("") == []
    assert tokenize("under_score 42x") == ["under_score", "42x"]


def test_tokenize_very_long_caption():
    words = ["w%d" % (i % 50) for i in range(20000)]
    assert tokenize(" ".join(words)) == words


def test_build_order_frequency_then_alphabetical():
    vocab = Vocabulary.build([["b", "a", "c"], ["c", "a"], ["d", "a", "c"], ["b"]])
    # counts: a 3, c 3, b 2, d 1
    assert vocab.ixtoword == {0: END_TOKEN, 1: "a", 2: "c", 3: "b", 4: "d"}
    assert vocab.wordtoix["d"] == 4 and len(vocab) == 5
    again = Vocabulary.build([["b"], ["d", "a", "c"], ["c", "a"], ["b", "a", "c"]])
    assert again.ixtoword == vocab.ixtoword and again.sha1() == vocab.sha1()


def test_encode_decode_and_unknown():
    vocab = Vocabulary({0: END_TOKEN, 1: "red", 2: "bird"})
    assert vocab.encode("A red bird, a RED bird!") == ([1, 2, 1, 2], ["a", "a"])
    assert vocab.encode("<end>") == ([], ["end"])
    assert vocab.decode([1, 2, 0, 1]) == "red bird"
    assert vocab.decode([2, 7]) == "bird <unk>"


def test_sha1_depends_on_word_order():
    a = Vocabulary({0: END_TOKEN, 1: "x", 2: "y"})
    b = Vocabulary({0: END_TOKEN, 1: "y", 2: "x"})
    assert a.sha1() != b.sha1()
    assert a.sha1() == Vocabulary({0: END_TOKEN, 1: "x", 2: "y"}).sha1()
    assert len(a.sha1()) == 40


def test_index_zero_must_be_end():
    with pytest.raises(ValueError, match="index 0"):
        Vocabulary({0: "a", 1: "b"})
