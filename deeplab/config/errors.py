"""The one exception type of deeplab.config."""
from typing import Optional


class ConfigError(ValueError):
    """A bad preset name, file, key or value; the message is the one line shown to the user.

    ``field`` names the config key at fault, when there is one.
    """

    def __init__(self, message: str, field: Optional[str] = None) -> None:
        super().__init__(message)
        self.field = field
