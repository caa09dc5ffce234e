"""TensorFlow's C++ log lines, hidden by every entry point unless asked for.

Importing TensorFlow 2.21 prints its C++ banner (``I0000 ... port.cc:153] oneDNN custom
operations are on ...``, ``I0000 ... cpu_feature_guard.cc ...`` and ``WARNING: All log
messages before absl::InitializeLog() is called are written to STDERR``), and a training
step can print ``E0000 ... meta_optimizer.cc:967] remapper failed: ...`` lines; none of them
is for the user. What silences what (measured with TF 2.21 on Linux):

* ``TF_CPP_MIN_LOG_LEVEL`` (read when TensorFlow is imported) filters TensorFlow's own
  ``LOG``: 1 hides ``I`` lines, 2 also ``W``, 3 also ``E`` (the grappler ``remapper failed``
  lines, ``cpu_feature_guard``).
* The ``port.cc`` oneDNN line is logged by a static initializer through absl's C++ logging
  while the shared library loads, before any setting can be changed; ``TF_CPP_MIN_LOG_LEVEL``
  does not reach it (nor ``GLOG_minloglevel``, which absl does not read). The only way is to
  keep it off the terminal: ``quiet_tensorflow`` captures file descriptor 2 while
  ``tensorflow`` is first imported and writes back every captured line except C++ log lines
  (``[IWE]MMDD hh:mm:ss.uuuuuu THREAD file:line] ...``) and absl's ``InitializeLog`` notice.

So the entry points (``msmt_tf.cli.entry.run``) call ``quiet_tensorflow(verbosity)`` before
anything imports TensorFlow: with absl's default ``--verbosity`` (0, INFO) or lower it sets
``TF_CPP_MIN_LOG_LEVEL=3`` and captures the import; ``--verbosity=1`` (debug) or more shows
everything, and a user who set ``TF_CPP_MIN_LOG_LEVEL`` keeps their choice.
"""

import contextlib
import importlib.abc
import os
import re
import sys
import tempfile

ENV = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LEVEL = "3"  # hide TensorFlow's C++ INFO, WARNING and ERROR lines
VERBOSE_FROM = 1  # absl --verbosity at which (DEBUG) TensorFlow's C++ lines are shown
# absl C++ log line prefix: severity, MMDD hh:mm:ss.micros ("0000 00:00:<epoch>.micros" before
# absl::InitializeLog), thread id, file.cc:line] (absl's Python log lines name a .py file: kept)
CPP_LOG_LINE = re.compile(
    r"^[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^\s\]]+\.(?:cc|cpp|cxx|c|h|hpp|inc):\d+\] ")
ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called"


def is_cpp_log_line(line):
    """Whether ``line`` is an INFO/WARNING/ERROR line of TensorFlow's C++ logging (or absl's
    ``InitializeLog`` notice)."""
    return bool(CPP_LOG_LINE.match(line)) or line.startswith(ABSL_NOTICE)


def quiet_tensorflow(verbosity=0, environ=None):
    """Hides TensorFlow's C++ log lines unless ``verbosity >= 1`` or the user set ``ENV``.

    Sets ``TF_CPP_MIN_LOG_LEVEL=3`` and, if TensorFlow is not imported yet, makes its first
    import run with file descriptor 2 captured (C++ log lines dropped, the rest written back).
    Returns True if it changed anything. Does not import TensorFlow.
    """
    environ = os.environ if environ is None else environ
    if ENV in environ or verbosity >= VERBOSE_FROM:
        return False
    environ[ENV] = QUIET_LEVEL
    if "tensorflow" not in sys.modules and not any(
            isinstance(f, _QuietImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImportFinder())
    return True


@contextlib.contextmanager
def filtered_stderr_fd(keep=lambda line: not is_cpp_log_line(line)):
    """Captures file descriptor 2 (C++ and Python writes alike) for the ``with`` block, then
    writes the captured lines that ``keep`` accepts back to it, in order."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if keep(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of ``tensorflow`` inside ``filtered_stderr_fd``."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self._loader  # the module keeps its real loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with filtered_stderr_fd():
            self._loader.exec_module(module)


class _QuietImportFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` (once) with the other finders and wraps its loader."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the capture covers the first import only
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None:
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec
