"""What every collector is: validate (no I/O) -> connect (retryable) -> collect -> stop (drain).

A collector turns one source (a simulator, an OCPP endpoint, a Modbus RTU, an MQTT topic)
into :class:`qilu.contract.Reading` objects and hands them to the agent through a sink. It
never talks to Kafka or to the buffer itself.

The agent builds each collector with ``from_config(name, table, **context)``, where
``table`` is its ``[collectors.<name>]`` table and ``context`` holds the keywords among
these that ``from_config`` declares: ``agent_id`` (the running agent's id, e.g. to keep
identities on a shared broker distinct between agents) and ``registry`` (the simulated
province, for simulated sources).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Iterable, Sequence

from qilu.contract import Quality, Reading

ReadingSink = Callable[[Sequence[Reading]], Awaitable[None]]
# (collector name, available, reason): the agent logs and counts transitions only
AvailabilityListener = Callable[[str, bool, str], None]
# the agent's: commit the next hand-over at once, not at the end of the group-commit window
CommitRequest = Callable[[], None]


class DistinctTimes:
    """Per (device, metric): a reading stamped with the same time as the previous one but a
    different value or quality gets the next free microsecond, in the order handed in; an
    identical repeat keeps its time (the platform drops it as a duplicate). The platform keeps
    one reading per device, metric and instant and refuses a second, different one as
    ``conflicting_duplicate``: a collector whose source stamps several values of one series
    with one time (OCPP's whole seconds; IEC 104 objects without a time tag, stamped with the
    time of the socket read that brought them) passes its hand-overs through this. Bounded: at
    most ``limit`` series are remembered (the oldest entry goes first)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = limit
        # (device, metric) -> (time as stamped, time given, value, quality)
        self._last: dict[tuple[str, str], tuple[int, int, float, Quality]] = {}

    def apply(self, readings: Iterable[Reading]) -> list[Reading]:
        out: list[Reading] = []
        last = self._last
        for r in readings:
            key = (r.device_id, r.metric)
            prev = last.pop(key, None)  # re-inserted below: the dict stays in recency order
            stamped = given = r.ts_us
            if prev is not None and prev[0] == stamped:
                same = prev[2] == r.value and prev[3] == r.quality
                given = prev[1] if same else prev[1] + 1
            if len(last) >= self._limit:
                del last[next(iter(last))]
            last[key] = (stamped, given, r.value, r.quality)
            out.append(
                r if given == stamped else Reading(r.device_id, r.metric, given, r.value, r.quality)
            )
        return out


class Collector(abc.ABC):
    """Base class of all collectors. Subclasses set ``type_name``."""

    type_name: str = ""

    def __init__(self, name: str) -> None:
        self.name = name
        self._availability: AvailabilityListener | None = None
        self._commit_request: CommitRequest | None = None

    def on_availability(self, listener: AvailabilityListener) -> None:
        """The agent registers here to learn when the collector's source goes down or up."""
        self._availability = listener

    def available(self, up: bool, reason: str = "") -> None:
        """Report the source reachable (``up``) or not; call it freely, per poll if you like:
        the listener sees every call and acts on transitions only."""
        if self._availability is not None:
            self._availability(self.name, up, reason)

    def on_commit_request(self, hook: CommitRequest) -> None:
        """The agent registers here: :meth:`commit_next` calls ``hook``."""
        self._commit_request = hook

    def commit_next(self) -> None:
        """Ask the agent to commit the next hand-over at once instead of at the end of its
        group-commit window (``group_commit_s``): call it right before ``await sink(...)``,
        with no ``await`` between, when a peer waits for the acknowledgement that follows
        (an IEC 104 station whose send window is full). Durability is unchanged: the sink
        still returns only once the readings are on disk. Without an agent it does nothing."""
        if self._commit_request is not None:
            self._commit_request()

    @abc.abstractmethod
    def validate(self) -> None:
        """Check the configuration without any I/O; raise ConfigError naming the key."""

    async def connect(self) -> None:  # noqa: B027 - optional phase, default does nothing
        """Open connections or listeners. Raise RetryableError on transient failure."""

    @abc.abstractmethod
    async def collect(self, sink: ReadingSink) -> None:
        """Produce readings into ``sink`` until cancelled."""

    async def stop(self) -> None:  # noqa: B027 - optional phase, default does nothing
        """Release resources; readings already handed to the sink are the agent's to keep."""
