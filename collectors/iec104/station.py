"""A controlled station (IEC 104 server) of our own, on the same sans-IO codec and link.

It stands in for a substation's telecontrol gateway where no real one is at hand: the
simulated province (collectors/simulated: ``protocol = "iec104"``), the benchmark
(bench/iec104.py) and tests that need a station misbehaving on purpose. The independent
implementation the collector is tested against stays c104 (lib60870); this one is written
from the standard, with no GPL code, so it can run inside ``qilu run``.

It holds a process image (IOA -> type, value, qualifier), answers the station interrogation
(QOI 20) with all of it, the counter interrogation with the integrated totals, confirms clock
synchronisation, and sends changes spontaneously (:meth:`ControlledStation.update`), packed
several objects per ASDU. What a client has not acknowledged waits in its k window; like the
stations we model, it keeps nothing for a client that is not connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from collectors.iec104 import codec
from collectors.iec104.codec import Cot, ProtocolError
from collectors.iec104.link import Link, LinkParams, State

logger = logging.getLogger(__name__)

_COUNTERS = (15, 37)


@dataclass(slots=True)
class Point:
    type_id: int
    value: float | None  # None: never measured, left out of interrogations
    qualifier: int = 0
    tag: bytes = b""  # CP56Time2a of the last change, for time-tagged types


class ControlledStation:
    """One station (common address) served on ``host:port`` to any number of masters."""

    def __init__(
        self,
        common_address: int,
        host: str = "127.0.0.1",
        port: int = 2404,
        params: LinkParams | None = None,
        tz: tzinfo = UTC,
    ) -> None:
        self.ca = common_address
        self.tz = tz  # the zone of the station's clock: its time tags are wall-clock time there
        self.host = host
        self.port = port
        self.params = params or LinkParams()
        self.image: dict[int, Point] = {}
        self._server: asyncio.Server | None = None
        self._links: dict[Link, asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.interrogations = 0
        self.clock_syncs = 0

    def add(self, ioa: int, type_id: int, value: float | None, qualifier: int = 0) -> None:
        """A point of the image; ``value`` None until :meth:`update` first sets it."""
        if type_id not in codec.TYPES:
            raise ValueError(f"type {type_id} is not a monitor type the codec encodes")
        tag = self.now_tag() if codec.TYPES[type_id].timed else b""
        self.image[ioa] = Point(type_id, value, qualifier, tag)

    def now_tag(self) -> bytes:
        """The station's clock now, as a CP56Time2a tag."""
        return codec.encode_cp56(datetime.now(self.tz))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)

    async def stop(self) -> None:
        """Stop listening and close every link (their handlers end on the closed socket)."""
        if self._server is not None:
            self._server.close()
        for w in list(self._links.values()):
            w.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def backlog(self) -> int:
        """ASDUs waiting for room in the busiest master's k window."""
        return max((link.waiting for link in self._links), default=0)

    @property
    def connected(self) -> int:
        return sum(1 for link in self._links if link.state is State.STARTED)

    def update(self, changes: Iterable[tuple[int, float, int, bytes]]) -> int:
        """Change points and send them spontaneously (cause 3) to every started link.

        ``changes``: (ioa, value, qualifier, time tag or b""). Returns the ASDUs queued per
        link; none when no master is connected: the change is only in the image then."""
        by_type: dict[int, list[codec.Obj]] = {}
        for ioa, value, q, tag in changes:
            p = self.image[ioa]
            p.value, p.qualifier = value, q
            if tag:
                p.tag = tag
            by_type.setdefault(p.type_id, []).append((ioa, value, q, p.tag))
        asdus = [
            codec.encode_monitor(t, Cot.SPONTANEOUS, self.ca, chunk)
            for t, objs in by_type.items()
            for chunk in codec.chunks(objs, codec.per_asdu(t))
        ]
        return self._broadcast(asdus)

    def _broadcast(self, asdus: list[bytes]) -> int:
        now = asyncio.get_running_loop().time()
        n = 0
        for link, writer in self._links.items():
            if link.state is not State.STARTED:
                continue
            for a in asdus:
                link.send(a, now)
            self._flush(link, writer)
            n += len(asdus)
        return n

    def _image_asdus(self, cot: int, counters: bool) -> list[bytes]:
        by_type: dict[int, list[codec.Obj]] = {}
        for ioa, p in sorted(self.image.items()):
            if p.value is not None and (p.type_id in _COUNTERS) == counters:
                by_type.setdefault(p.type_id, []).append((ioa, p.value, p.qualifier, p.tag))
        return [
            codec.encode_monitor(t, cot, self.ca, chunk)
            for t, objs in sorted(by_type.items())
            for chunk in codec.chunks(objs, codec.per_asdu(t))
        ]

    @staticmethod
    def _flush(link: Link, writer: asyncio.StreamWriter) -> None:
        out = link.take_output()
        if out and not writer.is_closing():
            writer.write(out)

    def _command(self, link: Link, raw: bytes, now: float) -> None:
        if len(raw) < 6:
            raise ProtocolError("command ASDU shorter than its header")
        type_id = raw[0]
        if type_id == codec.C_IC_NA_1:
            self.interrogations += 1
            link.send(codec.command_reply(raw, Cot.ACTIVATION_CON), now)
            for a in self._image_asdus(Cot.INTERROGATED, counters=False):
                link.send(a, now)
            link.send(codec.command_reply(raw, Cot.ACTIVATION_TERM), now)
        elif type_id == codec.C_CI_NA_1:
            link.send(codec.command_reply(raw, Cot.ACTIVATION_CON), now)
            for a in self._image_asdus(Cot.REQUESTED_COUNTERS, counters=True):
                link.send(a, now)
            link.send(codec.command_reply(raw, Cot.ACTIVATION_TERM), now)
        elif type_id == codec.C_CS_NA_1:
            self.clock_syncs += 1
            link.send(codec.command_reply(raw, Cot.ACTIVATION_CON), now)
        else:
            link.send(codec.command_reply(raw, Cot.UNKNOWN_TYPE, negative=True), now)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        loop = asyncio.get_running_loop()
        link = Link(self.params, controlled=True)
        link.open(loop.time())
        self._links[link] = writer
        try:
            while True:
                timeout = max(0.0, link.deadline() - loop.time())
                try:
                    data = await asyncio.wait_for(reader.read(65536), timeout)
                except TimeoutError:
                    data = None
                if data == b"":
                    return
                now = loop.time()
                if data:
                    commands = link.receive(data, now)
                    link.processed(now)  # so the replies acknowledge the commands they answer
                    for raw in commands:
                        self._command(link, raw, now)
                link.tick(now)
                self._flush(link, writer)
                await writer.drain()
        except (ProtocolError, OSError) as exc:
            logger.info("station %d: link to a master ended: %s", self.ca, exc)
        finally:
            self._links.pop(link, None)
            writer.close()
            if task is not None:
                self._tasks.discard(task)


# ------------------------------------------------------------------ a stand-alone station


async def serve_points(
    ports: list[int],
    points: int,
    *,
    host: str = "127.0.0.1",
    first_ca: int = 1,
    flood: bool = False,
    rate: float = 0.0,
    backlog: int = 64,
) -> None:
    """Stations on ``ports`` (common addresses from ``first_ca``), each with short floats at
    IOA 1..points. ``flood``: send every point spontaneously again whenever fewer than
    ``backlog`` ASDUs wait for a master's window; ``rate``: that many changes per second
    per station instead; neither: answer interrogations only."""
    stations = []
    for i, port in enumerate(ports):
        st = ControlledStation(first_ca + i, host=host, port=port)
        for ioa in range(1, points + 1):
            st.add(ioa, 13, float(ioa))
        await st.start()
        stations.append(st)
    n = 0
    try:
        while True:
            if flood:
                for st in stations:
                    if st.connected and st.backlog() < backlog:
                        n += 1
                        st.update((ioa, float(ioa + n), 0, b"") for ioa in range(1, points + 1))
                await asyncio.sleep(0.0005)
            elif rate:
                per_tick = max(1, round(rate / 10))
                for st in stations:
                    base = n % points
                    st.update(
                        (1 + (base + j) % points, float(n + j), 0, b"") for j in range(per_tick)
                    )
                n += per_tick
                await asyncio.sleep(0.1)
            else:
                await asyncio.sleep(3600)
    finally:
        for st in stations:
            await st.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m collectors.iec104.station``: stations for benchmarks and manual tests."""
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m collectors.iec104.station",
        description="IEC 104 controlled stations of short-float points on loopback ports.",
    )
    ap.add_argument("ports", type=int, nargs="+", help="one TCP port per station")
    ap.add_argument("--points", type=int, default=2000, help="short floats per station, IOA 1..N")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on")
    ap.add_argument("--first-ca", type=int, default=1, help="common address of the first station")
    ap.add_argument(
        "--flood", action="store_true", help="send every point again as fast as masters take it"
    )
    ap.add_argument("--rate", type=float, default=0.0, help="changes per second per station")
    args = ap.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve_points(
                args.ports,
                args.points,
                host=args.host,
                first_ca=args.first_ca,
                flood=args.flood,
                rate=args.rate,
            )
        )


if __name__ == "__main__":
    main()
