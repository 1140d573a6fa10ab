"""The agent's intake: collectors' hand-overs go to the durable buffer by group commit.

No task of its own: the first hand-over of a group arms a timer of ``group_commit_s``; when it
fires, everything handed over meanwhile goes to the buffer in one transaction (one fsync), and
every hand-over returns once that transaction committed. A collector whose peer waits for the
acknowledgement (an IEC 104 station with a full window) asks for its next hand-over to commit
at once (``Collector.commit_next``), with whatever waits with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from edge_agent.buffer import AddResult, Buffer
from edge_agent.chunks import joined, split
from qilu.contract import Reading, Sector

_HandOver = tuple[Sequence[Reading], "asyncio.Future[None]"]


class GroupCommit:
    """``committed(result)`` runs on the loop after each transaction (counts, wakes)."""

    def __init__(
        self,
        buffer: Buffer,
        db: ThreadPoolExecutor,
        *,
        group_commit_s: float,
        batch_max_readings: int,
        default_sector: Sector,
        committed: Callable[[AddResult], None],
    ) -> None:
        self.buffer = buffer
        self._db = db
        self._group_s = group_commit_s
        self._size = batch_max_readings
        self._default = default_sector
        self._on_committed = committed
        self._waiting: list[_HandOver] = []
        self._timer: asyncio.TimerHandle | None = None
        self._asap = False  # a collector asked for the next hand-over to commit at once

    def commit_next(self) -> None:
        self._asap = True

    async def sink(self, readings: Sequence[Reading]) -> None:
        """A collector's hand-over: returns once the readings are on disk.

        Hand-overs share one commit within ``group_commit_s``, unless the collector asked
        for this one to commit at once (:meth:`Collector.commit_next`: a peer is waiting for
        its acknowledgement); then it commits now, with whatever else is waiting."""
        asap, self._asap = self._asap, False
        if not readings:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiting.append((readings, fut))
        if asap:
            self.start()
        elif self._timer is None:  # the first hand-over of a group schedules its commit
            self._timer = loop.call_later(self._group_s, self.start)
        await fut

    def start(self) -> asyncio.Future[AddResult] | None:
        """Hand what was handed over to the buffer thread as one transaction (one fsync).

        Commits queue on the single buffer thread in order; each settles its hand-overs in
        :meth:`_committed`. No task and no extra wake-up per commit: the timer starts it, the
        buffer thread's completion finishes it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting, []
        if not batch:
            return None
        readings = joined([rs for rs, _ in batch])
        size, default, buffer = self._size, self._default, self.buffer
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._db, lambda: buffer.add(split(readings, size, default)))
        done.add_done_callback(lambda f: self._committed(batch, f))
        return done

    def _committed(self, batch: list[_HandOver], done: asyncio.Future[AddResult]) -> None:
        exc = done.exception() if not done.cancelled() else asyncio.CancelledError()
        for _, fut in batch:
            if fut.done():
                continue
            if exc is None:
                fut.set_result(None)
            else:  # handed back to every waiting collector
                fut.set_exception(exc)
        if exc is None:
            self._on_committed(done.result())

    async def flush(self) -> None:
        """Commit whatever is waiting now and wait for it (used on stop)."""
        done = self.start()
        if done is not None:
            with contextlib.suppress(Exception):  # already handed back to the collectors
                await done
