"""Pickles for the tests of the allow-list unpickler (``msmt_tf.io.safe_pickle``).

``marker_pickle(path)`` is a stand-in for a hostile file: unpickled by a plain ``pickle.load``
it calls ``open(path, "w")`` and so creates ``path``; a restricted unpickler must refuse its
``io.open`` global (``OPEN_GLOBAL``) before anything is called, leaving ``path`` absent.
"""

import pickle

OPEN_GLOBAL = f"{open.__module__}.{open.__qualname__}"


class MarkerCreator:
    """An object whose unpickling creates the file ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def marker_pickle(path, protocol=2):
    """The bytes of a pickle that creates ``path`` when a plain unpickler loads it."""
    return pickle.dumps(MarkerCreator(path), protocol=protocol)
