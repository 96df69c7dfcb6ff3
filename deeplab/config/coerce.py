"""Turn YAML values and ``--set key=value`` text into the type a Config field declares.

YAML and the command line both deliver loosely typed values (PyYAML reads ``5e-5`` as a
string, a shell gives only strings); the dataclass annotation is the single source of
truth for what a field holds, so conversion is driven by it rather than by per-field code.
"""
from __future__ import annotations

import types
import typing
from typing import Any, Union

import yaml

# types.UnionType (X | Y) exists from Python 3.10 on.
_UNION_ORIGINS = (Union, getattr(types, "UnionType", Union))
_NULL_WORDS = {"null", "none", "~", ""}
_TRUE_WORDS = {"true", "yes", "on", "1"}
_FALSE_WORDS = {"false", "no", "off", "0"}


def parse_text(raw: str, field_type: Any) -> Any:
    """Parse the text of a ``--set`` value for a field of ``field_type`` (then use :func:`coerce`)."""
    text = raw.strip()
    if _is_optional(field_type) and text.lower() in _NULL_WORDS - {""}:
        return None
    if _strips_to(field_type) is str:
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            return text[1:-1]
        return text
    value = _yaml_value(text) if text else None
    if isinstance(value, str) and _is_sequence_type(_strips_to(field_type)):
        # "1.0,1.5" or "1.0 1.5" (no brackets) as a convenience on the command line.
        value = [_yaml_value(part) for part in value.replace(",", " ").split()]
    return value


def _yaml_value(text: str) -> Any:
    """YAML's reading of ``text``; the text itself when it is not valid YAML (coerce then says why)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def coerce(value: Any, field_type: Any) -> Any:
    """``value`` converted to ``field_type``; ValueError saying what was expected otherwise."""
    if _is_optional(field_type):
        if value is None or (isinstance(value, str) and value.strip().lower() in _NULL_WORDS):
            return None
    target = _strips_to(field_type)
    origin = typing.get_origin(target)
    if origin in (list, tuple):
        (item_type, *_) = typing.get_args(target) or (Any,)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        return [coerce(item, item_type) for item in value]
    if origin is typing.Literal:
        choices = typing.get_args(target)
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if target is bool:
        return _to_bool(value)
    if target is int:
        return _to_int(value)
    if target is float:
        return _to_float(value)
    if target is str:
        if isinstance(value, (list, dict)) or value is None:
            raise ValueError(f"expected a string, got {value!r}")
        return str(value)
    if target is Any:
        return value
    raise TypeError(f"no coercion for field type {field_type!r}")  # a bug in Config, not user input


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise ValueError(f"expected true or false, got {value!r}")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        number = _to_float(value)
    except ValueError:
        raise ValueError(f"expected an integer, got {value!r}") from None
    if not number.is_integer():
        raise ValueError(f"expected an integer, got {value!r}")
    return int(number)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {value!r}")


def _is_optional(field_type: Any) -> bool:
    return _is_union(field_type) and type(None) in typing.get_args(field_type)


def _is_union(field_type: Any) -> bool:
    return typing.get_origin(field_type) in _UNION_ORIGINS


def _strips_to(field_type: Any) -> Any:
    """The non-None member of Optional[X]; X itself otherwise."""
    if _is_union(field_type):
        members = [arg for arg in typing.get_args(field_type) if arg is not type(None)]
        if len(members) != 1:
            raise TypeError(f"unsupported union {field_type!r}")
        return members[0]
    return field_type


def _is_sequence_type(field_type: Any) -> bool:
    return typing.get_origin(field_type) in (list, tuple)
