"""Strict YAML configuration: mappings turned into typed dataclasses, every key and value checked.

Shared by model configs (ros_seg/configs/models/) and training configs (config/train/):
an unknown key, or a value of the wrong type, is an error naming the key, its
section and the file, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from ros_seg.models.nested_data_limits import NestedDataLimits, check_nested_data
from ros_seg.models.quoted_excerpt import excerpt

MAX_CONFIG_BYTES = 1 << 20
"""Largest config file read (the largest shipped one is a few KiB)."""
CONFIG_LIMITS = NestedDataLimits(max_depth=8, max_items=100_000)

class ConfigError(ValueError):
    """A configuration that cannot be used; the message says what and where."""


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file; `what` names the file's role in errors.

    The file's size and the structure it describes (depth, number of values through
    YAML aliases, types) are checked before anything walks it; errors quote none of it.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB: not a config file")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start}): not a config file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{what} {path} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a YAML mapping, got {type(data).__name__}")
    try:
        check_nested_data(data, f"{what} {path}", CONFIG_LIMITS)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return data


BASE_KEY = "_base_"


def read_yaml_with_bases(path: str | Path, what: str) -> tuple[dict[str, Any], str]:
    """The mapping of a YAML file that may name another one it extends, and a description of its files.

    `_base_: other.yaml` (relative to the file's folder, or an absolute path) reads that file first
    (itself possibly extending a third) and lays this one over it: mappings
    merge key by key, at any depth; every other value, lists included,
    replaces the base's. The description names the file and its bases, for
    error messages. A missing base or a loop of bases is an error naming the files.
    """
    chain: list[Path] = []
    seen: set[Path] = set()  # resolved paths of chain
    layers: list[dict[str, Any]] = []
    current = Path(path)
    while True:
        if current.resolve() in seen:
            loop = " -> ".join(str(p) for p in [*chain, current])
            raise ConfigError(f"{what} {chain[0]} extends itself through {BASE_KEY}: {loop}")
        data = read_yaml_mapping(current, what)
        chain.append(current)
        seen.add(current.resolve())
        base = data.pop(BASE_KEY, None)
        layers.append(data)
        if base is None:
            break
        if not isinstance(base, str) or not base:
            raise ConfigError(f"'{BASE_KEY}' in {current} must be the name of the YAML file it extends "
                              f"(relative to {current.parent}), got {excerpt(base)}")
        following = current.parent / base
        if not following.is_file():
            raise ConfigError(f"'{BASE_KEY}' in {current} names {excerpt(str(following), 200)}, which does not exist")
        current = following
    merged: dict[str, Any] = {}
    for layer in reversed(layers):
        merged = _overlay(merged, layer)
    source = str(chain[0]) if len(chain) == 1 else f"{chain[0]} (with its {BASE_KEY} {', '.join(map(str, chain[1:]))})"
    return merged, source


def _overlay(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """`layer` laid over `base`: nested mappings merge, other values replace."""
    merged = dict(base)
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _overlay(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_dataclass(cls: type, data: Any, source: str, section: str = "") -> Any:
    """Instance of dataclass `cls` from a mapping, every key and value checked against the field types."""
    where = f"section '{section}' of {source}" if section else source
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        raise ConfigError(f"unknown key(s) {_key_listing(unknown)} in {where}; allowed: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{section}.{name}" if section else name
        if dataclasses.is_dataclass(hints[name]):
            kwargs[name] = build_dataclass(hints[name], value, source, key)
        else:
            kwargs[name] = _coerce(value, hints[name], key, source)
    return cls(**kwargs)


def _key_listing(keys: list[Any], limit: int = 5) -> str:
    """Up to `limit` of `keys` that could be config keys (short names), the others only counted: a key that is
    no name may be a line of a file that is no config, and an error must not reproduce that file."""
    names = [k for k in keys if isinstance(k, str) and k.isidentifier() and len(k) <= 40]
    listing = repr(names[:limit])
    if len(names) > limit:
        listing += f" and {len(names) - limit} more"
    others = len(keys) - len(names)
    if others:
        listing += f" and {others} key(s) that are no names (not quoted: the file may not be a config file)"
    return listing


def _coerce(value: Any, annotation: Any, key: str, source: str) -> Any:
    """`value` checked against a field type: int, float, bool, str, list[T] or `T | None`."""
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) and type(None) in args:
        if value is None:
            return None
        annotation = next(a for a in args if a is not type(None))
        args = typing.get_args(annotation)
    if typing.get_origin(annotation) is list:
        if not isinstance(value, list):
            raise ConfigError(f"'{key}' in {source} must be a list, got {excerpt(value)}")
        return [_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise ConfigError(f"'{key}' in {source} must be {annotation.__name__}, got {excerpt(value)}")
    return value
