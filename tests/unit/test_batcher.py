from edge_agent.batcher import Batcher

from qilu.contract import Reading, Sector


def readings(n: int, t: int = 0) -> list[Reading]:
    return [Reading(f"d{i}", "power_kw", t + i, float(i)) for i in range(n)]


def test_envelopes_close_at_max_size_with_increasing_sequence() -> None:
    b = Batcher("agent", "boot", max_readings=4, max_delay_us=10**9)
    closed = b.add(Sector.CHARGING, readings(10), now_us=5)
    assert [len(e) for _, e in closed] == [4, 4]
    assert [e.seq for _, e in closed] == [0, 1]
    assert b.pending() == 2
    rest = b.due(now_us=6, force=True)
    assert [(s, len(e), e.seq) for s, e in rest] == [(Sector.CHARGING, 2, 2)]
    assert b.next_seq == 3


def test_envelopes_close_after_max_delay_per_sector() -> None:
    b = Batcher("agent", "boot", max_readings=100, max_delay_us=1_000)
    assert b.add(Sector.CHARGING, readings(1), now_us=0) == []
    assert b.add(Sector.RANCH, readings(1), now_us=600) == []
    assert b.due(now_us=999) == []
    first = b.due(now_us=1_000)
    assert [s for s, _ in first] == [Sector.CHARGING]
    second = b.due(now_us=1_600)
    assert [(s, e.seq) for s, e in second] == [(Sector.RANCH, 1)]


def test_envelope_identity_is_the_agents() -> None:
    b = Batcher("agent-x", "boot-y", max_readings=1)
    ((_, env),) = b.add(Sector.SUBSTATION, readings(1), now_us=42)
    assert (env.agent_id, env.boot_id, env.seq, env.sent_at_us) == ("agent-x", "boot-y", 0, 42)
    assert list(env.readings()) == readings(1)
