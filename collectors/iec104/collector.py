"""IEC 60870-5-104 collector: the agent as controlling station of one or more telecontrol RTUs.

Each configured station gets its own TCP link and task. The protocol is sans-IO
(:mod:`.codec` frames and ASDUs, :mod:`.link` the APCI state machine with the k/w windows and
the t1/t2/t3 timers); this module is the thin asyncio adapter around it and the mapping of
information objects onto readings through the station's point table (:mod:`qilu.pointtable`).

Per link: connect (t0) -> STARTDT -> optional clock synchronisation -> general interrogation
(GI) -> spontaneous data, with counter interrogation every ``counter_interrogation_s`` when
set and a GI again every ``gi_interval_s``; a GI refused or not ended within ``gi_timeout_s``
is sent again. Received I frames are acknowledged only after the sink returned (the readings
are in the agent's buffer), so what the station forgets is never lost here; a hand-over after
which ``w`` frames await acknowledgement asks the agent to commit it at once
(:meth:`Collector.commit_next`), so the station's k window does not wait out the agent's
group-commit window. A protocol
violation, a t1 timeout or a closed socket ends the link; it is opened again after a backoff (from
``reconnect_initial_s``, doubling, capped at ``reconnect_max_s``, with jitter) and the GI runs
again, because a station buffers nothing while no master is connected. One station down never
stops the others: the collector's source counts as available while any link is up.

An information object whose address the table does not know is counted
(``qilu_iec104_unknown_points_total``) and dropped, never guessed; an ASDU type the collector
does not decode is counted and logged once per type.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Gauge

from collectors import metrics as agent_metrics
from collectors.base import Collector, DistinctTimes, ReadingSink
from collectors.iec104 import codec
from collectors.iec104.codec import Cot, ProtocolError
from collectors.iec104.link import Link, LinkParams, State
from qilu.contract import Quality, Reading
from qilu.devices import KINDS
from qilu.errors import ConfigError, RetryableError
from qilu.inventory import csv_rows
from qilu.pointtable import TYPE_NAMES, PointRow, parse_rows
from qilu.schema import bounds, build

logger = logging.getLogger(__name__)

_L = ["collector", "station"]
# the registry on the agent's metrics endpoint: its own where the agent keeps one
AGENT_REGISTRY: CollectorRegistry = getattr(agent_metrics, "REGISTRY", DEFAULT_REGISTRY)
LINK_UP = Gauge(
    "qilu_iec104_link_up",
    "1 while the station's link is in data transfer",
    _L,
    registry=AGENT_REGISTRY,
)
FRAMES_IN = Counter(
    "qilu_iec104_frames_in_total", "APDUs received from the station", _L, registry=AGENT_REGISTRY
)
FRAMES_OUT = Counter(
    "qilu_iec104_frames_out_total", "APDUs sent to the station", _L, registry=AGENT_REGISTRY
)
OBJECTS = Counter(
    "qilu_iec104_objects_total",
    "Information objects handed to the agent",
    _L,
    registry=AGENT_REGISTRY,
)
GI_SECONDS = Gauge(
    "qilu_iec104_gi_duration_seconds",
    "Duration of the last completed general interrogation",
    _L,
    registry=AGENT_REGISTRY,
)
LAST_DATA = Gauge(
    "qilu_iec104_last_data_timestamp_seconds",
    "Unix time of the last information object received (age = time() - this)",
    _L,
    registry=AGENT_REGISTRY,
)
UNKNOWN_TYPES = Counter(
    "qilu_iec104_unknown_types_total",
    "ASDUs of a type the collector does not decode",
    _L,
    registry=AGENT_REGISTRY,
)
UNKNOWN_POINTS = Counter(
    "qilu_iec104_unknown_points_total",
    "Information objects whose address is not in the point table (dropped)",
    _L,
    registry=AGENT_REGISTRY,
)
FOREIGN_ASDUS = Counter(
    "qilu_iec104_foreign_asdus_total",
    "ASDUs addressed to another common address than the station's (dropped)",
    _L,
    registry=AGENT_REGISTRY,
)
GI_RETRIES = Counter(
    "qilu_iec104_gi_retries_total",
    "General interrogations asked again: refused or not ended within gi_timeout_s",
    _L,
    registry=AGENT_REGISTRY,
)
LINK_RESETS = Counter(
    "qilu_iec104_link_resets_total",
    "Links ended by an error, timeout or closed socket",
    _L,
    registry=AGENT_REGISTRY,
)

# the link-state readings of a station's own device (docs/targets.md, "connected")
LINK_UP_METRIC = "link_up"
GI_METRIC = "gi_complete"
_DATA_WINDOW_S = KINDS["telecontrol_gateway"].expected_interval_s


@dataclass(frozen=True, slots=True)
class PointConfig:
    """One ``[[collectors.<name>.stations.points]]`` entry (or a row of ``point_table``)."""

    ioa: int = field(metadata=bounds(1, (1 << 24) - 1))
    device_id: str
    metric: str
    type: str = "M_ME_NC_1"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class StationConfig:
    """``[[collectors.<name>.stations]]``: one controlled station (RTU) and its link."""

    name: str
    host: str
    port: int = field(default=2404, metadata=bounds(1, 65535))
    common_address: int = field(default=1, metadata=bounds(1, 65534))
    device_id: str = ""  # the station's own device: link-state readings (empty: none)
    point_table: str = ""  # CSV as the platform writes it (qilu points import)
    points: list[PointConfig] = field(default_factory=list)
    timezone: str = ""  # of the time tags; default the collector's
    clock_sync: bool = False
    counter_interrogation_s: float = field(default=0.0, metadata=bounds(0))  # 0: never
    gi_timeout_s: float = field(default=60.0, metadata=bounds(positive=True))  # then again
    gi_interval_s: float = field(default=900.0, metadata=bounds(0))  # periodic GI; 0: never
    k: int = field(default=12, metadata=bounds(1, 32767))
    w: int = field(default=8, metadata=bounds(1, 32767))
    t0: float = field(default=30.0, metadata=bounds(positive=True))
    t1: float = field(default=15.0, metadata=bounds(positive=True))
    t2: float = field(default=10.0, metadata=bounds(positive=True))
    t3: float = field(default=20.0, metadata=bounds(positive=True))
    reconnect_initial_s: float = field(default=0.5, metadata=bounds(0.01, 60))
    reconnect_max_s: float = field(default=30.0, metadata=bounds(positive=True))
    state_interval_s: float = field(default=60.0, metadata=bounds(1))


@dataclass(frozen=True, slots=True)
class Iec104Config:
    type: str = "iec104"
    timezone: str = "Asia/Shanghai"  # stations in China commonly send local time
    stations: list[StationConfig] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Target:
    device_id: str
    metric: str
    scale: float
    offset: float


def load_point_table(path: str) -> list[PointRow]:
    """The checked CSV the platform wrote; ConfigError ``FILE:LINE: reason`` on any bad row."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(path, f"cannot read the point table: {exc.strerror}") from exc
    rows, errors = parse_rows(csv_rows(text))
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{path}:{first.line}", first.reason + more)
    return rows


class Station:
    """The state of one station's link: its table, counters and what it last reported."""

    def __init__(self, collector: str, cfg: StationConfig, tz: tzinfo) -> None:
        self.cfg = cfg
        self.tz = tz
        self.table: dict[int, Target] = {}
        self.times = DistinctTimes()  # untimed objects of one read share its time
        self.link: Link | None = None
        self.up = False
        self.gi_complete = False
        self.gi_started: float | None = None
        self.gi_deadline: float | None = None  # loop time the pending GI is asked again at
        self.next_gi: float | None = None  # loop time of the next periodic GI
        self.gi_trouble_logged = False  # a refused or unanswered GI: logged once until one ends
        self.last_data = 0.0
        self.unknown_types: set[int] = set()
        self.unknown_ioas = 0
        self.gi_count = 0
        self.resets = 0
        self.last_fault = ""  # why the last link ended
        self.outage_logged = False  # an outage is logged once, and the return once
        labels = (collector, cfg.name)
        self.m_up = LINK_UP.labels(*labels)
        self.m_in = FRAMES_IN.labels(*labels)
        self.m_out = FRAMES_OUT.labels(*labels)
        self.m_objects = OBJECTS.labels(*labels)
        self.m_gi = GI_SECONDS.labels(*labels)
        self.m_last = LAST_DATA.labels(*labels)
        self.m_unknown_types = UNKNOWN_TYPES.labels(*labels)
        self.m_unknown_points = UNKNOWN_POINTS.labels(*labels)
        self.m_resets = LINK_RESETS.labels(*labels)
        self.m_gi_retries = GI_RETRIES.labels(*labels)
        self.m_foreign = FOREIGN_ASDUS.labels(*labels)

    def params(self) -> LinkParams:
        c = self.cfg
        return LinkParams(k=c.k, w=c.w, t0=c.t0, t1=c.t1, t2=c.t2, t3=c.t3)


@dataclass(frozen=True, slots=True)
class DeviceRef:
    device_id: str


class Iec104Collector(Collector):
    type_name = "iec104"

    def __init__(self, name: str, config: Iec104Config) -> None:
        super().__init__(name)
        self.config = config
        self.stations: list[Station] = []

    @classmethod
    def from_config(cls, name: str, raw: Mapping[str, Any]) -> Iec104Collector:
        return cls(name, build(Iec104Config, raw, f"collectors.{name}"))

    def _key(self, field_: str) -> str:
        return f"collectors.{self.name}.{field_}"

    def _zone(self, name: str, key: str) -> tzinfo:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(self._key(key), f"{name!r} is not a time zone") from exc

    def validate(self) -> None:
        """Check the configuration and read the point tables (local files); no network."""
        c = self.config
        default_tz = self._zone(c.timezone, "timezone")
        if not c.stations:
            raise ConfigError(self._key("stations"), "is empty: add a [[stations]] entry")
        names: set[str] = set()
        stations: list[Station] = []
        for i, sc in enumerate(c.stations):
            key = f"stations[{i}]"
            if not sc.host:
                raise ConfigError(self._key(f"{key}.host"), "is required (the station's address)")
            if sc.name in names:
                raise ConfigError(self._key(f"{key}.name"), f"{sc.name!r} is used twice")
            names.add(sc.name)
            if sc.w * 3 > sc.k * 2:
                raise ConfigError(
                    self._key(f"{key}.w"), f"must be at most two thirds of k ({sc.k}): {sc.w}"
                )
            if not sc.t2 < sc.t1:
                raise ConfigError(self._key(f"{key}.t2"), "must be less than t1")
            if sc.reconnect_max_s < sc.reconnect_initial_s:
                raise ConfigError(
                    self._key(f"{key}.reconnect_max_s"), "must be at least reconnect_initial_s"
                )
            tz = self._zone(sc.timezone, f"{key}.timezone") if sc.timezone else default_tz
            st = Station(self.name, sc, tz)
            st.table = self._table(sc, key)
            st.times = DistinctTimes(limit=len(st.table) + 2)  # its points and link states
            stations.append(st)
        self.stations = stations

    def _table(self, sc: StationConfig, key: str) -> dict[int, Target]:
        rows: list[PointRow] = []
        if sc.point_table:
            rows.extend(load_point_table(sc.point_table))
        if sc.points:
            header = ["ioa", "type", "device_id", "metric", "scale", "offset", "unit"]
            inline = [(1, header)] + [
                (n + 2, [str(p.ioa), p.type, p.device_id, p.metric, repr(p.scale),
                         repr(p.offset), p.unit])
                for n, p in enumerate(sc.points)
            ]  # fmt: skip
            parsed, errors = parse_rows(inline)
            if errors:
                e = errors[0]
                raise ConfigError(self._key(f"{key}.points[{e.line - 2}]"), e.reason)
            rows.extend(parsed)
        if not rows:
            raise ConfigError(self._key(f"{key}.point_table"), "no points: set point_table")
        table: dict[int, Target] = {}
        series: set[tuple[str, str]] = set()
        # each row parses its own float objects: equal scales and offsets (mostly 1.0 and 0.0)
        # share one, 48 bytes less per point of a large table
        floats: dict[float, float] = {}
        for r in rows:
            if r.ioa in table:
                raise ConfigError(self._key(f"{key}.points"), f"IOA {r.ioa} is mapped twice")
            if (r.device_id, r.metric) in series:
                raise ConfigError(
                    self._key(f"{key}.points"), f"{r.device_id} {r.metric} is mapped twice"
                )
            series.add((r.device_id, r.metric))
            scale = floats.setdefault(r.scale, r.scale)
            offset = floats.setdefault(r.offset, r.offset)
            table[r.ioa] = Target(r.device_id, r.metric, scale, offset)
        return table

    def devices(self) -> list[DeviceRef]:
        """Every device the stations' tables and link states name (after :meth:`validate`),
        each once: what ``check-config --online`` asks the platform about."""
        ids: dict[str, None] = {}
        for st in self.stations:
            if st.cfg.device_id:
                ids[st.cfg.device_id] = None
            for t in st.table.values():
                ids[t.device_id] = None
        return [DeviceRef(d) for d in ids]

    # ---------------------------------------------------------------- running

    async def collect(self, sink: ReadingSink) -> None:
        if not self.stations:
            self.validate()
        async with asyncio.TaskGroup() as tg:
            for st in self.stations:
                tg.create_task(self._run(st, sink), name=f"iec104-{self.name}-{st.cfg.name}")

    def _report_availability(self) -> None:
        down = [s.cfg.name for s in self.stations if not s.up]
        if len(down) < len(self.stations):
            self.available(True)
        else:
            self.available(False, f"no station link is up ({', '.join(down)})")

    async def _run(self, st: Station, sink: ReadingSink) -> None:
        """One station, for ever: connect, run the link, back off, again."""
        c = st.cfg
        delay = c.reconnect_initial_s
        while True:
            reason = ""
            worked = False
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(c.host, c.port), c.t0
                )
            except (OSError, TimeoutError) as exc:
                reason = f"cannot connect to {c.host}:{c.port}: {exc or 'timeout'}"
            else:
                try:
                    await self._session(st, reader, writer, sink)
                except ProtocolError as exc:
                    reason = str(exc)
                except (OSError, RetryableError) as exc:
                    reason = str(exc) or type(exc).__name__
                finally:
                    worked = st.gi_complete  # this session's GI completed
                    writer.close()
                    with contextlib.suppress(OSError, ConnectionError):
                        await writer.wait_closed()
                    await self._link_down(st, sink)
                st.resets += 1
                st.last_fault = reason
                st.m_resets.inc()
            if worked:  # the link worked: the backoff starts over
                delay = c.reconnect_initial_s
            if not st.outage_logged:  # once per outage, not per retry
                logger.warning("%s/%s: link down: %s", self.name, c.name, reason)
                st.outage_logged = True
            # equal jitter: a pause between delay/2 and delay, so a station back after the first
            # retries is asked again within the current delay (never 1.5 times it)
            await asyncio.sleep(delay * (0.5 + 0.5 * random.random()))  # noqa: S311 - jitter
            delay = min(delay * 2, c.reconnect_max_s)

    async def _link_down(self, st: Station, sink: ReadingSink) -> None:
        was_up = st.up
        st.up = False
        st.gi_complete = False
        st.gi_deadline = st.next_gi = None
        st.link = None
        st.m_up.set(0)
        self._report_availability()
        if was_up:
            with contextlib.suppress(Exception):  # the agent may be stopping
                await sink(self._state_readings(st, time.time_ns() // 1000))

    @staticmethod
    def _healthy(st: Station) -> bool:
        """Connected in the sense of docs/targets.md: link up, last GI completed, data within
        the telecontrol_gateway kind's liveness window."""
        return st.up and st.gi_complete and time.time() - st.last_data <= _DATA_WINDOW_S

    def _state_readings(self, st: Station, now_us: int) -> list[Reading]:
        dev = st.cfg.device_id
        if not dev:
            return []
        return [
            Reading(dev, LINK_UP_METRIC, now_us, 1.0 if st.up else 0.0, Quality.GOOD),
            Reading(dev, GI_METRIC, now_us, 1.0 if st.gi_complete else 0.0, Quality.GOOD),
        ]

    async def _session(  # noqa: PLR0912, PLR0915 - the adapter's one loop, kept in one place
        self,
        st: Station,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sink: ReadingSink,
    ) -> None:
        c = st.cfg
        loop = asyncio.get_running_loop()
        link = Link(st.params())
        st.link = link
        now = loop.time()
        link.open(now)
        started = False
        next_state = now + c.state_interval_s
        next_ci = 0.0
        sent_in, sent_out = 0, 0
        while True:
            out = link.take_output()
            if out:
                writer.write(out)
                await writer.drain()
            st.m_in.inc(link.frames_in - sent_in)
            st.m_out.inc(link.frames_out - sent_out)
            sent_in, sent_out = link.frames_in, link.frames_out
            now = loop.time()
            wake = min(
                link.deadline(),
                next_state,
                next_ci or next_state,
                st.gi_deadline or next_state,
                st.next_gi or next_state,
            )
            try:
                data = await asyncio.wait_for(reader.read(65536), max(0.0, wake - now))
            except TimeoutError:
                data = None
            now = loop.time()
            if data == b"":
                raise RetryableError("the station closed the connection")
            readings: list[Reading] = []
            fault: ProtocolError | None = None
            if data:
                now_us = time.time_ns() // 1000
                try:
                    raws = link.receive(data, now)
                except ProtocolError as exc:
                    raws, fault = exc.asdus, exc
                for raw in raws:
                    try:
                        asdu = codec.decode_asdu(raw, st.tz)
                    except ProtocolError as exc:
                        fault = exc
                        break
                    self._asdu(st, asdu, now_us, readings, now)
            if not started and link.state is State.STARTED:
                started = True
                st.up = True
                st.m_up.set(1)
                self._report_availability()
                self._start_data(st, link, now)
                readings.extend(self._state_readings(st, time.time_ns() // 1000))
            if readings:
                if link.received_unacknowledged >= c.w:
                    # the acknowledgement follows this hand-over at once (w reached) and the
                    # station's window is filling: no group-commit wait (durability unchanged)
                    self.commit_next()
                await sink(st.times.apply(readings))
            if fault is not None:  # what came intact before it is handed over; now reset
                raise fault
            if data:
                link.processed(loop.time())
            now = loop.time()
            link.tick(now)
            if started and now >= next_state:
                next_state = now + c.state_interval_s
                if c.device_id and self._healthy(st):
                    await sink(self._state_readings(st, time.time_ns() // 1000))
            if started:
                self._gi_due(st, link, now)
            if started and c.counter_interrogation_s:
                if not next_ci:
                    next_ci = now + c.counter_interrogation_s
                elif now >= next_ci:
                    next_ci = now + c.counter_interrogation_s
                    link.send(codec.counter_interrogation(c.common_address), now)

    def _start_data(self, st: Station, link: Link, now: float) -> None:
        """After STARTDT con: set the clock (if configured), then the general interrogation."""
        ca = st.cfg.common_address
        if st.cfg.clock_sync:
            link.send(codec.clock_sync(ca, datetime.now(st.tz)), now)
        st.gi_complete = False
        self._send_gi(st, link, now)

    @staticmethod
    def _send_gi(st: Station, link: Link, now: float) -> None:
        link.send(codec.interrogation(st.cfg.common_address), now)
        st.gi_started = now
        st.gi_deadline = now + st.cfg.gi_timeout_s
        st.next_gi = None

    def _gi_due(self, st: Station, link: Link, now: float) -> None:
        """Ask again for a GI not ended within ``gi_timeout_s`` (refused, or its activation
        termination never came), and for the periodic one every ``gi_interval_s``. A
        periodic or repeated GI refreshes the image: ``gi_complete`` stays as it was."""
        if st.gi_deadline is not None and now >= st.gi_deadline:
            if not st.gi_trouble_logged:
                logger.warning(
                    "%s/%s: the general interrogation did not end within %g s; asking again "
                    "every %g s",
                    self.name, st.cfg.name, st.cfg.gi_timeout_s, st.cfg.gi_timeout_s,
                )  # fmt: skip
                st.gi_trouble_logged = True
            st.m_gi_retries.inc()
            self._send_gi(st, link, now)
        elif st.next_gi is not None and now >= st.next_gi:
            self._send_gi(st, link, now)

    def _interrogated(self, st: Station, now: float) -> None:
        """The general interrogation ended (activation termination)."""
        if st.gi_started is not None:
            st.m_gi.set(now - st.gi_started)
        st.gi_started = None
        st.gi_deadline = None
        interval = st.cfg.gi_interval_s
        st.next_gi = now + interval if interval else None
        st.gi_complete = True
        st.gi_count += 1
        if st.gi_trouble_logged:
            logger.warning("%s/%s: the general interrogation ended again", self.name, st.cfg.name)
            st.gi_trouble_logged = False
        if st.outage_logged:  # the return of a logged outage, logged once
            logger.warning("%s/%s: link up again, interrogated", self.name, st.cfg.name)
            st.outage_logged = False
        elif st.gi_count == 1:
            logger.info("%s/%s: link up, interrogated", self.name, st.cfg.name)

    def _asdu(  # noqa: PLR0912 - one branch per kind of ASDU
        self, st: Station, a: codec.Asdu, now_us: int, out: list[Reading], now: float
    ) -> None:
        c = st.cfg
        if a.common_address not in (c.common_address, 0xFFFF):
            st.m_foreign.inc()  # not this station's: no point of its table
            return
        if a.known:
            table = st.table
            append = out.append
            unknown = 0
            for o in a.objects:
                t = table.get(o.ioa)
                if t is None:
                    unknown += 1
                    continue
                q = o.quality
                ts = now_us
                if o.ts_us is not None:
                    if o.time_invalid:
                        q = Quality.BAD
                    else:
                        ts = o.ts_us
                append(Reading(t.device_id, t.metric, ts, o.value * t.scale + t.offset, q))
            if unknown:
                if not st.unknown_ioas:
                    logger.warning(
                        "%s/%s: information objects not in the point table (e.g. IOA %d of "
                        "%s); counted and dropped",
                        self.name, c.name,
                        next(o.ioa for o in a.objects if o.ioa not in table),
                        TYPE_NAMES.get(a.type_id, a.type_id),
                    )  # fmt: skip
                st.unknown_ioas += unknown
                st.m_unknown_points.inc(unknown)
            if a.objects:
                st.last_data = time.time()
                st.m_last.set(st.last_data)
                st.m_objects.inc(len(a.objects) - unknown)
            return
        if a.type_id == codec.C_IC_NA_1:
            if a.negative:  # asked again when gi_timeout_s has passed (_gi_due)
                if not st.gi_trouble_logged:
                    logger.warning(
                        "%s/%s: the station refused the general interrogation; asking again "
                        "every %g s",
                        self.name, c.name, c.gi_timeout_s,
                    )  # fmt: skip
                    st.gi_trouble_logged = True
            elif a.cot == Cot.ACTIVATION_TERM:
                self._interrogated(st, now)
                out.extend(self._state_readings(st, now_us))
        elif a.type_id == codec.M_EI_NA_1:  # the station (re)initialised: ask for everything
            if st.link is not None and st.link.state is State.STARTED:
                self._start_data(st, st.link, now)
        elif a.type_id in (codec.C_CI_NA_1, codec.C_CS_NA_1):
            if a.negative:
                logger.warning("%s/%s: the station refused type %d", self.name, c.name, a.type_id)
        elif a.type_id not in st.unknown_types:
            st.unknown_types.add(a.type_id)
            st.m_unknown_types.inc()
            logger.warning(
                "%s/%s: ASDU type %d (cause %d) is not decoded; counted, logged once",
                self.name, c.name, a.type_id, a.cot,
            )  # fmt: skip
        else:
            st.m_unknown_types.inc()
