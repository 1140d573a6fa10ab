"""validate_gaps: the gap records agent_gaps can store pass, the others get a reason."""

from __future__ import annotations

from qilu.contract import Envelope, Gap
from stream.validate import MAX_TEXT, MIN_TS_US, validate_gaps

NOW = MIN_TS_US + 10**15


def env_with(*gaps: Gap, agent: str = "agent-1") -> Envelope:
    env = Envelope(agent, "boot", 1, NOW)
    env.gaps = list(gaps)
    return env


def gap(**over: object) -> Gap:
    fields: dict[str, object] = {
        "boot_id": "boot", "gap_no": 1, "device_id": None, "start_us": NOW - 10**8,
        "end_us": NOW - 10**7, "dropped": 10, "reason": "buffer_full",
    }  # fmt: skip
    fields.update(over)
    return Gap(**fields)  # type: ignore[arg-type]


def test_good_gaps_pass_untouched() -> None:
    g = gap()
    assert validate_gaps(env_with(g, gap(gap_no=2)), NOW) == ([g, gap(gap_no=2)], [])


def test_each_hostile_gap_gets_its_reason_and_the_good_one_stays() -> None:
    good, rejected = validate_gaps(
        env_with(
            gap(gap_no=2**40),
            gap(reason="buffer\x00full"),
            gap(device_id="d" * (MAX_TEXT + 1)),
            gap(start_us=2**62, end_us=2**62 + 1),
            gap(start_us=NOW, end_us=NOW - 1),
            gap(start_us=MIN_TS_US - 1),
            gap(dropped=2**63),
            gap(gap_no=7),
        ),
        NOW,
    )
    assert good == [gap(gap_no=7)]
    assert [(r.index, r.reason) for r in rejected] == [
        (0, "gap_number_out_of_range"),
        (1, "bad_text"),
        (2, "bad_text"),
        (3, "timestamp_out_of_range"),
        (4, "timestamp_out_of_range"),
        (5, "timestamp_out_of_range"),
        (6, "bad_count"),
    ]


def test_an_agent_id_too_long_to_index_rejects_every_gap() -> None:
    _, rejected = validate_gaps(env_with(gap(), gap(gap_no=2), agent="a" * 10_000), NOW)
    assert [r.reason for r in rejected] == ["bad_text", "bad_text"]
