"""The one error type of the data package."""


class DataError(ValueError):
    """Bad data the user can fix; the message is the single line shown to them and names the file."""
