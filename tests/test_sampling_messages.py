"""Messages of ``msmt_tf.sampling`` never echo a long caption (``sampling.shorten``).

The SavedModel side of the same contract (no error for an invalid caption, nothing quoted) is
in ``tests/export/test_saved_model.py``.
"""

import numpy as np
import pytest

from msmt_tf import sampling
from msmt_tf.data.vocabulary import Vocabulary
from msmt_tf.testing.tiny_run import VOCAB_WORDS, WORDS_NUM

VOCAB = Vocabulary(dict(enumerate(VOCAB_WORDS)))
MESSAGE_LIMIT = 200 - len("Error: ")  # the CLI prints "Error: <message>"


def test_shorten():
    assert sampling.shorten("a red bird") == "a red bird"
    assert sampling.shorten("a red bird", quote=True) == "'a red bird'"
    text = "abcdefghij" * 500
    short = sampling.shorten(text, 40)
    assert short == "abcdefghijabcdefghi... (5000 characters)" and len(short) == 40
    assert sampling.shorten(text, 40, quote=True) == "'" + text[:18] + "... (5000 characters)"
    # Escapes count: 5,000 NUL characters are 20,002 characters of repr.
    nul = sampling.shorten("\x00" * 5000, 64, quote=True)
    assert len(nul) == 64 and nul.startswith("'\\x00") and nul.endswith("(5000 characters)")
    assert sampling.shorten("x" * 64, 64) == "x" * 64  # exactly the limit: unchanged


@pytest.mark.parametrize("caption,unknown,pattern", [
    (("zzz qqq " * 700)[:5000], "drop", "no word of the vocabulary (unknown words: zzz, qqq"),
    (("zzz qqq " * 700)[:5000], "error", "no word of the vocabulary (unknown words: zzz, qqq"),
    ("!?" * 2500, "drop", "no word of the vocabulary (it has no word token)"),
    (("a bird zzz " * 500)[:5000], "error", "has words not in the vocabulary: zzz, zzz"),
])
def test_messages_quoting_a_5000_character_caption_are_short(caption, unknown, pattern):
    assert len(caption) == 5000
    with pytest.raises(sampling.SamplingError) as e:
        sampling.encode_captions(VOCAB, ["a bird", caption], WORDS_NUM,
                                 unknown=unknown)
    message = str(e.value)
    assert len(message) < MESSAGE_LIMIT, (len(message), message)
    assert message.startswith(f"caption 1 {caption[:20]!r}"[:-1])  # the quote is cut, open
    assert pattern in message and "(5000 characters)" in message


def test_a_5000_character_caption_keeps_its_first_words():
    caption = ("the bird has a long yellow tail zzz " * 150)[:5000]
    enc = sampling.encode_captions(VOCAB, [caption, "the bird has a long yellow"], WORDS_NUM)
    np.testing.assert_array_equal(enc.ids[0], enc.ids[1])
    assert enc.words[0] == ["the", "bird", "has", "a", "long", "yellow"]
    assert enc.unknown[0] == ["zzz"] * caption.count("zzz")
    known = [w for w in caption.split() if w != "zzz"]  # every other word is in VOCAB
    assert enc.truncated[0] == known[WORDS_NUM:] and len(known) > 800
