"""``json.loads`` for files someone else wrote: numbers that would misbehave later are errors now.

Plain ``json.loads`` turns ``1e400`` into infinity (and ``int()`` of it into an
OverflowError far from the file), accepts ``NaN``/``Infinity``, and gives a 5000-digit
integer to ``int()``, whose ValueError carries advice meant for programmers. Used by
hccl's rank tables and by the launcher's job.json/eval.json reader; each caller turns a
StrictJsonError (and json's own errors) into its own one-line message.
"""
from __future__ import annotations

import json
from typing import Any


class StrictJsonError(ValueError):
    """A number JSON allows but no document of ours needs; the message is the reason."""


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise StrictJsonError(f"number {text[:40]} is out of range")
    return value


def _refuse_constant(name: str) -> Any:
    raise StrictJsonError(f"{name} is not a number JSON allows")


def loads(text: str, max_int_digits: int) -> Any:
    """json.loads with integers of at most ``max_int_digits`` digits and finite floats only."""

    def parse_int(digits_text: str) -> int:
        digits = len(digits_text.lstrip("-"))
        if digits > max_int_digits:
            raise StrictJsonError(f"a number with {digits} digits is out of range")
        return int(digits_text)

    return json.loads(text, parse_int=parse_int, parse_float=_parse_float, parse_constant=_refuse_constant)
