"""The sans-IO codec on byte sequences captured from an independent station (c104 / lib60870).

The captures were taken with a bare socket against a c104 2.2.1 server (process TZ=UTC):
STARTDT, then a general interrogation of common address 47. Integrated totals, which c104
does not send, are checked against bytes written out by hand from the standard's layout.
"""

# ruff: noqa: S101 - pytest asserts

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from collectors.iec104 import codec
from collectors.iec104.codec import (
    FrameReader,
    IFrame,
    ProtocolError,
    SFrame,
    U,
    UFrame,
    decode_asdu,
)
from qilu.contract import Quality, to_us

STARTDT_CON = bytes.fromhex("68040b000000")
# the whole answer to one GI: act con, ten points of ten types (SQ=1 singles and one SQ=0 ASDU
# of four short floats), act term
GI = bytes.fromhex(
    "680e00000200640107002f0000000014"
    "680e02000200018114002f0001000011"
    "680e04000200038114002f0002000002"
    "681006000200098114002f000300000040"
    "006810080002000b8114002f000400002efb41"
    "682a0a0002000d0414002f000500000000ac41800b00000000803f000c000000000040000d0000000040400"
    "068150c0002001e8114002f0006000001d21e060504031a"
    "68150e0002001f8114002f0007000001d21e060504031a"
    "681710000200228114002f0008000000e020d21e060504031a"
    "681712000200238114002f000900002c0100d21e060504031a"
    "681914000200248114002f000a00000000504000d21e060504031a"
    "680e1600020064010a002f0000000014"
)
TAG_UTC = to_us(datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC))


def frames() -> list[codec.Frame]:
    return FrameReader().feed(GI)


def test_u_frames_and_the_start_confirmation() -> None:
    assert FrameReader().feed(STARTDT_CON) == [UFrame(U.STARTDT_CON)]
    assert codec.encode_u(U.STARTDT_ACT) == bytes.fromhex("680407000000")
    assert codec.encode_u(U.TESTFR_CON) == bytes.fromhex("680483000000")
    assert codec.encode_s(5) == bytes.fromhex("68040100" + "0a00")


def test_the_interrogation_we_send_is_what_the_station_confirms() -> None:
    sent = codec.encode_i(0, 0, codec.interrogation(47))
    assert sent == bytes.fromhex("680e00000000640106002f0000000014")
    con = frames()[0]
    assert isinstance(con, IFrame)
    assert con.asdu == codec.command_reply(codec.interrogation(47), codec.Cot.ACTIVATION_CON)
    a = decode_asdu(con.asdu, UTC)
    assert (a.type_id, a.cot, a.common_address, a.known) == (100, 7, 47, False)


def test_numbering_of_the_captured_i_frames() -> None:
    fs = frames()
    assert len(fs) == 12
    assert [f.send_seq for f in fs if isinstance(f, IFrame)] == list(range(12))
    assert {f.recv_seq for f in fs if isinstance(f, IFrame)} == {1}  # our one GI frame


def test_every_captured_type_decodes_with_value_and_quality() -> None:
    objs = {
        o.ioa: (a.type_id, o)
        for f in frames()
        if isinstance(f, IFrame)
        for a in [decode_asdu(f.asdu, UTC)]
        for o in a.objects
    }
    want = {  # ioa: (type, value, quality, time)
        1: (1, 1.0, Quality.UNCERTAIN, None),  # single point, BL
        2: (3, 2.0, Quality.GOOD, None),  # double point on
        3: (9, 0.5, Quality.GOOD, None),  # normalized
        4: (11, -1234.0, Quality.UNCERTAIN, None),  # scaled, OV + NT
        5: (13, 21.5, Quality.BAD, None),  # short float, IV
        11: (13, 1.0, Quality.GOOD, None),
        12: (13, 2.0, Quality.GOOD, None),
        13: (13, 3.0, Quality.GOOD, None),
        6: (30, 1.0, Quality.GOOD, TAG_UTC),
        7: (31, 1.0, Quality.GOOD, TAG_UTC),  # double point off
        8: (34, -0.25, Quality.UNCERTAIN, TAG_UTC),  # SB
        9: (35, 300.0, Quality.GOOD, TAG_UTC),
        10: (36, 3.25, Quality.GOOD, TAG_UTC),
    }
    assert {k: (t, o.value, o.quality, o.ts_us) for k, (t, o) in objs.items()} == want
    assert objs[4][1].qualifier == 0x41  # NT | OV as on the wire


def test_time_tags_are_read_in_the_configured_zone() -> None:
    tf = frames()[10]
    assert isinstance(tf, IFrame)
    (o,) = decode_asdu(tf.asdu, ZoneInfo("Asia/Shanghai")).objects
    assert o.ts_us == TAG_UTC - 8 * 3600 * 1_000_000  # 05:06 in Shanghai is 21:06 UTC before
    invalid = bytearray(tf.asdu)
    invalid[-5] |= 0x80  # IV bit of the minute octet
    (o,) = decode_asdu(bytes(invalid), UTC).objects
    assert o.time_invalid
    # a tag that is no date (month 0) spoils its value only, not the ASDU or the link
    (o,) = decode_asdu(bytes.fromhex("1e01030001000100000100000000000000"), UTC).objects
    assert (o.value, o.time_invalid) == (1.0, True)


def test_sq1_lists_and_round_trips_of_every_type() -> None:
    tag = codec.encode_cp56(datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))
    for type_id, spec in codec.TYPES.items():
        objs = [(100 + i, float(i % 2), 0, tag if spec.timed else b"") for i in range(5)]
        for sq in (False, True):
            raw = codec.encode_monitor(type_id, codec.Cot.SPONTANEOUS, 3, objs, sq=sq)
            a = decode_asdu(raw, UTC)
            assert (a.type_id, a.sq, a.common_address) == (type_id, sq, 3)
            assert [o.ioa for o in a.objects] == [100, 101, 102, 103, 104]
            if spec.timed:
                assert {o.ts_us for o in a.objects} == {
                    to_us(datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))
                }


def test_integrated_totals_from_bytes_written_by_the_standard() -> None:
    # M_IT_NA_1, SQ=0, 2 objects, cause 37 (counter interrogation), CA 1:
    # IOA 0x000fa1 = 4001: counter 123456, seq 3; IOA 4002: counter -5, seq 4 | CY | CA | IV
    raw = bytes.fromhex("0f0225000100a10f0040e2010003a20f00fbffffffe4")
    a = decode_asdu(raw, UTC)
    assert a.cot == codec.Cot.REQUESTED_COUNTERS
    (x, y) = a.objects
    assert (x.ioa, x.value, x.quality) == (4001, 123456.0, Quality.GOOD)
    assert (y.ioa, y.value, y.quality) == (4002, -5.0, Quality.BAD)
    carry = bytes.fromhex("0f0125000100a10f0040e2010023")  # CY only
    assert decode_asdu(carry, UTC).objects[0].quality is Quality.UNCERTAIN
    # M_IT_TB_1 with a time tag
    tag = codec.encode_cp56(datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC))
    timed = bytes.fromhex("250103000100a10f000a00000001") + tag
    (z,) = decode_asdu(timed, UTC).objects
    assert (z.value, z.ts_us) == (10.0, to_us(datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)))


def test_frames_split_anywhere_are_reassembled() -> None:
    r = FrameReader()
    got: list[codec.Frame] = []
    for i in range(len(GI)):
        got.extend(r.feed(GI[i : i + 1]))
    assert got == frames()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (bytes.fromhex("00040b000000"), "starts with 0x00"),
        (bytes.fromhex("6802"), "shorter than its control field"),
        (bytes.fromhex("680400000000"), "I frame without an ASDU"),
        (bytes.fromhex("680533000000ff"), "U frame of length 5"),
        (bytes.fromhex("6804ff000000"), "unknown U frame"),
        (bytes.fromhex("68fe00000000"), "APDU length 254 is over 253"),
        (bytes.fromhex("68ff00000000"), "APDU length 255 is over 253"),
    ],
)
def test_malformed_frames_are_protocol_errors(data: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        FrameReader().feed(data)


@pytest.mark.parametrize(
    ("asdu", "why"),
    [
        (bytes.fromhex("0d01030001"), "shorter than its header"),
        (bytes.fromhex("0d02030001000100000000803f00"), "must be 22 octets"),
        (bytes.fromhex("0d0003000100"), "with 0 object"),
    ],
)
def test_malformed_asdus_are_protocol_errors(asdu: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        decode_asdu(asdu, UTC)


def test_unknown_types_decode_as_unknown_not_as_errors() -> None:
    a = decode_asdu(bytes.fromhex("07010300010001000000000000"), UTC)  # M_BO_NA_1
    assert (a.type_id, a.known, a.objects) == (7, False, [])


def test_s_frames() -> None:
    assert FrameReader().feed(codec.encode_s(32767)) == [SFrame(32767)]


@pytest.mark.parametrize(
    ("diq", "value", "quality"),
    [
        (0x00, 0.0, Quality.UNCERTAIN),  # indeterminate or intermediate (in transit)
        (0x01, 1.0, Quality.GOOD),  # off
        (0x02, 2.0, Quality.GOOD),  # on
        (0x03, 3.0, Quality.UNCERTAIN),  # indeterminate (faulty)
        (0x83, 3.0, Quality.BAD),  # and invalid
        (0x12, 2.0, Quality.UNCERTAIN),  # blocked
    ],
)
def test_a_double_point_in_an_indeterminate_state_is_uncertain(
    diq: int, value: float, quality: Quality
) -> None:
    raw = codec.header(3, 1, codec.Cot.SPONTANEOUS, 1) + bytes((7, 0, 0, diq))
    (obj,) = codec.decode_asdu(raw, UTC).objects
    assert (obj.value, obj.quality) == (value, quality)
