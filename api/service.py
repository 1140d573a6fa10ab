"""The coverage snapshot: computed in the background, served from memory.

At province scale a full coverage computation takes seconds; no request may wait for it. A
:class:`Refresher` thread recomputes a :class:`Snapshot` every ``api.coverage_cache_s`` seconds
(coverage per target x city, kept incrementally by ``storage.coverage_incremental``: only the
devices whose liveness changed since the previous snapshot, in full after a registry change,
no sooner than ``storage.coverage_rebuild_min_s`` after the previous build;
docs/adr/0018-incremental-coverage.md), the trajectory baselines from ``coverage_daily``, a
simulated registry's share of the province, pipeline health) and swaps
it in atomically. Requests read the newest snapshot and never touch the database for it;
before the first snapshot exists they answer 503 with ``Retry-After``. Server-sent-event
streams are woken when a new snapshot is published.

Answers built from a snapshot are memoised on it (per caller area and filter), so most requests
cost a dictionary lookup and a write of ready-made JSON bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import psycopg
from prometheus_client import Counter, Gauge, Histogram
from psycopg_pool import ConnectionPool, PoolTimeout

from qilu.catalog import Catalog
from qilu.settings import Settings
from storage import coverage, queries_api, trajectories
from storage import operators as operator_store
from storage.coverage_incremental import IncrementalCoverage

logger = logging.getLogger(__name__)

REFRESH_SECONDS = Histogram(
    "qilu_api_snapshot_refresh_seconds",
    "Time to recompute the coverage snapshot",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SNAPSHOT_TIME = Gauge(
    "qilu_api_snapshot_timestamp_seconds", "Unix time the served coverage snapshot was computed"
)
COVERAGE_BEHIND = Gauge(
    "qilu_api_coverage_registry_behind_seconds",
    "How long the registry has been newer than the coverage model the snapshot counts (its "
    "rebuild waits, storage.coverage_rebuild_min_s); 0 when up to date",
)
COVERAGE_BUILDS = Counter(
    "qilu_api_coverage_full_builds_total",
    "Full builds of the incremental coverage model, by reason",
    ["reason"],
)
COVERAGE_BUILD_SECONDS = Gauge(
    "qilu_api_coverage_full_build_seconds",
    "How long the coverage model's last full build took (a rebuild after a registry change "
    "waits at least 20 times this, storage.coverage_rebuild_min_s)",
)


@dataclass(frozen=True, slots=True)
class PipelineHealth:
    newest_reading: datetime | None
    devices: int
    online: int
    never_seen: int
    lag_records: int | None
    lag_checked_at: datetime | None
    lag_note: str
    # when newest_reading and the device counts were read (every api.lag_refresh_s, not with
    # every snapshot: the query reads every device); None: with the snapshot
    devices_checked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """A ready answer: JSON bytes and their entity tag (a digest of the bytes, so the same
    answer has the same tag in every API process and across restarts)."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, body: bytes) -> Answer:
        digest = hashlib.blake2b(body, digest_size=12).hexdigest()
        return cls(body, f'"{digest}"')

    def matches(self, if_none_match: str | None) -> bool:
        """True when an ``If-None-Match`` header names this answer (answer 304)."""
        if not if_none_match:
            return False
        tags = (t.strip().removeprefix("W/") for t in if_none_match.split(","))
        return any(t in (self.etag, "*") for t in tags)


@dataclass(slots=True)
class Snapshot:
    version: int
    as_of: datetime
    computed_in_s: float
    coverage: list[coverage.TargetCoverage]
    baselines: dict[tuple[str, str], tuple[date, float]]
    history_note: str  # "" or why there is no history (e.g. coverage_daily missing)
    health: PipelineHealth
    # a simulated registry's share of the province per sector (migration 052); empty = real
    fractions: dict[str, float] = field(default_factory=dict)
    # T/CEC 102 operators' link health (migration 056); empty without operators
    operators: list[operator_store.OperatorHealth] = field(default_factory=list)
    memo: dict[Any, Answer] = field(default_factory=dict)

    def answer(self, key: Any, build: Callable[[], bytes]) -> Answer:
        """The memoised answer for ``key`` (built once per snapshot)."""
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = Answer.of(build())
        return hit


LagProbe = Callable[[], int]


class Refresher:
    """Owns the background thread that keeps the snapshot fresh."""

    def __init__(
        self,
        pool: ConnectionPool,
        catalog: Catalog,
        settings: Settings,
        lag_probe: LagProbe | None = None,
        warm: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.pool, self.catalog = pool, catalog
        self._interval = settings.api.coverage_cache_s
        self._lag_interval = settings.api.lag_refresh_s
        self._lag_probe = lag_probe
        self._warm = warm
        self._snapshot: Snapshot | None = None
        # only the refresher thread uses it
        self._coverage = IncrementalCoverage(
            catalog, rebuild_min_s=settings.storage.coverage_rebuild_min_s
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lag_thread: threading.Thread | None = None
        self._lag: tuple[int | None, datetime | None, str] = (
            (None, None, "not measured yet")
            if lag_probe is not None
            else (None, None, "consumer lag is not measured by this API process")
        )
        self._failing = False
        # the status page's device counts (queries_api.liveness_summary reads every device:
        # 0.25-0.75 s at province scale) with when they were read; refreshed every
        # api.lag_refresh_s like the lag beside them, not with every snapshot (bench/
        # province_live.py: every 2 s it was a third of the primary's statement time)
        self._live: tuple[queries_api.Liveness, datetime] | None = None
        self._live_due = 0.0  # monotonic
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._waiters_lock = threading.Lock()

    # -- reading side (any thread, no I/O) ---------------------------------------------------
    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def subscribe(self) -> asyncio.Event:
        """An event set (on the caller's loop) whenever a new snapshot is published."""
        ev = asyncio.Event()
        with self._waiters_lock:
            self._waiters.append((asyncio.get_running_loop(), ev))
        return ev

    def unsubscribe(self, ev: asyncio.Event) -> None:
        with self._waiters_lock:
            self._waiters = [(lp, e) for lp, e in self._waiters if e is not ev]

    @property
    def subscribers(self) -> int:
        return len(self._waiters)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="coverage-refresher", daemon=True)
        self._thread.start()
        if self._lag_probe is not None:
            # its own thread: a slow or absent broker never delays the coverage snapshot
            self._lag_thread = threading.Thread(target=self._run_lag, name="lag-probe", daemon=True)
            self._lag_thread.start()

    def stop(self) -> None:
        self._stop.set()
        for t in (self._thread, self._lag_thread):
            if t is not None:
                t.join(timeout=30)

    def _run_lag(self) -> None:
        while not self._stop.is_set():
            self._refresh_lag()
            self._stop.wait(self._lag_interval)
        close = getattr(self._lag_probe, "close", None)
        if close is not None:  # the probe's broker clients must not outlive the API
            close()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.refresh_once()
            except (psycopg.Error, PoolTimeout) as exc:
                if not self._failing:
                    logger.warning("coverage snapshot refresh failing (will retry): %s", exc)
                    self._failing = True
            else:
                if self._failing:
                    logger.info("coverage snapshot refresh recovered")
                    self._failing = False
            elapsed = time.monotonic() - started
            self._stop.wait(max(0.05, self._interval - elapsed))

    # -- the heavy part ----------------------------------------------------------------------
    def refresh_once(self) -> Snapshot:
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        history_note = ""
        with self.pool.connection() as conn:
            rows = self._coverage.compute(conn, now)
            done = self._coverage.last
            if done is not None:
                COVERAGE_BEHIND.set(done.registry_behind_s or 0.0)
                if done.full:
                    COVERAGE_BUILDS.labels(done.reason).inc()
                    COVERAGE_BUILD_SECONDS.set(done.seconds)
            try:
                baselines = queries_api.first_observations(conn)
            except queries_api.RelationMissingError as exc:
                baselines, history_note = {}, f"no coverage history: {exc}"
            try:
                fractions = trajectories.simulation_fractions(conn)
            except queries_api.RelationMissingError:
                fractions = {}  # migrated before 052: a real registry as far as anyone knows
            if self._live is None or time.monotonic() >= self._live_due:
                self._live = (queries_api.liveness_summary(conn, now), now)
                self._live_due = time.monotonic() + self._lag_interval
            live, live_at = self._live
            try:
                operators = operator_store.health(conn, now)
            except psycopg.errors.UndefinedTable:
                operators = []  # migrated before 056: no operators
        lag, lag_at, lag_note = self._lag
        snap = Snapshot(
            version=(self._snapshot.version + 1) if self._snapshot else 1,
            as_of=now,
            computed_in_s=time.perf_counter() - t0,
            coverage=rows,
            baselines=baselines,
            history_note=history_note,
            fractions=fractions,
            operators=operators,
            health=PipelineHealth(
                live.newest_reading,
                live.devices,
                live.online,
                live.never_seen,
                lag,
                lag_at,
                lag_note,
                live_at,
            ),
        )
        if self._warm is not None:
            self._warm(snap)
        REFRESH_SECONDS.observe(snap.computed_in_s)
        self.publish(snap)
        return snap

    def publish(self, snap: Snapshot) -> None:
        """Serve ``snap`` from now on and wake the event streams."""
        SNAPSHOT_TIME.set(snap.as_of.timestamp())
        self._snapshot = snap
        self._publish()

    def _refresh_lag(self) -> None:
        if self._lag_probe is None:
            return
        try:
            self._lag = (self._lag_probe(), datetime.now(UTC), "")
        except Exception as exc:  # noqa: BLE001 - any broker client failure only blanks the figure
            if self._lag[0] is not None or self._lag[1] is None:
                logger.warning("ingest lag not measurable (Kafka): %s", exc)
            self._lag = (None, datetime.now(UTC), f"Kafka unreachable: {type(exc).__name__}")

    def _publish(self) -> None:
        with self._waiters_lock:
            waiters = list(self._waiters)
        for loop, ev in waiters:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # that loop is closed: its stream is gone
                self.unsubscribe(ev)

    def ping(self) -> None:
        with self.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
