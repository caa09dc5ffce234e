"""Tokenizer and vocabulary with AttnGAN's rules and ``captions.pickle`` indices.

``tokenize`` follows AttnGAN ``TextDataset.load_captions``: replace "\\ufffd\\ufffd" by a
space, lowercase, ``\\w+`` tokens (Unicode-aware, as NLTK's ``RegexpTokenizer``), encode each
token to ASCII dropping other characters, drop empty tokens. Index 0 is ``'<end>'``, the
padding id. A vocabulary built here orders words by frequency over train + test captions,
then alphabetically, so building twice gives the same indices (AttnGAN's own order follows
Python 2 dict hashing and cannot be reproduced: released pickles are reused verbatim).
"""

import collections
import hashlib
import re

END_TOKEN = "<end>"
_WORD_RE = re.compile(r"\w+")


def tokenize(text):
    """Splits a caption into lowercase ASCII word tokens (AttnGAN rules)."""
    text = text.replace("\ufffd\ufffd", " ").lower()
    tokens = []
    for token in _WORD_RE.findall(text):
        token = token.encode("ascii", "ignore").decode("ascii")
        if token:
            tokens.append(token)
    return tokens


class Vocabulary:
    """Word <-> index maps; index 0 is ``'<end>'`` (padding).

    Args:
        ixtoword: dict int -> word, containing 0 -> '<end>' and contiguous ids 0..n-1.
        wordtoix: optional inverse map; derived from ``ixtoword`` when omitted.
    """

    def __init__(self, ixtoword, wordtoix=None):
        self.ixtoword = {int(k): str(v) for k, v in ixtoword.items()}
        if wordtoix is None:
            wordtoix = {w: i for i, w in self.ixtoword.items()}
        self.wordtoix = {str(k): int(v) for k, v in wordtoix.items()}
        if self.ixtoword.get(0) != END_TOKEN:
            raise ValueError(
                f"vocabulary index 0 is {self.ixtoword.get(0)!r}, expected '{END_TOKEN}' (padding).")

    @classmethod
    def build(cls, token_lists):
        """Builds a vocabulary from tokenized captions: by frequency, then alphabetical."""
        counts = collections.Counter()
        for tokens in token_lists:
            counts.update(tokens)
        counts.pop(END_TOKEN, None)
        words = sorted(counts, key=lambda w: (-counts[w], w))
        ixtoword = {0: END_TOKEN}
        for i, w in enumerate(words, start=1):
            ixtoword[i] = w
        return cls(ixtoword)

    def __len__(self):
        return len(self.ixtoword)

    def __contains__(self, word):
        return word in self.wordtoix

    def words(self):
        """The word list in index order (``words()[i] == ixtoword[i]``)."""
        return [self.ixtoword[i] for i in sorted(self.ixtoword)]

    def encode_tokens(self, tokens):
        """Returns (ids, unknown tokens); unknown tokens are dropped from ``ids``."""
        ids, unknown = [], []
        for t in tokens:
            i = self.wordtoix.get(t)
            if i is None or i == 0:
                unknown.append(t)
            else:
                ids.append(i)
        return ids, unknown

    def encode(self, text):
        """Tokenizes ``text``; returns (ids: list[int], unknown: list[str])."""
        return self.encode_tokens(tokenize(text))

    def decode(self, ids):
        """Joins the words of ``ids`` with spaces, stopping at the first padding id 0."""
        words = []
        for i in ids:
            i = int(i)
            if i == 0:
                break
            words.append(self.ixtoword.get(i, "<unk>"))
        return " ".join(words)

    def sha1(self):
        """A stable hash of the word list in index order."""
        return hashlib.sha1("\n".join(self.words()).encode("utf-8")).hexdigest()
