"""A watchdog for a loop that must keep going: the ingest's poll loop.

The loop calls :meth:`Watchdog.beat` whenever it makes progress (a poll returns records, an
empty poll finds every partition read to its end, a handled database or broker outage waits
out a retry's backoff). A thread
checks the time since the last beat; when it exceeds the timeout the loop is stuck somewhere
nothing handles (a synchronous Kafka call that never returns, a lock), and
:func:`exit_stalled` logs every thread's stack as one ERROR and ends the process with
:data:`STALL_EXIT_CODE`, so the service manager (systemd's ``Restart=on-failure``, ``qilu
run``) starts it again. The offsets are in the database (docs/adr/0016): the restart loses
and doubles nothing.

:meth:`Watchdog.stalled` is the decision without threads or I/O; the clock is injectable.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable

logger = logging.getLogger(__name__)

# the exit status of a process the watchdog ended (sysexits' EX_SOFTWARE): told apart from a
# crash (1) and a configuration error (2) in the service manager's log
STALL_EXIT_CODE = 70


def thread_stacks() -> str:
    """Every thread's stack, named, innermost call last."""
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame))
        parts.append(f"thread {names.get(ident, '?')} ({ident}):\n{stack}")
    return "\n".join(parts)


def exit_stalled(what: str, seconds: float) -> None:
    """Log the stall with every thread's stack and end the process at once (no clean-up:
    the stuck thread would hold it up)."""
    logger.error(
        "%s made no progress for %.0f s: exiting with code %d so it is restarted; "
        "the threads' stacks:\n%s",
        what,
        seconds,
        STALL_EXIT_CODE,
        thread_stacks(),
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(STALL_EXIT_CODE)


class Watchdog:
    """Fires ``on_stall(seconds)`` once when :meth:`beat` has not been called for
    ``timeout_s`` (0: never). ``on_beat`` (e.g. a Prometheus gauge's set-to-now) runs on each
    beat."""

    def __init__(
        self,
        what: str,
        timeout_s: float,
        *,
        on_stall: Callable[[str, float], None] = exit_stalled,
        on_beat: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._what, self._timeout_s = what, timeout_s
        self._on_stall, self._on_beat, self._clock = on_stall, on_beat, clock
        self._last = clock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        self._last = self._clock()  # one float store: atomic under the GIL
        if self._on_beat is not None:
            self._on_beat()

    def stalled(self) -> float | None:
        """Seconds since the last beat if over the timeout, else None."""
        if self._timeout_s <= 0:
            return None
        since = self._clock() - self._last
        return since if since > self._timeout_s else None

    def start(self) -> None:
        if self._timeout_s <= 0 or self._thread is not None:
            return
        self.beat()
        self._thread = threading.Thread(target=self._watch, name=f"{self._what}-watchdog")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        interval = min(self._timeout_s / 4, 5.0)
        while not self._done.wait(interval):
            since = self.stalled()
            if since is not None:
                self._on_stall(self._what, since)
                return
