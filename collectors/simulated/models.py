"""Simulated feeds: when each device reports, what it reports, and who is silent. Pure logic.

:class:`SimulatedFeed` turns a set of registered devices into the readings they would send.
Device ``d`` reports at ``phase(d) + k * interval + jitter(d, k)`` for every integer slot ``k``
(slots counted from the Unix epoch, the interval is the kind's nominal ``interval_s``, the
jitter a few percent of it); each report carries one reading per metric of the kind, from the
kind's model in :mod:`collectors.simulated.kinds`. Phase, jitter and values are hashes of
(seed, device id, slot or time), so the output depends only on (seed, start, devices, plan)
and on the time span polled, never on how often :meth:`SimulatedFeed.poll` is called.

:class:`SilencePlan` says which registered devices do not report: some never (registered, not
connected), some during windows (flaky links), whole sites during outages. It is the ground truth
a coverage test compares the pipeline's answer with.

Nothing here reads the clock, does I/O or uses global random state (a poll only pauses the
garbage collector while it runs, see :func:`_gc_paused`).
"""

from __future__ import annotations

import bisect
import gc
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from collectors.simulated.kinds import (
    GOLDEN,
    HOUR_US,
    M64,
    MINUTE_US,
    MODELS,
    NOISE_SHIFT,
    UNIFORM,
    US,
    Model,
    key_of,
    noise_index,
    unit,
)
from qilu.contract import Reading, ReadingColumns
from qilu.devices import KINDS
from qilu.registry import Device, Site

JITTER_SHARE = 0.03  # report times wander by up to +-3 % of the interval
WARMUP_US = 8 * HOUR_US  # stateful models (charging sessions) start this long before start
BUCKET_US = US  # width of a calendar bucket of pending reports

Window = tuple[int, int]  # silent over [start_us, end_us)


def _merge(windows: Iterable[Window]) -> tuple[Window, ...]:
    merged: list[Window] = []
    for start, end in sorted(w for w in windows if w[1] > w[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


@dataclass(frozen=True)
class SilencePlan:
    """Who is silent when: the ground truth of a simulated run.

    ``dead``: devices that never report (registered but never connected). ``windows``: device id
    -> silent ``[start_us, end_us)`` intervals (a flaky link). ``site_windows``: site id -> the
    same, for every device of the site (a substation's or ranch gateway's outage).
    """

    dead: frozenset[str] = frozenset()
    windows: Mapping[str, tuple[Window, ...]] = field(default_factory=dict)
    site_windows: Mapping[str, tuple[Window, ...]] = field(default_factory=dict)

    def windows_of(self, device: Device) -> tuple[Window, ...]:
        """The device's silent intervals, its site's included, sorted and merged."""
        own = self.windows.get(device.device_id, ())
        site = self.site_windows.get(device.site_id, ())
        return _merge((*own, *site))

    def is_silent(self, device: Device, ts_us: int) -> bool:
        """True when the device sends nothing at ``ts_us``."""
        if device.device_id in self.dead:
            return True
        return any(s <= ts_us < e for s, e in self.windows_of(device))

    @classmethod
    def random(
        cls,
        devices: Sequence[Device],
        seed: int,
        start_us: int,
        horizon_s: float,
        dead_share: float = 0.03,
        flaky_share: float = 0.05,
        outage_share: float = 0.02,
    ) -> SilencePlan:
        """A plausible plan over ``[start_us, start_us + horizon_s)``, deterministic in its inputs.

        ``dead_share`` of the devices never report; another ``flaky_share`` fall silent for
        5-30 minutes every 1.5-5 hours; ``outage_share`` of the sites go dark for 15-90 minutes
        every one to three days. Shares are exact (rounded) counts, chosen by hashed rank.
        """
        shares = {"dead_share": dead_share, "flaky_share": flaky_share,
                  "outage_share": outage_share}  # fmt: skip
        for name, share in shares.items():
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {share}")
        if dead_share + flaky_share > 1.0:
            raise ValueError("dead_share + flaky_share must not exceed 1")
        end_us = start_us + int(horizon_s * US)
        ranked = sorted(devices, key=lambda d: (key_of(seed, "silence", d.device_id), d.device_id))
        n_dead = round(len(ranked) * dead_share)
        n_flaky = round(len(ranked) * flaky_share)
        windows = {}
        for d in ranked[n_dead : n_dead + n_flaky]:
            rng = random.Random(key_of(seed, "flaky", d.device_id))
            windows[d.device_id] = _random_windows(rng, start_us, end_us, FLAKY_RHYTHM)
        sites = sorted({d.site_id for d in devices}, key=lambda s: (key_of(seed, "outage", s), s))
        site_windows = {}
        for s in sites[: round(len(sites) * outage_share)]:
            rng = random.Random(key_of(seed, "outage-times", s))
            site_windows[s] = _random_windows(rng, start_us, end_us, OUTAGE_RHYTHM)
        dead = frozenset(d.device_id for d in ranked[:n_dead])
        return cls(dead=dead, windows=windows, site_windows=site_windows)


# How silences recur, uniform ranges: (first after h, gap between h, length min)
Rhythm = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
FLAKY_RHYTHM: Rhythm = ((0.0, 5.0), (1.5, 5.0), (5.0, 30.0))
OUTAGE_RHYTHM: Rhythm = ((1.0, 24.0), (24.0, 72.0), (15.0, 90.0))


def _random_windows(
    rng: random.Random, start_us: int, end_us: int, rhythm: Rhythm
) -> tuple[Window, ...]:
    first_h, gap_h, length_min = rhythm
    out = []
    t = start_us + int(rng.uniform(*first_h) * HOUR_US)
    while t < end_us:
        length = int(rng.uniform(*length_min) * MINUTE_US)
        out.append((t, t + length))
        t += length + int(rng.uniform(*gap_h) * HOUR_US)
    return tuple(out)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause automatic garbage collection while a poll builds its readings.

    :meth:`SimulatedFeed.poll` allocates one tracked object per reading (the Reading), all
    alive until it returns and none in a reference cycle. Left on, the cyclic collector
    re-scans them, and every other live object, several times per large poll: that cost more
    than generating the readings (throughput x1.5 at 266,000 devices). Reference counting
    still frees everything; automatic collection resumes afterwards, unless the caller had
    turned it off itself. (:meth:`SimulatedFeed.poll_columns` allocates few tracked objects:
    its columns hold strings, integers and floats, which the collector does not track.)
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# One reporting device, as the hot loop wants it (only atomic values, so the garbage collector
# stops tracking it): (device id, metric names, ((low, high) per metric), phase, interval,
# jitter, key)
_Entry = tuple[str, tuple[str, ...], tuple[tuple[float, float], ...], int, int, int, int]


class SimulatedFeed:
    """The readings a set of devices sends, window by window: ``poll(now)`` returns those
    scheduled in ``(previous poll, now]``; the first poll returns each reporting device's most
    recent report at or before ``now``, as if the devices had been running already.

    ``start_us`` anchors the simulation: stateful models (charging sessions, energy registers)
    are drawn from a few hours before it. Same devices, seed, start and plan give identical
    output. Values outside a metric's valid range are clipped to it (the models stay inside).

    Pending reports wait in a calendar of one-second buckets (an insert is an append; a poll
    sorts only the buckets it reaches), which stays fast for hundreds of thousands of devices.
    """

    def __init__(
        self,
        devices: Sequence[Device],
        sites: Mapping[str, Site],
        *,
        seed: int,
        start_us: int,
        silence: SilencePlan | None = None,
    ) -> None:
        self.seed = seed
        self.start_us = start_us
        plan = silence if silence is not None else SilencePlan()
        anchor_us = start_us - WARMUP_US
        names = {k: tuple(m.key for m in v.metrics) for k, v in KINDS.items()}
        bounds = {k: tuple((m.low, m.high) for m in v.metrics) for k, v in KINDS.items()}
        self._entries: list[_Entry] = []  # reporting devices, by index
        self._models: list[Model] = []
        self._slot: list[int] = []  # slot number of each device's pending report
        self._windows: list[tuple[Window, ...] | None] = []  # silent windows, if any
        self._window_pos: list[int] = []  # first window not yet over
        seen: set[str] = set()
        for d in devices:
            if d.device_id in seen:
                raise ValueError(f"device {d.device_id!r} is listed twice")
            seen.add(d.device_id)
            kind, factory, site = KINDS.get(d.kind), MODELS.get(d.kind), sites.get(d.site_id)
            if kind is None or factory is None:
                raise ValueError(f"device {d.device_id!r}: no simulation model for kind {d.kind!r}")
            if site is None:
                raise ValueError(f"device {d.device_id!r}: unknown site {d.site_id!r}")
            interval = int(kind.interval_s * US)
            if interval < 2 * BUCKET_US:  # a next report must land in a later bucket
                raise ValueError(f"kind {d.kind!r}: intervals under 2 s are not simulated")
            if d.device_id in plan.dead:
                continue  # registered, never connected: no schedule at all
            slot_key = key_of(seed, "slot", d.device_id)
            phase = int(unit(slot_key, -1) * interval)
            self._models.append(factory(d, site, seed, anchor_us))
            self._entries.append((d.device_id, names[d.kind], bounds[d.kind], phase, interval,
                                  int(interval * JITTER_SHARE), slot_key))  # fmt: skip
            self._slot.append(0)
            self._windows.append(plan.windows_of(d) or None)
            self._window_pos.append(0)
        # pending reports: bucket number -> [time * n + device index]; cursor: now's bucket at
        # the last poll (None before the first), where the next poll starts
        self._n = max(1, len(self._entries))
        self._buckets: defaultdict[int, list[int]] = defaultdict(list)
        self._cursor: int | None = None

    @property
    def reporting(self) -> frozenset[str]:
        """Devices that report at some time (every device except the dead ones)."""
        return frozenset(e[0] for e in self._entries)

    def _slot_time(self, i: int, k: int) -> int:
        """When device i sends its k-th report (slots counted from the epoch)."""
        _, _, _, phase, interval, jitter, key = self._entries[i]
        return phase + k * interval + int((2.0 * UNIFORM[noise_index(key, k)] - 1.0) * jitter)

    def _silent(self, i: int, t_us: int) -> bool:
        """Whether device i is silent at t_us; t_us never decreases per device."""
        windows = self._windows[i]
        if windows is None:
            return False
        pos = self._window_pos[i]
        while pos < len(windows) and windows[pos][1] <= t_us:
            pos += 1
        self._window_pos[i] = pos
        return pos < len(windows) and windows[pos][0] <= t_us

    def _prime(self, now_us: int) -> list[int]:
        """Every device's latest report at or before now (time * n + index, sorted)."""
        n, latest = self._n, []
        for i, entry in enumerate(self._entries):
            phase, interval = entry[3], entry[4]
            # |jitter| < interval / 2: the last slot at or before now is k0 + 1, k0 or k0 - 1
            k = (now_us - phase) // interval + 1
            while (t_us := self._slot_time(i, k)) > now_us:
                k -= 1
            latest.append(t_us * n + i)
            self._slot[i] = k  # _emit moves on to slot k + 1
        latest.sort()
        return latest

    def poll(self, now_us: int) -> list[Reading]:
        """Every reading scheduled in (previous poll, now_us], in time order."""
        with _gc_paused():
            return list(self.poll_columns(now_us))

    def poll_columns(self, now_us: int) -> ReadingColumns:
        """The same as :meth:`poll`, column-wise: no Reading object built (the collector's
        hand-over; the edge agent's buffer stores the columns as they are)."""
        out = ReadingColumns()
        with _gc_paused():
            if self._cursor is None:
                self._emit(self._prime(now_us), out)
                self._cursor = now_us // BUCKET_US
            else:
                self._cursor = max(self._cursor, self._due(self._cursor, now_us, out))
        return out

    def _due(self, bucket_no: int, now_us: int, out: ReadingColumns) -> int:
        """Emit what is due from bucket ``bucket_no`` to ``now_us``; return now's bucket."""
        buckets, last, n = self._buckets, now_us // BUCKET_US, self._n
        while bucket_no <= last:
            due = buckets.pop(bucket_no, None)
            if due:
                due.sort()
                if bucket_no == last:  # the current second: keep what is not due yet
                    cut = bisect.bisect_right(due, now_us * n + n - 1)
                    if cut < len(due):
                        buckets[bucket_no] = due[cut:]
                        due = due[:cut]
                self._emit(due, out)
            bucket_no += 1
        return last

    def _emit(self, due: list[int], out: ReadingColumns) -> None:
        """Readings of the reports ``due`` (time * n + index, sorted); schedule the next ones.

        The simulator's hot loop: names are bound to locals and the slot-time formula of
        :meth:`_slot_time` is inlined, on purpose; a report extends each column once.
        """
        n, slots, entries, buckets = self._n, self._slot, self._entries, self._buckets
        windows, silent, models = self._windows, self._silent, self._models
        devices, metrics = out.devices.extend, out.metrics.extend
        times, values_of, qualities = out.ts_us.extend, out.values.extend, out.qualities.extend
        uniform, golden, mask, shift = UNIFORM, GOLDEN, M64, NOISE_SHIFT
        for key in due:
            t_us, i = divmod(key, n)
            device_id, names, bounds, phase, interval, jitter, slot_key = entries[i]
            k = slots[i] + 1
            slots[i] = k
            u = uniform[(((slot_key ^ k) * golden) & mask) >> shift]
            t_next = phase + k * interval + int((2.0 * u - 1.0) * jitter)
            buckets[t_next // BUCKET_US].append(t_next * n + i)
            if windows[i] is not None and silent(i, t_us):
                continue
            values, quality = models[i].sample(t_us)
            width = len(names)
            devices((device_id,) * width)
            metrics(names)
            times((t_us,) * width)
            values_of([low if v < low else high if v > high else v
                       for (low, high), v in zip(bounds, values)])  # noqa: B905 - same length  # fmt: skip
            qualities((quality,) * width)
