"""The buffer's quarantine on real files: refused envelopes kept and counted, not re-sent,
requeued unchanged; a buffer file written before the quarantine existed still opens."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from edge_agent.buffer import Buffer, requeue_quarantine
from edge_agent.chunks import split

from qilu.contract import Reading, Sector
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
