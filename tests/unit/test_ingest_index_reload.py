"""The periodic reload of the device index runs beside the poll loop, not in it: a batch is
validated with the index the consumer has while the new one loads, the new one is taken at
the first batch after it is ready, and a failed reload leaves the old one in place."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from qilu.contract import Envelope
from qilu.settings import IngestSettings, KafkaSettings
from storage.registry_store import DeviceIndex
from storage.rows import RowArrays, Rows
from stream import ingest
from stream.ingest import IngestConsumer

METRICS = {"power_kw": 2}
FIRST = {"pile-1": (11, "charging_pile")}
SECOND = {**FIRST, "pile-2": (12, "charging_pile")}
GUARD_S = 60  # a loader still blocked after this lets the test fail instead of hanging


class Sink:
    def __init__(self) -> None:
        self.pks: list[int] = []

    def add(self, rows: Rows | RowArrays) -> None:
        self.pks += [int(pk) for pk in rows.device_pk]


class Loader:
    """The first index at once; later ones after ``release`` (or an error)."""

    def __init__(self, later: dict[str, tuple[int, str]] | None) -> None:
        self.later = later
        self.calls = 0
        self.release = threading.Event()
        self.released_by_test = False

    def __call__(self) -> DeviceIndex:
        self.calls += 1
        if self.calls == 1:
            return DeviceIndex(FIRST, METRICS)
        self.released_by_test = self.release.wait(GUARD_S)
        if self.later is None:
            raise OSError("the database is away")
        return DeviceIndex(self.later, METRICS)


def record(offset: int, *devices: str) -> tuple[str, int, int, bytes, bytes]:
    now = time.time_ns() // 1000
    env = Envelope("agent-a", "boot", offset, now)
    for d in devices:
        env.devices.append(d)
        env.metrics.append("power_kw")
        env.ts_us.append(now - 1_000_000)
        env.values.append(1.0)
        env.qualities.append(0)
    return ("t", 0, offset, b"agent-a", env.encode())


def consumer(loader: Loader) -> tuple[IngestConsumer, Sink]:
    sink = Sink()
    c = IngestConsumer(KafkaSettings(), IngestSettings(), sink, loader)  # type: ignore[arg-type]
    # the index is due for its periodic reload, the unknown-device reload is not
    c._index_loaded = time.monotonic() - ingest.INDEX_MAX_AGE_S - 1
    return c, sink


def test_a_batch_does_not_wait_for_the_reload_and_the_next_takes_the_new_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ingest, "INDEX_REFRESH_S", 10**9)  # no reload after an unknown device
    loader = Loader(SECOND)
    c, sink = consumer(loader)
    out = c.process([record(0, "pile-1", "pile-2")])  # returns while the reload is blocked
    assert not loader.release.is_set()
    assert sink.pks == [11]  # pile-2 unknown to the index in use
    assert [d.reason for d in out.dead_letters] == ["rejected_readings"]
    loader.release.set()
    reload = c._reload
    assert reload is not None
    reload.done.wait(GUARD_S)
    assert loader.released_by_test
    out = c.process([record(1, "pile-1", "pile-2")])
    assert sink.pks == [11, 11, 12]
    assert not out.dead_letters


def test_a_failed_reload_keeps_the_index_and_is_tried_again_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loader = Loader(None)
    loader.release.set()
    c, sink = consumer(loader)
    with caplog.at_level(logging.WARNING, logger="stream.ingest"):
        c.process([record(0, "pile-1")])
        reload = c._reload
        assert reload is not None
        reload.done.wait(GUARD_S)
        c.process([record(1, "pile-1")])  # the failure noted
    assert sink.pks == [11, 11]
    assert "the device index was not reloaded" in caplog.text
    assert c._reload is None
    # the next attempt comes INDEX_REFRESH_S after the failure, not at once
    due_in = c._index_loaded + ingest.INDEX_MAX_AGE_S - time.monotonic()
    assert 0 < due_in <= ingest.INDEX_REFRESH_S
    c.process([record(2, "pile-1")])
    assert loader.calls == 2
