"""The in-graph tokenizer gives the ids of the Python tokenizer + the pipeline."""

import re

import numpy as np
import pytest
import tensorflow as tf

from msmt_tf import sampling
from msmt_tf.data import pipeline
from msmt_tf.data.vocabulary import Vocabulary, tokenize
from msmt_tf.export.tokenizer import CaptionTokenizer, word_character_class
from msmt_tf.testing.tiny_run import VOCAB_WORDS, WORDS_NUM

VOCAB = Vocabulary(dict(enumerate(VOCAB_WORDS)))

TRICKY = [
    "A small RED bird, with BLUE wings!!",           # capitals, punctuation
    "this bird has a long tail and a yellow beak",   # 10 known words > words_num = 6
    "a zzz bird with qqq wings",                     # unknown words in the middle
    "naïve café bird",                               # non-ASCII inside words: nave, caf
    "\u0130 \u212a bird",                            # İ -> i + U+0307; Kelvin sign -> k
    "a_bird red-bird 12 birds",                      # underscore joins, hyphen splits
    "bird\ufffd\ufffdred\ufffdwings",                # AttnGAN's "\ufffd\ufffd" replacement
    "日本の bird\twith\nwings",                       # CJK token vanishes; tabs, newlines
    "e\u0301 x\u0308bird",                           # combining marks split words in Python
    "zzz qqq",                                       # no known word
    "",                                              # no token at all
    "   ",
]


def _pipeline_ids(caption):
    """Python tokenizer + vocabulary + ``choose_caption(training=False)`` of the pipeline."""
    ids, _ = VOCAB.encode(caption)
    cap, n = pipeline.choose_caption(tf.constant(ids, tf.int32), tf.constant([len(ids)]),
                                     WORDS_NUM, False, tf.constant(0, tf.int64))
    return cap.numpy(), int(n), len(ids)


def test_ids_equal_the_python_tokenizer_and_the_pipeline():
    tok = CaptionTokenizer(VOCAB.words(), WORDS_NUM)
    out = tok(tf.constant(TRICKY))
    assert out["ids"].shape == (len(TRICKY), WORDS_NUM) and out["ids"].dtype == tf.int32
    for i, caption in enumerate(TRICKY):
        ids, n, known = _pipeline_ids(caption)
        np.testing.assert_array_equal(out["ids"][i], ids, err_msg=repr(caption))
        assert int(out["length"][i]) == n and int(out["known"][i]) == known
        assert bool(out["valid"][i]) == (n > 0), repr(caption)
        unknown = [w.decode() for w in out["unknown_words"][i].numpy()]
        assert unknown == VOCAB.encode(caption)[1], repr(caption)
        if n:  # the sampling library's encoding agrees too
            enc = sampling.encode_captions(VOCAB, [caption], WORDS_NUM)
            np.testing.assert_array_equal(enc.ids[0], ids)
    # Spot checks that the cases above are really tricky.
    assert tokenize(TRICKY[3]) == ["nave", "caf", "bird"]
    assert tokenize(TRICKY[4]) == ["i", "k", "bird"]
    assert int(out["known"][1]) == 10 and int(out["length"][1]) == WORDS_NUM
    assert out["valid"].numpy()[-3:].tolist() == [False, False, False]  # "zzz qqq", "", "   "


def _code_points():
    """Every code point of the BMP, the first and last of each of Python's ``\\w`` ranges and
    their neighbours, and every 97th code point above the BMP."""
    points = set(range(0x10000)) | set(range(0x10000, 0x110000, 97))
    for part in word_character_class().split("\\x{")[1:]:
        for c in re.findall(r"([0-9a-f]+)}", part):
            c = int(c, 16)
            points |= {c - 1, c, c + 1}
    return sorted(c for c in points if 0 <= c < 0x110000 and not 0xD800 <= c <= 0xDFFF)


def test_tokens_equal_python_on_unicode_code_points():
    """Each code point between ASCII letters and alone: separator or joiner, lowercasing and
    ASCII filtering as Python's ``\\w``, ``str.lower`` and ``encode('ascii', 'ignore')``."""
    tok = CaptionTokenizer(VOCAB.words(), WORDS_NUM)
    chars = [chr(c) for c in _code_points()]
    assert len(chars) > 70000
    captions = [f"aB{ch}c {ch}" for ch in chars]
    got = tok.tokens(tf.constant(captions)).to_list()
    expected = [tokenize(c) for c in captions]
    bad = [(hex(ord(ch)), e, [t.decode() for t in g])
           for ch, e, g in zip(chars, expected, got) if [t.decode() for t in g] != e]
    assert not bad, bad[:10]


def test_word_class_is_pythons_word_class():
    sample = [chr(c) for c in (0x41, 0x5F, 0xE9, 0x301, 0x2160, 0x11F02, 0x1F600, 0x3000)]
    inside = tf.strings.regex_full_match(tf.constant(sample), f"[{word_character_class()}]")
    assert inside.numpy().tolist() == [re.fullmatch(r"\w", c) is not None for c in sample]


def test_bad_arguments():
    with pytest.raises(ValueError, match="words_num=0"):
        CaptionTokenizer(VOCAB.words(), 0)
    with pytest.raises(ValueError, match="'<end>'"):
        CaptionTokenizer(["a", "b"], 4)
