"""The dead-letter tally (storage/deadletter_tally.py) and the refusal log limiter
(stream/deadletter.py): pure, no I/O."""

from __future__ import annotations

from qilu.contract import Envelope, Reading
from qilu.errors import Rejection
from storage.deadletter_tally import DeadLetterTally, clean_text
from stream.deadletter import OncePerInterval, StoredLetter, describe, key_agent

MINUTE = 60_000_000
NOW = 1_765_000_000_000_000 + 17  # not on a minute boundary
BUCKET = NOW - NOW % MINUTE


def test_readings_are_summed_per_reason_and_device_and_envelopes_once() -> None:
    t = DeadLetterTally()
    devices = ["D1", "D1", "D2", "D1"]
    rejected = [
        Rejection(0, "value_out_of_range", "5000.0 not in [0, 1000]"),
        Rejection(1, "value_out_of_range", "6000.0 not in [0, 1000]"),
        Rejection(2, "unknown_device", "'D2'"),
    ]
    t.add_readings(("r", 0, 7), NOW, "a", devices, rejected)
    t.add_envelope(("r", 0, 8), NOW, "a", "unsigned", "no signature", readings=4)
    t.add_envelope(("r", 1, 3), NOW, "", "malformed", "top level is list")
    rows, marks = t.rows({})
    assert rows == [
        (BUCKET, "", "malformed", "", 1, 0, "r/1/3", "top level is list"),
        (BUCKET, "a", "unknown_device", "D2", 1, 1, "r/0/7", "'D2'"),
        (BUCKET, "a", "unsigned", "", 1, 4, "r/0/8", "no signature"),
        (BUCKET, "a", "value_out_of_range", "D1", 1, 2, "r/0/7", "5000.0 not in [0, 1000]"),
    ]
    assert marks == {("r", 0): 9, ("r", 1): 4}


def test_records_before_the_mark_were_counted_already() -> None:
    t = DeadLetterTally()
    for offset in (5, 6, 9):
        t.add_envelope(("r", 0, offset), NOW, "a", "malformed", f"at {offset}")
    rows, marks = t.rows({("r", 0): 7})
    assert rows == [(BUCKET, "a", "malformed", "", 1, 0, "r/0/9", "at 9")]
    assert marks == {("r", 0): 10}
    rows, marks = t.rows({("r", 0): 10})
    assert (rows, marks) == ([], {})


def test_same_row_twice_in_a_batch_is_merged_with_the_newest_example() -> None:
    t = DeadLetterTally()
    t.add_envelope(("r", 0, 1), NOW, "a", "malformed", "first")
    t.add_envelope(("r", 0, 2), NOW + 1, "a", "malformed", "second")
    (row,) = t.rows({})[0]
    assert row[4:] == (2, 0, "r/0/2", "second")


def test_text_is_made_storable() -> None:
    assert clean_text("a\x00b") == "a\\x00b"
    assert clean_text(17) == "17"
    assert len(clean_text("x" * 1000)) == 256
    assert key_agent(b"agent-\xff") == "agent-\ufffd"
    assert key_agent(None) == ""
    t = DeadLetterTally()
    t.add_readings(("r", 0, 0), NOW, "a\x00", [None], [Rejection(0, "unknown_device", "None")])
    t.add_readings(("r", 0, 1), NOW, "a", [""], [Rejection(0, "unknown_device", "''")])
    rows = t.rows({})[0]
    assert [(agent, device) for _, agent, _, device, *_ in rows] == [
        ("a", "''"),
        ("a\\x00", "None"),
    ]


def test_each_agent_and_reason_is_logged_once_per_interval() -> None:
    log = OncePerInterval(300.0)
    assert log.due({("a", "malformed"): 3}, 0.0) == [("a", "malformed", 3)]
    assert log.due({("a", "malformed"): 2, ("b", "unsigned"): 1}, 10.0) == [("b", "unsigned", 1)]
    assert log.due({("a", "malformed"): 1}, 200.0) == []
    assert log.due({("a", "malformed"): 4}, 301.0) == [("a", "malformed", 7)]


def test_describe_marks_the_refused_readings() -> None:
    env = Envelope("a", "b", 3, NOW)
    env.add(Reading("D1", "power_kw", NOW, 1.0))
    env.add(Reading("D9", "power_kw", NOW, 2.0))
    headers = {
        "qilu.reason": "rejected_readings",
        "qilu.detail": "1 of 2 readings rejected: unknown_device",
        "qilu.source": "r/0/4",
        "qilu.rejected": '[{"i": 1, "reason": "unknown_device", "detail": "\'D9\'"}]',
    }
    got = describe(StoredLetter(0, 12, 1_765_000_000_000, b"a", env.encode(), headers))
    assert got["dead_letter"] == "0/12"
    assert got["envelope"] == {
        "agent_id": "a",
        "boot_id": "b",
        "seq": 3,
        "sent_at": "2025-12-06T05:46:40.000017+00:00",
        "readings": 2,
        "gaps": 0,
    }
    readings = got["readings"]
    assert isinstance(readings, list)
    assert [(r["device_id"], r.get("refused"), r.get("why")) for r in readings] == [
        ("D1", None, None),
        ("D9", "unknown_device", "'D9'"),
    ]
    raw = describe(StoredLetter(0, 13, 0, None, b"\x92\x01", {"qilu.reason": "malformed"}))
    assert raw["hex"] == "9201"
    assert "decode_error" in raw


def test_the_log_limiter_forgets_old_keys_past_its_bound() -> None:
    log = OncePerInterval(300.0)
    log.MAX_KEYS = 3
    for i in range(5):
        assert log.due({(f"x{i}", "unknown_agent"): 1}, float(i)) == [(f"x{i}", "unknown_agent", 1)]
    assert len(log._last) == 5  # none of them past its interval yet
    assert log.due({("y", "malformed"): 1}, 400.0) == [("y", "malformed", 1)]
    assert set(log._last) == {("y", "malformed")}
    assert log.due({("x0", "unknown_agent"): 2}, 401.0) == [("x0", "unknown_agent", 2)]
