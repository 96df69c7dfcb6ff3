"""Values that reach shell scripts, comments, job.json and other hosts: what is refused, how shown.

Every rendered value is quoted where it is a shell word (the `shquote` filter). But a
value also appears in comments (`# HCCL rank table start: ... in <path>`), in messages
and on other hosts' command lines, where quoting does not help: a newline in a comment
ends it and the next line runs. So control characters are refused at the edge where
they cannot mean anything (a job dir, a host name, an address, an environment variable
name, NUL anywhere), and `visible()` turns any that still reach a comment or a message
into escapes.
"""
from __future__ import annotations

import re

# C0 controls, DEL and the C1 controls (U+0080-U+009F: U+009B is a terminal's CSI, U+0085 a line break
# for YAML and some terminals).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\x00": "a NUL byte", "\x1b": "an escape"}


def control_character(value: str) -> str | None:
    """A description of the first control character in value ("a newline at position 4"), or None."""
    match = _CONTROL.search(value)
    if match is None:
        return None
    char = match.group()
    return f"{_NAMES.get(char, f'control character 0x{ord(char):02x}')} at position {match.start()}"


def refuse_control(value: str, what: str) -> str:
    """value unchanged, or ValueError naming `what` (a flag) and the character."""
    found = control_character(value)
    if found is not None:
        raise ValueError(f"{what} {visible(value)!s}: contains {found}; control characters are not allowed here")
    return value


def refuse_non_utf8(value: str, what: str) -> str:
    """value unchanged, or ValueError when it holds bytes that are not UTF-8 (argv's surrogate escapes).

    Every file the job writes (job.json, scripts, manifests) is UTF-8: such a value could not be
    written there, nor passed on word for word.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        try:  # the bytes as given on the command line: "caf\xe9", not the surrogate escape "caf\udce9"
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "backslashreplace")
        shown = visible(raw.decode("utf-8", "backslashreplace"), 60)
        raise ValueError(f"{what} {shown}: not valid UTF-8 (at position {exc.start}); "
                         "give the value in UTF-8") from None
    return value


def check_env_name(name: str, what: str = "--env") -> str:
    """A name a shell `export` and every environment can hold: [A-Za-z_][A-Za-z0-9_]*."""
    if not ENV_NAME.fullmatch(name):
        raise ValueError(f"{what} {visible(name)}: not a valid environment variable name "
                         "(letters, digits and _, not starting with a digit)")
    return name


def check_env_value(name: str, value: str, what: str = "--env") -> str:
    """An environment value cannot hold NUL (the C environment ends strings there); the rest is quoted."""
    if "\x00" in value:
        raise ValueError(f"{what} {name}: the value contains a NUL byte, which no environment can hold")
    return value


def visible(value: object, limit: int = 200) -> str:
    """value as text with every control character written as an escape, cut to `limit` characters.

    For comments and messages: the result never holds a newline or any other control character.
    """
    text = str(value)
    shown = _CONTROL.sub(lambda m: {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(m.group(), f"\\x{ord(m.group()):02x}"), text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
