"""The edge sender's state machine (edge_agent/sender.py) driven with events: no broker, no
buffer file, no threads, no sleeps, no clock. Each round's actions are answered by a small
scripted world (the envelopes the buffer would form, the time) and recorded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from edge_agent import sender as sm
from edge_agent.buffer import Outgoing

from qilu.contract import Sector

LIVE_US = 1_000_000_000_000_000  # wall clock µs of "now" in these tests


class Timeout(Exception):  # noqa: N818 - stands for kafka-python's KafkaTimeoutError
    """A retryable failure: the broker did not answer in time."""


class TopicAuthorizationFailed(Exception):  # noqa: N818 - kafka-python's name
    errno = sm.TOPIC_AUTHORIZATION_FAILED


def envelope(i: int, sector: Sector = Sector.CHARGING, *, size: int = 100) -> Outgoing:
    return Outgoing(i, sector, "boot", i, 10, 0, LIVE_US, bytes([i % 256]) * size)


@dataclass
class World:
    """Answers the sender's actions: ``live``/``backlog`` are what the buffer would form."""

    now: float = 100.0
    live: list[Outgoing] = field(default_factory=list)
    backlog: list[Outgoing] = field(default_factory=list)
    backlog_oldest_us: int | None = None  # set: chunks older than the live window wait
    connect_error: BaseException | None = None
    actions: list[sm.Action] = field(default_factory=list)
    persisted: list[int] = field(default_factory=list)  # envelope ids deleted from the buffer

    def form(self, r: sm.FormRequest) -> sm.Formed:
        queue = self.live if r.live else self.backlog
        o = queue.pop(0) if queue else None
        oldest = self.backlog_oldest_us if self.backlog else None
        return sm.Formed(o, oldest, LIVE_US)

    def answer(self, action: sm.Action, cfg: sm.Delivery) -> Any:
        match action:
            case sm.Connect():
                return sm.Connected(self.connect_error, self.now)
            case sm.Look():
                oldest = self.backlog_oldest_us if self.backlog else None
                return sm.View(bool(self.live), oldest, LIVE_US, self.now)
            case sm.PersistAcks(acked):
                self.persisted += [s.out.id for s in acked]
            case sm.AckAndForm(acked, room, allowance, draining):
                self.persisted += [s.out.id for s in acked]
                plan = sm.form_plan(cfg, room, allowance, draining=draining, now_us=LIVE_US)
                return sm.drive_form(plan, self.form), self.now
            case sm.Quarantine():
                return self.now
        return None

    def run(self, steps: sm.Steps, cfg: sm.Delivery) -> list[sm.Action]:
        """Drive one round to its end; the actions it yielded."""
        got: list[sm.Action] = []
        answer: Any = None
        while True:
            try:
                action = steps.send(answer)
            except StopIteration:
                break
            got.append(action)
            answer = self.answer(action, cfg)
        self.actions += got
        return got


def of(actions: Sequence[sm.Action], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def sent(actions: Sequence[sm.Action]) -> list[tuple[int, int]]:
    """(envelope id, attempt) of every record handed to the producer."""
    return [(s.out.id, n) for t in of(actions, sm.Transmit) for s, n in t.records]


def settle(s: sm.Sender, record: tuple[sm.Send, int], exc: BaseException | None) -> bool:
    return s.settled(record[0], record[1], exc)


def make(**delivery: Any) -> tuple[sm.Sender, World, sm.Delivery]:
    cfg = sm.Delivery(**delivery)
    return sm.Sender(cfg, now=100.0, jitter=lambda: 1.0), World(), cfg


def test_first_round_connects_forms_and_transmits_the_due_envelopes() -> None:
    s, w, cfg = make()
    w.live = [envelope(1), envelope(2)]
    acts = w.run(s.round(w.now), cfg)
    assert [type(a) for a in acts] == [sm.Connect, sm.Look, sm.AckAndForm, sm.Transmit]
    assert sent(acts) == [(1, 1), (2, 1)]
    assert set(s.inflight) == {1, 2}
    assert s.inflight_bytes == 200
    assert w.persisted == []  # nothing leaves the buffer before an acknowledgement


def test_an_ack_releases_the_envelope_in_the_next_buffer_job() -> None:
    s, w, cfg = make()
    w.live = [envelope(1), envelope(2)]
    (t,) = of(w.run(s.round(w.now), cfg), sm.Transmit)
    first, attempt = t.records[0]
    assert s.settled(first, attempt, None)
    acts = w.run(s.round(w.now), cfg)
    assert w.persisted == [1]  # only the acknowledged one
    assert of(acts, sm.Connect) == []  # the producer is kept
    assert set(s.inflight) == {2}
    assert s.inflight_bytes == 100
    assert (s.counters.sent_envelopes, s.counters.sent_readings) == (1, 10)


def test_acks_are_persisted_even_when_nothing_is_due() -> None:
    s, w, cfg = make()
    w.live = [envelope(1)]
    (t,) = of(w.run(s.round(w.now), cfg), sm.Transmit)
    settle(s, t.records[0], None)
    acts = w.run(s.round(w.now), cfg)
    assert [type(a) for a in acts] == [sm.Look, sm.PersistAcks]
    assert w.persisted == [1]


def test_a_retryable_failure_waits_for_the_backoff_then_resends_the_same_record() -> None:
    s, w, cfg = make(retry_initial_s=0.5, retry_max_s=30.0)
    w.live = [envelope(1)]
    (t,) = of(w.run(s.round(w.now), cfg), sm.Transmit)
    record, attempt = t.records[0]
    assert s.settled(record, attempt, Timeout("broker away"))

    acts = w.run(s.round(w.now), cfg)
    assert [type(a) for a in acts] == [sm.Failing, sm.Retire]  # nothing sent before the retry
    (failing,) = of(acts, sm.Failing)
    assert failing.first
    assert "broker away" in failing.error
    assert s.failing
    assert s.retry_at == pytest.approx(w.now + 0.5)
    assert s.counters.producers_replaced == 1
    assert 1 in s.inflight  # still outside the buffer, still counted in the window
    # the tick: wake at the retry time, not at the 1 s heartbeat
    assert s.wait_s(w.now, 0.0, None) == pytest.approx(0.5)
    assert w.run(s.round(w.now + 0.4), cfg) == []  # before the retry time: nothing

    w.now += 0.5
    acts = w.run(s.round(w.now), cfg)
    assert isinstance(acts[0], sm.Connect)  # a new producer (a new producer id)
    assert sent(acts) == [(1, 2)]  # the same record, the same bytes, the second attempt
    (again,) = of(acts, sm.Transmit)
    assert again.records[0][0] is record
    # the first attempt settling late changes nothing
    assert not s.settled(record, 1, None)
    assert s.settled(record, 2, None)
    acts = w.run(s.round(w.now), cfg)
    assert of(acts, sm.Recovered) == [sm.Recovered(0.5)]
    assert s.failing_since is None
    assert w.persisted == [1]


def test_before_the_retry_time_a_round_sends_nothing() -> None:
    s, w, cfg = make(retry_initial_s=0.5)
    w.live = [envelope(1)]
    (t,) = of(w.run(s.round(w.now), cfg), sm.Transmit)
    settle(s, t.records[0], Timeout("away"))
    w.run(s.round(w.now), cfg)
    w.live = [envelope(2)]
    acts = w.run(s.round(w.now + 0.4), cfg)
    assert acts == []  # no connection attempt, no forming: the envelope waits in the buffer
    assert w.live == [envelope(2)]


def test_connection_failures_back_off_exponentially_up_to_the_cap() -> None:
    s, w, cfg = make(retry_initial_s=0.5, retry_max_s=2.0)
    w.connect_error = Timeout("no broker")
    w.live = [envelope(1)]
    waits = []
    for _ in range(4):
        acts = w.run(s.round(w.now), cfg)
        assert [type(a) for a in acts] == [sm.Connect, sm.Failing]
        waits.append(s.retry_at - w.now)
        w.now = s.retry_at
    assert waits == [0.5, 1.0, 2.0, 2.0]
    assert [a.first for a in of(w.actions, sm.Failing)] == [True, False, False, False]
    assert s.counters.send_errors == 4
    assert w.live == [envelope(1)]  # nothing formed while no producer exists


def test_a_test_producer_that_must_not_be_replaced_is_kept() -> None:
    s, w, cfg = make()
    s.replace_producer = False
    w.live = [envelope(1)]
    (t,) = of(w.run(s.round(w.now), cfg), sm.Transmit)
    settle(s, t.records[0], Timeout("away"))
    acts = w.run(s.round(w.now), cfg)
    assert of(acts, sm.Retire) == []
    w.now = s.retry_at
    acts = w.run(s.round(w.now), cfg)
    assert of(acts, sm.Connect) == []
    assert sent(acts) == [(1, 2)]


def test_topic_authorization_failed_quarantines_and_holds_the_sector_off() -> None:
    s, w, cfg = make()
    w.live = [envelope(1, Sector.SUBSTATION), envelope(2)]
    (t,) = of(w.run(s.round(w.now), cfg), sm.Transmit)
    (sub, n1), (charging, n2) = t.records
    s.settled(sub, n1, TopicAuthorizationFailed("not authorised"))
    s.settled(charging, n2, None)

    acts = w.run(s.round(w.now), cfg)
    assert of(acts, sm.Failing) == []
    assert of(acts, sm.Retire) == []
    (q,) = of(acts, sm.Quarantine)
    assert [(r.send.out.id, r.reason, r.held) for r in q.refused] == [
        (1, "topic_authorization_failed", False)
    ]
    assert s.inflight == {}
    assert s.inflight_bytes == 0
    assert s.counters.refused_envelopes == 1

    # within the hold-off the sector's next envelope is quarantined unsent
    w.now += 10
    w.live = [envelope(3, Sector.SUBSTATION), envelope(4)]
    acts = w.run(s.round(w.now), cfg)
    assert sent(acts) == [(4, 1)]
    assert of(acts, sm.Wake) == [sm.Wake()]
    acts = w.run(s.round(w.now), cfg)
    (q,) = of(acts, sm.Quarantine)
    assert [(r.send.out.id, r.held) for r in q.refused] == [(3, True)]

    # past the hold-off the broker is asked again; an ack readmits the sector
    w.now += sm.REFUSAL_HOLD_S
    w.live = [envelope(5, Sector.SUBSTATION)]
    acts = w.run(s.round(w.now), cfg)
    (t,) = of(acts, sm.Transmit)
    assert sent(acts) == [(5, 1)]
    settle(s, t.records[0], None)
    acts = w.run(s.round(w.now), cfg)
    assert of(acts, sm.Readmitted) == [sm.Readmitted(Sector.SUBSTATION)]


def test_a_held_back_refusal_does_not_restart_the_hold_off() -> None:
    s, w, cfg = make()
    w.live = [envelope(1, Sector.SUBSTATION)]
    (t,) = of(w.run(s.round(w.now), cfg), sm.Transmit)
    settle(s, t.records[0], TopicAuthorizationFailed())
    w.run(s.round(w.now), cfg)  # quarantined at 100: held off until 400
    w.now = 399.0
    w.live = [envelope(2, Sector.SUBSTATION)]
    w.run(s.round(w.now), cfg)
    w.run(s.round(w.now), cfg)  # quarantined unsent at 399
    w.now = 400.5
    w.live = [envelope(3, Sector.SUBSTATION)]
    assert sent(w.run(s.round(w.now), cfg)) == [(3, 1)]


def test_an_os_error_with_the_same_number_is_an_outage_not_a_refusal() -> None:
    assert sm.refusal_of(OSError(29, "illegal seek")) is None
    assert sm.refusal_of(Timeout()) is None
    assert sm.refusal_of(TopicAuthorizationFailed()) == "topic_authorization_failed"
    assert sm.refusal_of(sm.HeldBack(Sector.CHARGING)) == "topic_authorization_failed"


def test_the_in_flight_window_bounds_what_is_outside_the_buffer() -> None:
    s, w, cfg = make(max_in_flight_bytes=250)
    w.live = [envelope(i) for i in range(1, 6)]
    acts = w.run(s.round(w.now), cfg)
    assert sent(acts) == [(1, 1), (2, 1), (3, 1)]  # the third one overshoots, the fourth waits
    assert s.inflight_bytes == 300
    acts = w.run(s.round(w.now), cfg)
    assert of(acts, sm.AckAndForm) == []  # no room: nothing formed
    (t,) = of(w.actions, sm.Transmit)
    for record in t.records:
        settle(s, record, None)
    acts = w.run(s.round(w.now), cfg)
    assert sent(acts) == [(4, 1), (5, 1)]
    assert w.persisted == [1, 2, 3]  # the acks ride in the job that forms the next ones


def test_restored_envelopes_go_first() -> None:
    s, w, cfg = make()
    s.restore([envelope(7), envelope(8)])
    w.live = [envelope(9)]
    acts = w.run(s.round(w.now), cfg)
    assert sent(acts) == [(7, 1), (8, 1), (9, 1)]
    restored = of(acts, sm.Transmit)[0]
    assert [r.live for r, _ in restored.records] == [False, False]


def test_the_backlog_follows_the_live_readings_under_the_rate_cap() -> None:
    s, w, cfg = make(backlog_rate=20.0, batch_max_readings=10)
    w.backlog = [envelope(i) for i in range(1, 6)]  # 10 readings each
    w.backlog_oldest_us = LIVE_US - 60_000_000  # a minute old: past the live window
    w.live = [envelope(10)]
    acts = w.run(s.round(w.now), cfg)
    assert sent(acts) == [(10, 1)]  # no tokens yet: the live envelope only
    w.now += 1.0  # 20 tokens: two backlog envelopes
    acts = w.run(s.round(w.now), cfg)
    assert sent(acts) == [(1, 1), (2, 1)]
    assert [r.live for t in of(acts, sm.Transmit) for r, _ in t.records] == [False, False]
    w.now += 0.5  # 10 tokens
    assert sent(w.run(s.round(w.now), cfg)) == [(3, 1)]


def test_draining_forms_live_envelopes_only() -> None:
    s, w, cfg = make()
    w.backlog = [envelope(1)]
    w.backlog_oldest_us = LIVE_US - 60_000_000
    w.live = [envelope(2)]
    acts = w.run(s.round(w.now, draining=True), cfg)
    (form,) = of(acts, sm.AckAndForm)
    assert form.draining
    assert form.allowance == 0.0
    assert sent(acts) == [(2, 1)]


def test_form_plan_asks_for_live_first_then_backlog_while_allowed() -> None:
    cfg = sm.Delivery(batch_max_readings=10)
    w = World(live=[envelope(1)], backlog=[envelope(2), envelope(3), envelope(4)])
    w.backlog_oldest_us = LIVE_US - 60_000_000
    requests: list[sm.FormRequest] = []

    def form(r: sm.FormRequest) -> sm.Formed:
        requests.append(r)
        return w.form(r)

    formed = sm.drive_form(sm.form_plan(cfg, 10_000, 15.0, draining=False, now_us=LIVE_US), form)
    assert [(o.id, live) for o, live in formed] == [(1, True), (2, False), (3, False)]
    assert [r.live for r in requests] == [True, True, False, True, False, True]
    assert all(r.force is False for r in requests)


def test_the_tick_is_the_oldest_chunks_delay_or_a_heartbeat() -> None:
    s = sm.Sender(sm.Delivery(batch_max_delay_s=1.0))
    assert s.wait_s(10.0, 50.0, None) == 1.0  # heartbeat
    assert s.wait_s(10.0, 50.0, 49_700_000) == pytest.approx(0.7)
    assert s.wait_s(10.0, 50.0, 40_000_000) == 0.02  # overdue: soon, never a busy loop


def test_settle_on_stop_persists_and_quarantines_but_sends_nothing() -> None:
    s, w, cfg = make()
    w.live = [envelope(1), envelope(2, Sector.SUBSTATION)]
    (t,) = of(w.run(s.round(w.now), cfg), sm.Transmit)
    settle(s, t.records[0], None)
    settle(s, t.records[1], TopicAuthorizationFailed())
    w.live = [envelope(3)]
    acts = w.run(s.settle(w.now), cfg)
    assert [type(a) for a in acts] == [sm.PersistAcks, sm.Quarantine]
    assert w.persisted == [1]
    assert s.inflight == {}
