"""The T/CEC 102 endpoint when Kafka is slow, full or failing: "-1, busy, retry later".

Contract tier: the endpoint's router with an injected sink (no Kafka, no database); what a
slow or failing broker does to the answer. The happy path on the real servers is
tests/integration/test_tcec102_endpoint.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from interconnect.tcec102 import exchange as x
from interconnect.tcec102 import server
from interconnect.tcec102.secrets import box, random_keyset
from qilu import signing
from qilu.contract import Envelope
from qilu.settings import load
from stream.deadletter import DeadLetter

OP = "MA0000001"
KEYS = random_keyset()


class FakeSink(server.Sink):
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.batches: list[Envelope] = []
        self.letters: list[DeadLetter] = []

    def produce(self, batch: Envelope, signer: signing.Signer) -> asyncio.Future[None]:
        del signer
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.mode == "ok":
            self.batches.append(batch)
            fut.set_result(None)
        elif self.mode == "fail":
            fut.set_exception(RuntimeError("KafkaTimeoutError: batch expired"))
        return fut  # "hang": never acknowledged

    def dead_letter(self, letter: DeadLetter) -> None:
        self.letters.append(letter)


def _directory() -> server.Directory:
    signer = signing.Signer(1, signing.generate_key().private_b64)
    link = server.Link(OP, f"tcec102-{OP}", 1, KEYS, signer, {"C1": f"tcec102.{OP}.E1"})
    return server.Directory({OP: link})


def _client(mode: str, **tcec: Any) -> Iterator[tuple[TestClient, server.Endpoint, FakeSink]]:
    base = load()
    settings = base.model_copy(
        update={"tcec102": base.tcec102.model_copy(update={"produce_timeout_s": 0.2, **tcec})}
    )
    sink = FakeSink(mode)
    ep = server.Endpoint(settings, _directory, lambda _: None, sink_factory=lambda: sink)
    ep.sink = sink
    ep.refresh_now()
    app = FastAPI()
    app.include_router(server.build_router("/evcs/v1"))
    app.state.tcec102 = ep
    with TestClient(app) as client:
        yield client, ep, sink


def _push(client: TestClient, settings_key: bytes) -> dict[str, Any]:
    now = datetime.now(UTC)
    token, _ = x.issue_token(settings_key, OP, 1, now, timedelta(hours=1))
    env = x.seal_request(OP, {"ConnectorStatusInfo": {"ConnectorID": "C1", "Status": 1}}, KEYS, now)
    resp = client.post(
        "/evcs/v1/notification_stationStatus",
        json=env.as_json(),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 200
    body: dict[str, Any] = resp.json()
    return body


TOKEN_KEY = box(load()).token_key


@pytest.mark.parametrize("mode", ["hang", "fail"])
def test_unacknowledged_push_is_answered_busy_and_not_dead_lettered(mode: str) -> None:
    for client, _ep, sink in _client(mode):
        body = _push(client, TOKEN_KEY)
        assert body["Ret"] == -1
        # the busy answer is signed like any other
        assert x.open_response(json.dumps(body).encode(), KEYS).ret == -1
        assert sink.letters == []  # not bad input: the operator retries


def test_too_many_in_flight_is_answered_busy_at_once() -> None:
    for client, ep, sink in _client("ok", max_in_flight=1):
        assert _push(client, TOKEN_KEY)["Ret"] == 0
        ep.in_flight = 1  # one push waiting for Kafka
        assert _push(client, TOKEN_KEY)["Ret"] == -1
        ep.in_flight = 0
        assert _push(client, TOKEN_KEY)["Ret"] == 0
        assert len(sink.batches) == 2


def test_no_kafka_yet_is_busy() -> None:
    for client, ep, _sink in _client("ok"):
        ep.sink = None
        assert _push(client, TOKEN_KEY)["Ret"] == -1
