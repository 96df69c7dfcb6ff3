"""Errors the user can cause when collecting; the message is the one line shown."""


class CollectInputError(ValueError):
    """Bad input (no job.json, unreadable job.json, destination exists): exit status 2."""
