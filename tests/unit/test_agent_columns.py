"""Column-wise hand-overs (qilu.contract.ReadingColumns) through the agent's intake and buffer:
the same chunks, bytes and envelopes as the same readings handed over one object each."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
from edge_agent.buffer import Buffer
from edge_agent.chunks import Chunk, encoded_envelope_of, envelope_of, joined, split

from qilu.contract import Quality, Reading, ReadingColumns, Sector, decode

T0 = 1_763_900_000_000_000


def mixed(n: int, start: int = 0) -> list[Reading]:
    """Piles with faults (alarm priority), a substation, and a metric of no known sector."""
    out = []
    for i in range(start, start + n):
        metric = ("power_kw", "fault", "oil_temp_c", "power_kw", "made_up_metric")[i % 5]
        quality = Quality(i % 3)
        out.append(Reading(f"DEV-{i % 7}", metric, T0 + i, float(i), quality))
    return out


def shape(chunks: list[Chunk]) -> list[tuple[Sector, int, int, bytes]]:
    return [(c.sector, c.prio, len(c.readings), c.encode()) for c in chunks]


def test_columns_split_into_the_same_chunks_as_readings() -> None:
    rs = mixed(1234)
    for size in (1, 100, 247, 5000):
        for default in (Sector.CHARGING, Sector.RANCH):
            assert shape(split(ReadingColumns.of(rs), size, default)) == shape(
                split(rs, size, default)
            )
    one_group = [r for r in rs if r.metric == "power_kw"]
    cols = ReadingColumns.of(one_group)
    assert shape(split(cols, 5000)) == shape(split(one_group, 5000))
    assert split(ReadingColumns(), 100) == []


def test_hand_overs_of_columns_are_joined_as_columns() -> None:
    a, b = mixed(10), mixed(10, start=10)
    both = joined([ReadingColumns.of(a), ReadingColumns.of(b)])
    assert isinstance(both, ReadingColumns)
    assert list(both) == a + b
    assert list(joined([ReadingColumns.of(a), b])) == a + b  # a mix: Readings
    single = ReadingColumns.of(a)
    assert joined([single]) is single


def test_a_column_hand_over_leaves_the_buffer_as_the_same_envelopes(tmp_path: Path) -> None:
    rs = mixed(600)
    sent: list[list[Reading]] = []
    for name, handed in (("objects", rs), ("columns", ReadingColumns.of(rs))):
        b = Buffer(tmp_path / f"{name}.db", "agent-t", max_bytes=64 << 20, max_age_s=3600.0,
                   fsync="os", clock=lambda: T0)  # fmt: skip
        b.open(boot_id="boot-1")
        assert b.add(split(handed, 100)).accepted == 600
        out: list[Reading] = []
        while o := b.form(live=True, now_us=T0, live_window_us=10**12, max_readings=250,
                          max_delay_us=0, force=True):  # fmt: skip
            out.extend(decode(o.payload).readings())
        b.close()
        sent.append(out)
    assert sent[0] == sent[1]
    assert sorted(sent[1], key=lambda r: r.ts_us) == rs


@pytest.mark.parametrize("sizes", [[1], [3, 12], [15, 16, 300], [70_000, 2]])
def test_an_envelope_formed_by_concatenation_is_byte_for_byte_the_encoded_one(
    sizes: list[int],
) -> None:
    """Chunks of fix-, 16- and 32-bit array headers; the envelope's own header goes from one
    size class to the next."""
    blobs, start = [], 0
    for n in sizes:
        rs = mixed(n, start=start)
        rs = [r for r in rs if r.metric != "fault"] or rs
        blobs.append(Chunk(Sector.CHARGING, 0, ReadingColumns.of(rs)).encode())
        start += n
    payload, n = encoded_envelope_of("agent-t", "boot-1", 2**40, T0, blobs)
    env = envelope_of("agent-t", "boot-1", 2**40, T0, blobs)
    assert payload == env.encode()
    assert n == len(env)
    if sum(sizes) < 10_000:  # the 32-bit case is over the wire's size limit
        assert decode(payload) == env


@pytest.mark.parametrize(
    "blob",
    [
        msgpack.packb([["d"], ["m"], [1], [1.0]]),  # four columns
        msgpack.packb([["d"], ["m"], [1], [1.0], [0, 0]]),  # lengths differ
        msgpack.packb([["d"], ["m"], [1], [1.0], 0]),  # not an array
        msgpack.packb([["d"], ["m"], [1], [1.0], [0]]) + b"\x00",  # trailing bytes
    ],
)
def test_a_malformed_stored_chunk_is_refused_when_forming(blob: bytes) -> None:
    with pytest.raises(ValueError, match="chunk"):
        encoded_envelope_of("agent-t", "boot-1", 1, T0, [blob])
