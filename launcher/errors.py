"""The one error type a user of launch-train can cause: shown as one line, exit status 2."""
from __future__ import annotations


class LaunchError(ValueError):
    """Bad input caught before anything starts; the message is the whole line shown to the user.

    Messages name the flag or file at fault and say what is wrong, e.g.
    ``--sched-port 8118: port already in use on 127.0.0.1``.
    """
