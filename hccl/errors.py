"""The one exception the hccl package raises for input a user can get wrong."""


class HcclError(ValueError):
    """Bad hccn.conf, device list, address or rank table.

    The message is the single line shown to the user: it names the file (and line),
    flag or server concerned and says what is wrong.
    """
