"""IngestConsumer._poll: a batch is handed over as soon as its first record is there.

librdkafka's ``consume(n, timeout)`` waits until it has ``n`` records or the timeout is over;
at a low rate every batch waited the whole poll timeout (p50 156 ms from send to commit at
20,000 readings/s). The loop waits with ``poll`` for the first record and takes what else was
fetched with a ``consume`` that does not wait."""

from __future__ import annotations

from typing import Any

from qilu.settings import IngestSettings, KafkaSettings
from storage.deadletter_tally import DeadLetterTally
from storage.registry_store import DeviceIndex
from stream.ingest import IngestConsumer


class Msg:
    def __init__(self, partition: int, offset: int) -> None:
        self._p, self._o = partition, offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "t.readings.charging"

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o


class Client:
    """What librdkafka holds already fetched; ``consume`` with a timeout would wait for more."""

    def __init__(self, fetched: list[Msg]) -> None:
        self.fetched = fetched
        self.calls: list[tuple[Any, ...]] = []

    def poll(self, timeout: float) -> Msg | None:
        self.calls.append(("poll", timeout))
        return self.fetched.pop(0) if self.fetched else None

    def consume(self, n: int, timeout: float) -> list[Msg]:
        self.calls.append(("consume", n, timeout))
        got, self.fetched = self.fetched[:n], self.fetched[n:]
        return got


def ingest(max_batch_records: int) -> IngestConsumer:
    return IngestConsumer(
        KafkaSettings(),
        IngestSettings(max_batch_records=max_batch_records),
        None,  # type: ignore[arg-type]  # the poll never reaches the sink
        lambda: DeviceIndex({}, {}),
        deadletters=DeadLetterTally(),
    )


def test_what_was_fetched_comes_at_once_without_waiting_for_a_full_batch() -> None:
    client = Client([Msg(0, 7), Msg(1, 3), Msg(0, 8)])
    got = ingest(500)._poll(client, 200)  # type: ignore[arg-type]
    assert {k: [m.offset() for m in v] for k, v in got.items()} == {
        ("t.readings.charging", 0): [7, 8],
        ("t.readings.charging", 1): [3],
    }
    # the only wait is for the first record; the rest is taken without one
    assert client.calls == [("poll", 0.2), ("consume", 499, 0)]


def test_nothing_fetched_is_an_empty_poll_and_a_batch_is_at_most_its_size() -> None:
    assert ingest(500)._poll(Client([]), 200) == {}  # type: ignore[arg-type]
    client = Client([Msg(0, o) for o in range(5)])
    got = ingest(2)._poll(client, 200)  # type: ignore[arg-type]
    assert [m.offset() for m in got["t.readings.charging", 0]] == [0, 1]
    one = Client([Msg(0, 0), Msg(0, 1)])
    assert [m.offset() for m in ingest(1)._poll(one, 200)["t.readings.charging", 0]] == [0]  # type: ignore[arg-type]
    assert one.calls == [("poll", 0.2)]
