"""Opaque cursors for keyset pagination: the last key of a page, as URL-safe base64 JSON."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from fastapi import HTTPException


def encode(key: list[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in key]
    raw = json.dumps(plain, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(cursor: str, shape: tuple[type, ...]) -> list[Any]:
    """The key of ``cursor``, each part checked against ``shape`` (str, int or datetime);
    400 for anything that is not a cursor this API handed out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
        return _typed(parts, shape)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, "invalid cursor: pass next_cursor from a previous page") from exc


def _typed(parts: Any, shape: tuple[type, ...]) -> list[Any]:
    if not isinstance(parts, list) or len(parts) != len(shape):
        raise ValueError("wrong length")
    out: list[Any] = []
    for part, kind in zip(parts, shape, strict=True):
        if kind is datetime:
            ts = datetime.fromisoformat(part)
            if ts.tzinfo is None:
                raise ValueError("naive time")
            out.append(ts)
        elif isinstance(part, kind) and not isinstance(part, bool):
            out.append(part)
        else:
            raise ValueError("wrong type")
    return out
