"""Coverage kept incrementally: per changed device, not per recomputation of the registry.

:func:`storage.coverage.compute` reads the whole dated registry and every device's liveness:
O(devices) each time. The API wants a fresh figure every second, and between two seconds
only liveness moves (docs/adr/0018-incremental-coverage.md). So:

* :class:`CoverageModel` (no I/O) holds what the registry of one province day counts, per
  target: for a device measure the devices (their city, whether the numerator's site
  condition holds), for a site measure the sites (their city, the condition, their devices
  and how many of them are connected); and each device's last reading and expected interval.
  A device that goes online or offline changes the numerator of exactly the (target, city)
  cells it belongs to, by one.
* :class:`IncrementalCoverage` feeds it from the database: in full (the registry and every
  device's liveness) at the start, on a new province day, when ``coverage_registry_version``
  moved (migration 062: any change to sites, devices, their versions, the device kinds, or
  liveness rows removed) or when it fell behind the change log's retention; otherwise only
  the liveness rows written by the transactions its previous snapshot could not see
  (``liveness_changes``, written by triggers on ``device_liveness``), the devices whose
  expected interval ran out since the previous call, and the T/CEC 102 piles whose operator's
  liveness changed (one query over the operators' piles).
* Registry changes come in bursts (an operator's inventory import moves the version dozens of
  times in a minute), and a full build costs seconds at province scale. A rebuild caused only
  by a registry change therefore waits until :func:`rebuild_wait_s` has passed since the last
  build finished: the longer of ``storage.coverage_rebuild_min_s`` and
  :data:`REBUILD_DUTY_K` times the last build's duration, the latter at most five minutes
  (0 = at once). Meanwhile the model keeps moving with the liveness of the devices it knows
  (the others wait for the rebuild, which reads every device's liveness afresh), and
  :attr:`Refresh.registry_behind_s` says how long the registry has been newer than the model.

The figures are the same as :func:`storage.coverage.compute` at the same ``now`` on the
same data whenever the model is not behind the registry
(tests/integration/test_coverage_incremental.py compares them after random changes); while
it is, they are those of the registry as the last build read it, with the liveness of now. A
database migrated before 062 gets the full computation every time.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from qilu.catalog import Catalog
from storage import coverage
from storage.coverage import PROVINCE_CODE, CityFigure, TargetCoverage

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = 1_000_000
# liveness_changes keeps ten minutes (storage maintenance); a model whose last look at it is
# older than this recomputes in full instead of trusting rows that may be gone
MAX_GAP_S = 300.0
LOG_RETENTION = timedelta(minutes=10)
# a full build runs its queries without parallel workers (for its transaction only)
BUILD_SERIAL = "SET LOCAL max_parallel_workers_per_gather = 0"
# a rebuild caused only by a registry change waits at least this many times the previous
# build's duration after it: builds then take at most 1/(K+1), under 5 %, of the process's
# time however often the registry changes (docs/adr/0018-incremental-coverage.md)
REBUILD_DUTY_K = 20.0
# ... but never longer than this (unless storage.coverage_rebuild_min_s is longer): a registry
# change counts within five minutes even after a build slowed by a busy machine, at the price
# of a higher share for builds slower than 15 s
REBUILD_WAIT_CAP_S = 300.0


def rebuild_wait_s(min_s: float, last_build_s: float, k: float = REBUILD_DUTY_K) -> float:
    """How long after a full build finished a rebuild caused only by a registry change waits:
    0 (at once) when ``min_s`` is 0, else the longer of ``min_s`` and ``k`` times the last
    build's duration ``last_build_s``, the latter capped at :data:`REBUILD_WAIT_CAP_S`."""
    if min_s <= 0:
        return 0.0
    return max(min_s, min(k * last_build_s, REBUILD_WAIT_CAP_S))


def epoch_us(t: datetime) -> int:
    """Microseconds since the Unix epoch (exact, as PostgreSQL's timestamptz)."""
    return (t - _EPOCH) // timedelta(microseconds=1)


@dataclass(slots=True)
class _Site:
    """A counted site of a connected site measure whose numerator condition holds."""

    target: int
    city: int
    all_rule: bool
    n_dev: int
    n_conn: int = 0

    def counted(self) -> bool:
        if self.all_rule:
            return self.n_dev > 0 and self.n_conn == self.n_dev
        return self.n_conn > 0


class CoverageModel:
    """The coverage of one province day's registry, kept up to date by liveness changes.

    Build: :meth:`add_device` for every device of the day's registry, :meth:`add_device_member`
    / :meth:`add_site_member` for what each target counts, then :meth:`start`. After that,
    :meth:`advance` with the liveness that changed; :meth:`figures` at any time.
    """

    def __init__(self, catalog: Catalog, day: date) -> None:
        self.catalog = catalog
        self.day = day
        self._city = {code: i for i, code in enumerate(catalog.city_codes)}
        n, c = len(catalog.targets), len(catalog.city_codes)
        self._connected = [t.measure.connected for t in catalog.targets]
        self._all_rule = [t.measure.site_rule == "all" for t in catalog.targets]
        self.denominator = [[0] * c for _ in range(n)]
        self.numerator = [[0] * c for _ in range(n)]
        self._expected: dict[int, int] = {}  # device -> expected interval (µs)
        self._seen: dict[int, int] = {}  # device -> last valid reading (µs since the epoch)
        self._operator_live: frozenset[int] = frozenset()
        # devices whose recent readings count only if their latest report passes a gate (a
        # telecontrol gateway: interrogated), and whether it does
        self._gate: dict[int, bool] = {}
        self._live: set[int] = set()
        self._cells: dict[int, list[tuple[int, int]]] = {}  # device -> (target, city) it moves
        self._sites: dict[int, list[_Site]] = {}  # device -> connected sites it belongs to
        self._expiry: dict[int, list[int]] = {}  # second -> devices whose liveness ends in it
        self._pending: set[int] = set()  # devices to look at in the next advance()
        self._pending_gated: set[int] = set()  # gated devices whose latest report changed
        self.now_us: int | None = None

    # -- building --------------------------------------------------------------------------
    def add_device(
        self, device_pk: int, expected_us: int, seen_us: int | None, gated: bool = False
    ) -> None:
        """``gated``: its recent readings make it connected only while its latest report
        passes a gate (a substation's telecontrol gateway: the report says interrogated);
        whether it does comes with :meth:`start` and :meth:`advance`."""
        self._expected[device_pk] = expected_us
        if gated:
            self._gate[device_pk] = False
        if seen_us is not None:
            self._seen[device_pk] = seen_us

    def add_device_member(self, target: int, city_code: str, device_pk: int, num_ok: bool) -> None:
        city = self._city.get(city_code)
        if city is None:  # not one of the catalog's cities: compute() does not show it either
            return
        self.denominator[target][city] += 1
        if not self._connected[target]:
            self.numerator[target][city] += num_ok
        elif num_ok:
            self._cells.setdefault(device_pk, []).append((target, city))

    def add_site_member(
        self, target: int, city_code: str, num_ok: bool, devices: Iterable[int]
    ) -> None:
        city = self._city.get(city_code)
        if city is None:
            return
        self.denominator[target][city] += 1
        if not self._connected[target]:
            self.numerator[target][city] += num_ok
            return
        if not num_ok:
            return  # never counted, whatever its devices do
        pks = list(devices)
        site = _Site(target, city, self._all_rule[target], len(pks))
        for pk in pks:
            self._sites.setdefault(pk, []).append(site)

    def start(
        self, now_us: int, operator_live: Iterable[int], gate_pass: Iterable[int] = ()
    ) -> None:
        """Every device's liveness at ``now_us``, counted once (``gate_pass``: the gated
        devices whose latest report passes)."""
        self._operator_live = frozenset(operator_live)
        for pk in gate_pass:
            if pk in self._gate:
                self._gate[pk] = True
        self.now_us = now_us
        for pk in self._expected:
            self._schedule(pk)
            if self._is_live(pk, now_us):
                self._live.add(pk)
                self._flip(pk, 1)

    # -- keeping up --------------------------------------------------------------------------
    def advance(
        self,
        now_us: int,
        seen: Iterable[tuple[int, int]],
        operator_live: Iterable[int],
        gate: Mapping[int, bool] | None = None,
    ) -> int:
        """Move to ``now_us`` (not earlier than the previous time) with the newest readings
        ``seen`` (device, µs; older or repeated ones change nothing), the set of T/CEC 102
        piles live now and, for gated devices whose latest report changed, whether it passes;
        returns how many devices went online or offline."""
        if self.now_us is None or now_us < self.now_us:
            raise ValueError("advance() needs start() and a time not before the previous one")
        for pk, us in seen:
            self.absorb((pk,), (us,))
        candidates, self._pending = self._pending, set()
        self._pending_gated = set()
        second = now_us // _US
        for due in [s for s in self._expiry if s <= second]:
            candidates.update(self._expiry.pop(due))
        op = frozenset(operator_live)
        candidates.update(op.symmetric_difference(self._operator_live))
        self._operator_live = op
        for pk, passes in (gate or {}).items():
            if self._gate.get(pk, passes) != passes:
                self._gate[pk] = passes
                candidates.add(pk)
        self.now_us = now_us
        return self._settle(candidates, now_us)

    def _settle(self, candidates: set[int], now_us: int) -> int:
        """Each candidate's liveness at ``now_us``, counted where it changed."""
        known, live_now = self._expected, self._live
        flips = 0
        for pk in candidates:
            if pk not in known:
                continue
            live = self._is_live(pk, now_us)
            if live:
                self._schedule(pk)
            if live != (pk in live_now):
                flips += 1
                if live:
                    self._live.add(pk)
                    self._flip(pk, 1)
                else:
                    self._live.discard(pk)
                    self._flip(pk, -1)
        return flips

    def figures(self, as_of: datetime) -> list[TargetCoverage]:
        """Every target's coverage, shaped as :func:`storage.coverage.compute` returns it."""
        out = []
        for t, target in enumerate(self.catalog.targets):
            province, *cities = self.figures_at(t)
            out.append(TargetCoverage(target, as_of, province, tuple(cities)))
        return out

    def figures_at(self, target: int) -> tuple[CityFigure, ...]:
        """The province's figure of the ``target``-th target, then each city's."""
        cities = [
            CityFigure(code, self.numerator[target][i], self.denominator[target][i])
            for i, code in enumerate(self.catalog.city_codes)
        ]
        province = CityFigure(
            PROVINCE_CODE, sum(c.numerator for c in cities), sum(c.denominator for c in cities)
        )
        return (province, *cities)

    def absorb(self, devices: Iterable[int], times: Iterable[int]) -> None:
        """Newest readings (device, µs since the epoch) for the next :meth:`advance`, as the
        change log holds them: older or repeated ones change nothing."""
        known, last, live_now, gate = self._expected, self._seen, self._live, self._gate
        for pk, us in zip(devices, times, strict=True):
            if us > last.get(pk, -1 << 62) and pk in known:
                last[pk] = us
                if pk in gate:
                    self._pending_gated.add(pk)
                # a live device stays live (its time only moved forward); its pending look in
                # the second its old liveness ended finds the new time and looks again later
                if pk not in live_now:
                    self._pending.add(pk)

    def gated_changed(self) -> list[int]:
        """The gated devices whose latest report :meth:`absorb` moved: whether they pass
        their gate now goes with the next :meth:`advance`."""
        return sorted(self._pending_gated)

    @property
    def devices(self) -> int:
        return len(self._expected)

    # -- internals ---------------------------------------------------------------------------
    def _is_live(self, pk: int, now_us: int) -> bool:
        # coverage._LIVE_READINGS: the rule of migration 066, qilu_seen_within (last_seen >
        # now - expected_interval), evaluated here on the model's integers because it runs for
        # each changed device every second without a query; the full computation and the
        # database's view use the SQL function, and the test of this module holds the two
        # equal at the boundary (tests/integration/test_coverage_incremental.py); or a live pile
        seen = self._seen.get(pk)
        if seen is not None and seen > now_us - self._expected[pk] and self._gate.get(pk, True):
            return True
        return pk in self._operator_live

    def _schedule(self, pk: int) -> None:
        """Look at ``pk`` again in the second its readings' liveness ends."""
        seen = self._seen.get(pk)
        if seen is not None:
            self._expiry.setdefault((seen + self._expected[pk]) // _US, []).append(pk)

    def _flip(self, pk: int, d: int) -> None:
        for target, city in self._cells.get(pk, ()):
            self.numerator[target][city] += d
        for site in self._sites.get(pk, ()):
            before = site.counted()
            site.n_conn += d
            after = site.counted()
            if before != after:
                self.numerator[site.target][site.city] += 1 if after else -1


# --- the database side ----------------------------------------------------------------------
# A gate on readings-liveness, as storage.coverage's connected condition has it: a substation's
# telecontrol gateway counts only while its latest report says interrogated (the gateways that
# pass: coverage.GATEWAYS_INTERROGATED; asked only for the gateways whose report changed).
_GATE_QUERY: sql.SQL | sql.Composed | None = coverage.GATEWAYS_INTERROGATED
_GATED_KIND = coverage.GATED_KIND
_LONG_AGO = datetime(1, 1, 2, tzinfo=UTC)
_DEVICES = sql.SQL(
    "SELECT d.device_pk, (extract(epoch FROM k.expected_interval) * 1000000)::int8,"
    " (extract(epoch FROM l.last_seen) * 1000000)::int8, d.kind = %(gated)s"
    " FROM {devices} d JOIN device_kinds k ON k.kind = d.kind"
    " LEFT JOIN device_liveness l ON l.device_pk = d.device_pk"
).format(devices=coverage._DEVICES_ON)
# the arrays as the triggers wrote them (a row per writing statement): older or repeated
# times of a device change nothing in the model, so no grouping in the server. The xmin is the
# whole cluster's oldest running transaction, so a long transaction anywhere holds it back:
# the rows at or above it already applied are left out by their transaction ids.
_CHANGES = (
    "SELECT xact::text, devices, seen_us FROM liveness_changes"
    " WHERE xact >= %s::xid8 AND xact <> ALL(%s::xid8[])"
)


@dataclass(frozen=True, slots=True)
class Refresh:
    """What one :meth:`IncrementalCoverage.compute` did."""

    full: bool
    reason: str  # why in full ("" when incremental)
    changed_devices: int  # liveness changes read from the log (incremental)
    flips: int  # devices that went online or offline
    seconds: float
    apply_seconds: float  # of which in the model (the rest: the database)
    # how long since the model first saw the registry newer than itself (its rebuild waits:
    # rebuild_wait_s); None when the model counts the registry as it is
    registry_behind_s: float | None = None


class IncrementalCoverage:
    """:func:`storage.coverage.compute`'s figures, kept by a :class:`CoverageModel`.

    One instance per process that recomputes coverage repeatedly (the API's refresher, the
    maintenance loop); not thread-safe (one thread calls it). ``rebuild_min_s``: a rebuild
    caused only by a registry change waits :func:`rebuild_wait_s` after the previous build
    (``storage.coverage_rebuild_min_s``; 0, the default here, rebuilds at once). ``clock``:
    monotonic seconds (injectable for tests)."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        rebuild_min_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rebuild_min_s < 0:
            raise ValueError(f"rebuild_min_s must not be negative, got {rebuild_min_s}")
        self.catalog = catalog
        self.rebuild_min_s = rebuild_min_s
        self._clock = clock
        self._model: CoverageModel | None = None
        self._mark = ""  # xmin of the previous snapshot (xid8 as text)
        self._applied: set[int] = set()  # transactions >= the mark whose rows are applied
        self._version: int | None = None  # coverage_registry_version the model was built from
        self._last = 0.0  # clock time of the previous look at the log
        self._built_at = 0.0  # clock time the last full build finished
        self._build_s = 0.0  # how long it took
        self._behind_since: float | None = None  # clock time the registry was seen newer
        self.last: Refresh | None = None

    def invalidate(self) -> None:
        """Recompute in full next time."""
        self._model = None

    def compute(self, conn: psycopg.Connection[TupleRow], now: datetime) -> list[TargetCoverage]:
        """Every target's coverage as of ``now``, read in one consistent snapshot."""
        t0 = time.perf_counter()
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                row = conn.execute(
                    "SELECT to_regclass('liveness_changes') IS NOT NULL,"
                    " to_regclass('operator_links') IS NOT NULL,"
                    " pg_snapshot_xmin(pg_current_snapshot())::text"
                ).fetchone()
                assert row is not None  # noqa: S101 - a SELECT without FROM returns one row
                has_log, has_operators, mark = bool(row[0]), bool(row[1]), str(row[2])
                if not has_log:
                    self._model, self._behind_since = None, None
                    result = self._full_compute(conn, now)
                    self._done(True, "migrated before 062", 0, 0, t0)
                    return result
                version_row = conn.execute("SELECT v FROM coverage_registry_version").fetchone()
                version = int(version_row[0]) if version_row else 0
                reason = self._why_full(now, version)
                if reason:
                    started = self._clock()
                    model = self._build(conn, now, has_operators)
                    self._model, self._version = model, version
                    self._built_at = self._last = self._clock()
                    self._build_s = self._built_at - started
                    self._mark, self._behind_since = mark, None
                    self._applied = set()
                    self._done(True, reason, 0, 0, t0)
                    return model.figures(now)
                if version != self._version and self._behind_since is None:
                    self._behind_since = self._clock()
                    logger.debug(
                        "the registry changed: coverage rebuild in %.0f s",
                        self._built_at + self._wait_s() - self._behind_since,
                    )
                current = self._model
                assert current is not None  # noqa: S101 - _why_full said it is there
                applied = [str(x) for x in sorted(self._applied)]
                with conn.cursor(binary=True) as cur:
                    changes = cur.execute(_CHANGES, (self._mark, applied)).fetchall()
                op = self._operator_live(conn, now) if has_operators else []
                t1 = time.perf_counter()
                for _, devs, times in changes:
                    current.absorb(devs, times)
                gated = current.gated_changed()
                passing = set(self._gate_pass(conn, gated)) if gated else set()
                gate = {pk: pk in passing for pk in gated}
                flips = current.advance(epoch_us(now), (), op, gate)
                floor = int(mark)
                self._applied = {x for x in self._applied if x >= floor}
                self._applied.update(int(x) for x, _, _ in changes if int(x) >= floor)
                self._mark, self._last = mark, self._clock()
                n_seen = sum(len(devs) for _, devs, _ in changes)
                self._done(False, "", n_seen, flips, t0, time.perf_counter() - t1)
                return current.figures(now)
        except BaseException:
            self._model = None  # a half-applied change must not survive
            raise

    # -- internals ---------------------------------------------------------------------------
    def _why_full(self, now: datetime, version: int) -> str:
        m = self._model
        if m is None:
            return "first computation"
        if m.day != coverage.province_day(now):
            return "a new province day"
        if m.now_us is not None and epoch_us(now) < m.now_us:
            return "time went backwards"
        clock = self._clock()
        if clock - self._last > MAX_GAP_S:
            return "too long since the previous look at the change log"
        if version != self._version and clock - self._built_at >= self._wait_s():
            return "the registry changed"
        return ""

    def _wait_s(self) -> float:
        return rebuild_wait_s(self.rebuild_min_s, self._build_s)

    def _full_compute(
        self, conn: psycopg.Connection[TupleRow], now: datetime
    ) -> list[TargetCoverage]:
        live = coverage.live_condition(conn)
        out = []
        for t in self.catalog.targets:
            query = coverage.build_query(t.measure, now, live)
            out.append(TargetCoverage(t, now, *coverage.figures(conn, self.catalog, query)))
        return out

    def _build(
        self, conn: psycopg.Connection[TupleRow], now: datetime, has_operators: bool
    ) -> CoverageModel:
        day = coverage.province_day(now)
        model = CoverageModel(self.catalog, day)
        with conn.cursor() as cur:
            # background work: one core at most. With parallel workers the build's queries took
            # both cores of the platform's start (1.3 backends + 1.1 workers on average over its
            # first 80 s, docs/capacity.md) while the ingest stored the agents' first reports
            cur.execute(BUILD_SERIAL)
            gated = _GATED_KIND if _GATE_QUERY is not None else None
            cur.execute(_DEVICES, {"day": day, "gated": gated})
            for pk, expected, seen, is_gated in cur:
                model.add_device(pk, expected, seen, bool(is_gated))
            for i, target in enumerate(self.catalog.targets):
                cur.execute(*coverage.membership_query(target.measure, day))
                if target.measure.unit == "device":
                    for pk, city, num_ok in cur:
                        model.add_device_member(i, city, pk, num_ok)
                else:
                    for _site, city, num_ok, devices in cur:
                        model.add_site_member(i, city, num_ok, devices)
        op = self._operator_live(conn, now) if has_operators else []
        model.start(epoch_us(now), op, self._gate_pass(conn, None))
        # the model is a few hundred thousand long-lived containers at province scale: left to
        # the collector, every full collection walks them all (~100 ms, measured) and lands in
        # some second's computation. Frozen, they are not walked again; being acyclic, they
        # are still freed by reference counting when the next build replaces them.
        gc.freeze()
        return model

    @staticmethod
    def _gate_pass(conn: psycopg.Connection[TupleRow], pks: list[int] | None) -> list[int]:
        """The gated devices (of ``pks``; all if None) whose latest report passes the gate,
        however old it is: the gate's query at a time long past (its own recency condition
        is the model's)."""
        if _GATE_QUERY is None:
            return []
        query = sql.SQL("SELECT g.device_pk FROM ({}) g").format(_GATE_QUERY)
        params: dict[str, object] = {"now": _LONG_AGO}
        if pks is not None:
            query = sql.SQL("{} WHERE g.device_pk = ANY(%(pks)s)").format(query)
            params["pks"] = pks
        return [r[0] for r in conn.execute(query, params)]

    @staticmethod
    def _operator_live(conn: psycopg.Connection[TupleRow], now: datetime) -> list[int]:
        return [r[0] for r in conn.execute(coverage.OPERATOR_LIVE_PILES, {"now": now})]

    def _done(
        self, full: bool, reason: str, changed: int, flips: int, t0: float, apply_s: float = 0.0
    ) -> None:
        behind = None if self._behind_since is None else self._clock() - self._behind_since
        self.last = Refresh(full, reason, changed, flips, time.perf_counter() - t0, apply_s, behind)
        if full:
            logger.debug("coverage recomputed in full (%s)", reason)


def prune_changes(conn: psycopg.Connection[TupleRow], now: datetime) -> int:
    """Delete ``liveness_changes`` rows older than :data:`LOG_RETENTION`; returns how many
    went (storage maintenance; a database migrated before 062 has none)."""
    row = conn.execute("SELECT to_regclass('liveness_changes') IS NOT NULL").fetchone()
    if not (row and row[0]):
        conn.commit()
        return 0
    n = conn.execute("DELETE FROM liveness_changes WHERE at < %s", (now - LOG_RETENTION,)).rowcount
    conn.commit()
    return n
