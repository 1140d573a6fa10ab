"""IEC 60870-5-104 frames and ASDUs, encoded and decoded without any I/O.

An APDU on the wire is ``0x68, length, control field (4 bytes), ASDU``; the control field
makes it an I frame (numbered, carries an ASDU), an S frame (acknowledgement only) or a U
frame (STARTDT, STOPDT, TESTFR, each as activation or confirmation). :class:`FrameReader`
cuts a byte stream into frames; the ``encode_*`` functions build them.

ASDUs use the parameters of the companion standard 104: a two-octet cause of transmission
(cause + originator address), a two-octet common address and three-octet information object
addresses. :func:`decode_asdu` turns the monitor-direction types this collector reads into
:class:`InfoObject` rows (address, value, quality, time tag); everything else decodes to an
ASDU with ``known=False`` so the caller can count it. The quality descriptor bits map onto
the contract's three levels: IV -> bad; NT, SB, BL, OV (and CA, CY of counters) -> uncertain.

CP56Time2a time tags are decoded in a time zone the caller chooses (stations in China
commonly send local time); a tag with its IV bit set, or one that is no date, is reported
as invalid.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from qilu.contract import Quality, to_us
from qilu.errors import CollectorError

START = 0x68
MAX_APDU = 253  # length octet: control field (4) + ASDU (at most 249)
MAX_ASDU = MAX_APDU - 4
SEQ_MOD = 1 << 15


class ProtocolError(CollectorError):
    """The peer broke the protocol (bad start octet, length, sequence number, ASDU).

    Fatal for the link, not for the collector: the link is closed and opened again.
    ``asdus``: what arrived intact before the fault (set by :meth:`Link.receive`), so the
    caller can still deliver it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.asdus: list[bytes] = []


class U(enum.IntEnum):
    """U frame functions (first control octet)."""

    STARTDT_ACT = 0x07
    STARTDT_CON = 0x0B
    STOPDT_ACT = 0x13
    STOPDT_CON = 0x23
    TESTFR_ACT = 0x43
    TESTFR_CON = 0x83


class Cot(enum.IntEnum):
    """The causes of transmission this collector sends or acts on."""

    PERIODIC = 1
    BACKGROUND = 2
    SPONTANEOUS = 3
    INITIALIZED = 4
    REQUEST = 5
    ACTIVATION = 6
    ACTIVATION_CON = 7
    DEACTIVATION = 8
    DEACTIVATION_CON = 9
    ACTIVATION_TERM = 10
    INTERROGATED = 20  # by station (general) interrogation
    REQUESTED_COUNTERS = 37  # by general counter interrogation
    UNKNOWN_TYPE = 44
    UNKNOWN_CAUSE = 45
    UNKNOWN_CA = 46
    UNKNOWN_IOA = 47


# control direction and system types
C_IC_NA_1 = 100  # interrogation command
C_CI_NA_1 = 101  # counter interrogation command
C_CS_NA_1 = 103  # clock synchronisation command
M_EI_NA_1 = 70  # end of initialisation
QOI_STATION = 20
QCC_GENERAL = 5  # counter request: general, no freeze


@dataclass(frozen=True, slots=True)
class IFrame:
    send_seq: int
    recv_seq: int
    asdu: bytes


@dataclass(frozen=True, slots=True)
class SFrame:
    recv_seq: int


@dataclass(frozen=True, slots=True)
class UFrame:
    function: U


Frame = IFrame | SFrame | UFrame


# ------------------------------------------------------------------ APCI


def encode_i(send_seq: int, recv_seq: int, asdu: bytes) -> bytes:
    if len(asdu) > MAX_ASDU:
        raise ValueError(f"ASDU of {len(asdu)} octets: at most {MAX_ASDU}")
    return struct.pack("<BBHH", START, len(asdu) + 4, send_seq << 1, recv_seq << 1) + asdu


def encode_s(recv_seq: int) -> bytes:
    return struct.pack("<BBHH", START, 4, 0x0001, recv_seq << 1)


def encode_u(function: U) -> bytes:
    return bytes((START, 4, function, 0, 0, 0))


class FrameReader:
    """Cut a TCP byte stream into frames; ProtocolError on anything that is not one."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        return list(self.frames(data))

    def frames(self, data: bytes) -> Iterator[Frame]:
        """The complete frames in what arrived so far, one by one: a bad one raises after
        the good ones before it were taken."""
        buf = self._buf
        buf += data
        pos = 0
        n = len(buf)
        try:
            while n - pos >= 2:
                if buf[pos] != START:
                    raise ProtocolError(f"frame starts with 0x{buf[pos]:02x}, not 0x68")
                length = buf[pos + 1]
                if length < 4:
                    raise ProtocolError(f"APDU length {length} is shorter than its control field")
                if length > MAX_APDU:
                    raise ProtocolError(f"APDU length {length} is over {MAX_APDU}")
                end = pos + 2 + length
                if end > n:
                    break
                apdu = bytes(buf[pos + 2 : end])
                pos = end
                yield _frame(apdu)
        finally:
            if pos:
                del buf[:pos]


def _frame(apdu: bytes) -> Frame:
    c1 = apdu[0]
    if not c1 & 1:  # I frame
        if len(apdu) == 4:
            raise ProtocolError("I frame without an ASDU")
        ssn, rsn = struct.unpack_from("<HH", apdu)
        return IFrame(ssn >> 1, rsn >> 1, apdu[4:])
    if len(apdu) != 4:
        raise ProtocolError(f"{'S' if c1 & 3 == 1 else 'U'} frame of length {len(apdu)}, not 4")
    if c1 & 3 == 1:
        return SFrame(struct.unpack_from("<H", apdu, 2)[0] >> 1)
    try:
        return UFrame(U(c1))
    except ValueError:
        raise ProtocolError(f"unknown U frame function 0x{c1:02x}") from None


# ------------------------------------------------------------------ CP56Time2a


def decode_cp56(b: bytes | bytearray, offset: int, tz: tzinfo) -> tuple[int, bool]:
    """Seven octets at ``offset`` -> (microseconds since the epoch, tag invalid).

    The tag is a wall-clock time in ``tz``. A tag with its IV bit set, or with fields out of
    range (month 13, minute 61), is invalid: (0, True). One bad tag spoils one value, not the
    link, or a station that re-sends it at every interrogation would never be read."""
    ms, mi, hour, day, month, year = struct.unpack_from("<HBBBBB", b, offset)
    try:
        dt = datetime(
            2000 + (year & 0x7F),
            month & 0x0F,
            day & 0x1F,
            hour & 0x1F,
            mi & 0x3F,
            ms // 1000,
            (ms % 1000) * 1000,
            tzinfo=tz,
        )
    except ValueError:
        return 0, True
    return to_us(dt), bool(mi & 0x80)


def encode_cp56(dt: datetime, *, invalid: bool = False, summer: bool = False) -> bytes:
    """A wall-clock datetime (its own fields, whatever its zone) -> seven octets."""
    ms = dt.second * 1000 + dt.microsecond // 1000
    return struct.pack(
        "<HBBBBB",
        ms,
        dt.minute | (0x80 if invalid else 0),
        dt.hour | (0x80 if summer else 0),
        dt.day | (dt.isoweekday() << 5),
        dt.month,
        dt.year - 2000,
    )


# ------------------------------------------------------------------ ASDU


@dataclass(frozen=True, slots=True)
class TypeSpec:
    type_id: int
    name: str
    size: int  # information element octets, time tag included
    timed: bool


# monitor direction types this collector decodes
TYPES: dict[int, TypeSpec] = {
    t.type_id: t
    for t in (
        TypeSpec(1, "M_SP_NA_1", 1, False),
        TypeSpec(3, "M_DP_NA_1", 1, False),
        TypeSpec(9, "M_ME_NA_1", 3, False),
        TypeSpec(11, "M_ME_NB_1", 3, False),
        TypeSpec(13, "M_ME_NC_1", 5, False),
        TypeSpec(15, "M_IT_NA_1", 5, False),
        TypeSpec(30, "M_SP_TB_1", 8, True),
        TypeSpec(31, "M_DP_TB_1", 8, True),
        TypeSpec(34, "M_ME_TD_1", 10, True),
        TypeSpec(35, "M_ME_TE_1", 10, True),
        TypeSpec(36, "M_ME_TF_1", 12, True),
        TypeSpec(37, "M_IT_TB_1", 12, True),
    )
}
TYPE_NAMES: dict[str, int] = {t.name: t.type_id for t in TYPES.values()}

_GOOD, _UNCERTAIN, _BAD = Quality.GOOD, Quality.UNCERTAIN, Quality.BAD


def _q_status(q: int) -> Quality:
    """SIQ / DIQ: IV 0x80 -> bad; NT 0x40, SB 0x20, BL 0x10 -> uncertain."""
    return _BAD if q & 0x80 else _UNCERTAIN if q & 0x70 else _GOOD


def _q_measured(q: int) -> Quality:
    """QDS: IV -> bad; NT, SB, BL, OV 0x01 -> uncertain."""
    return _BAD if q & 0x80 else _UNCERTAIN if q & 0x71 else _GOOD


def _q_counter(q: int) -> Quality:
    """BCR sequence octet: IV 0x80 -> bad; CA 0x40 (adjusted), CY 0x20 (carry) -> uncertain."""
    return _BAD if q & 0x80 else _UNCERTAIN if q & 0x60 else _GOOD


_H = struct.Struct("<h")
_F = struct.Struct("<f")
_I = struct.Struct("<i")
_IOA = struct.Struct("<HB")


def _element(type_id: int, b: bytes, o: int) -> tuple[float, Quality, int]:
    """(value, quality, raw qualifier octet) of the element at ``o``."""
    if type_id in (1, 30):
        q = b[o]
        return float(q & 1), _q_status(q), q
    if type_id in (3, 31):
        q = b[o]
        dpi = q & 3  # 1 off, 2 on; 0 and 3 are the indeterminate states (in transit, faulty)
        return float(dpi), _UNCERTAIN if dpi in (0, 3) and not q & 0x80 else _q_status(q), q
    if type_id in (13, 36):
        q = b[o + 4]
        return _F.unpack_from(b, o)[0], _q_measured(q), q
    if type_id in (11, 35):
        q = b[o + 2]
        return float(_H.unpack_from(b, o)[0]), _q_measured(q), q
    if type_id in (9, 34):
        q = b[o + 2]
        return _H.unpack_from(b, o)[0] / 32768.0, _q_measured(q), q
    # 15, 37: binary counter reading
    q = b[o + 4]
    return float(_I.unpack_from(b, o)[0]), _q_counter(q), q


@dataclass(frozen=True, slots=True)
class InfoObject:
    ioa: int
    value: float
    quality: Quality
    qualifier: int  # the raw quality / sequence octet
    ts_us: int | None = None  # from the time tag; None: the type has none
    time_invalid: bool = False  # the time tag's IV bit


@dataclass(frozen=True, slots=True)
class Asdu:
    type_id: int
    cot: int
    common_address: int
    negative: bool = False
    test: bool = False
    originator: int = 0
    sq: bool = False
    known: bool = True  # False: a type this codec does not decode (objects stay empty)
    objects: list[InfoObject] = field(default_factory=list)
    raw: bytes = b""  # the information objects, undecoded (commands, unknown types)


_HEADER = struct.Struct("<BBBBH")
Obj = tuple[int, float, int, bytes]  # (ioa, value, qualifier octet, time tag or b"")


def decode_asdu(b: bytes, tz: tzinfo) -> Asdu:
    """One ASDU (the payload of an I frame) -> :class:`Asdu`; ProtocolError if malformed."""
    if len(b) < 6:
        raise ProtocolError(f"ASDU of {len(b)} octets is shorter than its header")
    type_id, vsq, cot, orig, ca = _HEADER.unpack_from(b)
    sq, num = bool(vsq & 0x80), vsq & 0x7F
    cause, negative, test = cot & 0x3F, bool(cot & 0x40), bool(cot & 0x80)
    spec = TYPES.get(type_id)
    if spec is None:
        return Asdu(type_id, cause, ca, negative, test, orig, sq, known=False, raw=b[6:])
    size = spec.size
    expected = 6 + (3 + num * size if sq else num * (3 + size))
    if num == 0 or len(b) != expected:
        raise ProtocolError(
            f"{spec.name} with {num} object(s){' (SQ=1)' if sq else ''} must be "
            f"{expected} octets, got {len(b)}"
        )
    objects: list[InfoObject] = []
    append = objects.append
    timed = spec.timed
    tag_at = size - 7
    o = 6
    if sq:
        lo, hi = _IOA.unpack_from(b, 6)
        base = lo | hi << 16
        o = 9
    for i in range(num):
        if sq:
            ioa = base + i
        else:
            lo, hi = _IOA.unpack_from(b, o)
            ioa = lo | hi << 16
            o += 3
        value, quality, q = _element(type_id, b, o)
        if timed:
            ts, tiv = decode_cp56(b, o + tag_at, tz)
            append(InfoObject(ioa, value, quality, q, ts, tiv))
        else:
            append(InfoObject(ioa, value, quality, q))
        o += size
    return Asdu(type_id, cause, ca, negative, test, orig, sq, objects=objects)


def _ioa(ioa: int) -> bytes:
    return bytes((ioa & 0xFF, ioa >> 8 & 0xFF, ioa >> 16 & 0xFF))


def header(
    type_id: int,
    num: int,
    cot: int,
    ca: int,
    *,
    sq: bool = False,
    negative: bool = False,
    test: bool = False,
    originator: int = 0,
) -> bytes:
    cause = cot | (0x40 if negative else 0) | (0x80 if test else 0)
    return _HEADER.pack(type_id, num | (0x80 if sq else 0), cause, originator, ca)


def encode_element(type_id: int, value: float, qualifier: int = 0, tag: bytes = b"") -> bytes:
    """One information element of a monitor type (the qualifier octet as on the wire)."""
    if type_id in (1, 30):
        el = bytes(((qualifier & 0xFE) | (1 if value else 0),))
    elif type_id in (3, 31):
        el = bytes(((qualifier & 0xFC) | (int(value) & 3),))
    elif type_id in (13, 36):
        el = _F.pack(value) + bytes((qualifier,))
    elif type_id in (11, 35):
        el = _H.pack(round(value)) + bytes((qualifier,))
    elif type_id in (9, 34):
        el = _H.pack(max(-32768, min(32767, round(value * 32768)))) + bytes((qualifier,))
    elif type_id in (15, 37):
        el = _I.pack(round(value)) + bytes((qualifier,))
    else:
        raise ValueError(f"type {type_id} is not a monitor type this codec encodes")
    if TYPES[type_id].timed:
        if len(tag) != 7:
            raise ValueError(f"type {type_id} needs a 7-octet time tag")
        el += tag
    return el


def encode_monitor(
    type_id: int,
    cot: int,
    ca: int,
    objects: Sequence[Obj],
    *,
    sq: bool = False,
) -> bytes:
    """An ASDU of (ioa, value, qualifier octet, time tag or b"") objects; SQ=1 packs
    consecutive addresses after the first."""
    if not 0 < len(objects) <= 127:
        raise ValueError("an ASDU holds 1-127 information objects")
    out = bytearray(header(type_id, len(objects), cot, ca, sq=sq))
    for i, (ioa, value, q, tag) in enumerate(objects):
        if sq:
            if i == 0:
                out += _ioa(ioa)
            elif ioa != objects[0][0] + i:
                raise ValueError("SQ=1 needs consecutive addresses")
        else:
            out += _ioa(ioa)
        out += encode_element(type_id, value, q, tag)
    if len(out) > MAX_ASDU:
        raise ValueError(f"ASDU of {len(out)} octets: at most {MAX_ASDU}")
    return bytes(out)


def per_asdu(type_id: int, *, sq: bool = False) -> int:
    """How many objects of ``type_id`` fit into one ASDU."""
    size = TYPES[type_id].size
    return min(127, (MAX_ASDU - 6 - 3) // size if sq else (MAX_ASDU - 6) // (3 + size))


def interrogation(ca: int, cot: int = Cot.ACTIVATION, qoi: int = QOI_STATION) -> bytes:
    return header(C_IC_NA_1, 1, cot, ca) + _ioa(0) + bytes((qoi,))


def counter_interrogation(ca: int, cot: int = Cot.ACTIVATION, qcc: int = QCC_GENERAL) -> bytes:
    return header(C_CI_NA_1, 1, cot, ca) + _ioa(0) + bytes((qcc,))


def clock_sync(ca: int, now: datetime, cot: int = Cot.ACTIVATION) -> bytes:
    """C_CS_NA_1 with ``now`` as wall-clock time in its own time zone."""
    return header(C_CS_NA_1, 1, cot, ca) + _ioa(0) + encode_cp56(now)


def end_of_init(ca: int, coi: int = 0) -> bytes:
    return header(M_EI_NA_1, 1, Cot.INITIALIZED, ca) + _ioa(0) + bytes((coi,))


def command_reply(b: bytes, cot: int, *, negative: bool = False) -> bytes:
    """The same command ASDU with another cause (confirmation, termination)."""
    cause = cot | (0x40 if negative else 0) | (b[2] & 0x80)
    return b[:2] + bytes((cause,)) + b[3:]


def chunks(
    items: Iterable[tuple[int, float, int, bytes]], n: int
) -> list[list[tuple[int, float, int, bytes]]]:
    """Split objects into ASDU-sized lists."""
    out: list[list[tuple[int, float, int, bytes]]] = [[]]
    for it in items:
        if len(out[-1]) == n:
            out.append([])
        out[-1].append(it)
    return [c for c in out if c]
