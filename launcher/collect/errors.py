"""Errors the user can cause when collecting; the message is the one line shown."""
from launcher.job.job_record import JobFileError


class CollectInputError(JobFileError):
    """Bad input (a destination that exists, ...): exit status 2; like job.json's own errors (JobFileError)."""


class CollectWriteError(OSError):
    """The results could not be written (disk full, read-only): exit status 1, nothing kept."""
