"""Small pieces shared by the administration subcommands (``qilu agents``, ``qilu operators``).

Argument types, the "run ``qilu migrate`` first" guard, writing secrets that are shown once,
and the audit trail as ``show`` prints it.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from qilu.errors import QiluError
from qilu.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


class AuditLike(Protocol):
    """What :func:`audit_json` reads of an audit entry (``storage.audit.AuditEntry``)."""

    @property
    def at(self) -> datetime: ...
    @property
    def actor(self) -> str: ...
    @property
    def action(self) -> str: ...


def csv_list(text: str) -> list[str]:
    """``a, b,,c`` -> ``["a", "b", "c"]`` (argparse type of comma-separated ids)."""
    return [x.strip() for x in text.split(",") if x.strip()]


def needs_migration(migrations: str) -> Callable[[Handler], Handler]:
    """A database without the handler's tables (or columns): say what to do, not a traceback.

    ``migrations`` names them in the message, e.g. ``"migration 056"``.
    """

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def run(args: argparse.Namespace, settings: Settings) -> int:
            import psycopg

            try:
                return handler(args, settings)
            except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
                raise QiluError(
                    f"{exc.diag.message_primary}: run `qilu migrate` first ({migrations})"
                ) from exc

        return run

    return wrap


def emit_secret(out: Path | None, text: str, what: str) -> None:
    """Secrets shown once: to standard output, or to ``out`` with mode 0600 (``what`` says
    what was written, on standard error)."""
    if out is None:
        sys.stdout.write(text)
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    sys.stderr.write(f"{what} written to {out} (mode 0600)\n")


def audit_json(trail: Iterable[AuditLike]) -> list[dict[str, str]]:
    """An entity's audit trail as ``show`` prints it: when, who, what."""
    return [{"at": e.at.isoformat(), "actor": e.actor, "action": e.action} for e in trail]
