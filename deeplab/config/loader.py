"""Load a Config from a preset name or a YAML file, then apply ``key=value`` overrides.

A YAML file lists only the fields it changes from the defaults; it may start from
another preset or file with ``base: NAME_OR_PATH`` (a path is relative to the file).
Every problem is a ConfigError whose message names the file or the override.

Batch statements: a layer (a file, or the ``--set`` overrides together) that gives
``batch_size`` without ``global_batch_size`` asks for a per-rank batch, so it clears a
``global_batch_size`` inherited from its base: ``--set batch_size=4`` on a preset that
states a global batch means 4 per rank.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import yaml

from deeplab.config.coerce import coerce, parse_text
from deeplab.config.errors import ConfigError
from deeplab.config.schema import Config, field_types, unknown_key_message

PRESET_DIR = Path(__file__).resolve().parent / "presets"
BASE_KEY = "base"


def list_presets() -> list[str]:
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def load_config(name_or_path: Union[str, os.PathLike], overrides: Iterable[str] = ()) -> Config:
    """The Config of a preset name (e.g. "tiny_synthetic") or a YAML file, with overrides applied."""
    values = _load_values(str(name_or_path), relative_to=Path.cwd(), seen=())
    overridden: dict[str, str] = {}
    layer: dict[str, Any] = {}
    for override in overrides:
        key, value = parse_override(override)
        layer[key] = value
        overridden[key] = override
    _apply_layer(values, layer)
    try:
        return Config(**values)
    except ConfigError as exc:
        # Blame the --set that brought the bad value in, else the file it came from.
        where = f"--set {overridden[exc.field]!r}" if exc.field in overridden else str(name_or_path)
        raise ConfigError(f"{where}: {exc}", field=exc.field) from None


def parse_override(text: str) -> tuple[str, Any]:
    """``"eval_scales=1.0,1.5"`` -> ``("eval_scales", [1.0, 1.5])``, typed by the field."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected key=value")
    types = field_types()
    if key not in types:
        raise ConfigError(f"--set {text!r}: {unknown_key_message(key)}")
    try:
        return key, coerce(parse_text(raw, types[key]), types[key])
    except ValueError as exc:
        raise ConfigError(f"--set {text!r}: {key}: {exc}", field=key) from None


def resolve_source(name_or_path: str, relative_to: Path) -> Path:
    """The YAML file meant by a preset name or a path; ConfigError when there is none."""
    looks_like_path = name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path
    candidate = Path(name_or_path).expanduser()
    if not candidate.is_absolute():
        candidate = relative_to / candidate
    if looks_like_path or candidate.is_file():
        if not candidate.is_file():
            raise ConfigError(f"{name_or_path}: config file not found")
        return candidate
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if not preset.is_file():
        raise ConfigError(
            f"unknown config {name_or_path!r}: not a YAML file and not a preset "
            f"(presets: {', '.join(list_presets())})"
        )
    return preset


def _load_values(name_or_path: str, relative_to: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = resolve_source(name_or_path, relative_to)
    if path in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    mapping = _read_yaml_mapping(path)
    values: dict[str, Any] = {}
    base = mapping.pop(BASE_KEY, None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base: expected a preset name or a file path")
        values = _load_values(base, relative_to=path.parent, seen=seen + (path,))
    types = field_types()
    layer: dict[str, Any] = {}
    for key, value in mapping.items():
        if key not in types:
            raise ConfigError(f"{path}: {unknown_key_message(str(key))}")
        try:
            layer[key] = coerce(value, types[key])
        except ValueError as exc:
            raise ConfigError(f"{path}: {key}: {exc}", field=key) from None
    _apply_layer(values, layer)
    return values


def _apply_layer(values: dict[str, Any], layer: dict[str, Any]) -> None:
    """Lay ``layer`` over ``values``; a per-rank batch_size alone drops an inherited global batch."""
    if "batch_size" in layer and "global_batch_size" not in layer:
        values.pop("global_batch_size", None)
    values.update(layer)


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    try:
        data: Optional[Any] = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return dict(data)
