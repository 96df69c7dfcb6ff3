"""Errors the user can cause when collecting; the message is the one line shown."""


class CollectInputError(ValueError):
    """Bad input (no job.json, unreadable job.json, destination exists): exit status 2."""


class CollectWriteError(OSError):
    """The results could not be written (disk full, read-only): exit status 1, nothing kept."""
