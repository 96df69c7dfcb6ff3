"""Numbers from the command line and the environment, read strictly: one checker for every surface.

Python's int() and float() are generous where a launcher must not be: int("３０") is 30 (any
Unicode digit), int(" 7\\n") is 7, float("nan") compares false to every bound so a range check
lets it through, and a 30-digit count is a valid int. These read only ASCII digits, the whole
text, within bounds, and say in one line which flag or variable was wrong.
"""
from __future__ import annotations

import argparse
import math
import re
from typing import Callable

from launcher.job.safe_text import visible

_WHOLE = re.compile(r"[0-9]+")
_MOST_DIGITS = 18
_DECIMAL = re.compile(r"[0-9]{1,12}(\.[0-9]{0,9})?|\.[0-9]{1,9}")


def whole_number(text: str, what: str, low: int, high: int) -> int:
    """text as an int in [low, high]; ValueError naming `what` otherwise (no sign, no spaces, ASCII digits)."""
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"{what} {visible(text, 40)}: not a whole number (digits 0-9 only)")
    if len(text.lstrip("0")) > _MOST_DIGITS:
        raise ValueError(f"{what} {text[:20]}...: must be {low}..{high}")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{what} {value}: must be {low}..{high}")
    return value


def seconds(text: str, what: str, low: float, high: float) -> float:
    """text as a finite number of seconds in [low, high]; ValueError naming `what` otherwise (no nan/inf/sign)."""
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"{what} {visible(text, 40)}: not a number of seconds (e.g. 600 or 2.5)")
    value = float(text)
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{what} {text}: must be {low:g} to {high:g} seconds")
    return value


def _argparse_type(check: Callable, flag: str, *bounds) -> Callable[[str], object]:
    """``check(text, flag, *bounds)`` as an argparse ``type=`` (argparse names the flag itself)."""
    def parse(text: str):
        try:
            return check(text, flag, *bounds)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{flag} ")) from None
    return parse


def whole_number_arg(flag: str, low: int = 0, high: int = 10**_MOST_DIGITS - 1) -> Callable[[str], int]:
    """An argparse ``type=`` for whole_number."""
    return _argparse_type(whole_number, flag, low, high)


def seconds_arg(flag: str, low: float, high: float) -> Callable[[str], float]:
    """An argparse ``type=`` for seconds."""
    return _argparse_type(seconds, flag, low, high)
