"""The buffer's quarantine on real files: refused envelopes kept and counted, not re-sent,
requeued unchanged; a buffer file written before the quarantine existed still opens."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from edge_agent.buffer import Buffer, requeue_quarantine
from edge_agent.chunks import split

from qilu.contract import Reading, Sector, decode
from qilu.errors import ConfigError

T0 = 1_763_900_000_000_000


def buffer(path: Path) -> Buffer:
    b = Buffer(path, "agent-b", max_bytes=16 << 20, max_age_s=3600, fsync="os")
    b.open()
    return b


def formed(b: Buffer, readings: list[Reading]) -> None:
    b.add(split(readings, 100, Sector.CHARGING))
    while b.form(live=True, now_us=T0 + 10**9, live_window_us=10**12, max_readings=100,
                 max_delay_us=0, force=True):  # fmt: skip
        pass


def test_refused_envelopes_stay_counted_and_are_requeued_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "buf.db"
    b = buffer(path)
    formed(
        b,
        [Reading("pile-1", "power_kw", T0 + i, 1.0) for i in range(3)]
        + [Reading("sub-1", "oil_temp_c", T0 + i, 40.0) for i in range(5)],
    )
    out = b.unsent_outbox()
    sub = [o for o in out if o.sector is Sector.SUBSTATION]
    b.refuse(sub, "topic_authorization_failed")
    assert [o.sector for o in b.unsent_outbox()] == [Sector.CHARGING]
    (q,) = b.quarantine()
    assert (q.sector, q.envelopes, q.readings) == (Sector.SUBSTATION, 1, 5)
    assert b.pending == 8  # nothing lost: quarantined readings still count
    b.close()

    again = buffer(path)  # a restart does not send the quarantine again
    assert [o.sector for o in again.unsent_outbox()] == [Sector.CHARGING]
    again.close()
    assert requeue_quarantine(path, "agent-b", [Sector.RANCH]) == []
    (done,) = requeue_quarantine(path, "agent-b")
    assert (done.sector, done.readings) == (Sector.SUBSTATION, 5)
    last = buffer(path)
    assert [o.payload for o in last.unsent_outbox() if o.sector is Sector.SUBSTATION] == [
        sub[0].payload
    ]
    assert last.quarantine() == []
    last.close()
    with pytest.raises(ConfigError) as err:
        requeue_quarantine(path, "someone-else")
    assert err.value.key == "agent.id"


def test_a_buffer_from_before_the_quarantine_opens_and_keeps_its_envelopes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    b = buffer(path)
    formed(b, [Reading("pile-1", "power_kw", T0, 1.0)])
    (o,) = b.unsent_outbox()
    b.close()
    db = sqlite3.connect(path)  # the previous version's outbox: no quarantine columns
    db.executescript(
        "ALTER TABLE outbox DROP COLUMN refused; ALTER TABLE outbox DROP COLUMN refused_us;"
    )
    db.close()
    assert requeue_quarantine(path, "agent-b") == []
    b = buffer(path)
    assert [x.payload for x in b.unsent_outbox()] == [o.payload]
    b.refuse(b.unsent_outbox(), "topic_authorization_failed")
    assert b.quarantine()[0].readings == 1
    b.close()


def test_a_sector_refused_for_good_cannot_fill_the_buffer(tmp_path: Path) -> None:
    """A collector of a sector the agent is not authorised for keeps producing: its refused
    envelopes stay within the quarantine's share of the bound (the oldest evicted, counted
    and gap-recorded as quarantine_full), and the authorised sector loses nothing."""
    max_bytes = 4 << 20
    b = Buffer(
        tmp_path / "buf.db", "agent-b", max_bytes=max_bytes, max_age_s=3600, fsync="os",
        quarantine_max_share=0.25,
    )  # fmt: skip
    b.open()
    subs = piles = acked = buffer_full = quarantine_full = 0
    for step in range(30):  # ~9 MB of refused readings: twice the whole bound
        t = T0 + step * 100_000
        sub = [Reading(f"sub-{i % 7}", "oil_temp_c", t + i, 40.0) for i in range(12_000)]
        pile = [Reading(f"pile-{i % 5}", "power_kw", t + i, 1.0) for i in range(1_000)]
        for batch in (sub + pile, [*pile]):  # the second hand-over finds chunks waiting
            buffer_full += sum(b.add(split(batch, 500, Sector.CHARGING)).dropped.values())
        subs += len(sub)
        piles += 2 * len(pile)
        while b.form(live=True, now_us=t, live_window_us=10**12, max_readings=500,
                     max_delay_us=0, force=True):  # fmt: skip
            pass
        out = b.unsent_outbox()
        res = b.refuse([o for o in out if o.sector is Sector.SUBSTATION], "not_authorised")
        assert set(res.dropped) <= {"quarantine_full"}
        quarantine_full += res.dropped.get("quarantine_full", 0)
        mine = [o for o in out if o.sector is Sector.CHARGING]
        b.ack(mine)
        acked += sum(o.readings for o in mine)
        held = b.db.execute("SELECT sum(bytes) FROM outbox WHERE refused IS NOT NULL").fetchone()
        assert held[0] <= max_bytes // 4
        assert b.disk_bytes() <= max_bytes
    assert buffer_full == 0  # nothing of the authorised sector was evicted
    assert acked == piles
    assert quarantine_full > 0
    (q,) = b.quarantine()
    assert q.sector is Sector.SUBSTATION
    assert q.readings + quarantine_full == subs  # every refused reading counted
    assert b.pending == q.readings
    gaps = [
        g
        for (p,) in b.db.execute("SELECT payload FROM outbox WHERE gaps > 0")
        for g in decode(p).gaps
    ]
    assert {g.reason for g in gaps} == {"quarantine_full"}
    assert sum(g.dropped for g in gaps) == quarantine_full
    assert {g.device_id for g in gaps} == {f"sub-{i}" for i in range(7)}
    b.close()
