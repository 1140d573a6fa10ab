"""The durable buffer on a real SQLite file (no network): ack cycle, restarts, bounds, damage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from edge_agent.buffer import Buffer, Outgoing
from edge_agent.chunks import ALARM_METRICS, SECTOR_OF_METRIC, split

from qilu.contract import Reading, Sector, decode
from qilu.devices import DEVICE_KINDS
from qilu.errors import ConfigError

T0 = 1_763_900_000_000_000
MIB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def piles(n: int, start: int = 0, metric: str = "power_kw") -> list[Reading]:
    return [
        Reading(f"CHG-370100-00001-P{i % 50:03d}", metric, T0 + i, float(i))
        for i in range(start, start + n)
    ]


def open_buffer(path: Path, **kw: object) -> Buffer:
    opts: dict[str, object] = {"max_bytes": 64 * MIB, "max_age_s": 3600.0, "fsync": "os"}
    opts.update(kw)
    b = Buffer(path, "agent-t", **opts)  # type: ignore[arg-type]
    b.open()
    return b


def form_all(b: Buffer, now: int, *, live: bool = True) -> list[Outgoing]:
    out = []
    while (
        o := b.form(
            live=live,
            now_us=now,
            live_window_us=10**12,
            max_readings=100,
            max_delay_us=0,
            force=True,
        )
    ) is not None:
        out.append(o)
    return out


def test_metric_keys_name_one_sector_each() -> None:
    keys = [(m.key, k.sector) for k in DEVICE_KINDS for m in k.metrics]
    assert len({k for k, _ in keys}) == len(SECTOR_OF_METRIC)
    assert all(SECTOR_OF_METRIC[k] == s for k, s in keys)
    assert {"fault", "sf6_alarm", "pd_alarm"} == ALARM_METRICS


def test_add_form_ack_round_trip(tmp_path: Path) -> None:
    b = open_buffer(tmp_path / "b.db")
    readings = [*piles(250), Reading("SUB-1-T1", "oil_temp_c", T0, 55.0)]
    res = b.add(split(readings, 100))
    assert res.accepted == 251
    assert b.pending == 251
    outs = form_all(b, T0)
    envs = [decode(o.payload) for o in outs]
    assert [e.seq for e in envs] == list(range(len(envs)))
    assert {e.boot_id for e in envs} == {b.boot_id}
    got = [r for e in envs for r in e.readings()]
    assert len(got) == len(readings)
    assert set(got) == set(readings)
    assert {o.sector for o in outs} == {Sector.CHARGING, Sector.SUBSTATION}
    assert b.pending == 251  # formed, not acknowledged: still ours
    b.ack(outs[:1])
    assert b.pending == 251 - outs[0].readings
    b.ack(outs[1:])
    assert b.pending == 0
    assert b.stats().oldest_added_us is None
    b.close()


def test_unacknowledged_envelopes_survive_a_restart_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    b = open_buffer(path)
    b.add(split(piles(300), 100))
    sent = form_all(b, T0)[:2]
    first_boot = b.boot_id
    b.add(split(piles(50, start=1000), 100))
    b.db.close()  # as after kill -9: no checkpoint, no clean close
    b._db = None

    again = open_buffer(path)
    assert again.boot_id != first_boot
    assert again.pending == 350
    restored = again.unsent_outbox()
    assert [(o.boot_id, o.seq, o.payload) for o in restored[:2]] == [
        (o.boot_id, o.seq, o.payload) for o in sent
    ]
    # new envelopes of the new boot start at sequence 0
    new = form_all(again, T0)
    assert all(decode(o.payload).boot_id == again.boot_id for o in new)
    assert [decode(o.payload).seq for o in new] == list(range(len(new)))
    again.ack(restored + new)
    assert again.pending == 0
    again.close()


def test_a_buffer_belongs_to_one_agent(tmp_path: Path) -> None:
    open_buffer(tmp_path / "b.db").close()
    other = Buffer(tmp_path / "b.db", "someone-else", max_bytes=64 * MIB, max_age_s=60)
    with pytest.raises(ConfigError, match=r"agent\.id"):
        other.open()


def test_full_buffer_stays_in_bound_drops_oldest_keeps_alarms_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    clock = Clock()
    b = open_buffer(path, max_bytes=8 * MIB, clock=clock)
    total, dropped, alarms = 0, 0, []
    peak_disk = 0
    for step in range(60):  # ~60 x 3,000 readings: several times the bound
        clock.now += 1_000_000
        batch = piles(3000, start=step * 3000)
        alarm = Reading("CHG-370100-00001-P001", "fault", T0 + step, 1.0)
        alarms.append(alarm)
        res = b.add(split([*batch, alarm], 500))
        total += len(batch) + 1
        dropped += sum(res.dropped.values())
        peak_disk = max(peak_disk, b.disk_bytes())
    assert dropped > 0
    assert peak_disk <= 8 * MIB, f"disk {peak_disk} over the 8 MiB bound"
    assert b.pending + dropped == total
    # what is left: every alarm, and the newest normal readings (oldest were dropped)
    gaps_total = 0
    kept: list[Reading] = []
    for o in form_all(b, clock.now):
        env = decode(o.payload)
        kept += env.readings()
        gaps_total += sum(g.dropped for g in env.gaps)
    for o in b.unsent_outbox():
        gaps_total += sum(g.dropped for g in decode(o.payload).gaps)
    assert gaps_total == dropped
    assert set(alarms) <= set(kept)
    normal = sorted(r.ts_us for r in kept if r.metric == "power_kw")
    assert normal[-1] == T0 + total - len(alarms) - 1  # the newest reading is still there
    assert normal == list(range(normal[0], normal[-1] + 1))  # one contiguous newest stretch
    b.close()


def test_drop_newest_refuses_new_normal_readings(tmp_path: Path) -> None:
    clock = Clock()
    b = open_buffer(tmp_path / "b.db", max_bytes=8 * MIB, policy="drop_newest", clock=clock)
    dropped = 0
    for step in range(60):
        clock.now += 1_000_000
        res = b.add(split(piles(3000, start=step * 3000), 500))
        dropped += res.dropped.get("buffer_full", 0)
    assert dropped > 0
    kept = sorted(r.ts_us for o in form_all(b, clock.now) for r in decode(o.payload).readings())
    assert kept[0] == T0  # the oldest are kept
    assert len(kept) + dropped == 180_000
    b.close()


def test_age_bound_drops_old_chunks_with_a_gap(tmp_path: Path) -> None:
    clock = Clock()
    b = open_buffer(tmp_path / "b.db", max_age_s=60.0, clock=clock)
    b.add(split(piles(10), 100))
    clock.now += 61_000_000
    res = b.expire()
    assert res.dropped == {"max_age": 10}
    assert b.pending == 0
    (gap_env,) = [decode(o.payload) for o in b.unsent_outbox()]
    assert sum(g.dropped for g in gap_env.gaps) == 10
    assert {g.reason for g in gap_env.gaps} == {"max_age"}
    b.close()


def _filled(path: Path, n_chunks: int) -> int:
    b = open_buffer(path)
    for i in range(n_chunks):
        b.add(split(piles(200, start=i * 200), 200))
    pending = b.pending
    b.close()  # checkpointed: everything is in the main file
    return pending


def test_truncated_file_is_quarantined_and_readable_readings_kept(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    pending = _filled(path, 400)
    size = path.stat().st_size
    os.truncate(path, size * 6 // 10)
    b = open_buffer(path)
    report_dir = [p for p in tmp_path.iterdir() if ".quarantine-" in p.name]
    assert len(report_dir) == 1
    assert (report_dir[0] / "b.db").exists()
    kept = b.pending
    assert 0 < kept < pending
    gaps = [g for o in b.unsent_outbox() for g in decode(o.payload).gaps]
    assert [(g.reason, g.dropped) for g in gaps] == [("corrupt_buffer", pending - kept)]
    # the salvaged readings are intact and distinct
    rs = [r for o in form_all(b, T0) for r in decode(o.payload).readings()]
    assert len(rs) == len(set(rs)) == kept
    b.close()


def test_overwritten_pages_are_quarantined_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    pending = _filled(path, 400)
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(os.urandom(64 * 1024))
    b = open_buffer(path)
    kept = b.pending
    assert kept < pending
    gaps = [g for o in b.unsent_outbox() for g in decode(o.payload).gaps]
    assert sum(g.dropped for g in gaps) == pending - kept
    b.close()


def test_a_file_that_is_not_a_database_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    path.write_bytes(b"not sqlite at all" * 1000)
    b = open_buffer(path)
    assert b.pending == 0
    assert any(".quarantine-" in p.name for p in tmp_path.iterdir())
    b.add(split(piles(5), 100))
    assert b.pending == 5
    b.close()


def test_due_is_known_without_a_query(tmp_path: Path) -> None:
    clock = Clock()
    b = open_buffer(tmp_path / "b.db", clock=clock)
    assert not b.due(clock.now, 100, 1_000_000)
    b.add(split(piles(10), 100))
    assert b.chunk_readings == 10
    assert b.oldest_chunk_us == clock.now
    assert not b.due(clock.now + 999_999, 100, 1_000_000)  # too few, not waited long enough
    assert b.due(clock.now + 1_000_000, 100, 1_000_000)  # waited long enough
    b.add(split(piles(95, start=10), 100))
    assert b.due(clock.now, 100, 1_000_000)  # enough for an envelope
    form_all(b, clock.now)
    assert b.chunk_readings == 0
    assert b.oldest_chunk_us is None
    b.close()
