"""The one base class of every error a user can cause (a flag, a file, a dataset, a run).

Entry points print a ``UserError`` as one line, ``Error: <message>``, on stderr and exit with
``EXIT_CODE``; anything else is a bug and keeps its traceback. Each package keeps its own
subclass (``ConfigError``, ``DataError``, ``ConversionError``, ``EvaluationError``,
``SamplingError``, ``ExportError``, ...) so callers can still catch a narrow kind; the
subclasses also keep their historical ``ValueError`` / ``RuntimeError`` bases.
"""

EXIT_CODE = 1


class UserError(Exception):
    """A mistake in the user's input; the message names the flag or file and what to do."""
