"""IngestConsumer.process, the pure part of the loop: records in, rows and dead letters out.

A poll is decoded and authenticated record by record, then validated at once; the dead
letters still come out in the records' order, and the sink gets every accepted reading."""

from __future__ import annotations

import time

from qilu.contract import Envelope, Gap
from qilu.packed import PACKED_MIN_BYTES, PackedEnvelope
from qilu.settings import IngestSettings, KafkaSettings
from storage.deadletter_tally import DeadLetterTally
from storage.registry_store import DeviceIndex
from storage.rows import RowArrays, Rows
from stream.ingest import IngestConsumer

DEVICES = {"pile-1": (11, "charging_pile"), "trafo-1": (12, "transformer")}
METRICS = {"power_kw": 2, "fault": 4, "oil_temp_c": 5}


class Sink:
    def __init__(self) -> None:
        self.parts: list[Rows | RowArrays] = []

    def add(self, rows: Rows | RowArrays) -> None:
        self.parts.append(rows)

    def rows(self) -> list[tuple[int, int, float]]:
        cols = RowArrays.concat(self.parts)
        return sorted(
            zip(cols.device_pk.tolist(), cols.metric_id.tolist(), cols.value.tolist(), strict=True)
        )


class Gaps:
    def __init__(self) -> None:
        self.added: list[Envelope] = []

    def add(self, env: Envelope) -> None:
        self.added.append(env)


def consumer(sink: Sink, gaps: Gaps) -> IngestConsumer:
    return IngestConsumer(
        KafkaSettings(),
        IngestSettings(),
        sink,  # type: ignore[arg-type]
        lambda: DeviceIndex(DEVICES, METRICS),
        gaps=gaps,  # type: ignore[arg-type]
        deadletters=DeadLetterTally(),
    )


def envelope(*readings: tuple[str, str, float], gaps: list[Gap] | None = None) -> bytes:
    now = time.time_ns() // 1000
    env = Envelope("agent-a", "boot", 0, now)
    for device, metric, value in readings:
        env.devices.append(device)
        env.metrics.append(metric)
        env.ts_us.append(now - 1_000_000)
        env.values.append(value)
        env.qualities.append(0)
    env.gaps = gaps or []
    return env.encode()


def test_dead_letters_keep_the_records_order_and_every_good_reading_is_stored() -> None:
    sink, gaps = Sink(), Gaps()
    now = time.time_ns() // 1000
    bad_gap = Gap("boot", 2**40, None, now - 10, now - 5, 3, "buffer full")  # gap_no too big
    values = [
        envelope(("pile-1", "power_kw", 7.5), ("trafo-1", "oil_temp_c", 55.0)),  # good
        b"\xc1 not msgpack",  # malformed
        envelope(("pile-1", "power_kw", 1e12), ("pile-1", "fault", 0.0)),  # one out of range
        None,  # a tombstone
        envelope(("trafo-1", "oil_temp_c", 60.0), gaps=[bad_gap]),  # good readings, bad gap
        envelope(("ghost", "power_kw", 1.0)),  # unknown device
        envelope(("pile-1", "fault", 1.0)),  # good
    ]
    records = [("t", 0, i, b"agent-a", v) for i, v in enumerate(values)]
    out = consumer(sink, gaps).process(records)  # type: ignore[arg-type]
    assert [(d.source, d.reason) for d in out.dead_letters] == [
        ("t/0/1", "malformed"),
        ("t/0/2", "rejected_readings"),
        ("t/0/3", "malformed"),
        ("t/0/4", "rejected_gaps"),
        ("t/0/5", "rejected_readings"),
    ]
    assert [r.reason for r in out.dead_letters[1].rejected] == ["value_out_of_range"]
    assert out.rejected == 2  # the out-of-range reading and the unknown device's
    assert sink.rows() == [(11, 2, 7.5), (11, 4, 0.0), (11, 4, 1.0), (12, 5, 55.0), (12, 5, 60.0)]
    assert len(gaps.added) == 1


def big_envelope(n: int, bad_at: int | None = None, device: str = "pile-1") -> bytes:
    """``n`` readings of one device, one a second apart (``bad_at``: out of range), large
    enough to be read into arrays (qilu/packed.py, PACKED_MIN_BYTES)."""
    now = time.time_ns() // 1000
    env = Envelope("agent-a", "boot", 0, now)
    for i in range(n):
        env.devices.append(device)
        env.metrics.append("power_kw")
        env.ts_us.append(now - (i + 1) * 1_000_000)
        env.values.append(1e12 if i == bad_at else float(i))
        env.qualities.append(0)
    return env.encode()


def test_large_envelopes_are_read_into_arrays_with_the_same_outcome() -> None:
    """Envelopes over PACKED_MIN_BYTES take the array path (small ones the general one):
    the good ones stored whole, one with a refused reading refused the exact way with its
    reason and its other readings stored, an unknown device's refused."""
    big = [big_envelope(400), big_envelope(400, bad_at=7), big_envelope(400, device="ghost")]
    assert all(len(b) >= PACKED_MIN_BYTES for b in big)
    small = envelope(("trafo-1", "oil_temp_c", 60.0))
    assert len(small) < PACKED_MIN_BYTES
    sink, gaps = Sink(), Gaps()
    c = consumer(sink, gaps)
    now = time.time_ns() // 1000
    opened = [c._open(("t", 0, 0, b"agent-a", v), now) for v in (big[0], small)]
    assert [type(getattr(o, "env", None)) for o in opened] == [PackedEnvelope, Envelope]
    records = [("t", 0, i, b"agent-a", v) for i, v in enumerate([*big, small])]
    out = c.process(records)  # type: ignore[arg-type]
    assert [(d.source, d.reason) for d in out.dead_letters] == [
        ("t/0/1", "rejected_readings"),
        ("t/0/2", "rejected_readings"),
    ]
    assert [(r.index, r.reason) for r in out.dead_letters[0].rejected] == [
        (7, "value_out_of_range")
    ]
    assert {r.reason for r in out.dead_letters[1].rejected} == {"unknown_device"}
    assert out.rejected == 1 + 400
    stored = sink.rows()
    assert len(stored) == 400 + 399 + 1
    assert stored.count((11, 2, 7.0)) == 1  # the refused reading's place: only the first's
    assert (12, 5, 60.0) in stored
