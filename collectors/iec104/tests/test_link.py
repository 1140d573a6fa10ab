"""The APCI state machine with a hand-driven clock: windows, acknowledgements and timers."""

# ruff: noqa: S101 - pytest asserts

from __future__ import annotations

import pytest

from collectors.iec104 import codec
from collectors.iec104.codec import FrameReader, IFrame, ProtocolError, SFrame, U, UFrame
from collectors.iec104.link import Link, LinkParams, LinkTimeoutError, State

ASDU = codec.encode_monitor(13, codec.Cot.SPONTANEOUS, 1, [(1, 1.0, 0, b"")])


def sent(link: Link) -> list[codec.Frame]:
    return FrameReader().feed(link.take_output())


def started(params: LinkParams | None = None) -> Link:
    link = Link(params)
    link.open(0.0)
    assert sent(link) == [UFrame(U.STARTDT_ACT)]
    link.receive(codec.encode_u(U.STARTDT_CON), 0.1)
    assert link.state is State.STARTED
    return link


def test_startdt_unanswered_within_t1_ends_the_link() -> None:
    link = Link(LinkParams(t1=15))
    link.open(0.0)
    link.tick(14.9)
    assert link.deadline() == 15.0
    with pytest.raises(LinkTimeoutError, match="t1"):
        link.tick(15.0)


def test_received_i_frames_are_acknowledged_after_w_once_processed() -> None:
    link = started(LinkParams(w=8))
    for n in range(8):
        assert link.receive(codec.encode_i(n, 0, ASDU), 1.0) == [ASDU]
    assert sent(link) == []  # not processed yet: the station keeps them
    link.processed(1.0)
    assert sent(link) == [SFrame(8)]


def test_fewer_than_w_are_acknowledged_after_t2() -> None:
    link = started(LinkParams(t2=10))
    link.receive(codec.encode_i(0, 0, ASDU) + codec.encode_i(1, 0, ASDU), 1.0)
    link.processed(1.0)
    assert sent(link) == []
    assert link.deadline() == 11.0
    link.tick(11.0)
    assert sent(link) == [SFrame(2)]


def test_k_window_holds_our_frames_until_acknowledged() -> None:
    link = started(LinkParams(k=2))
    assert link.send(ASDU, 1.0)
    assert link.send(ASDU, 1.0)
    assert not link.send(ASDU, 1.0)
    assert [f.send_seq for f in sent(link) if isinstance(f, IFrame)] == [0, 1]
    assert (link.unacknowledged, link.waiting) == (2, 1)
    link.receive(codec.encode_s(1), 2.0)
    assert [f.send_seq for f in sent(link) if isinstance(f, IFrame)] == [2]
    assert (link.unacknowledged, link.waiting) == (2, 0)


def test_an_unacknowledged_i_frame_ends_the_link_after_t1() -> None:
    link = started(LinkParams(t1=15, t3=100))
    link.send(ASDU, 1.0)
    link.tick(15.9)
    with pytest.raises(LinkTimeoutError, match="I frame"):
        link.tick(16.0)


def test_a_silent_peer_is_tested_after_t3_and_dropped_within_t3_plus_t1() -> None:
    link = started(LinkParams(t1=15, t3=20))
    sent(link)
    link.tick(20.1)
    assert sent(link) == [UFrame(U.TESTFR_ACT)]
    link.tick(35.0)
    with pytest.raises(LinkTimeoutError):
        link.tick(35.1)


def test_a_testfr_answer_keeps_the_link() -> None:
    link = started(LinkParams(t1=15, t3=20))
    link.tick(20.1)
    link.receive(codec.encode_u(U.TESTFR_CON), 21.0)
    link.tick(40.0)  # no timeout: answered, and the next test is due at 41
    assert link.state is State.STARTED


def test_the_peers_testfr_is_answered() -> None:
    link = started()
    sent(link)
    link.receive(codec.encode_u(U.TESTFR_ACT), 1.0)
    assert sent(link) == [UFrame(U.TESTFR_CON)]


def test_a_frame_out_of_sequence_is_a_protocol_error() -> None:
    link = started()
    link.receive(codec.encode_i(0, 0, ASDU), 1.0)
    with pytest.raises(ProtocolError, match="expected 1"):
        link.receive(codec.encode_i(2, 0, ASDU), 1.0)


def test_an_acknowledgement_of_frames_never_sent_is_a_protocol_error() -> None:
    link = started()
    with pytest.raises(ProtocolError, match="acknowledges"):
        link.receive(codec.encode_s(3), 1.0)


def test_sequence_numbers_wrap_at_2_15() -> None:
    link = started(LinkParams(w=1))
    link.vr = link._done = link._ack_sent = codec.SEQ_MOD - 1  # near the wrap
    link.receive(codec.encode_i(codec.SEQ_MOD - 1, 0, ASDU), 1.0)
    link.processed(1.0)
    assert link.vr == 0
    assert sent(link) == [SFrame(0)]


def test_our_i_frames_carry_the_processed_receive_number() -> None:
    link = started()
    link.receive(codec.encode_i(0, 0, ASDU), 1.0)
    link.processed(1.0)
    link.send(codec.interrogation(1), 1.0)
    (f,) = sent(link)
    assert isinstance(f, IFrame)
    assert (f.send_seq, f.recv_seq) == (0, 1)


def test_asdus_before_a_fault_are_handed_back_with_the_error() -> None:
    link = started()
    data = codec.encode_i(0, 0, ASDU) + codec.encode_i(1, 0, ASDU) + b"\x00\x01"
    with pytest.raises(ProtocolError, match="starts with 0x00") as e:
        link.receive(data, 1.0)
    assert e.value.asdus == [ASDU, ASDU]  # intact before the garbage: still deliverable
