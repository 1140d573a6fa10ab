"""IEC 104 collector: objects per second on one core, RSS of 10 x 2,000 points, reconnect time.

Three measurements, each against our own controlled station (collectors/iec104/station.py,
the same codec; c104 stays the reference in the tests) in a separate process on another core:

1. **Throughput**: the station sends every one of its short floats (M_ME_NC_1, cause 3, as
   many per ASDU as fit) again whenever the collector's k window has room. The collector runs
   in this process, pinned to one core, and hands its readings to the agent's real intake
   (``Agent.attach``: group commit within ``group_commit_s``, chunks into the durable buffer
   on a temporary file, ``fsync`` per commit by default, the collector's commit requests
   honoured; ``--no-commit-hint`` ignores them, ``--sink count`` only counts). The agent's
   sender is not run. Reported: objects delivered per wall second and per CPU second of this
   process, after a warm-up, and the load average before and after.
2. **Memory**: a fresh interpreter imports the agent and the collector, sets up the agent with
   its durable buffer (temporary file) and no station, and reads its RSS: the baseline. Then
   it builds and validates the collector for 10 stations of 2,000 points (the parsed
   configuration dropped, as the agent drops its TOML), attaches it to the agent's intake and
   runs it until every general interrogation completed and half a round of spontaneous changes
   arrived; RSS then minus the baseline (both after a ``gc.collect()``) is what the stations
   add: point tables, per-series time state, links, and the buffer's page cache (512 KB cap).
3. **Reconnect**: the station stops for a while and comes back; measured is the time from its
   return to the completed general interrogation, with the collector's default backoff
   (0.5 s doubling, jitter).

    python bench/iec104.py [--seconds 20] [--cpu 1] [--sink agent|count] [--fsync batch|os]
                           [--no-commit-hint] [--only throughput|memory|reconnect]

Writes bench/results/iec104.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edge_agent.agent import Agent, Delivery
from edge_agent.buffer import Buffer, Fsync
from edge_support import REPO, write_result

from collectors.base import Collector, ReadingSink
from collectors.iec104.collector import Iec104Collector
from collectors.iec104.station import ControlledStation
from qilu.contract import Reading
from qilu.ports import free_port


def station_cfg(name: str, port: int, ca: int, points: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "host": "127.0.0.1",
        "port": port,
        "common_address": ca,
        "points": [
            {"ioa": i, "device_id": f"SUB-B-{ca:02d}-{i:05d}", "metric": "voltage_kv"}
            for i in range(1, points + 1)
        ],
        **extra,
    }


@contextlib.contextmanager
def stations(ports: Sequence[int], points: int, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """Our controlled stations in their own process (``python -m collectors.iec104.station``)."""
    cmd = [sys.executable, "-m", "collectors.iec104.station", *map(str, ports)]
    proc = subprocess.Popen([*cmd, "--points", str(points), *args], cwd=REPO)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


async def until(cond: Callable[[], bool], step: float = 0.005) -> None:
    """Poll collector state (it has no event to wait on)."""
    while not cond():  # noqa: ASYNC110 - polled state, see above
        await asyncio.sleep(step)


class CountSink:
    def __init__(self) -> None:
        self.n = 0

    async def __call__(self, readings: Sequence[Reading]) -> None:
        self.n += len(readings)


class AgentSink(CountSink):
    """The agent's real intake: :meth:`edge_agent.agent.Agent.attach` gives the collector the
    agent's sink (group commit within ``group_commit_s``, chunks into the durable buffer on
    the agent's buffer thread, returns once committed) and its commit requests. The agent's
    sender is not started: what goes on to Kafka is another stage's benchmark."""

    def __init__(self, path: Path, fsync: Fsync, hint: bool) -> None:
        super().__init__()
        self.buffer = Buffer(path, "bench", max_bytes=1 << 30, max_age_s=86400.0, fsync=fsync)
        self.buffer.open()
        self.agent = Agent("bench", [], self.buffer, _no_producer, "bench", Delivery())
        self.hint = hint
        self.inner: ReadingSink | None = None

    def bind(self, c: Collector) -> None:
        self.inner = self.agent.attach(c)
        if not self.hint:  # the agent's intake as it was: every hand-over waits for the timer
            c.on_commit_request(lambda: None)

    async def __call__(self, readings: Sequence[Reading]) -> None:
        if self.inner is None:
            raise RuntimeError("bind() the collector first")
        await self.inner(readings)
        self.n += len(readings)

    def close(self) -> None:
        self.agent._db.shutdown()
        self.buffer.close()


def _no_producer() -> Any:
    raise RuntimeError("the benchmark sends nothing")


async def _throughput(args: argparse.Namespace, port: int, sink: CountSink) -> dict[str, Any]:
    raw = {"type": "iec104", "stations": [station_cfg("flood", port, 1, args.points)]}
    c = Iec104Collector.from_config("bench", raw)
    c.validate()
    if isinstance(sink, AgentSink):
        sink.bind(c)
    task = asyncio.create_task(c.collect(sink))
    try:
        async with asyncio.timeout(60):
            await until(lambda: sink.n >= args.points * 2, 0.1)  # the GI and a first round
        await asyncio.sleep(args.warmup)
        n0, t0, c0 = sink.n, time.perf_counter(), time.process_time()
        await asyncio.sleep(args.seconds)
        n1, t1, c1 = sink.n, time.perf_counter(), time.process_time()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return {
        "objects": n1 - n0,
        "seconds": round(t1 - t0, 2),
        "cpu_seconds": round(c1 - c0, 2),
        "objects_per_s": round((n1 - n0) / (t1 - t0)),
        "objects_per_cpu_s": round((n1 - n0) / (c1 - c0)),
    }


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    os.sched_setaffinity(0, {args.cpu})
    port = free_port()
    other = sorted(set(range(os.cpu_count() or 1)) - {args.cpu}) or [args.cpu]
    with stations([port], args.points, "--flood") as proc:
        os.sched_setaffinity(proc.pid, set(other))
        time.sleep(1.0)
        with tempfile.TemporaryDirectory(prefix="qilu-iec104-bench-") as tmp:
            sink: CountSink = (
                AgentSink(Path(tmp) / "buffer.db", args.fsync, not args.no_commit_hint)
                if args.sink == "agent"
                else CountSink()
            )
            load_before = os.getloadavg()
            try:
                result = asyncio.run(_throughput(args, port, sink))
            finally:
                if isinstance(sink, AgentSink):
                    sink.close()
            load_after = os.getloadavg()
    extra = {"fsync": args.fsync, "commit_hint": not args.no_commit_hint}
    return {
        "sink": args.sink,
        **(extra if args.sink == "agent" else {}),
        "cpu": args.cpu,
        "points": args.points,
        **result,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
    }


_RSS_CHILD = """
import asyncio, gc, json, sys, tempfile
from pathlib import Path
from collectors.iec104.collector import Iec104Collector
from iec104 import AgentSink, rss_kb, station_cfg_list  # this file, from bench/
def settled():
    gc.collect()
    return rss_kb()
async def main(ports, points, tmp):
    imported = settled()
    sink = AgentSink(Path(tmp) / "buffer.db", "batch", True)  # the agent, its buffer, no station
    baseline = settled()
    raw = {"type": "iec104", "stations": station_cfg_list(ports, points)}
    c = Iec104Collector.from_config("rss", raw)
    del raw  # the agent keeps the built configuration, not the parsed TOML
    c.validate()
    sink.bind(c)
    task = asyncio.create_task(c.collect(sink))
    async with asyncio.timeout(120):
        while not all(s.gi_complete for s in c.stations) or sink.n < len(ports) * points * 1.5:
            await asyncio.sleep(0.2)
    after = settled()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    sink.close()
    out = {"rss_imported_kb": imported, "rss_baseline_kb": baseline, "rss_after_kb": after}
    print(json.dumps({**out, "readings": sink.n}))
with tempfile.TemporaryDirectory(prefix="qilu-iec104-rss-") as tmp:
    asyncio.run(main(json.loads(sys.argv[1]), int(sys.argv[2]), tmp))
"""


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def station_cfg_list(ports: Sequence[int], points: int) -> list[dict[str, Any]]:
    return [station_cfg(f"s{i}", p, i + 1, points) for i, p in enumerate(ports)]


def memory(args: argparse.Namespace) -> dict[str, Any]:
    ports = [free_port() for _ in range(args.stations)]
    with stations(ports, args.rss_points, "--rate", "200"):
        time.sleep(1.0)
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{Path(__file__).parent}"}
        out = subprocess.check_output(
            [sys.executable, "-c", _RSS_CHILD, json.dumps(ports), str(args.rss_points)],
            cwd=REPO,
            env=env,
            text=True,
        )
    r = json.loads(out.strip().splitlines()[-1])
    return {
        "stations": args.stations,
        "points_per_station": args.rss_points,
        **r,
        "added_mb": round((r["rss_after_kb"] - r["rss_baseline_kb"]) / 1024, 1),
    }


async def _reconnect(outage_s: float) -> float:
    port = free_port()
    station = ControlledStation(1, port=port)
    for ioa in range(1, 201):
        station.add(ioa, 13, float(ioa))
    await station.start()
    raw = {"type": "iec104", "stations": [station_cfg("r", port, 1, 200)]}
    c = Iec104Collector.from_config("reconnect", raw)
    c.validate()
    st = c.stations[0]

    async def sink(readings: Sequence[Reading]) -> None:
        del readings

    task = asyncio.create_task(c.collect(sink))
    try:
        async with asyncio.timeout(60):
            await until(lambda: st.gi_complete)
            await station.stop()
            await until(lambda: not st.up)
            await asyncio.sleep(outage_s)
            back = time.perf_counter()
            await station.start()
            await until(lambda: st.gi_complete)
            return time.perf_counter() - back
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await station.stop()


def reconnect(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for outage in args.outages:
        times = [asyncio.run(_reconnect(outage)) for _ in range(args.repeat)]
        out.append(
            {
                "outage_s": outage,
                "gi_complete_after_return_s": sorted(round(t, 3) for t in times),
                "max_s": round(max(times), 3),
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", type=int, default=1, help="core to pin the collector to")
    ap.add_argument("--seconds", type=float, default=20.0, help="throughput measuring window")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds before the window")
    ap.add_argument("--points", type=int, default=2000, help="points of the throughput station")
    ap.add_argument(
        "--sink",
        choices=("agent", "count"),
        default="agent",
        help="agent: the agent's intake (group commit, durable buffer); count: only count",
    )
    ap.add_argument(
        "--fsync",
        choices=("batch", "os"),
        default="batch",
        help="the buffer's fsync policy (the agent's default: batch, an fsync per commit)",
    )
    ap.add_argument(
        "--no-commit-hint",
        action="store_true",
        help="ignore the collector's commit requests: every hand-over waits for group_commit_s",
    )
    ap.add_argument("--stations", type=int, default=10, help="stations of the memory run")
    ap.add_argument("--rss-points", type=int, default=2000, help="points per station (memory)")
    ap.add_argument(
        "--outages",
        type=float,
        nargs="+",
        default=[0.5, 2.0, 5.0],
        help="seconds the station stays away (reconnect)",
    )
    ap.add_argument("--repeat", type=int, default=5, help="reconnects per outage length")
    ap.add_argument(
        "--only",
        choices=("throughput", "memory", "reconnect"),
        default=None,
        help="run one measurement and leave the result file alone",
    )
    args = ap.parse_args()
    results: dict[str, Any] = {}
    if args.only in (None, "throughput"):
        results["throughput"] = throughput(args)
        print(json.dumps(results["throughput"]), flush=True)
    if args.only in (None, "memory"):
        results["memory"] = memory(args)
        print(json.dumps(results["memory"]), flush=True)
    if args.only in (None, "reconnect"):
        results["reconnect"] = reconnect(args)
        print(json.dumps(results["reconnect"]), flush=True)
    if args.only is None:
        print(write_result("iec104", results))


if __name__ == "__main__":
    main()
