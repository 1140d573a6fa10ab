"""Logging set-up for processes nobody watches: one line per event, module loggers."""

from __future__ import annotations

import contextlib
import faulthandler
import io
import logging
import signal
import sys


def setup(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # client libraries are chatty at INFO about every reconnect; their errors still show
    for noisy in ("kafka", "uvicorn.access", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # `kill -USR1 PID` prints every thread's stack to stderr: how to see where a process that
    # stopped making progress is waiting, without a debugger
    # (skipped without SIGUSR1, as on Windows, or when stderr is not a file, as under pytest)
    with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
