"""Per-reading validation of a decoded envelope: pure, no I/O, the hot path of ingest.

Returns the accepted readings as columns ready for the database and one
:class:`qilu.errors.Rejection` per refused reading, with a machine-readable reason:

    unknown_device, unknown_metric, bad_value, non_finite_value, value_out_of_range,
    bad_timestamp (not an integer of microseconds: a float, text, msgpack's timestamp type),
    timestamp_out_of_range (before 2000 or further ahead than the allowed clock skew),
    too_old (older than the raw retention, ``max_age_s``: retention would drop it at its next
    pass, so it is refused instead of stored for a moment), bad_quality,
    device_decommissioned (a reading of a decommissioned device time-stamped on or after the
    decommissioning's effective day; earlier ones are late deliveries of real measurements and
    are accepted), foreign_site (the device's site is not in the sending agent's site list:
    docs/adr/0010-agent-authentication.md), conflicting_duplicate (a second reading of the
    same device, metric and time in one envelope with another value or quality; the first
    one is kept. An identical repeat is dropped silently.)

:meth:`Validator.validate_batch` checks a whole batch of envelopes at once with numpy and
hands over the readings of every envelope that is entirely acceptable; the others (any
reading refused, a repeated key, an unexpected type) go through :meth:`Validator.validate`
one by one, which gives the reasons. Both paths accept exactly the same readings
(tests/unit/test_validate_batch.py compares them).

:func:`validate_gaps` does the same for an envelope's gap records.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from itertools import chain, repeat

import numpy as np
import numpy.typing as npt

from qilu.contract import Envelope, Gap
from qilu.devices import KINDS
from qilu.errors import Rejection
from qilu.packed import PackedEnvelope, StrColumn, StrTable
from storage.rows import RowArrays, Rows

MIN_TS_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z
_QUALITIES = frozenset({0, 1, 2})
# device id -> (device pk, kind, metric key -> (metric id, low, high), site id, retired from µs)
_Entry = tuple[int, str, dict[str, tuple[int, float, float]], str | None, int | None]
_NEVER = np.iinfo(np.int64).max
_EXACT_INT_FLOAT = 2**53  # ints up to this compare with the float bounds as floats, exactly
# multipliers of the key hash that tells whether an envelope repeats a (device, metric, time)
# the batch's columns: device row, metric number, time, value, quality
_Columns = tuple[
    npt.NDArray[np.intp],
    npt.NDArray[np.intp],
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
    npt.NDArray[np.int64],
]
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


def _empty_numbers() -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.int64]
]:
    return np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int64)


class _Arrays:
    """The registry as arrays for :meth:`Validator.validate_batch`: device id -> row (among
    the devices of an agent's sites: :meth:`rows_of`, :meth:`table_of`), and per row the
    device's pk, kind and decommissioning; per (kind, metric) the metric id and the valid
    range."""

    def __init__(
        self,
        index: Mapping[str, _Entry],
        metric_ids: Mapping[str, int],
    ) -> None:
        kinds = sorted(KINDS)
        kind_no = {k: i for i, k in enumerate(kinds)}
        self.metric_no = {m: i for i, m in enumerate(sorted(metric_ids))}
        # the same for envelopes decoded into arrays (qilu/packed.py)
        self.metric_table = StrTable(list(self.metric_no), list(self.metric_no.values()))
        shape = (len(kinds), max(1, len(self.metric_no)))
        self.known = np.zeros(shape, bool)  # the kind has the metric
        self.metric_id = np.zeros(shape, np.int16)
        self.low = np.zeros(shape, np.float64)
        self.high = np.zeros(shape, np.float64)
        for spec in KINDS.values():
            for m in spec.metrics:
                if m.key in metric_ids:
                    at = kind_no[spec.key], self.metric_no[m.key]
                    self.known[at] = True
                    self.metric_id[at] = metric_ids[m.key]
                    self.low[at], self.high[at] = m.low, m.high
        n = len(index)
        self.row: dict[str, int] = {}
        self.pk = np.empty(n, np.int32)
        self.kind = np.empty(n, np.intp)
        self.retired = np.full(n, _NEVER, np.int64)
        for r, (dev, (pk, kind, _specs, _site, retired_from)) in enumerate(index.items()):
            self.row[dev] = r
            self.pk[r] = pk
            self.kind[r] = kind_no[kind]
            if retired_from is not None:
                self.retired[r] = retired_from
        self._site_devices: dict[str, list[str]] = {}
        for dev, entry in index.items():
            if entry[3] is not None:
                self._site_devices.setdefault(entry[3], []).append(dev)
        self._rows_of: dict[frozenset[str], dict[str, int]] = {}
        # the devices' lookups for envelopes decoded into arrays (qilu/packed.py)
        self._tables: dict[frozenset[str] | None, StrTable] = {}

    def table_of(self, sites: AbstractSet[str] | None) -> StrTable:
        """:meth:`rows_of` as a :class:`~qilu.packed.StrTable` (device id -> row): an agent's
        table is small enough to stay in the processor's caches, like its dictionary."""
        cached = sites is None or isinstance(sites, frozenset)
        table = self._tables.get(sites) if cached else None  # type: ignore[arg-type]
        if table is None:
            rows = self.rows_of(sites)
            table = StrTable(list(rows), list(rows.values()))
            if cached:
                self._tables[sites] = table  # type: ignore[index]
        return table

    def rows_of(self, sites: AbstractSet[str] | None) -> Mapping[str, int]:
        """Device id -> row for the devices of ``sites`` (None: every device). A device of
        another site is refused as foreign_site anyway, and which reason is the exact path's
        to tell, so a lookup that misses it is as good as one that finds it; a dictionary of
        one agent's devices is a fraction of the registry's, and its lookups, the dearest
        part of the batch's checks, miss the processor's caches less (~200 against ~270 ns
        per reading for an agent of a city's sector, measured on the province stream)."""
        if sites is None:
            return self.row
        rows = self._rows_of.get(sites) if isinstance(sites, frozenset) else None
        if rows is None:
            rows = {
                dev: self.row[dev] for site in sites for dev in self._site_devices.get(site, ())
            }
            if isinstance(sites, frozenset):
                self._rows_of[sites] = rows
        return rows


class Validator:
    """Validates envelopes against the registry; build once per device-index refresh."""

    def __init__(
        self,
        devices: dict[str, tuple[int, str]],
        metric_ids: dict[str, int],
        *,
        max_future_skew_s: float = 300.0,
        max_age_s: float | None = None,
        retired_us: dict[str, int] | None = None,
        site_of: Mapping[str, str] | None = None,
    ) -> None:
        self._devices = devices
        # kind -> metric key -> (metric id, low, high)
        kinds: dict[str, dict[str, tuple[int, float, float]]] = {
            kind.key: {
                m.key: (metric_ids[m.key], m.low, m.high)
                for m in kind.metrics
                if m.key in metric_ids
            }
            for kind in KINDS.values()
        }
        site_of = site_of if site_of is not None else {}
        retired = retired_us or {}
        # one lookup per reading: device id -> (pk, kind, its metrics, site, retired from)
        self._index: dict[str, _Entry] = {
            dev: (pk, kind, kinds[kind], site_of.get(dev), retired.get(dev))
            for dev, (pk, kind) in devices.items()
        }
        self._skew_us = int(max_future_skew_s * 1_000_000)
        self._max_age_us = None if max_age_s is None else int(max_age_s * 1_000_000)
        self._arrays = _Arrays(self._index, metric_ids)

    def knows(self, device_id: str) -> bool:
        return device_id in self._devices

    def site_sets(self) -> list[frozenset[str]]:
        """The agents' site sets this validator has looked devices up among (a successor
        built in the background is given them: :meth:`warm`)."""
        return list(self._arrays._rows_of)

    def warm(self, site_sets: Sequence[frozenset[str]]) -> None:
        """Build the device lookups of these site sets now rather than on the first batch."""
        for sites in site_sets:
            self._arrays.rows_of(sites)
            self._arrays.table_of(sites)

    def validate_batch(
        self,
        envs: Sequence[Envelope | PackedEnvelope],
        now_us: int,
        sites: Sequence[AbstractSet[str] | None],
    ) -> tuple[RowArrays, list[int]]:
        """The readings of every envelope whose readings are all acceptable (``sites[i]``: the
        sites of the agent that sent ``envs[i]``, as for :meth:`validate`), and the indexes of
        the other envelopes, for :meth:`validate` to tell what is wrong with them.

        The checks of :meth:`validate`, on the whole batch at once: the devices looked up
        among the sending agent's devices (:meth:`_Arrays.rows_of`; for envelopes decoded
        into arrays, :class:`~qilu.packed.PackedEnvelope`, in the agent's
        :class:`~qilu.packed.StrTable`, no Python work per reading), the rest in numpy. An
        envelope that repeats a (device, metric, time) goes to :meth:`validate` too
        (identical repeats are dropped there)."""
        lens = [len(e) for e in envs]
        packed = [isinstance(e, PackedEnvelope) for e in envs]
        if all(packed):
            cols = self._packed_columns(envs, sites)  # type: ignore[arg-type]
        elif not any(packed):
            got = self._list_columns(envs, sites)  # type: ignore[arg-type]
            if got is None:
                return RowArrays.of(Rows()), list(range(len(envs)))
            cols = got
        else:  # both kinds: each its own way, the readings in the batch's order
            cols = self._mixed_columns(envs, sites, packed, lens)
        row, metric, ts, value, quality = cols
        return self._check_batch(lens, now_us, row, metric, ts, value, quality)

    def _mixed_columns(
        self,
        envs: Sequence[Envelope | PackedEnvelope],
        sites: Sequence[AbstractSet[str] | None],
        packed: list[bool],
        lens: list[int],
    ) -> _Columns:
        """The columns of a batch with envelopes of both kinds; a list envelope's values that
        cannot be checked in arrays (:meth:`_list_columns` gives up) are marked unknown
        (row -1), so its envelopes go the exact way."""
        n = sum(lens)
        of_packed = np.repeat(np.array(packed, bool), lens)
        pi = [i for i, p in enumerate(packed) if p]
        li = [i for i, p in enumerate(packed) if not p]
        parts = self._packed_columns([envs[i] for i in pi], [sites[i] for i in pi])  # type: ignore[misc]
        listed = self._list_columns([envs[i] for i in li], [sites[i] for i in li])  # type: ignore[misc]
        row = np.full(n, -1, np.intp)
        metric = np.full(n, -1, np.intp)
        ts = np.zeros(n, np.int64)
        value = np.zeros(n, np.float64)
        quality = np.zeros(n, np.int64)
        for col, part in zip((row, metric, ts, value, quality), parts, strict=True):
            col[of_packed] = part
        if listed is not None:
            for col, part in zip((row, metric, ts, value, quality), listed, strict=True):
                col[~of_packed] = part
        return row, metric, ts, value, quality

    def _packed_columns(
        self, envs: Sequence[PackedEnvelope], sites: Sequence[AbstractSet[str] | None]
    ) -> _Columns:
        """The batch's columns from envelopes decoded into arrays: the devices looked up per
        agent (one :class:`~qilu.packed.StrTable` lookup for each agent's envelopes of the
        batch), the metrics in the table of metric names (one lookup for the batch)."""
        a = self._arrays
        n = sum(len(e) for e in envs)
        row = np.empty(n, np.intp)
        # the envelopes of each site set, with the readings' positions in the batch
        groups: dict[int, tuple[AbstractSet[str] | None, list[int]]] = {}
        for i, agent_sites in enumerate(sites):
            groups.setdefault(id(agent_sites), (agent_sites, []))[1].append(i)
        starts = np.zeros(len(envs) + 1, np.intp)
        np.cumsum([len(e) for e in envs], out=starts[1:])
        for agent_sites, members in groups.values():
            found = a.table_of(agent_sites).find(
                StrColumn.concat([envs[i].devices for i in members])
            )
            if len(members) == len(envs):
                row[:] = found
                break
            at = 0
            for i in members:
                k = len(envs[i])
                row[starts[i] : starts[i] + k] = found[at : at + k]
                at += k
        # the metrics of the whole batch read and looked up at once (a handful of names)
        metric = a.metric_table.find(StrColumn.read([e.metrics for e in envs]), runs=False)
        if not envs:
            return row, metric, *_empty_numbers()
        return (
            row,
            metric,
            np.concatenate([e.ts_us for e in envs]),
            np.concatenate([e.values for e in envs]),
            np.concatenate([e.qualities for e in envs]),
        )

    def _list_columns(
        self, envs: Sequence[Envelope], sites: Sequence[AbstractSet[str] | None]
    ) -> _Columns | None:
        """The batch's columns from envelopes of Python lists (:func:`qilu.contract.decode`);
        None when a value cannot be checked in arrays (a type other than the wire's, an
        integer beyond 64 bits or beyond a float's exact integers, an unhashable id)."""
        a = self._arrays
        n = sum(len(e) for e in envs)
        try:
            ts_col = list(chain.from_iterable(e.ts_us for e in envs))
            value_col = list(chain.from_iterable(e.values for e in envs))
            quality_col = list(chain.from_iterable(e.qualities for e in envs))
            value_types = set(map(type, value_col))
            if not (
                set(map(type, ts_col)) <= {int}
                and value_types <= {float, int}
                and set(map(type, quality_col)) <= {int}
            ):
                return None
            # device ids and metrics need no type check: a decoded value that is not a string
            # equals no key of the dictionaries (msgpack gives str, bytes, numbers, None,
            # lists, maps, extension types), so it is not found (-1) and its envelope goes the
            # exact way; an unhashable one (a list, a map) raises TypeError, below
            row = np.fromiter(
                chain.from_iterable(
                    map(a.rows_of(agent_sites).get, e.devices, repeat(-1))
                    for e, agent_sites in zip(envs, sites, strict=True)
                ),
                np.intp,
                n,
            )
            metric = np.fromiter(
                map(a.metric_no.get, chain.from_iterable(e.metrics for e in envs), repeat(-1)),
                np.intp,
                n,
            )
            ts = np.fromiter(ts_col, np.int64, n)
            value = np.fromiter(value_col, np.float64, n)
            quality = np.fromiter(quality_col, np.int64, n)
        except (OverflowError, TypeError):  # an integer beyond 64 bits, an unhashable id:
            return None  # validate() says which
        if int in value_types and n and np.abs(value).max() > _EXACT_INT_FLOAT:
            return None
        return row, metric, ts, value, quality

    def _check_batch(
        self,
        lens: list[int],
        now_us: int,
        row: npt.NDArray[np.intp],
        metric: npt.NDArray[np.intp],
        ts: npt.NDArray[np.int64],
        value: npt.NDArray[np.float64],
        quality: npt.NDArray[np.int64],
    ) -> tuple[RowArrays, list[int]]:
        """The numpy checks of :meth:`validate_batch` on the batch's columns."""
        a = self._arrays
        envs = len(lens)
        ok = (row >= 0) & (metric >= 0)
        if not ok.all():
            row[~ok] = 0
            metric[~ok] = 0
        # (kind, metric) as one index into the flattened tables
        km = a.kind[row] * a.known.shape[1] + metric
        min_ts = MIN_TS_US if self._max_age_us is None else now_us - self._max_age_us
        min_ts = max(min_ts, MIN_TS_US)
        ok &= a.known.ravel()[km]
        ok &= (ts >= min_ts) & (ts <= now_us + self._skew_us) & (ts < a.retired[row])
        ok &= np.isfinite(value) & (value >= a.low.ravel()[km]) & (value <= a.high.ravel()[km])
        ok &= (quality >= 0) & (quality <= 2)
        # no site check here: the devices were looked up among the sending agent's own
        # (:meth:`_Arrays.rows_of`, :meth:`_Arrays.table_of`), so a device of another site
        # was not found, and validate() refuses it as foreign_site
        env_of = np.repeat(np.arange(envs), lens)
        slow = np.zeros(envs, bool)
        slow[env_of[~ok]] = True
        pk = a.pk[row]
        metric_id = a.metric_id.ravel()[km]
        # a repeated (envelope, device, metric, time) has a repeated hash; a hash repeated
        # without one (a collision) only sends its envelopes the exact way
        key = (
            ts.astype(np.uint64) * _MIX[0]
            ^ ((pk.astype(np.uint64) << np.uint64(16)) | metric_id.astype(np.uint64)) * _MIX[1]
            ^ env_of.astype(np.uint64) * _MIX[2]
        )
        ordered = np.sort(key)
        repeated = ordered[1:][ordered[1:] == ordered[:-1]]
        if len(repeated):
            slow[env_of[np.isin(key, repeated)]] = True
        if not slow.any():  # the usual batch: every reading stored
            rows = RowArrays(pk, metric_id, ts, value, quality.astype(np.int16))
            return rows, []
        keep = ~slow[env_of]
        rows = RowArrays(
            pk[keep],
            metric_id[keep],
            ts[keep],
            value[keep],
            quality[keep].astype(np.int16),
        )
        return rows, np.flatnonzero(slow).tolist()

    def validate(
        self, env: Envelope, now_us: int, sites: AbstractSet[str] | None = None
    ) -> tuple[Rows, list[Rejection]]:
        """``sites``: the sending agent's sites (None: no site check, unauthenticated ingest)."""
        rows = Rows()
        rejected: list[Rejection] = []
        max_ts = now_us + self._skew_us
        # readings older than this are refused as too_old (after the range check, so a
        # timestamp before 2000 stays timestamp_out_of_range)
        min_ts = MIN_TS_US if self._max_age_us is None else now_us - self._max_age_us
        min_ts = max(min_ts, MIN_TS_US)  # a retention reaching back before 2000
        index = self._index
        add_pk, add_m, add_ts = rows.device_pk.append, rows.metric_id.append, rows.ts_us.append
        add_v, add_q = rows.value.append, rows.quality.append
        isfinite = math.isfinite
        for i, (dev, met, ts, val, q) in enumerate(
            zip(env.devices, env.metrics, env.ts_us, env.values, env.qualities, strict=True)
        ):
            entry = index.get(dev) if type(dev) is str else None
            if entry is None:
                rejected.append(Rejection(i, "unknown_device", repr(dev)[:80]))
                continue
            pk, kind, specs, site, retired_from = entry
            if sites is not None and site not in sites:
                rejected.append(Rejection(i, "foreign_site", f"{dev} at {site}"[:80]))
                continue
            spec = specs.get(met) if type(met) is str else None
            if spec is None:
                rejected.append(Rejection(i, "unknown_metric", f"{met!r} for {kind}"[:80]))
                continue
            if type(ts) is not int or not min_ts <= ts <= max_ts:
                rejected.append(_timestamp_rejection(i, ts, now_us, max_ts))
                continue
            if retired_from is not None and ts >= retired_from:
                rejected.append(Rejection(i, "device_decommissioned", f"{dev} at {ts} µs"[:80]))
                continue
            tv = type(val)
            if tv is not float and tv is not int:
                rejected.append(Rejection(i, "bad_value", f"type {tv.__name__}"))
                continue
            if not isfinite(val):
                rejected.append(Rejection(i, "non_finite_value", repr(val)))
                continue
            if not spec[1] <= val <= spec[2]:
                rejected.append(
                    Rejection(i, "value_out_of_range", f"{val!r} not in [{spec[1]}, {spec[2]}]")
                )
                continue
            if type(q) is not int or q not in _QUALITIES:
                rejected.append(Rejection(i, "bad_quality", repr(q)[:20]))
                continue
            add_pk(pk)
            add_m(spec[0])
            add_ts(ts)
            add_v(float(val))
            add_q(q)
        return _drop_repeats(rows, rejected, len(env))


def _timestamp_rejection(i: int, ts: object, now_us: int, max_ts: int) -> Rejection:
    """Why a reading's timestamp is refused (off the hot path: only for refused ones)."""
    if type(ts) is not int:
        return Rejection(i, "bad_timestamp", f"type {type(ts).__name__}: {ts!r}"[:80])
    if ts < MIN_TS_US:
        return Rejection(i, "timestamp_out_of_range", f"{ts} µs: before 2000")
    if ts > max_ts:
        return Rejection(i, "timestamp_out_of_range", f"{ts} µs: ahead of the allowed clock skew")
    days = (now_us - ts) / 86_400_000_000
    return Rejection(i, "too_old", f"{ts} µs: {days:.1f} days old, past the raw retention")


def _drop_repeats(rows: Rows, rejected: list[Rejection], n: int) -> tuple[Rows, list[Rejection]]:
    """Keep the first reading of each (device, metric, time); drop identical repeats silently,
    refuse conflicting ones as ``conflicting_duplicate`` (the natural key would otherwise keep
    one of them without a trace)."""
    # one set build in C per envelope on the hot path; the loop only for an envelope that
    # holds a repeated key
    if len(set(zip(rows.device_pk, rows.metric_id, rows.ts_us, strict=True))) == len(rows):
        return rows, rejected
    refused = {r.index for r in rejected}
    accepted = [i for i in range(n) if i not in refused]  # envelope index of each row
    first: dict[tuple[int, int, int], int] = {}  # key -> row
    kept = Rows()
    out = list(rejected)
    for row, (pk, m, ts, v, q) in enumerate(
        zip(rows.device_pk, rows.metric_id, rows.ts_us, rows.value, rows.quality, strict=True)
    ):
        key = (pk, m, ts)
        seen = first.get(key)
        if seen is None:
            first[key] = row
            kept.device_pk.append(pk)
            kept.metric_id.append(m)
            kept.ts_us.append(ts)
            kept.value.append(v)
            kept.quality.append(q)
        elif rows.value[seen] != v or rows.quality[seen] != q:
            detail = (
                f"reading {accepted[seen]} has the same device, metric and time: "
                f"{rows.value[seen]!r} (quality {rows.quality[seen]}) kept, {v!r} (quality {q})"
            )
            out.append(Rejection(accepted[row], "conflicting_duplicate", detail[:120]))
    out.sort(key=lambda r: r.index)
    return kept, out


# -- gap records (docs/adr/0001, stream/gaps.py) ------------------------------------------------
MAX_TEXT = 256  # agent id, boot id, device id, reason: identifiers, never long text
_INT4_MAX = 2**31 - 1  # agent_gaps.gap_no
_INT8_MAX = 2**63 - 1  # agent_gaps.dropped_readings


def _bad_text(s: str | None) -> bool:
    return s is not None and (len(s) > MAX_TEXT or "\x00" in s)


def validate_gaps(
    env: Envelope, now_us: int, max_future_skew_s: float = 300.0
) -> tuple[list[Gap], list[Rejection]]:
    """The gap records of an envelope that ``agent_gaps`` can store, and one
    :class:`Rejection` (index = the gap's position) for each other, with the reason:

        gap_number_out_of_range (gap_no beyond a 32-bit integer), bad_text (a NUL character,
        which PostgreSQL text cannot hold, or over MAX_TEXT characters, too long to index),
        timestamp_out_of_range (before 2000, after now + skew, or ending before it starts),
        bad_count (dropped count beyond a 64-bit integer)

    Without this a hostile gap record fails the database insert on every redelivery, and the
    consumer with it (tests/corpus/22..24, 30).
    """
    good: list[Gap] = []
    rejected: list[Rejection] = []
    max_ts = now_us + int(max_future_skew_s * 1_000_000)
    agent_bad = _bad_text(env.agent_id)
    for i, g in enumerate(env.gaps):
        if not -_INT4_MAX - 1 <= g.gap_no <= _INT4_MAX:
            rejected.append(Rejection(i, "gap_number_out_of_range", repr(g.gap_no)[:40]))
        elif agent_bad or _bad_text(g.boot_id) or _bad_text(g.device_id) or _bad_text(g.reason):
            rejected.append(Rejection(i, "bad_text", f"NUL or over {MAX_TEXT} characters"))
        elif not MIN_TS_US <= g.start_us <= g.end_us <= max_ts:
            rejected.append(
                Rejection(i, "timestamp_out_of_range", f"{g.start_us}..{g.end_us}"[:80])
            )
        elif g.dropped > _INT8_MAX:
            rejected.append(Rejection(i, "bad_count", repr(g.dropped)[:40]))
        else:
            good.append(g)
    return good, rejected
