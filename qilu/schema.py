"""Typed configuration tables without pydantic: dataclasses checked field by field.

The agent runs on Pi-class hardware where every megabyte counts (pydantic and
pydantic-settings cost ~5-13 MB of RSS at import; see
docs/adr/0007-edge-delivery-and-identity.md), so its TOML and the collectors' tables are
validated by this small checker instead: a frozen dataclass describes a table, its field
annotations are the types, ``field(metadata=...)`` adds bounds, and every problem is a
:class:`qilu.errors.ConfigError` that names the full key (``buffer.max_bytes``). It sits on the
ground floor because the collectors and the agent both use it (docs/adr/0019-floors.md).

Supported annotations: ``int``, ``float``, ``str``, ``bool``, ``Literal[...]``, ``list[X]``
(X one of those or a dataclass), ``dict[str, X]``, a nested dataclass and ``X | None``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from qilu.errors import ConfigError

T = TypeVar("T")


def bounds(
    low: float | None = None, high: float | None = None, *, positive: bool = False
) -> dict[str, Any]:
    """``field(metadata=bounds(...))``: inclusive numeric bounds (``positive``: > 0)."""
    return {"low": low, "high": high, "positive": positive}


def _fail(key: str, problem: str) -> ConfigError:
    return ConfigError(key, problem)


def _convert(tp: Any, value: Any, key: str) -> Any:  # noqa: PLR0911, PLR0912 - one branch per type
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        return _convert(rest[0], value, key)
    if origin is typing.Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise _fail(key, f"must be one of {', '.join(repr(a) for a in allowed)}, "
                             f"got {value!r}")  # fmt: skip
        return value
    if origin is list:
        if not isinstance(value, list):
            raise _fail(key, f"must be an array, got {type(value).__name__}")
        (item,) = get_args(tp)
        return [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _fail(key, f"must be a table, got {type(value).__name__}")
        _, item = get_args(tp)
        return {str(k): _convert(item, v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _fail(key, f"must be a table, got {type(value).__name__}")
        return build(tp, value, key)  # type: ignore[arg-type]
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(key, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise _fail(key, f"must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(key, f"must be a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"{key}: unsupported annotation {tp!r}")  # a programming error


def _check_bounds(meta: Mapping[str, Any], value: Any, key: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    low, high = meta.get("low"), meta.get("high")
    if meta.get("positive") and not value > 0:
        raise _fail(key, f"must be greater than 0, got {value}")
    if low is not None and value < low:
        raise _fail(key, f"must be at least {low}, got {value}")
    if high is not None and value > high:
        raise _fail(key, f"must be at most {high}, got {value}")


def build(cls: type[T], table: Mapping[str, Any], prefix: str) -> T:
    """Check ``table`` against dataclass ``cls``; unknown keys and missing keys name the key."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    key = (lambda name: f"{prefix}.{name}") if prefix else (lambda name: name)
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise _fail(key(unknown[0]), f"unknown key (known: {', '.join(sorted(fields))})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _fail(key(name), "is required")
            continue
        value = _convert(hints[name], table[name], key(name))
        _check_bounds(f.metadata, value, key(name))
        kwargs[name] = value
    return cls(**kwargs)


def parse_env_value(text: str) -> Any:
    """An environment override: a TOML value if it parses as one (``5``, ``true``, ``[1, 2]``),
    otherwise the plain string."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_env(table: dict[str, Any], environ: Mapping[str, str], prefix: str) -> list[str]:
    """Overlay ``<prefix>SECTION__KEY=value`` variables on ``table``; returns the keys set."""
    applied = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(prefix):
            continue
        path = [p.lower() for p in name[len(prefix) :].split("__") if p]
        if not path:
            continue
        node = table
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise _fail(".".join(path), f"{name} sets a key inside a non-table value")
            node = child
        node[path[-1]] = parse_env_value(raw)
        applied.append(".".join(path))
    return applied
