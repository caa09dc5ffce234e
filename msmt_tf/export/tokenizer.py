"""In-graph caption tokenizer: ``vocabulary.tokenize`` + ``Vocabulary.encode`` + the
evaluation rule of the pipeline, with ``tf.strings`` ops only (for the SavedModel).

Per caption, the same steps as the Python code:

1. invalid UTF-8 bytes become U+FFFD (Python reads caption files with ``errors="replace"``);
   "\\ufffd\\ufffd" becomes a space (U+FFFD is not a word character, so this changes nothing
   either way, but it is AttnGAN's first step);
2. Unicode lowercasing (``tf.strings.lower(..., encoding="utf-8")``; the default is ASCII only);
3. ``\\w+`` tokens: RE2's ``\\w`` is ASCII only while Python's is Unicode, so the separator
   class is built from Python's own ``\\w`` (every code point ``re`` calls a word character,
   as 734 ranges): a non-ASCII letter inside a word joins it exactly as in Python ("naïve" is
   one token "nave", not "na" + "ve");
4. non-ASCII characters removed from each token, empty tokens dropped;
5. vocabulary lookup in a ``StaticHashTable``; unknown words (and ``'<end>'``, id 0) dropped;
6. the first ``words_num`` ids, zero-padded: the pipeline's evaluation rule
   (``pipeline.choose_caption(training=False)``; the random word subset is a training
   augmentation). A caption of any length is tokenised whole; only its first ``words_num``
   known words reach the generator (``length``), ``known`` counts them all;
7. ``valid``: the caption has at least one known word (an empty caption, or one of unknown
   words only, gives all-zero ids, which the generator cannot condition on).

``tests/export/test_tokenizer.py`` compares the ids with the Python path on tricky captions and
the tokens on every Unicode code point between two ASCII letters.
"""

import functools
import re

import tensorflow as tf


@functools.lru_cache(maxsize=None)
def word_character_class():
    """An RE2 character-class body matching exactly the characters Python's ``\\w`` matches."""
    word = re.compile(r"\w")
    ranges, start, prev = [], None, None
    for c in range(0x110000):
        ok = not 0xD800 <= c <= 0xDFFF and word.match(chr(c)) is not None
        if ok:
            if start is None:
                start = c
            prev = c
        elif start is not None:
            ranges.append((start, prev))
            start = None
    if start is not None:
        ranges.append((start, prev))
    return "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}"
                   for a, b in ranges)


class CaptionTokenizer(tf.Module):
    """Captions -> fixed-length word ids, inside the graph (see the module docstring).

    Args:
        words: the vocabulary in index order (``Vocabulary.words()``; index 0 is ``'<end>'``).
        words_num: ids per caption (the run's ``--words_num``).

    Call arguments:
        captions: string ``[N]`` (UTF-8).

    Returns:
        dict with ``ids`` int32 ``[N, words_num]`` (zero-padded), ``length`` int32 ``[N]``
        (real words kept, ``min(known, words_num)``), ``known`` int32 ``[N]`` (known words
        before truncation), ``valid`` bool ``[N]`` (``length > 0``), ``unknown_words`` a
        ragged string ``[N, None]`` of the dropped tokens.
    """

    def __init__(self, words, words_num, name=None):
        super().__init__(name=name)
        words = [str(w) for w in words]
        if int(words_num) < 1:
            raise ValueError(f"CaptionTokenizer: words_num={words_num!r} must be >= 1.")
        if not words or words[0] != "<end>":
            raise ValueError("CaptionTokenizer: words[0] must be '<end>' (the padding id 0).")
        self.words_num = int(words_num)
        self.vocab_size = len(words)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(words[1:], tf.string),
                tf.range(1, len(words), dtype=tf.int32)),
            default_value=0)
        self.separators = f"[^{word_character_class()}]+"

    def tokens(self, captions):
        """Ragged string ``[N, None]``: ``vocabulary.tokenize`` of each caption."""
        text = tf.strings.unicode_transcode(
            captions, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)
        # NUL is a separator for Python and would end the string for the UTF-8 lowercasing.
        text = tf.strings.regex_replace(text, "\ufffd\ufffd|\\x00", " ")
        text = tf.strings.lower(text, encoding="utf-8")
        text = tf.strings.regex_replace(text, self.separators, " ")
        tokens = tf.strings.split(text)
        tokens = tf.ragged.map_flat_values(tf.strings.regex_replace, tokens, "[^\\x00-\\x7f]", "")
        return tf.ragged.boolean_mask(tokens, tf.strings.length(tokens) > 0)

    def __call__(self, captions):
        captions = tf.convert_to_tensor(captions, tf.string)
        tokens = self.tokens(captions)
        ids = tf.ragged.map_flat_values(self.table.lookup, tokens)
        known = ids > 0
        unknown_words = tf.ragged.boolean_mask(tokens, tf.logical_not(known))
        ids = tf.ragged.boolean_mask(ids, known)
        n = tf.shape(captions)[0]
        # to_tensor with a shape truncates longer rows: the first words_num ids, zero-padded.
        fixed = ids.to_tensor(default_value=0, shape=[n, self.words_num])
        count = tf.cast(ids.row_lengths(), tf.int32)
        return {
            "ids": fixed,
            "length": tf.minimum(count, self.words_num),
            "known": count,
            "valid": count > 0,
            "unknown_words": unknown_words,
        }
