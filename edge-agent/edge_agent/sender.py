"""The agent's sender as a state machine without I/O: events in, actions out.

Nothing here touches a socket, a thread, the buffer's file or the clock. What happens outside
comes in as events, and a round of decisions is a generator that yields what it needs
done; the caller (the agent's asyncio adapter, or a test) performs each action and sends the
answer back into the generator, which carries on from where it stopped::

    steps = sender.round(time.monotonic())
    answer = None
    while True:
        try:
            action = steps.send(answer)
        except StopIteration:
            break
        answer = perform(action)          # the I/O, or a test's scripted reply

Events in:

- :meth:`Sender.settled` — a record was acknowledged or failed (the producer's future);
- :meth:`Sender.round` / :meth:`Sender.settle` — the sender's turn (woken, or its tick ran out);
- :meth:`Sender.restore` — envelopes of an earlier boot, sent first;
- the answers to the actions (:class:`Connected`, :class:`View`, the formed envelopes, times).

Actions out (the answer the generator expects, if any, after the arrow):

- :class:`Connect` -> :class:`Connected`: make a producer (blocks while no broker answers);
- :class:`Transmit`: hand records to the producer, each settled later by :meth:`settled`;
- :class:`Look` -> :class:`View`: the buffer's in-memory state and the clocks;
- :class:`PersistAcks`: delete acknowledged envelopes from the buffer;
- :class:`AckAndForm` -> (formed envelopes, monotonic time): one buffer job that deletes the
  acknowledged envelopes and forms new ones by driving :func:`form_plan`;
- :class:`Quarantine` -> monotonic time: move refused envelopes to the buffer's quarantine;
- :class:`Retire`: replace the producer (its records failed); :class:`Wake`: run another
  round soon; :class:`Failing`, :class:`Recovered`, :class:`Readmitted`: say so (log, count).

:meth:`Sender.wait_s` says how long the caller may sleep before the next round unless woken.

The rules (docs/adr/0003, 0007): a reading leaves the buffer only when its own record was
acknowledged; a failed record is sent again, byte for byte, after a backoff with jitter,
through a new producer; at most ``max_in_flight_bytes`` of envelopes are outside the buffer;
live readings go first, the backlog behind them under a token bucket; a record the broker
refuses for good (``TopicAuthorizationFailed``) is no outage: its envelope is quarantined and
the sector's next envelopes are quarantined unsent for ``refusal_hold_s``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from edge_agent.buffer import Outgoing
from qilu.contract import Sector

TOPIC_AUTHORIZATION_FAILED = 29  # Kafka's error code: the principal may not write the topic
# after a refusal, a sector's envelopes go to the quarantine unsent for this long; then the
# next one asks the broker again (rights granted meanwhile are noticed without a restart)
REFUSAL_HOLD_S = 300.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """How the sender behaves (``[delivery]`` in the agent's TOML)."""

    batch_max_readings: int = 500
    batch_max_delay_s: float = 1.0
    backlog_rate: float = 0.0  # readings/s for the backlog; 0 = uncapped
    live_window_s: float = 10.0
    max_in_flight_bytes: int = 1 << 20
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    drain_timeout_s: float = 10.0  # on stop: how long to wait for in-flight acks
    # hand-overs arriving within this window share one buffer commit (one fsync); a
    # collector waits at most this long (plus the commit) for its acknowledgement
    group_commit_s: float = 0.05


class HeldBack(Exception):  # noqa: N818 - not an error: a refusal the sender infers
    """An envelope of a sector the broker refused within the hold-off: quarantined unsent."""

    errno = TOPIC_AUTHORIZATION_FAILED

    def __init__(self, sector: Sector) -> None:
        super().__init__(f"sector {sector.value} refused within the hold-off")


def refusal_of(exc: BaseException) -> str | None:
    """The quarantine reason when ``exc`` is a permanent refusal of the record's topic (not an
    outage: sending it again cannot succeed until the agent's rights change), else None.
    Recognised by Kafka's error code (an OSError's errno is another numbering), so no client
    import is needed here."""
    if not isinstance(exc, OSError) and getattr(exc, "errno", None) == TOPIC_AUTHORIZATION_FAILED:
        return "topic_authorization_failed"
    return None


class Send:
    """One envelope outside the buffer, settled by its own record future; ``attempts``
    counts the hand-overs to a producer (a late answer to an earlier one is ignored)."""

    __slots__ = ("attempts", "live", "out")

    def __init__(self, out: Outgoing, live: bool) -> None:
        self.out = out
        self.live = live
        self.attempts = 0


# ------------------------------------------------------------------ actions and answers


class _Message:
    """An action or an answer: compared by value, shown with its fields (tests read them)."""

    __slots__ = ()
    __match_args__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, k) == getattr(other, k) for k in self.__match_args__
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(repr(getattr(self, k)) for k in self.__match_args__)
        return f"{type(self).__name__}({fields})"


class Connect(_Message):
    """Make a producer; answer :class:`Connected`."""

    __slots__ = ()


class Connected(_Message):
    __slots__ = ("error", "now")
    __match_args__ = ("error", "now")

    def __init__(self, error: BaseException | None, now: float) -> None:
        self.error = error  # None: a producer is ready
        self.now = now  # monotonic, when the attempt ended


class Transmit(_Message):
    """Hand these records to the producer, in order: (record, attempt number)."""

    __slots__ = ("records",)
    __match_args__ = ("records",)

    def __init__(self, records: list[tuple[Send, int]]) -> None:
        self.records = records


class Look(_Message):
    """Answer :class:`View`."""

    __slots__ = ()


class View(_Message):
    __slots__ = ("due", "now", "now_us", "oldest_chunk_us")
    __match_args__ = ("due", "oldest_chunk_us", "now_us", "now")

    def __init__(self, due: bool, oldest_chunk_us: int | None, now_us: int, now: float) -> None:
        self.due = due  # the buffer holds a chunk to form now (full, or past its delay)
        self.oldest_chunk_us = oldest_chunk_us  # wall clock µs of the oldest unformed chunk
        self.now_us = now_us  # wall clock, µs
        self.now = now  # monotonic, s


class PersistAcks(_Message):
    """Delete these acknowledged envelopes from the buffer."""

    __slots__ = ("acked",)
    __match_args__ = ("acked",)

    def __init__(self, acked: list[Send]) -> None:
        self.acked = acked


class AckAndForm(_Message):
    """One buffer job: delete ``acked``, then form envelopes by driving :func:`form_plan`
    with these arguments; answer ``(formed, monotonic time)``."""

    __slots__ = ("acked", "allowance", "draining", "room")
    __match_args__ = ("acked", "room", "allowance", "draining")

    def __init__(self, acked: list[Send], room: int, allowance: float, draining: bool) -> None:
        self.acked = acked
        self.room = room
        self.allowance = allowance
        self.draining = draining


class Refused(_Message):
    __slots__ = ("held", "reason", "send")
    __match_args__ = ("send", "reason", "held")

    def __init__(self, send: Send, reason: str, held: bool) -> None:
        self.send = send
        self.reason = reason
        self.held = (
            held  # quarantined unsent (within the hold-off), not refused by the broker itself
        )


class Quarantine(_Message):
    """Move these envelopes to the buffer's quarantine; answer the monotonic time after."""

    __slots__ = ("refused",)
    __match_args__ = ("refused",)

    def __init__(self, refused: list[Refused]) -> None:
        self.refused = refused


class Retire(_Message):
    """The producer's records failed: close it (in the background); the next round makes a
    new one. Every record in flight is sent again through the new producer."""

    __slots__ = ()


class Wake(_Message):
    """Run another round soon (refusals inferred during this one wait to be settled)."""

    __slots__ = ()


class Failing(_Message):
    """A send or a connection failed (``first``: the outage starts now)."""

    __slots__ = ("error", "first")
    __match_args__ = ("error", "first")

    def __init__(self, error: str, first: bool) -> None:
        self.error = error
        self.first = first


class Recovered(_Message):
    """Acknowledgements again after an outage of ``after_s``."""

    __slots__ = ("after_s",)
    __match_args__ = ("after_s",)

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s


class Readmitted(_Message):
    """A sector the broker refused had a record acknowledged."""

    __slots__ = ("sector",)
    __match_args__ = ("sector",)

    def __init__(self, sector: Sector) -> None:
        self.sector = sector


Action: TypeAlias = (
    Connect | Transmit | Look | PersistAcks | AckAndForm | Quarantine | Retire | Wake
    | Failing | Recovered | Readmitted
)  # fmt: skip
Steps: TypeAlias = Generator[Action, Any, None]


# ------------------------------------------------------------------ forming envelopes


class FormRequest(_Message):
    """Form one envelope (``Buffer.form`` with these arguments); answer :class:`Formed`."""

    __slots__ = ("force", "live", "live_window_us", "max_delay_us", "max_readings", "now_us")
    __match_args__ = ("live", "now_us", "live_window_us", "max_readings", "max_delay_us", "force")

    def __init__(
        self,
        live: bool,
        now_us: int,
        live_window_us: int,
        max_readings: int,
        max_delay_us: int,
        force: bool = False,
    ) -> None:
        self.live = live
        self.now_us = now_us
        self.live_window_us = live_window_us
        self.max_readings = max_readings
        self.max_delay_us = max_delay_us
        self.force = force


class Formed(_Message):
    __slots__ = ("envelope", "now_us", "oldest_chunk_us")
    __match_args__ = ("envelope", "oldest_chunk_us", "now_us")

    def __init__(self, envelope: Outgoing | None, oldest_chunk_us: int | None, now_us: int) -> None:
        self.envelope = envelope
        self.oldest_chunk_us = oldest_chunk_us  # after forming it
        self.now_us = now_us


def backlog_waiting(cfg: Delivery, oldest_chunk_us: int | None, now_us: int) -> bool:
    """Chunks older than the live window exist."""
    return oldest_chunk_us is not None and oldest_chunk_us < now_us - int(cfg.live_window_s * 1e6)


def form_plan(
    cfg: Delivery, room: int, allowance: float, *, draining: bool, now_us: int
) -> Generator[FormRequest, Formed, list[tuple[Outgoing, bool]]]:
    """Envelopes for ``room`` bytes of the in-flight window: live ones first, then backlog
    ones while ``allowance`` readings remain. Returns ``(envelope, live)`` pairs. Touches no
    sender state, so the buffer thread can drive it in the same job as the acknowledgements."""
    window_us, delay_us = int(cfg.live_window_s * 1e6), int(cfg.batch_max_delay_s * 1e6)
    out: list[tuple[Outgoing, bool]] = []
    while room > 0:
        got = yield FormRequest(True, now_us, window_us, cfg.batch_max_readings, delay_us, draining)
        o, live = got.envelope, True
        if (
            o is None
            and not draining
            and allowance > 0
            and backlog_waiting(cfg, got.oldest_chunk_us, got.now_us)
        ):
            got = yield FormRequest(False, now_us, window_us, cfg.batch_max_readings, delay_us)
            o, live = got.envelope, False
            if o is not None:
                allowance -= o.readings
        if o is None:
            break
        out.append((o, live))
        room -= len(o.payload)
    return out


def drive_form(
    plan: Generator[FormRequest, Formed, list[tuple[Outgoing, bool]]],
    form: Callable[[FormRequest], Formed],
) -> list[tuple[Outgoing, bool]]:
    """Run a :func:`form_plan` against ``form`` (the buffer thread's side of it)."""
    try:
        request = next(plan)
        while True:
            request = plan.send(form(request))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


# ------------------------------------------------------------------ the state machine


class Counters:
    """What the sender did, for the agent's figures (``Agent.sent_readings``, ...)."""

    __slots__ = (
        "producers_replaced", "refused_envelopes", "send_errors", "sent_envelopes", "sent_readings"
    )  # fmt: skip

    def __init__(self) -> None:
        self.sent_envelopes = 0
        self.sent_readings = 0
        self.refused_envelopes = 0
        self.producers_replaced = 0
        self.send_errors = 0


class _State:
    __slots__ = (
        "acked",
        "failed",
        "inflight",
        "inflight_bytes",
        "refused_until",
        "restored",
        "waiting",
    )

    def __init__(self) -> None:
        self.inflight: dict[int, Send] = {}  # envelope id -> its record
        self.inflight_bytes = 0
        self.acked: list[Send] = []  # settled since the last round
        self.failed: list[tuple[Send, BaseException]] = []
        self.waiting: dict[int, Send] = {}  # to send again at the retry time
        self.restored: list[Outgoing] = []  # outbox of earlier boots
        self.refused_until: dict[Sector, float] = {}  # hold-off per sector


class Sender:
    """The sender's decisions for one agent (see the module docstring).

    ``jitter``: a factor in [0.5, 1.5) for each backoff (random by default; tests pin it).
    ``replace_producer``: after a failed record, retire the producer (False only for a
    producer that must never be replaced, e.g. a test fake)."""

    def __init__(
        self,
        cfg: Delivery,
        *,
        replace_producer: bool = True,
        refusal_hold_s: float = REFUSAL_HOLD_S,
        now: float = 0.0,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        self.cfg = cfg
        self.replace_producer = replace_producer
        self.refusal_hold_s = refusal_hold_s
        self.counters = Counters()
        self.connected = False  # a producer is ready (the caller holds it)
        self.failing_since: float | None = None
        self.retry_at = 0.0
        self._backoff = cfg.retry_initial_s
        self._tokens = 0.0
        self._tokens_at = now
        self._jitter = jitter or (lambda: 0.5 + random.random())  # noqa: S311 - jitter, not crypto
        self._s = _State()

    # ------------------------------------------------------------------ events in

    def restore(self, outs: Sequence[Outgoing]) -> None:
        """Envelopes of earlier boots, not acknowledged: sent first, unchanged."""
        self._s.restored = list(outs)

    def settled(self, s: Send, attempt: int, exc: BaseException | None) -> bool:
        """A record's future settled (``exc`` None: acknowledged). True when it counts (the
        caller wakes the sender); an earlier attempt settling late does not."""
        st = self._s
        if attempt != s.attempts or s.out.id not in st.inflight:
            return False
        if exc is None:
            st.acked.append(s)
        else:
            st.failed.append((s, exc))
        return True

    def disconnected(self) -> None:
        """The caller closed its producer (the agent stops)."""
        self.connected = False

    # ------------------------------------------------------------------ state out

    @property
    def inflight(self) -> dict[int, Send]:
        return self._s.inflight

    @property
    def inflight_bytes(self) -> int:
        return self._s.inflight_bytes

    @property
    def failing(self) -> bool:
        return self.failing_since is not None

    def wait_s(self, now: float, wall_s: float, oldest_chunk_us: int | None) -> float:
        """Seconds until the sender has something to do unless woken: the oldest waiting
        chunk's delay running out, the retry time, or a 1 s heartbeat."""
        wait = 1.0
        if self.failing_since is not None:
            wait = min(wait, self.retry_at - now)
        if oldest_chunk_us is not None:
            wait = min(wait, oldest_chunk_us / 1e6 + self.cfg.batch_max_delay_s - wall_s)
        return max(0.02, wait)

    # ------------------------------------------------------------------ rounds

    def round(self, now: float, *, draining: bool = False) -> Steps:
        """Settle what the broker answered and hand out what is due (``draining``: on stop,
        form whatever is live, full or not, and no backlog)."""
        acked = yield from self._take_acked(now)
        refused = yield from self._absorb_failures(now)
        if refused:
            now = yield Quarantine(refused)
            self._hold(refused, now)
        yield from self._fill(acked, now, draining)

    def settle(self, now: float) -> Steps:
        """The last round on stop: persist acknowledgements, quarantine refusals, send nothing."""
        acked = yield from self._take_acked(now)
        refused = yield from self._absorb_failures(now)
        yield from self._persist(acked)
        if refused:
            now = yield Quarantine(refused)
            self._hold(refused, now)

    # ------------------------------------------------------------------ steps

    def _take_acked(self, now: float) -> Generator[Action, Any, list[Send]]:
        """Acknowledged records leave the in-flight window; their rows are deleted by the
        next buffer job (:class:`PersistAcks`, or with forming envelopes)."""
        st = self._s
        acked, st.acked = st.acked, []
        for s in acked:
            st.inflight.pop(s.out.id, None)
            st.inflight_bytes -= len(s.out.payload)
            if st.refused_until.pop(s.out.sector, None) is not None:
                yield Readmitted(s.out.sector)
        if acked:
            if self.failing_since is not None:
                yield Recovered(now - self.failing_since)
                self.failing_since = None
            self._backoff = self.cfg.retry_initial_s
        return acked

    def _absorb_failures(self, now: float) -> Generator[Action, Any, list[Refused]]:
        """Failed records wait for another attempt (through a new producer); refused ones
        (see :func:`refusal_of`) leave the in-flight window and are returned."""
        st = self._s
        refused: list[Refused] = []
        if not st.failed:
            return refused
        failed, st.failed = st.failed, []
        transient = []
        for s, exc in failed:
            reason = refusal_of(exc)
            if reason is None:
                transient.append((s, exc))
                continue
            refused.append(Refused(s, reason, isinstance(exc, HeldBack)))
            st.waiting.pop(s.out.id, None)  # queued by a producer replacement
            st.inflight.pop(s.out.id, None)
            st.inflight_bytes -= len(s.out.payload)
        for s, _ in transient:
            st.waiting[s.out.id] = s
        if transient:
            yield self._note_failure(transient[0][1], now)
            if self.replace_producer and self.connected:
                yield self._retire()
        return refused

    def _note_failure(self, exc: BaseException, now: float) -> Failing:
        first = self.failing_since is None
        if first:
            self.failing_since = now
        self.counters.send_errors += 1
        self.retry_at = now + self._backoff * self._jitter()
        self._backoff = min(self._backoff * 2, self.cfg.retry_max_s)
        return Failing(str(exc), first)  # the text: keep no traceback (and its sockets)

    def _retire(self) -> Retire:
        """kafka-python's idempotent producer may keep an expired batch's sequence state and
        stall after the broker returns; a new one gets a new producer id. Every record in
        flight is sent again through it (an old attempt that still settles is ignored; a
        duplicate in Kafka is harmless, see ADR 0003)."""
        self.connected = False
        self.counters.producers_replaced += 1
        for s in self._s.inflight.values():
            self._s.waiting[s.out.id] = s
        return Retire()

    def _hold(self, refused: Sequence[Refused], now: float) -> None:
        """Quarantined: the broker's own refusal (re)starts the sector's hold-off."""
        self.counters.refused_envelopes += len(refused)
        until = now + self.refusal_hold_s
        for r in refused:
            if not r.held:
                self._s.refused_until[r.send.out.sector] = until

    def _persist(self, acked: list[Send]) -> Steps:
        if acked:
            yield PersistAcks(acked)
            self._count_sent(acked)

    def _count_sent(self, acked: Sequence[Send]) -> None:
        self.counters.sent_envelopes += len(acked)
        self.counters.sent_readings += sum(s.out.readings for s in acked)

    def _fill(self, acked: list[Send], now: float, draining: bool) -> Steps:
        """Hand envelopes to the producer while the in-flight window has room; ``acked``:
        acknowledgements to persist in the same buffer job."""
        st, cfg = self._s, self.cfg
        if self.failing_since is not None and now < self.retry_at:
            yield from self._persist(acked)
            return
        if not self.connected:
            got: Connected = yield Connect()
            if got.error is not None:
                yield self._note_failure(got.error, got.now)
                yield from self._persist(acked)
                return
            self.connected, now = True, got.now
        if st.waiting:  # resend failed records first, same bytes, same order
            waiting, st.waiting = st.waiting, {}
            yield Transmit(self._attempt([s for _, s in sorted(waiting.items())]))
        restored, room = [], cfg.max_in_flight_bytes - st.inflight_bytes
        while st.restored and room > 0:
            out = st.restored.pop(0)
            restored.append((out, False))
            room -= len(out.payload)
        yield from self._launch(restored, now)
        view: View = yield Look()
        room = cfg.max_in_flight_bytes - st.inflight_bytes
        if (
            not (view.due or draining or backlog_waiting(cfg, view.oldest_chunk_us, view.now_us))
            or room <= 0
        ):
            yield from self._persist(acked)  # nothing to form yet
            return
        allowance = 0.0 if draining else self._backlog_allowance(view.now)
        formed, now = yield AckAndForm(acked, room, allowance, draining)
        self._count_sent(acked)
        if cfg.backlog_rate > 0:
            self._tokens -= sum(o.readings for o, live in formed if not live)
        yield from self._launch(formed, now)

    def _backlog_allowance(self, now: float) -> float:
        """Readings the backlog may send now (token bucket; infinite when uncapped)."""
        rate = self.cfg.backlog_rate
        if rate <= 0:
            return float("inf")
        cap = max(rate, float(self.cfg.batch_max_readings))
        self._tokens = min(cap, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        return self._tokens

    def _launch(self, formed: Sequence[tuple[Outgoing, bool]], now: float) -> Steps:
        st = self._s
        sends, held = [], False
        for out, live in formed:
            s = Send(out, live)
            st.inflight[out.id] = s
            st.inflight_bytes += len(out.payload)
            if st.refused_until.get(out.sector, 0.0) > now:
                # refused a moment ago: quarantined without asking the broker again (one
                # refused request per hold-off and sector, not one per envelope)
                st.failed.append((s, HeldBack(out.sector)))
                held = True
                continue
            sends.append(s)
        if held:
            yield Wake()
        if sends:
            yield Transmit(self._attempt(sends))

    @staticmethod
    def _attempt(sends: Sequence[Send]) -> list[tuple[Send, int]]:
        out = []
        for s in sends:
            s.attempts += 1
            out.append((s, s.attempts))
        return out
