"""Unpickling with an allow-list of globals, so reading a downloaded file cannot run code.

A pickle runs code only through the globals it names: ``GLOBAL`` / ``STACK_GLOBAL`` / ``INST``
/ ``OBJ`` and the ``EXT*`` opcodes all go through ``Unpickler.find_class``, and ``REDUCE`` /
``NEWOBJ`` / ``BUILD`` can only call what an earlier ``find_class`` returned (or an instance of
it). ``RestrictedUnpickler.find_class`` returns only objects from an explicit allow-list, keyed
by the exact ``(module, name)`` written in the file, and refuses everything else with a one-line
error naming the file and the ``module.name`` global. Containers, str, bytes, int, float, bool
and None need no global at all (they are opcodes), so a file of plain data always loads.
(One CPython caveat: an ``EXT*`` code that a *plain* unpickler already resolved in the same
process is served from ``copyreg``'s cache without ``find_class``; the extension registry is
empty unless a program calls ``copyreg.add_extension``, which msmt_tf never does.)

``load`` also turns every other failure of a corrupt or truncated pickle (``EOFError``,
``UnpicklingError``, ``TypeError``, ``UnicodeDecodeError`` ...) into the caller's error type
with the file name, so a user never sees a raw pickle traceback.

Users: ``msmt_tf.io.torch_serialization`` (the five pickles of the legacy ``.pth`` format and the
``data.pkl`` of zip archives) and ``msmt_tf.data.attngan_format.read_pickle`` (the
AttnGAN / DM-GAN ``captions.pickle``, ``filenames.pickle`` and ``class_info.pickle``).
"""

import pickle

from msmt_tf import errors


def _numpy_globals():
    """numpy's array and scalar pickle globals under every module name numpy has written.

    numpy < 2 (and every Python 2 pickle) names ``numpy.core.multiarray``, numpy >= 2 names
    ``numpy._core.multiarray``; both resolve to the installed numpy's functions here (the
    deprecated ``numpy.core`` shim is never imported). Only non-code objects are reachable:
    ``_reconstruct(subtype, shape, dtype)`` builds an empty array of ``subtype``, which can
    only be ``numpy.ndarray`` (the one type offered); ``ndarray.__setstate__`` fills it from
    raw bytes or, for ``dtype=object``, from a list whose elements were unpickled by this same
    restricted ``find_class``; ``scalar(dtype, raw)`` makes a numpy scalar from raw bytes (an
    object-dtype scalar is the already-unpickled element itself); ``_frombuffer`` (protocol 5)
    refuses object dtypes.
    """
    import numpy as np

    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric

    out = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        out[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        out[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        out[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return out


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` restricted to what Python 3 writes for ``bytes`` at protocol <= 2.

    ``pickle.dumps(b"..", protocol=2)`` emits ``_codecs.encode(u"..", "latin1")`` (so numpy
    arrays and scalars saved by Python 3 at protocol 2 carry their raw data this way). Any
    other codec or argument type is refused: codec lookup may import modules.
    """
    if not isinstance(text, str) or encoding.replace("-", "").replace("_", "").lower() != "latin1":
        raise pickle.UnpicklingError(
            f"_codecs.encode is only allowed for latin1 text, got {type(text).__name__} and "
            f"encoding {encoding!r}")
    return text.encode("latin1")


# Allow-list building blocks (exact (module, name) -> object).
NUMPY_ARRAYS = _numpy_globals()
PY3_BYTES = {("_codecs", "encode"): _latin1_encode}
# Python 2 protocol <= 2 pickles name the builtins module ``__builtin__``; the name is not
# remapped before ``find_class`` (that happens inside the default ``find_class``).
BUILTIN_SETS = {
    (module, name): obj
    for module in ("builtins", "__builtin__")
    for name, obj in (("set", set), ("frozenset", frozenset))
}


def refused_message(source, module, name, needs="this file does not need it", hint=""):
    """The one-line message for a global outside the allow-list."""
    shown = f"{module}.{name}"
    if not shown.isprintable():  # e.g. a CRLF-mangled protocol-0 pickle: 'numpy.core\r'
        shown = f"{module!r}.{name!r}"
    return _join(
        f"{source}: refusing to unpickle the global {shown} (unpickling an arbitrary global "
        f"can run code): {needs}.",
        hint,
    )


def _join(message, hint):
    return f"{message} {hint}" if hint else message


def describe(exc):
    """``"TypeName: first line of the message"`` for an error inside a one-line message."""
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` resolves only the ``allowed`` globals.

    Args:
      file: a binary file object positioned at the pickle (it is left right after it).
      source: the file name used in error messages.
      allowed: mapping ``(module, name) -> object``; the exact names written in the pickle.
      error: the exception class raised (a ``UserError`` subclass, e.g. ``DataError``).
      encoding: how Python 2 ``str`` (``STRING`` / ``BINSTRING`` / ``SHORT_BINSTRING``) is
        decoded; ``"latin1"`` keeps arbitrary bytes (and numpy raw data) intact.
      needs: why a refused global is not needed, for the message.
      hint: what to do, appended to every message.

    Subclasses may override ``resolve`` to add rules (e.g. a family of names).
    """

    def __init__(self, file, source, allowed=None, error=errors.UserError, *, encoding="ASCII",
                 needs="this file does not need it", hint=""):
        super().__init__(file, encoding=encoding)
        self.source = source
        self._allowed = dict(allowed or {})
        self._error = error
        self._needs = needs
        self._hint = hint

    def resolve(self, module, name):
        """The object for an allowed global, or None to refuse it."""
        return self._allowed.get((module, name))

    def find_class(self, module, name):
        obj = self.resolve(module, name)
        if obj is None:
            raise self._error(refused_message(self.source, module, name, self._needs, self._hint))
        return obj

    def load_or_raise(self, what):
        """``load()`` with every failure raised as ``error`` naming the file and ``what``."""
        try:
            return self.load()
        except errors.UserError:
            raise
        except Exception as e:  # noqa: BLE001 - pickle raises many types on corrupt input
            raise self._error(_join(
                f"{self.source}: cannot read {what} ({describe(e)}); the file is corrupt or "
                "truncated.", self._hint)) from None


def load(file, source, what, allowed=None, error=errors.UserError, **kwargs):
    """Unpickles one object from ``file`` with ``RestrictedUnpickler``; see its arguments."""
    return RestrictedUnpickler(file, source, allowed, error, **kwargs).load_or_raise(what)
