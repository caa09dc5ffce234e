"""Writing a file so that readers see the old version or the whole new one, never a part.

Every file msmt_tf writes that another process may read meanwhile (the FID weight and
statistics caches under ``~/.cache/msmt_tf``, DAMSM encoders, run-directory JSON, dataset
caches) goes through ``replacing``: the content is written to a temporary name in the same
directory and renamed over the target (``os.replace``, atomic on POSIX and Windows). The
temporary name is unique per writer (process id and a random part), so two processes filling
the same cache at once (two training runs, parallel test workers) cannot interleave their bytes
in one temporary file; the last rename wins with a complete file.
"""

import contextlib
import os
import uuid


@contextlib.contextmanager
def replacing(path, suffix=""):
    """Yields a temporary path beside ``path``; renames it over ``path`` when the block succeeds.

    Args:
      path: the file to (re)write; its directory is created if missing.
      suffix: ending of the temporary name, for writers that add their own (``np.savez`` appends
        ``.npz`` to a name without it, so pass ``".npz"`` there).

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
