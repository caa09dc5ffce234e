"""The one exception type for bad data on disk."""


class DataError(ValueError):
    """Bad or missing input data; the message names the file or flag and what to do."""
