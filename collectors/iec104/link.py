"""The APCI state machine of a controlling station (client), without I/O.

Bytes and the clock go in, ASDUs and bytes to send come out:

    link = Link(params)
    link.open(now)                  # after TCP connected: queues STARTDT act
    asdus = link.receive(data, now) # frames in -> ASDUs of I frames, in order
    link.processed(now)             # the ASDUs are safe (handed to the agent): acknowledge
    link.send(asdu, now)            # an I frame, or queued while the k window is full
    link.tick(now)                  # timers; ProtocolError/LinkTimeoutError end the link
    out = link.take_output()        # bytes for the socket
    link.deadline()                 # when tick must run next

Numbering: send (V(S)) and receive (V(R)) sequence numbers modulo 2^15. At most ``k`` I frames
are sent unacknowledged (the rest wait); received I frames are acknowledged after ``w`` of
them or ``t2`` seconds, whichever is first, but only once the caller has processed them, so
what the station deletes from its buffer is already in the agent's. Timers: ``t1`` for an
answer to a sent I frame or U activation, ``t3`` of silence before a TESTFR test; so an
unanswered frame is detected within t1 and a silent peer within t3 + t1.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from collectors.iec104.codec import (
    SEQ_MOD,
    Frame,
    FrameReader,
    IFrame,
    ProtocolError,
    SFrame,
    U,
    UFrame,
    encode_i,
    encode_s,
    encode_u,
)


class LinkTimeoutError(ProtocolError):
    """t1 expired: the peer did not answer in time. The link is closed and opened again."""


@dataclass(frozen=True, slots=True)
class LinkParams:
    k: int = 12  # unacknowledged I frames we may send
    w: int = 8  # received I frames after which we acknowledge at the latest
    t0: float = 30.0  # connection establishment (the adapter applies it)
    t1: float = 15.0  # answer to a sent I frame or U activation
    t2: float = 10.0  # acknowledge received I frames at the latest after (t2 < t1)
    t3: float = 20.0  # idle time before a TESTFR test frame


class State(enum.Enum):
    CLOSED = "closed"
    STARTING = "starting"  # STARTDT act sent, no confirmation yet
    STARTED = "started"  # data transfer
    STOPPING = "stopping"  # STOPDT act sent


def _diff(a: int, b: int) -> int:
    """(a - b) modulo 2^15."""
    return (a - b) % SEQ_MOD


class Link:
    """One end of an IEC 104 link: the controlling station by default; ``controlled=True``
    for the station's side (it answers STARTDT/STOPDT instead of sending them)."""

    __slots__ = (
        "_ack_sent",
        "_done",
        "_out",
        "_pending",
        "_reader",
        "_sent_at",
        "_t1_u",
        "_t2_at",
        "_t3_at",
        "ack",
        "controlled",
        "frames_in",
        "frames_out",
        "p",
        "state",
        "vr",
        "vs",
    )

    def __init__(self, params: LinkParams | None = None, *, controlled: bool = False) -> None:
        self.p = params or LinkParams()
        self.controlled = controlled
        self.state = State.CLOSED
        self._reader = FrameReader()
        self._out = bytearray()
        self.vs = 0  # next send sequence number
        self.vr = 0  # next expected receive sequence number
        self.ack = 0  # oldest of our I frames the peer has not acknowledged
        self._done = 0  # received I frames up to here are processed by the caller
        self._ack_sent = 0  # the receive number we last told the peer
        self._sent_at: list[float] = []  # send times of our unacknowledged I frames
        self._pending: deque[bytes] = deque()  # ASDUs waiting for room in the k window
        self._t1_u: float | None = None  # deadline of an unanswered U activation
        self._t2_at: float | None = None
        self._t3_at = 0.0
        self.frames_in = 0
        self.frames_out = 0

    # ---------------------------------------------------------------- caller's side

    def open(self, now: float) -> None:
        """The TCP connection is up: ask the station to start data transfer (a controlled
        station waits for the master's STARTDT instead)."""
        self._t3_at = now + self.p.t3
        if self.controlled:
            self.state = State.CLOSED
            return
        self.state = State.STARTING
        self._send_u(U.STARTDT_ACT, now)

    def stop(self, now: float) -> None:
        self.state = State.STOPPING
        self._send_u(U.STOPDT_ACT, now)

    def send(self, asdu: bytes, now: float) -> bool:
        """Send an ASDU in an I frame; False if it waits for room in the k window."""
        if self.state is not State.STARTED or len(self._sent_at) >= self.p.k:
            self._pending.append(asdu)
            return False
        self._send_i(asdu, now)
        return True

    @property
    def waiting(self) -> int:
        """ASDUs queued because the k window is full (or data transfer not started)."""
        return len(self._pending)

    @property
    def unacknowledged(self) -> int:
        return len(self._sent_at)

    @property
    def received_unacknowledged(self) -> int:
        """I frames received and not yet acknowledged to the peer (its window fills with
        them: at ``k`` it stops sending)."""
        return _diff(self.vr, self._ack_sent)

    def take_output(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive(self, data: bytes, now: float) -> list[bytes]:
        """Bytes from the socket -> the ASDUs of the complete I frames among them.

        ProtocolError on a fault; its ``asdus`` are those that arrived intact before it."""
        asdus: list[bytes] = []
        try:
            for f in self._reader.frames(data):
                self._frame_in(f, now, asdus)
        except ProtocolError as exc:
            exc.asdus = asdus  # intact before the fault: the caller may still deliver them
            raise
        return asdus

    def _frame_in(self, f: Frame, now: float, asdus: list[bytes]) -> None:
        self._t3_at = now + self.p.t3
        self.frames_in += 1
        if isinstance(f, IFrame):
            if f.send_seq != self.vr:
                raise ProtocolError(
                    f"I frame numbered {f.send_seq}, expected {self.vr} (frame lost or doubled)"
                )
            self._acknowledged(f.recv_seq, now)
            self.vr = (self.vr + 1) % SEQ_MOD
            asdus.append(f.asdu)
        elif isinstance(f, SFrame):
            self._acknowledged(f.recv_seq, now)
        else:
            self._u(f, now)

    def processed(self, now: float) -> None:
        """Every ASDU :meth:`receive` returned so far is safe: acknowledge them in time."""
        self._done = self.vr
        unacked = _diff(self._done, self._ack_sent)
        if unacked >= self.p.w:
            self._send_s()
        elif unacked and self._t2_at is None:
            self._t2_at = now + self.p.t2

    def deadline(self) -> float:
        """The latest time :meth:`tick` must run next."""
        times = [self._t3_at]
        if self._sent_at:
            times.append(self._sent_at[0] + self.p.t1)
        if self._t1_u is not None:
            times.append(self._t1_u)
        if self._t2_at is not None:
            times.append(self._t2_at)
        return min(times)

    def tick(self, now: float) -> None:
        """Run the timers; LinkTimeoutError when the peer left a frame unanswered for t1."""
        if self._sent_at and now >= self._sent_at[0] + self.p.t1:
            raise LinkTimeoutError(f"no acknowledgement of an I frame within t1 = {self.p.t1:g} s")
        if self._t1_u is not None and now >= self._t1_u:
            raise LinkTimeoutError(f"no answer to a U frame within t1 = {self.p.t1:g} s")
        if self._t2_at is not None and now >= self._t2_at:
            self._send_s()
        if now >= self._t3_at:
            self._t3_at = now + self.p.t3
            if self._t1_u is None:
                self._send_u(U.TESTFR_ACT, now)

    # ---------------------------------------------------------------- internals

    def _send_i(self, asdu: bytes, now: float) -> None:
        self._out += encode_i(self.vs, self._done, asdu)
        self.vs = (self.vs + 1) % SEQ_MOD
        self._sent_at.append(now)
        self._ack_sent = self._done
        self._t2_at = None
        self.frames_out += 1

    def _send_s(self) -> None:
        self._out += encode_s(self._done)
        self._ack_sent = self._done
        self._t2_at = None
        self.frames_out += 1

    def _send_u(self, fn: U, now: float) -> None:
        self._out += encode_u(fn)
        self.frames_out += 1
        if fn in (U.STARTDT_ACT, U.STOPDT_ACT, U.TESTFR_ACT):
            self._t1_u = now + self.p.t1

    def _acknowledged(self, recv_seq: int, now: float) -> None:
        n = _diff(recv_seq, self.ack)
        if n > len(self._sent_at):
            raise ProtocolError(
                f"peer acknowledges up to {recv_seq}, but only {self.vs} frame(s) were sent"
            )
        if n:
            del self._sent_at[:n]
            self.ack = recv_seq
        while self._pending and len(self._sent_at) < self.p.k and self.state is State.STARTED:
            self._send_i(self._pending.popleft(), now)

    def _u(self, f: UFrame, now: float) -> None:
        fn = f.function
        if fn is U.TESTFR_ACT:
            self._out += encode_u(U.TESTFR_CON)
            self.frames_out += 1
        elif fn is U.TESTFR_CON:
            if self.state is not State.STARTING:
                self._t1_u = None
        elif fn is U.STARTDT_CON:
            if self.state is not State.STARTING:
                raise ProtocolError(f"STARTDT con while {self.state.value}")
            self.state = State.STARTED
            self._t1_u = None
            self._acknowledged(self.ack, now)  # flush what was queued before the start
        elif fn is U.STOPDT_CON:
            self.state = State.CLOSED
            self._t1_u = None
        elif self.controlled and fn in (U.STARTDT_ACT, U.STOPDT_ACT):
            start = fn is U.STARTDT_ACT
            self._out += encode_u(U.STARTDT_CON if start else U.STOPDT_CON)
            self.frames_out += 1
            self.state = State.STARTED if start else State.CLOSED
            if start:
                self._acknowledged(self.ack, now)
        else:  # STARTDT/STOPDT act, or a confirmation we never asked for: a controlled station
            raise ProtocolError(f"{fn.name} from the controlled station")
