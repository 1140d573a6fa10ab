"""How each device kind behaves: one small model per kind, pure functions of (constants, time).

A model is built once per device from hashed constants (seed, device id) and answers
``sample(t_us) -> (values, quality)`` with one value per metric of its kind, in the order of
:data:`qilu.devices.KINDS`. Models never read the clock, never do I/O and never touch global
random state: every random-looking number is a hash of (device key, time or event index), so a
value depends only on the seed, the simulation anchor and the instant asked for.

Only the charging pile keeps state (its chain of charging sessions, advanced forward in time and
drawn from a per-device counter), because the energy register must integrate power over every
session; its answers still do not depend on which instants were asked before.

Times are integer microseconds UTC; daily patterns follow Shandong local time (UTC+8, no DST).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from hashlib import blake2b
from typing import Protocol

from qilu.contract import Quality
from qilu.registry import Device, Site

US = 1_000_000
MINUTE_US = 60 * US
HOUR_US = 3600 * US
DAY_US = 86_400 * US
LOCAL_OFFSET_US = 8 * HOUR_US  # China Standard Time, UTC+8, no daylight saving
MINUTES_PER_DAY = 1440
KWH_PER_KW_US = 1.0 / (3600.0 * US)

GOOD = Quality.GOOD
UNCERTAIN = Quality.UNCERTAIN
Sample = tuple[tuple[float, ...], Quality]

# --------------------------------------------------------------------------- hashing

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
_TO_UNIT = 2.0**-53
_TO_16 = 1.0 / 65536.0


def mix64(x: int) -> int:
    """SplitMix64 finaliser: a fast, well-spread 64-bit integer hash (same on every platform)."""
    x = (x + GOLDEN) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def key_of(seed: int, *parts: object) -> int:
    """A stable 64-bit key for (seed, parts...): blake2b, never Python's salted ``hash()``."""
    data = "\x1f".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little")


def unit(key: int, n: int) -> float:
    """The n-th uniform number in [0, 1) of the stream ``key``."""
    return (mix64(key ^ ((n * GOLDEN) & M64)) >> 11) * _TO_UNIT


def gauss(h: int) -> float:
    """Roughly standard normal from the low 48 bits of a hash (Irwin-Hall of 3), within +-3."""
    return ((h & 0xFFFF) + ((h >> 16) & 0xFFFF) + ((h >> 32) & 0xFFFF)) * (2.0 * _TO_16) - 3.0


# Per-report noise is the hot path: one multiplicative hash of (device key, time) picks entries
# of fixed tables of hashed numbers; entries ``j``, ``j ^ 1``, ``j ^ 2``... are independent.
_NOISE_BITS = 14
NOISE_SHIFT = 64 - _NOISE_BITS
NOISE = tuple(gauss(mix64(j ^ 0x6A09E667F3BCC908)) for j in range(1 << _NOISE_BITS))
UNIFORM = tuple(unit(0xBB67AE8584CAA73B, j) for j in range(1 << _NOISE_BITS))


def noise_index(key: int, t_us: int) -> int:
    """Index into NOISE / UNIFORM for one report of one device."""
    return (((key ^ t_us) * GOLDEN) & M64) >> NOISE_SHIFT


def minute_of_day(t_us: int) -> int:
    """Local (UTC+8) minute of the day, 0..1439."""
    return ((t_us + LOCAL_OFFSET_US) // MINUTE_US) % MINUTES_PER_DAY


# --------------------------------------------------------------------------- daily shapes

Table = tuple[float, ...]


def _hourly(points: Sequence[float]) -> Table:
    """24 hourly values (at hh:00 local) -> a per-minute table, linear in between, wrapping."""
    out = []
    for m in range(MINUTES_PER_DAY):
        h, frac = divmod(m, 60)
        a, b = points[h], points[(h + 1) % 24]
        out.append(a + (b - a) * frac / 60.0)
    return tuple(out)


def _per_minute(fn: Callable[[float], float]) -> Table:
    return tuple(fn(m / 60.0) for m in range(MINUTES_PER_DAY))


def _lagged(table: Table, tau_min: float) -> Table:
    """Periodic steady state of a first-order lag (time constant ``tau_min``) driven by table."""
    alpha = 1.0 - math.exp(-1.0 / tau_min)
    y = sum(table) / len(table)
    for _ in range(max(3, math.ceil(8 * tau_min / MINUTES_PER_DAY))):
        for x in table:
            y += (x - y) * alpha
    out = []
    for x in table:
        y += (x - y) * alpha
        out.append(y)
    return tuple(out)


def _bump(h: float, centre: float, width: float) -> float:
    d = (h - centre + 12.0) % 24.0 - 12.0  # distance on the 24 h circle
    return math.exp(-0.5 * (d / width) ** 2)


def _smooth_window(h: float, start: float, end: float, edge: float = 0.75) -> float:
    """~1 inside [start, end) on the 24 h circle (may wrap midnight), ~0 outside; the steps
    take about ``edge`` hours."""
    since, length = (h - start) % 24.0, (end - start) % 24.0
    inside = min(since, length - since)  # distance to the nearer edge, when inside
    outside = min(since - length, 24.0 - since)  # the same, when outside
    depth = inside if since < length else -outside
    return 1.0 / (1.0 + math.exp(-depth * 4.0 / edge))


# Shandong grid daily load (share of the daily peak): night trough near 04:00, a morning peak
# about 11:00, a midday dip, and the evening peak about 19:00-20:00; normalised to mean 1.
_LOAD_POINTS = (0.72, 0.66, 0.62, 0.60, 0.59, 0.61, 0.68, 0.78, 0.88, 0.95, 0.99, 1.00,
                0.92, 0.90, 0.94, 0.95, 0.94, 0.96, 1.02, 1.06, 1.05, 0.98, 0.88, 0.79)  # fmt: skip
_LOAD_MEAN = sum(_LOAD_POINTS) / 24
LOAD_SHAPE = _hourly([p / _LOAD_MEAN for p in _LOAD_POINTS])
OIL_TAU_MIN = 180.0  # top-oil thermal time constant of a large power transformer
LOAD_SHAPE_LAGGED = _lagged(LOAD_SHAPE, OIL_TAU_MIN)
# Daily air temperature: coldest about 05:00, warmest about 14:30 (cosine, amplitude 1)
AMBIENT_DAY = _per_minute(lambda h: math.cos(2 * math.pi * (h - 14.5) / 24.0))
# Charging arrivals per pile and hour, relative: low at night, midday and evening peaks
ARRIVALS = _per_minute(
    lambda h: (
        0.10 + 0.25 * _bump(h, 8.5, 1.3) + 0.55 * _bump(h, 12.5, 1.6) + 0.90 * _bump(h, 19.0, 2.0)
    )
)
ARRIVALS_MAX = max(ARRIVALS)
# Cattle: feeding about 06:30 and 16:30; active in daylight, ruminating at night
FEEDING = _per_minute(lambda h: _bump(h, 6.5, 0.7) + _bump(h, 16.5, 0.7))
ACTIVITY = _per_minute(lambda h: 0.25 + 0.75 * _smooth_window(h, 5.5, 20.0, 1.5)
                       + 0.8 * FEEDING[int(h * 60)])  # fmt: skip
RUMINATION = _per_minute(lambda h: 1.0 - 0.45 * _smooth_window(h, 5.5, 20.0, 1.5)
                         - 0.5 * FEEDING[int(h * 60)])  # fmt: skip
DRINKING = _per_minute(lambda h: 0.25 + 0.55 * _smooth_window(h, 6.0, 19.5, 1.0)
                       + 0.4 * FEEDING[int(h * 60)])  # fmt: skip
# Barn doors and curtains closed 20:00-06:00; gases accumulate while closed (lag ~2 h)
BARN_CLOSED = _per_minute(lambda h: _smooth_window(h, 20.0, 6.0, 1.0))
BARN_GAS = _lagged(BARN_CLOSED, 120.0)
# Share of a day's feed taken from the silo by each minute (two mixer-wagon loads)
_FEED_STEPS = _per_minute(lambda h: _bump(h, 6.0, 0.3) + _bump(h, 16.0, 0.3))
_FEED_TOTAL = sum(_FEED_STEPS)
FEED_CUMULATIVE = tuple(x / _FEED_TOTAL for x in itertools.accumulate(_FEED_STEPS))

# Shandong daily-mean air temperature by season, per hour of a 365.25-day year counted from
# 1 January 1970 (Jinan: about 0 degC in mid-January, 29 degC in mid-July; mean ~15 degC)
HOURS_PER_YEAR = 8766
SEASONAL = tuple(
    14.7 - 14.0 * math.cos(2 * math.pi * (h / 24.0 - 16.0) / 365.25) for h in range(HOURS_PER_YEAR)
)

# Slow load wander (fraction of mean load) over one week, per minute: a sum of swings with
# periods of 1.5 to 6 hours; the lagged copy is the same through the oil's thermal lag (exact
# per component). Transformers read it from their own offset, so each wanders differently.
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY


def _wander(tau_min: float) -> Table:
    waves = [(n, 0.015 + 0.02 * unit(0x3C6EF372FE94F82B, n), 2 * math.pi * unit(0xA54FF53A, n))
             for n in (28, 41, 59, 83, 112)]  # cycles per week  # fmt: skip
    out = []
    for m in range(MINUTES_PER_WEEK):
        total = 0.0
        for n, amp, phase in waves:
            w = 2 * math.pi * n / MINUTES_PER_WEEK  # radians per minute
            gain, lag = 1.0 / math.hypot(1.0, w * tau_min), math.atan(w * tau_min)
            total += amp * gain * math.cos(w * m + phase - lag)
        out.append(total)
    return tuple(out)


WANDER = _wander(0.0)
WANDER_LAGGED = _wander(OIL_TAU_MIN)


def seasonal_c(t_us: int) -> float:
    """Daily-mean outdoor temperature for the season of ``t_us``."""
    return SEASONAL[(t_us // HOUR_US) % HOURS_PER_YEAR]


def ambient_c(t_us: int) -> float:
    """Outdoor air temperature: the season's mean +-4.5 degC over the day."""
    return SEASONAL[(t_us // HOUR_US) % HOURS_PER_YEAR] + 4.5 * AMBIENT_DAY[minute_of_day(t_us)]


# --------------------------------------------------------------------------- models


class Model(Protocol):
    def sample(self, t_us: int) -> Sample:
        """Values of every metric of the kind at ``t_us`` (in KINDS order), and their quality."""
        ...


class _Base:
    __slots__ = ("key",)

    def __init__(self, key: int) -> None:
        self.key = key

    def u(self, salt: int) -> float:
        """A per-device constant in [0, 1), one per salt."""
        return unit(self.key, salt)


def _city_offset_c(site: Site) -> float:
    """Small fixed temperature offset per city (coast vs inland), from the city code."""
    return (unit(key_of(0, "city", site.city_code), 0) - 0.5) * 2.0


# --- charging sector ------------------------------------------------------------------------

# OCPP 1.6 connector status codes (index into qilu.devices.CONNECTOR_STATES)
AVAILABLE, PREPARING, CHARGING, FINISHING, FAULTED = 0.0, 1.0, 2.0, 5.0, 8.0
_SESSION, _SESSION_FAULT, _FAULT = 0, 1, 2
DC_SHARE = 0.35  # share of public piles that are DC fast chargers
DC_RATINGS_KW = (60.0, 80.0, 120.0)
AC_KW = 7.0
FAULT_SHARE = 0.012  # a pile goes Faulted instead of starting a session
CHARGE_FAULT_SHARE = 0.006  # a session ends in a fault
# Every state lasts at least 60 s, longer than the widest gap between two reports (~31 s)
MIN_IDLE_US = 90 * US
RAMP_US = 60 * US


def pile_is_dc(device_id: str) -> bool:
    """AC (7 kW) or DC fast charger: decided by the pile id alone, the same for every seed."""
    return unit(key_of(0, "dc", device_id), 0) < DC_SHARE


class Pile(_Base):
    """A charging pile: a chain of sessions drawn forward in time from an anchor.

    Available -> Preparing -> Charging (ramp, hold, taper) -> Finishing -> Available; rarely
    Available -> Faulted -> Available, or Charging -> Faulted -> Available. Arrivals follow a
    daily pattern (thinned Poisson process); the energy register integrates the power profile.
    """

    __slots__ = ("arrive", "bp_e", "bp_p", "bp_t", "dc", "e_base", "ep_end", "ep_energy",
                 "mode", "n", "peak", "rated")  # fmt: skip

    def __init__(self, device: Device, site: Site, seed: int, anchor_us: int) -> None:
        super().__init__(key_of(seed, "pile", device.device_id))
        self.dc = pile_is_dc(device.device_id)
        u_rating = unit(key_of(0, "rating", device.device_id), 0)
        self.rated = DC_RATINGS_KW[int(u_rating * len(DC_RATINGS_KW))] if self.dc else AC_KW
        # arrivals per hour at the evening peak: DC piles turn over faster than AC ones
        peak = (0.9 if self.dc else 0.35) * (0.6 + 0.8 * self.u(1))
        if not site.public:
            peak *= 0.5
        self.peak = peak
        self.n = 0  # draws taken from the session stream
        self.e_base = (20_000.0 if self.dc else 2_000.0) * (0.05 + 2.0 * self.u(2))
        self.ep_energy = 0.0
        self.mode = _SESSION
        self.arrive = anchor_us  # before the anchor: Available, nothing happened yet
        self.ep_end = anchor_us
        self.bp_t: tuple[int, ...] = ()
        self.bp_p: tuple[float, ...] = ()
        self.bp_e: tuple[float, ...] = ()

    def _draw(self) -> float:
        self.n += 1
        return unit(self.key, self.n)

    def _next_arrival(self, t: int) -> int:
        rate_max = self.peak * ARRIVALS_MAX
        while True:  # thinning: candidates at the peak rate, each kept with p = rate(t) / peak
            t += int(-math.log(1.0 - self._draw()) / rate_max * HOUR_US) + 1
            if self._draw() * ARRIVALS_MAX < ARRIVALS[minute_of_day(t)]:
                return t

    def _episode(self, idle_from: int) -> None:
        """Draw the episode following an Available period that starts at ``idle_from``."""
        arrive = self._next_arrival(idle_from + MIN_IDLE_US)
        self.arrive = arrive
        if self._draw() < FAULT_SHARE:
            self.mode = _FAULT
            self.ep_energy = 0.0
            self.ep_end = arrive + int((10 + 110 * self._draw()) * 60 * US)
            return
        start = arrive + int((60 + 90 * self._draw()) * US)  # Preparing: plug-in, authorise
        if self.dc:
            duration_min = 12 + 43 * self._draw()
            power = self.rated * (0.7 + 0.3 * self._draw())
            taper_share, end_share = 0.35, 0.2
        else:
            duration_min = 60 + 300 * self._draw() ** 1.5
            power = AC_KW * (0.94 + 0.06 * self._draw())
            taper_share, end_share = 0.1, 0.5
        end = start + int(duration_min * 60 * US)
        taper = end - int(duration_min * 60 * US * taper_share)
        times = [start, start + RAMP_US, taper, end]  # ramp from 10 %, hold, taper
        powers = [0.1 * power, power, power, power * end_share]
        if self._draw() < CHARGE_FAULT_SHARE:
            cut = times[1] + int(self._draw() * (end - times[1]))
            self.mode = _SESSION_FAULT
            keep = [i for i, t in enumerate(times) if t < cut]
            cut_p = _interpolate(times, powers, cut)
            times = [times[i] for i in keep] + [cut]
            powers = [powers[i] for i in keep] + [cut_p]
            self.ep_end = cut + int((10 + 110 * self._draw()) * 60 * US)
        else:
            self.mode = _SESSION
            self.ep_end = end + int((75 + 825 * self._draw()) * US)  # Finishing: unplug
        energies = [0.0]
        for i in range(1, len(times)):
            step = (powers[i] + powers[i - 1]) * 0.5 * (times[i] - times[i - 1]) * KWH_PER_KW_US
            energies.append(energies[-1] + step)
        self.bp_t, self.bp_p, self.bp_e = tuple(times), tuple(powers), tuple(energies)
        self.ep_energy = energies[-1]

    def sample(self, t_us: int) -> Sample:
        while t_us >= self.ep_end:
            self.e_base += self.ep_energy
            self._episode(self.ep_end)
        if t_us < self.arrive:
            return (AVAILABLE, 0.0, self.e_base, 0.0), GOOD
        if self.mode == _FAULT:
            return (FAULTED, 0.0, self.e_base, 1.0), GOOD
        bt = self.bp_t
        if t_us < bt[0]:
            return (PREPARING, 0.0, self.e_base, 0.0), GOOD
        last = len(bt) - 1
        if t_us >= bt[last]:
            energy = self.e_base + self.ep_energy
            if self.mode == _SESSION_FAULT:
                return (FAULTED, 0.0, energy, 1.0), GOOD
            return (FINISHING, 0.0, energy, 0.0), GOOD
        j = 0
        while j + 1 < last and t_us >= bt[j + 1]:
            j += 1
        bp = self.bp_p
        dt = t_us - bt[j]
        p = bp[j] + (bp[j + 1] - bp[j]) * dt / (bt[j + 1] - bt[j])
        energy = self.e_base + self.bp_e[j] + (p + bp[j]) * 0.5 * dt * KWH_PER_KW_US
        noisy = p * (1.0 + 0.006 * NOISE[noise_index(self.key, t_us)])
        return (CHARGING, noisy, energy, 0.0), GOOD


def _interpolate(times: Sequence[int], values: Sequence[float], t: int) -> float:
    for i in range(1, len(times)):
        if t <= times[i]:
            t0, t1 = times[i - 1], times[i]
            return values[i - 1] + (values[i] - values[i - 1]) * (t - t0) / (t1 - t0)
    return values[-1]


# --- substation sector ----------------------------------------------------------------------

LOSS_RATIO = 5.0  # load losses / no-load losses at rated load (IEC 60076-7 style)
OIL_EXPONENT = 0.8
WINDING_EXPONENT = 1.6
_TWO_PI = 2.0 * math.pi


class Transformer(_Base):
    """Load follows the grid's daily curve plus slow wander; oil follows ambient plus the
    load-driven rise through a ~3 h thermal lag; the hot spot sits above the oil by a gradient
    that grows with the instantaneous load (IEC 60076-7 exponents)."""

    __slots__ = ("base", "city", "grad", "rise", "shape", "shift", "wander", "week_offset")

    def __init__(self, device: Device, site: Site, seed: int, anchor_us: int) -> None:
        super().__init__(key_of(seed, "transformer", device.device_id))
        self.base = 0.30 + 0.25 * self.u(1)  # mean load as a share of rating (N-1 margin)
        self.shape = 0.6 + 0.7 * self.u(2)  # industrial feeders are flatter than residential
        self.shift = int((self.u(3) - 0.5) * 80)  # minutes
        self.city = _city_offset_c(site)
        self.rise = 50.0 + 8.0 * self.u(4)  # rated top-oil rise, K
        self.grad = 20.0 + 6.0 * self.u(5)  # rated hot-spot to top-oil gradient, K
        self.week_offset = int(self.u(6) * MINUTES_PER_WEEK)
        self.wander = 0.7 + 0.6 * self.u(7)

    def sample(self, t_us: int) -> Sample:
        minute = (t_us + LOCAL_OFFSET_US) // MINUTE_US
        m = (minute + self.shift) % MINUTES_PER_DAY
        w = (minute + self.week_offset) % MINUTES_PER_WEEK
        s, b, wander = self.shape, self.base, self.wander
        k = b * (1.0 + s * (LOAD_SHAPE[m] - 1.0) + wander * WANDER[w])
        kl = b * (1.0 + s * (LOAD_SHAPE_LAGGED[m] - 1.0) + wander * WANDER_LAGGED[w])
        j = noise_index(self.key, t_us)
        oil = (ambient_c(t_us) + self.city
               + self.rise * ((kl * kl * LOSS_RATIO + 1.0) / (LOSS_RATIO + 1.0)) ** OIL_EXPONENT
               + 0.1 * NOISE[j ^ 1])  # fmt: skip
        winding = oil + self.grad * k**WINDING_EXPONENT + 0.15 * NOISE[j ^ 2]
        return (oil, winding, 100.0 * k + 0.4 * NOISE[j]), GOOD


# Grid frequency is one value for the whole synchronous grid: two slow swings plus meter noise
_F1, _F2 = _TWO_PI / 660.0, _TWO_PI / 217.0


class BusMeter(_Base):
    """Bus voltage a few percent above nominal, lower at peak load; the grid's frequency."""

    __slots__ = ("f1", "f2", "level", "nominal")

    def __init__(self, device: Device, site: Site, seed: int, anchor_us: int) -> None:
        super().__init__(key_of(seed, "bus", device.device_id))
        self.nominal = float(site.voltage_kv or 110)
        self.level = 1.03 + 0.012 * self.u(1)
        grid = key_of(seed, "grid")
        self.f1, self.f2 = _TWO_PI * unit(grid, 1), _TWO_PI * unit(grid, 2)

    def sample(self, t_us: int) -> Sample:
        j = noise_index(self.key, t_us)
        ts = t_us * 1e-6
        v = self.nominal * (self.level - 0.025 * (LOAD_SHAPE[minute_of_day(t_us)] - 1.0)
                            + 0.0008 * NOISE[j])  # fmt: skip
        f = (50.0 + 0.02 * math.sin(_F1 * ts + self.f1) + 0.012 * math.sin(_F2 * ts + self.f2)
             + 0.003 * NOISE[j ^ 1])  # fmt: skip
        return (v, f), GOOD


class TelecontrolGateway(_Base):
    """The station's IEC 104 link as the collector reports it while healthy: up, GI complete.
    (A simulated province can run the real protocol path instead: collectors/iec104.)"""

    __slots__ = ()

    def __init__(self, device: Device, site: Site, seed: int, anchor_us: int) -> None:
        super().__init__(key_of(seed, "rtu", device.device_id))

    def sample(self, t_us: int) -> Sample:
        return (1.0, 1.0), GOOD


SF6_ALARM_MPA = 0.45
PD_ALARM_PC = 500.0
LEAK_SHARE = 0.15  # GIS monitors on a compartment with a slow SF6 leak
_LEAK_BLOCK_US = 4 * DAY_US
_PD_BLOCK_US = 6 * HOUR_US
_PD_BURST_SHARE = 0.03  # share of 6 h blocks with a partial-discharge burst


class GisMonitor(_Base):
    """SF6 density steady near its fill pressure (a leaking compartment drops below the alarm
    threshold, then is topped up); partial discharge low, with rare bursts that raise the alarm."""

    __slots__ = ("fill", "leak_key", "leaky", "offset", "pd_base", "pd_key")

    def __init__(self, device: Device, site: Site, seed: int, anchor_us: int) -> None:
        super().__init__(key_of(seed, "gis", device.device_id))
        self.fill = 0.50 + 0.10 * self.u(1)
        self.leaky = self.u(2) < LEAK_SHARE
        self.leak_key = mix64(self.key ^ 0x1EA4)
        self.pd_key = mix64(self.key ^ 0xBD)
        self.pd_base = 3.0 + 20.0 * self.u(3)
        self.offset = int(self.u(4) * _LEAK_BLOCK_US)

    def _pressure(self, t_us: int) -> float:
        if not self.leaky:
            return self.fill
        block, into = divmod(t_us - self.offset, _LEAK_BLOCK_US)
        lk = self.leak_key
        start = int(unit(lk, 4 * block) * DAY_US)  # leak starts in the block's first day
        if into < start:
            return self.fill
        rate = (0.004 + 0.006 * unit(lk, 4 * block + 1)) / HOUR_US  # MPa per microsecond
        # the alarm brings a maintenance crew: topped up 2-8 h after the pressure hits 0.44
        fixed = start + (self.fill - 0.44) / rate + (2 + 6 * unit(lk, 4 * block + 2)) * HOUR_US
        if into >= fixed:
            return self.fill
        return max(0.35, self.fill - rate * (into - start))

    def sample(self, t_us: int) -> Sample:
        j = noise_index(self.key, t_us)
        p = self._pressure(t_us)
        alarm = p < SF6_ALARM_MPA
        p += 0.0015 * NOISE[j]
        if alarm != (p < SF6_ALARM_MPA):  # noise never contradicts the alarm relay
            p = SF6_ALARM_MPA - 0.0005 if alarm else SF6_ALARM_MPA
        pd = self.pd_base * math.exp(0.35 * NOISE[j ^ 1])
        block, into = divmod(t_us, _PD_BLOCK_US)
        pk = self.pd_key
        if unit(pk, 3 * block) < _PD_BURST_SHARE:
            start = unit(pk, 3 * block + 1) * (_PD_BLOCK_US - HOUR_US)
            length = (5 + 40 * unit(pk, 3 * block + 2)) * MINUTE_US
            if start <= into < start + length:
                pd = 150.0 * math.exp(3.0 * UNIFORM[j])  # 150 pC to 3,000 pC spikes
        return (p, pd, float(alarm), float(pd > PD_ALARM_PC)), GOOD


# --- ranch sector ---------------------------------------------------------------------------

_FEVER_BLOCK_US = 4 * DAY_US
_FEVER_SHARE = 0.05  # per cow and 4-day block
LOW_BATTERY_PCT = 10.0


def _site_shift(site: Site) -> int:
    """Minutes by which one ranch's routine (feeding, lights) differs from another's."""
    return int((unit(key_of(0, "routine", site.site_id), 0) - 0.5) * 60)


class Collar(_Base):
    """Body temperature ~38.5 degC with a small daily cycle and rare fevers; activity by day,
    rumination by night; a battery drained over weeks and replaced near empty."""

    __slots__ = ("act", "batt_cycle_us", "batt_phase_us", "batt_rate", "fever_key", "rum",
                 "shift", "temp")  # fmt: skip

    def __init__(self, device: Device, site: Site, seed: int, anchor_us: int) -> None:
        super().__init__(key_of(seed, "collar", device.device_id))
        self.temp = 38.5 + 0.3 * (self.u(1) - 0.5)
        self.act = 250.0 + 350.0 * self.u(2)  # steps/h at full daytime activity
        self.rum = 28.0 + 10.0 * self.u(3)  # min/h at night
        self.shift = _site_shift(site)
        self.batt_rate = (0.8 + 2.2 * self.u(4)) / DAY_US  # % per microsecond
        replace_at = 3.0 + 5.0 * self.u(5)
        self.batt_cycle_us = int((100.0 - replace_at) / self.batt_rate)
        self.batt_phase_us = int(self.u(6) * self.batt_cycle_us)
        self.fever_key = mix64(self.key ^ 0xFE)

    def _fever(self, t_us: int) -> float:
        fk = self.fever_key
        now = t_us // _FEVER_BLOCK_US
        for block in (now, now - 1):  # an episode (<= 2 days) may start in the previous block
            if unit(fk, 4 * block) >= _FEVER_SHARE:
                continue
            start = block * _FEVER_BLOCK_US + int(unit(fk, 4 * block + 1) * 2 * DAY_US)
            end = start + int((12 + 36 * unit(fk, 4 * block + 2)) * HOUR_US)
            if start <= t_us < end:
                ramp = min(1.0, (t_us - start) / (3 * HOUR_US), (end - t_us) / (3 * HOUR_US))
                return (1.0 + unit(fk, 4 * block + 3)) * ramp
        return 0.0

    def sample(self, t_us: int) -> Sample:
        m = (minute_of_day(t_us) + self.shift) % MINUTES_PER_DAY
        j = noise_index(self.key, t_us)
        fever = self._fever(t_us)
        sick = 1.0 - 0.25 * fever  # a feverish cow moves and ruminates less
        # body temperature peaks in the early evening, 3.5 h after the air
        temp = (self.temp + 0.25 * AMBIENT_DAY[(m - 210) % MINUTES_PER_DAY] + fever
                + 0.08 * NOISE[j])  # fmt: skip
        act = self.act * ACTIVITY[m] * sick * math.exp(0.25 * NOISE[j ^ 1])
        rum = self.rum * RUMINATION[m] * sick + 2.5 * NOISE[j ^ 2]
        rum = 0.0 if rum < 0.0 else 60.0 if rum > 60.0 else rum
        battery = 100.0 - self.batt_rate * ((t_us + self.batt_phase_us) % self.batt_cycle_us)
        quality = UNCERTAIN if battery < LOW_BATTERY_PCT else GOOD
        return (temp, act, rum, battery), quality


class BarnClimate(_Base):
    """Barn air: outdoor temperature damped and raised by the herd; closed at night, so
    humidity, ammonia and CO2 build up overnight and air out in the morning."""

    __slots__ = ("city", "co2", "nh3", "shift", "warm")

    def __init__(self, device: Device, site: Site, seed: int, anchor_us: int) -> None:
        super().__init__(key_of(seed, "barn", device.device_id))
        self.city = _city_offset_c(site)
        self.shift = _site_shift(site)
        self.warm = 2.0 + 2.0 * self.u(1)
        self.nh3 = 8.0 + 14.0 * self.u(2)
        self.co2 = 900.0 + 1600.0 * self.u(3)

    def sample(self, t_us: int) -> Sample:
        m = minute_of_day(t_us)
        mb = (m + self.shift) % MINUTES_PER_DAY
        j = noise_index(self.key, t_us)
        closed, gas = BARN_CLOSED[mb], BARN_GAS[mb]
        seasonal = SEASONAL[(t_us // HOUR_US) % HOURS_PER_YEAR]
        temp = (seasonal + self.city + 3.0 * AMBIENT_DAY[m] + self.warm + 2.0 * closed
                + 0.2 * NOISE[j])  # fmt: skip
        hum = 58.0 + 20.0 * gas - 0.8 * (temp - seasonal) + 2.0 * NOISE[j ^ 1]
        hum = 15.0 if hum < 15.0 else 98.0 if hum > 98.0 else hum
        nh3 = (3.0 + self.nh3 * gas) * math.exp(0.12 * NOISE[j ^ 2])
        co2 = (450.0 + self.co2 * gas) * math.exp(0.06 * NOISE[j ^ 3])
        return (temp, hum, nh3, co2), GOOD


class WaterTrough(_Base):
    """A float-valve trough: cattle drink it down (deeper by day), the valve refills it at a
    flow that matches the volume drunk; flow is zero while the level falls."""

    __slots__ = ("capacity_l", "cycle_us", "phase_us", "shift")

    def __init__(self, device: Device, site: Site, seed: int, anchor_us: int) -> None:
        super().__init__(key_of(seed, "trough", device.device_id))
        self.capacity_l = 300.0 + 700.0 * self.u(1)
        self.cycle_us = int((30 + 60 * self.u(2)) * MINUTE_US)
        self.phase_us = int(self.u(3) * self.cycle_us)
        self.shift = _site_shift(site)

    def sample(self, t_us: int) -> Sample:
        cycle, into = divmod(t_us + self.phase_us, self.cycle_us)
        began = t_us - into
        demand = DRINKING[(minute_of_day(began) + self.shift) % MINUTES_PER_DAY]
        depth = demand * (15.0 + 30.0 * unit(self.key, cycle))  # % of the trough drunk
        f = into / self.cycle_us
        j = noise_index(self.key, t_us)
        if f < 0.8:  # drinking: level falls
            level, flow = 96.0 - depth * f / 0.8, 0.0
        else:  # valve open: refills the volume drunk over the last fifth of the cycle
            level = 96.0 - depth * (1.0 - f) / 0.2
            minutes = 0.2 * self.cycle_us / MINUTE_US
            flow = depth / 100.0 * self.capacity_l / minutes * (1.0 + 0.05 * NOISE[j ^ 1])
        return (level + 0.3 * NOISE[j], flow), GOOD


class FeedSilo(_Base):
    """A silo drained twice a day by the mixer wagon and refilled every few days at ~10:00;
    the mass is the level times the silo's capacity."""

    __slots__ = ("capacity_kg", "cycle_days", "day0", "end_level", "rate")

    def __init__(self, device: Device, site: Site, seed: int, anchor_us: int) -> None:
        super().__init__(key_of(seed, "silo", device.device_id))
        self.capacity_kg = 8_000.0 + 22_000.0 * self.u(1)
        self.cycle_days = 3 + int(5 * self.u(2))
        self.day0 = int(self.u(3) * self.cycle_days)
        self.end_level = 8.0 + 12.0 * self.u(4)
        self.rate = (94.0 - self.end_level) / self.cycle_days  # % per day

    def _consumed(self, t_us: int) -> float:
        """Cumulative feed taken out since the epoch, in % of the silo."""
        day, rest = divmod(t_us + LOCAL_OFFSET_US, DAY_US)
        return self.rate * (day + FEED_CUMULATIVE[rest // MINUTE_US])

    def sample(self, t_us: int) -> Sample:
        local = t_us + LOCAL_OFFSET_US
        # refills at 10:00 local every cycle_days days; cycle k started at its refill
        k = (local - 10 * HOUR_US) // DAY_US + self.day0
        k -= k % self.cycle_days
        refill = (k - self.day0) * DAY_US + 10 * HOUR_US - LOCAL_OFFSET_US
        full = 92.0 + 5.0 * unit(self.key, k)
        level = full - (self._consumed(t_us) - self._consumed(refill))
        level += 0.3 * NOISE[noise_index(self.key, t_us)]
        level = 1.0 if level < 1.0 else 100.0 if level > 100.0 else level
        return (level, level * 0.01 * self.capacity_kg), GOOD


ModelFactory = Callable[[Device, Site, int, int], Model]

# device kind -> model; a kind without a model cannot be simulated (SimulatedFeed says so)
MODELS: dict[str, ModelFactory] = {
    "charging_pile": Pile,
    "transformer": Transformer,
    "bus_meter": BusMeter,
    "gis_monitor": GisMonitor,
    "telecontrol_gateway": TelecontrolGateway,
    "collar": Collar,
    "barn_climate": BarnClimate,
    "water_trough": WaterTrough,
    "feed_silo": FeedSilo,
}
