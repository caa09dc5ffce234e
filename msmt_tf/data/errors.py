"""The one exception type for bad data on disk."""

from msmt_tf import errors


class DataError(errors.UserError, ValueError):
    """Bad or missing input data; the message names the file or flag and what to do."""
