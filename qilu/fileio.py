"""Small file helpers shared by the platform and the agent (standard library only: the agent on
a Pi imports this too)."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8) so that a reader sees the old file or the new one,
    never part of one, and a crash or power cut leaves one of the two: written to a temporary
    file beside it (one per process and thread), fsynced, renamed over ``path``, then the
    folder fsynced so the rename itself is durable. A failed write leaves ``path`` as it was
    and removes the temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
