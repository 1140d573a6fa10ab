"""The T/CEC 102 endpoint's limits: per client address before anything is parsed, per operator
only after its signature passed, refusals we cause not counted on the operator's link, dead
letters of unidentified callers sampled, and -1 (busy) for a push that waited too long or
while the event loop lags.

Contract tier: :class:`server.Endpoint` with an injected sink and directory (no Kafka, no
database).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from interconnect.tcec102 import exchange as x
from interconnect.tcec102 import server
from interconnect.tcec102.secrets import box, random_keyset
from qilu import signing
from qilu.contract import Envelope
from qilu.settings import Settings, load
from stream.deadletter import DeadLetter

OP = "MA0000001"
KEYS = random_keyset()
PUSH = "notification_stationStatus"


class ListSink(server.Sink):
    def __init__(self) -> None:
        self.batches: list[Envelope] = []
        self.letters: list[DeadLetter] = []

    def produce(self, batch: Envelope, signer: signing.Signer) -> asyncio.Future[None]:
        del signer
        self.batches.append(batch)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def dead_letter(self, letter: DeadLetter) -> None:
        self.letters.append(letter)


def _endpoint(**tcec: Any) -> tuple[server.Endpoint, ListSink, Settings]:
    base = load()
    settings = base.model_copy(update={"tcec102": base.tcec102.model_copy(update=tcec)})
    signer = signing.Signer(1, signing.generate_key().private_b64)
    link = server.Link(OP, f"tcec102-{OP}", 1, KEYS, signer, {"C1": f"tcec102.{OP}.E1"})
    sink = ListSink()
    ep = server.Endpoint(
        settings, lambda: server.Directory({OP: link}), lambda _: None, sink_factory=lambda: sink
    )
    ep.sink = sink
    ep.refresh_now()
    return ep, sink, settings


def _push_body(op: str = OP, keys: x.KeySet = KEYS) -> bytes:
    payload = {"ConnectorStatusInfo": {"ConnectorID": "C1", "Status": 3}}
    return json.dumps(x.seal_request(op, payload, keys, datetime.now(UTC)).as_json()).encode()


def _token(settings: Settings) -> str:
    tok, _ = x.issue_token(box(settings).token_key, OP, 1, datetime.now(UTC), timedelta(hours=1))
    return f"Bearer {tok}"


def _answer(ep: server.Endpoint, *calls: tuple[str, bytes, str | None, str]) -> list[Any]:
    async def run() -> list[Any]:
        return [await ep.answer(i, b, a, c) for i, b, a, c in calls]

    return asyncio.run(run())


def test_a_client_address_over_its_rate_is_refused_before_parsing() -> None:
    ep, sink, _ = _endpoint(ip_rate_per_s=0.01, ip_rate_burst=3)
    outs = _answer(ep, *[(PUSH, b"garbage", None, "10.0.0.1")] * 5)
    assert [o.http_status for o in outs] == [200, 200, 200, 429, 429]
    assert [o.refused.reason for o in outs[3:]] == ["rate_limited", "rate_limited"]
    # another address has its own allowance
    (other,) = _answer(ep, (PUSH, b"garbage", None, "10.0.0.2"))
    assert other.http_status == 200
    assert other.body["Ret"] == x.Ret.POST_PARAMETERS
    # 429s are not dead letters (the sender retries); the garbage answered is
    assert len(sink.letters) == 4


def test_requests_that_cannot_sign_do_not_use_the_operators_allowance() -> None:
    ep, sink, settings = _endpoint(rate_per_s=0.01, rate_burst=2)
    forged = _push_body(keys=random_keyset())  # names the operator, signed with other keys
    outs = _answer(ep, *[(PUSH, forged, _token(settings), f"10.0.0.{i}") for i in range(6)])
    assert {o.body["Ret"] for o in outs} == {x.Ret.SIGNATURE}
    good = _answer(ep, *[(PUSH, _push_body(), _token(settings), "10.0.1.1")] * 3)
    assert [o.http_status for o in good] == [200, 200, 429]
    assert [o.body.get("Ret") for o in good[:2]] == [0, 0]
    assert len(sink.batches) == 2
    # the forged requests are the link's failures; the 429 we answered is not
    (delta,) = ep.ledger.take().values()
    assert delta.failures == 6
    assert delta.last_failure_reason == "bad_signature"


def test_unidentified_callers_dead_letters_are_sampled() -> None:
    ep, sink, _ = _endpoint(unidentified_dead_letters_per_s=0.01)
    stranger = _push_body(op="MZ9999999")
    outs = _answer(ep, *[(PUSH, stranger, None, f"10.1.0.{i % 200}") for i in range(200)])
    assert {o.refused.reason for o in outs} == {"unknown_operator"}
    assert len(sink.letters) == 10  # the burst, then about one every 100 s
    assert {letter.reason for letter in sink.letters} == {"tcec102_unknown_operator"}


def test_a_push_that_waited_too_long_or_a_lagging_loop_is_busy() -> None:
    ep, sink, settings = _endpoint(max_wait_s=0.5, max_loop_lag_s=0.2)

    async def run() -> list[server.Outcome]:
        late = await ep.answer(
            PUSH, _push_body(), _token(settings), "10.0.0.1", time.perf_counter() - 1.0
        )
        fresh = await ep.answer(
            PUSH, _push_body(), _token(settings), "10.0.0.1", time.perf_counter()
        )
        await asyncio.sleep(0.15)  # the watcher runs
        time.sleep(0.4)  # noqa: ASYNC251 - the event loop blocked on purpose: 0.4 s of lag
        await asyncio.sleep(0.01)  # it has run (overdue), its next wake-up is 0.1 s away
        lagging = await ep.answer(PUSH, _push_body(), _token(settings), "10.0.0.1")
        return [late, fresh, lagging]

    late, fresh, lagging = asyncio.run(run())
    assert late.body["Ret"] == x.Ret.BUSY
    assert late.refused is not None
    assert late.refused.reason == "waited_too_long"
    assert fresh.body["Ret"] == 0
    assert lagging.body["Ret"] == x.Ret.BUSY
    assert lagging.refused is not None
    assert lagging.refused.reason == "loop_lag"
    assert len(sink.batches) == 1
    # busy answers are not the operator's link failures
    assert all(d.failures == 0 for d in ep.ledger.take().values())
