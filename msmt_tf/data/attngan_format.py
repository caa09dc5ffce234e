"""The AttnGAN/DM-GAN on-disk text format: pickles and ``text/<key>.txt`` caption files.

Layout (relative to the dataset directory)::

    captions.pickle              [train_captions, test_captions, ixtoword, wordtoix]
    train/filenames.pickle       list of keys, e.g. "002.Laysan_Albatross/Laysan_Albatross_0002_1027"
    test/filenames.pickle
    train/class_info.pickle      optional; one class id per key (absent: every image its own class)
    test/class_info.pickle
    text/<key>.txt               one caption per line

Caption ``j`` of image ``k`` is ``captions[k * captions_per_image + j]`` (a list of word ids
without the end token). Pickles are written with protocol 2 (readable by Python 2) and read
with ``encoding="latin1"`` so Python 2 pickles (str and numpy arrays) load unchanged. Reading
goes through an allow-list unpickler (``DATASET_PICKLE_GLOBALS``), so a downloaded pickle
cannot run code.
"""

import logging
import os
import pickle

import numpy as np

from msmt_tf.data import vocabulary as vocab_lib
from msmt_tf.data.errors import DataError
from msmt_tf.io import atomic
from msmt_tf.io import safe_pickle

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
CAPTIONS_PICKLE = "captions.pickle"


# The only globals a dataset pickle may name. The released formats need very few:
# * AttnGAN ``captions.pickle`` (written by ``TextDataset.load_text_data`` of taoxugit/AttnGAN
#   ``code/datasets.py`` under Python 2 with protocol 2, and unchanged by MinfengZhu/DM-GAN under
#   Python 3): lists of lists of Python ints and two dicts int <-> unicode word -- opcodes only,
#   no global.
# * StackGAN/AttnGAN birds ``filenames.pickle``: a protocol-0 list of unicode keys -- no global.
# * birds ``class_info.pickle``: the test split is a protocol-0 list of ints, but the train
#   split is a Python 2 list of *numpy int64 scalars* (``numpy.core.multiarray.scalar`` +
#   ``numpy.dtype``, raw bytes as py2 str -- hence ``encoding="bytes"``/``"latin1"`` in later
#   repos and AttnGAN issue #15's UnicodeDecodeError without an encoding).
# So: numpy arrays/scalars under both numpy module names (and protocol 5's ``_frombuffer``), the
# ``_codecs.encode(text, "latin1")`` that Python 3 writes for bytes at protocol 2 (numpy raw data
# in our own protocol-2 files), and set/frozenset. Object-dtype arrays are allowed: their
# elements are unpickled by the same restricted ``find_class``.
DATASET_PICKLE_GLOBALS = {
    **safe_pickle.NUMPY_ARRAYS, **safe_pickle.PY3_BYTES, **safe_pickle.BUILTIN_SETS}


def read_pickle(path, what, hint):
    """Loads a (possibly Python 2) dataset pickle with the ``DATASET_PICKLE_GLOBALS`` allow-list.

    A missing or corrupt file, or one naming any other global, raises ``DataError`` naming the
    file (and the refused ``module.name``).
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: {what} not found. {hint}")
    with open(path, "rb") as f:
        return safe_pickle.load(
            f, path, what, DATASET_PICKLE_GLOBALS, DataError, encoding="latin1",
            needs="an AttnGAN dataset pickle holds only lists, dicts, str, numbers and numpy "
                  "arrays", hint=hint)


def write_pickle(path, obj):
    with atomic.replacing(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def filenames_path(root, split):
    return os.path.join(root, split, "filenames.pickle")


def class_info_path(root, split):
    return os.path.join(root, split, "class_info.pickle")


def caption_file(root, key):
    return os.path.join(root, "text", key + ".txt")


def load_keys(root, split, hint):
    keys = read_pickle(filenames_path(root, split), f"the {split} file list", hint)
    if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) for k in keys):
        raise DataError(
            f"{filenames_path(root, split)}: expected a list of str keys, got "
            f"{type(keys).__name__}. {hint}")
    return list(keys)


def load_class_ids(root, split, num):
    """``class_info.pickle`` as int64, or ``arange(num)`` when the file is absent."""
    path = class_info_path(root, split)
    if not os.path.isfile(path):
        return np.arange(num, dtype=np.int64)
    ids = np.asarray(read_pickle(path, "class ids", ""), dtype=np.int64).reshape(-1)
    if len(ids) != num:
        raise DataError(
            f"{path}: {len(ids)} class ids for {num} keys in "
            f"{filenames_path(root, split)}; rebuild it or delete it (every image its own class).")
    return ids


def read_caption_file(path, captions_per_image, stats, hint="", line_numbers=None):
    """Reads one ``text/<key>.txt``; returns ``captions_per_image`` token lists.

    Empty lines and lines without any token are skipped and counted in ``stats``; the first
    ``captions_per_image`` captions are kept (AttnGAN), and an image with fewer captions
    gets a warning and its captions are reused cyclically. The 1-based line number of each
    returned caption is appended to ``line_numbers`` when it is a list.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: caption file not found (one caption per line expected). {hint}")
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", errors="replace")
    captions, lines = [], []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            stats["empty_lines"] = stats.get("empty_lines", 0) + 1
            continue
        tokens = vocab_lib.tokenize(line)
        if not tokens:
            stats["no_token_lines"] = stats.get("no_token_lines", 0) + 1
            logger.warning("%s:%d: caption has no word token, skipped: %r", path, lineno, line[:80])
            continue
        captions.append(tokens)
        lines.append(lineno)
        if len(captions) == captions_per_image:
            break
    if not captions:
        raise DataError(f"{path}: no caption with a word in it; add at least one caption line.")
    if len(captions) < captions_per_image:
        stats["reused"] = stats.get("reused", 0) + 1
        if stats["reused"] <= 10:
            logger.warning(
                "%s: %d captions, fewer than --captions_per_image=%d; reusing them.",
                path, len(captions), captions_per_image)
        captions = [captions[j % len(captions)] for j in range(captions_per_image)]
        lines = [lines[j % len(lines)] for j in range(captions_per_image)]
    if line_numbers is not None:
        line_numbers.extend(lines)
    return captions


def _log_stats(root, stats):
    if stats.get("empty_lines"):
        logger.info("%s: skipped %d empty caption lines.", root, stats["empty_lines"])
    if stats.get("no_token_lines"):
        logger.warning("%s: skipped %d caption lines without any word.", root, stats["no_token_lines"])
    if stats.get("reused"):
        logger.warning("%s: %d images had fewer captions than --captions_per_image; captions reused.",
                       root, stats["reused"])
    if stats.get("unknown_words"):
        logger.warning("%s: dropped %d out-of-vocabulary words.", root, stats["unknown_words"])


def build_captions_pickle(root, captions_per_image, vocab=None, hint=""):
    """Builds ``captions.pickle`` from ``text/`` (AttnGAN ``load_text_data`` when it is missing).

    With ``vocab`` (e.g. a released vocabulary) its indices are kept, unknown words are dropped
    and counted, and a caption with no known word is reported with its file and line and
    skipped. Returns (train_captions, test_captions, Vocabulary).
    """
    keys = {s: load_keys(root, s, hint) for s in SPLITS}
    stats = {}
    tokens, lines = {}, {}
    for s in SPLITS:
        tokens[s], lines[s] = [], []
        for key in keys[s]:
            tokens[s].extend(read_caption_file(caption_file(root, key), captions_per_image, stats,
                                               hint, line_numbers=lines[s]))
    if vocab is None:
        vocab = vocab_lib.Vocabulary.build(tokens["train"] + tokens["test"])
        ids = {s: [vocab.encode_tokens(t)[0] for t in tokens[s]] for s in SPLITS}
    else:
        ids = {}
        for s in SPLITS:
            ids[s] = []
            for k, key in enumerate(keys[s]):
                per_image = []
                for j in range(captions_per_image):
                    c, unknown = vocab.encode_tokens(tokens[s][k * captions_per_image + j])
                    stats["unknown_words"] = stats.get("unknown_words", 0) + len(unknown)
                    if c:
                        per_image.append(c)
                    else:
                        logger.warning("%s:%d: caption has no known word, skipped: %r",
                                       caption_file(root, key), lines[s][k * captions_per_image + j],
                                       " ".join(tokens[s][k * captions_per_image + j])[:80])
                if not per_image:
                    raise DataError(
                        f"{caption_file(root, key)}: no caption has a word of the vocabulary; "
                        "fix the captions or build a new vocabulary (omit --vocab_from).")
                ids[s].extend(per_image[j % len(per_image)] for j in range(captions_per_image))
    _log_stats(root, stats)
    write_pickle(os.path.join(root, CAPTIONS_PICKLE),
                 [ids["train"], ids["test"], vocab.ixtoword, vocab.wordtoix])
    logger.info("%s: wrote %s (%d words, sha1 %s).", root, CAPTIONS_PICKLE, len(vocab), vocab.sha1())
    return ids["train"], ids["test"], vocab


def load_captions_pickle(root, hint=""):
    """Reads ``captions.pickle``; returns (train_captions, test_captions, Vocabulary)."""
    path = os.path.join(root, CAPTIONS_PICKLE)
    data = read_pickle(path, "captions pickle", hint)
    if not isinstance(data, (list, tuple)) or len(data) != 4:
        raise DataError(
            f"{path}: expected [train_captions, test_captions, ixtoword, wordtoix]; delete it to "
            "rebuild it from text/.")
    train, test, ixtoword, wordtoix = data
    try:
        vocab = vocab_lib.Vocabulary(ixtoword, wordtoix)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None
    train = [[int(i) for i in c] for c in train]
    test = [[int(i) for i in c] for c in test]
    n = len(vocab)
    for name, caps in (("train", train), ("test", test)):
        bad = [i for c in caps for i in c if not 0 < i < n]
        if bad:
            raise DataError(
                f"{path}: {name} captions use word ids outside 1..{n - 1} (e.g. {bad[0]}); the "
                "pickle is inconsistent, delete it to rebuild it from text/.")
    return train, test, vocab


def load_vocabulary(path, flag):
    """The ``Vocabulary`` of an AttnGAN ``captions.pickle`` (a file, or a directory holding
    one), e.g. the one a released text encoder was trained with; ``flag`` names the flag that
    gave ``path`` in error messages."""
    if os.path.isdir(path):
        path = os.path.join(path, CAPTIONS_PICKLE)
    data = read_pickle(path, "captions pickle", f"({flag})")
    try:
        return vocab_lib.Vocabulary(data[2], data[3])
    except (IndexError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: not an AttnGAN captions.pickle ({e}) ({flag}).") from None


def load_or_build_captions(root, captions_per_image, hint=""):
    """Reuses ``captions.pickle`` verbatim when present, else builds and writes it."""
    if os.path.isfile(os.path.join(root, CAPTIONS_PICKLE)):
        return load_captions_pickle(root, hint)
    logger.info("%s: %s missing, building it from text/.", root, CAPTIONS_PICKLE)
    return build_captions_pickle(root, captions_per_image, hint=hint)
