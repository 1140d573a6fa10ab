"""Load benchmark of the HTTP API: coverage and series endpoints under 50 concurrent clients
while the platform ingests.

What runs (all on 127.0.0.1, stopped at the end):
  * a fresh database on the local PostgreSQL, migrated, with a generated registry;
  * `qilu ingest` and `qilu agent province` (simulated agents -> Kafka -> ingest -> database)
    on their own topic prefix and consumer group;
  * `qilu api` on a free port (one process, as deployed by `qilu run`);
  * this process: N asyncio clients on keep-alive HTTP/1.1 connections, each with its own API
    key, for three phases: coverage endpoints only, series endpoints only, then both at once
    (50 coverage clients and 50 series clients).

Each client sends at a fixed rate (--rate per client; 0 = as fast as answers come back).
Latency is measured from the moment a request was due, not when it was sent, so a stalled
server cannot hide its queue (no coordinated omission). Results: p50 / p90 / p99 / max in ms
and requests/s per endpoint and phase, printed and written to bench/results/api_load.json.

    .venv/bin/python bench/api_load.py                      # 50 clients x 5 req/s (series 1/s)
    .venv/bin/python bench/api_load.py --rate 0 --phase-s 10  # closed loop: maximum throughput

The machine's cores are shared by the load generator, the API, ingest, the agents, Kafka and
PostgreSQL: figures are for this whole platform on one host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psycopg import sql  # noqa: E402

from api.cli import create_key  # noqa: E402
from bench.common import server_env, spawn_logged  # noqa: E402
from qilu.catalog import load_catalog  # noqa: E402
from qilu.ports import free_port  # noqa: E402
from qilu.registry import generate  # noqa: E402
from qilu.settings import Settings, load  # noqa: E402
from storage import migrate  # noqa: E402
from storage.db import connect  # noqa: E402
from storage.registry_store import load_registry  # noqa: E402
from stream.topics import ensure_topics  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "api_load.json"


def say(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


# -- the platform under test ----------------------------------------------------------------
class Platform:
    def __init__(
        self,
        base: Settings,
        scale: float,
        with_ingest: bool,
        ingest_nice: int,
        api_nice: int = 0,
    ) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.ingest_nice, self.api_nice = ingest_nice, api_nice
        self.dbname = f"qilu_bench_api_{self.tag}"
        self.port = free_port()
        self.scale, self.with_ingest = scale, with_ingest
        self.base = base
        self.db = base.db.model_copy(update={"name": self.dbname})
        self.kafka = base.kafka.model_copy(update={"topic_prefix": f"bench{self.tag}"})
        self.settings = base.model_copy(update={"db": self.db, "kafka": self.kafka})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = ROOT / ".state" / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        return server_env(self.dbname, self.kafka.topic_prefix, self.tag, self.port)

    def start(self) -> None:
        with connect(self.base.db, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
        with connect(self.db) as conn:
            migrate.apply(conn)
            reg = generate(1, self.scale)
            load_registry(conn, reg)
        say(f"database {self.dbname}: {len(reg.sites):,} sites, {len(reg.devices):,} devices")
        ensure_topics(self.kafka)
        qilu = [sys.executable, "-m", "ops.cli"]
        if self.with_ingest:
            # batch work yields the CPU to the interactive API, as a deployment would
            # (--ingest-nice 0 to compete evenly)
            self._spawn("ingest", [*qilu, "ingest"], self.ingest_nice)
            self._spawn(
                "agents",
                [
                    *qilu,
                    "agent",
                    "province",
                    "--seed",
                    "1",
                    "--scale",
                    str(self.scale),
                    "--metrics-port",
                    str(free_port()),
                    "--state-dir",
                    str(ROOT / ".state" / f"bench-agents-{self.tag}"),
                ],
                self.ingest_nice,
            )
        self._spawn("api", [*qilu, "api", "--port", str(self.port)], self.api_nice)

    def _spawn(self, name: str, argv: list[str], nice: int = 0) -> None:
        log = self.logs / f"bench-api-{name}.log"
        # nice is an absolute value: this process may run at another one (--generator-nice)
        self.procs[name] = spawn_logged(argv, log, self.env(), ROOT, nice)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}; see .state/logs")
            try:
                with urllib.request.urlopen(self.url("/readyz"), timeout=2) as r:  # noqa: S310
                    if r.status == 200 and (not self.with_ingest or self.readings() > 0):
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError("the API did not become ready (or nothing was ingested)")

    def readings(self) -> int:
        """Devices seen so far (ingest is working once this is above zero)."""
        with connect(self.db) as conn:
            row = conn.execute("SELECT count(*) FROM device_liveness").fetchone()
        return int(row[0]) if row else 0

    def stored_readings(self) -> int:
        with connect(self.db) as conn:
            row = conn.execute("SELECT count(*) FROM readings").fetchone()
        return int(row[0]) if row else 0

    def database_mb(self) -> float:
        """Disk used by the bench database (tables, indexes, TOAST)."""
        with connect(self.db) as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) / 1e6 if row else 0.0

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for name, p in self.procs.items():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                say(f"{name} did not stop in 20 s; killing it")
                p.kill()
                p.wait(10)
        with connect(self.base.db, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.dbname)
                )
            )
        if self.with_ingest:
            from kafka.admin import KafkaAdminClient

            from stream.topics import deadletter_topic, readings_topics

            admin = KafkaAdminClient(bootstrap_servers=self.kafka.bootstrap)
            try:
                admin.delete_topics([*readings_topics(self.kafka), deadletter_topic(self.kafka)])
            finally:
                admin.close()


# -- what else the machine did --------------------------------------------------------------
def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    with Path("/proc/stat").open() as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _process_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in jiffies; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


class CpuWatch:
    """The machine's CPU busy share per second (all cores; 100 % = every core busy) and the CPU
    used by each process of interest, over one phase: the API's latency means little without
    knowing what else held the two cores."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-watch", daemon=True)

    def _run(self) -> None:
        prev = _machine_ticks()
        while not self._stop.wait(1.0):
            cur = _machine_ticks()
            if cur[1] > prev[1]:
                self.samples.append(100.0 * (cur[0] - prev[0]) / (cur[1] - prev[1]))
            prev = cur

    def __enter__(self) -> CpuWatch:
        self._t0 = time.monotonic()
        self._m0 = _machine_ticks()
        self._p0 = {name: _process_ticks(pid) for name, pid in self.pids.items()}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._elapsed = time.monotonic() - self._t0
        self._m1 = _machine_ticks()
        self._p1 = {name: _process_ticks(pid) for name, pid in self.pids.items()}

    def summary(self) -> dict[str, Any]:
        hz = os.sysconf("SC_CLK_TCK")
        busy, total = self._m1[0] - self._m0[0], self._m1[1] - self._m0[1]
        xs = sorted(self.samples)
        return {
            "machine_busy_pct": round(100.0 * busy / total, 1) if total else None,
            "machine_busy_pct_max_1s": round(xs[-1], 1) if xs else None,
            "cores": os.cpu_count(),
            # share of ONE core (100 = a whole core) used by each process during the phase
            "process_cpu_pct_of_one_core": {
                name: round(100.0 * (self._p1[name] - self._p0[name]) / hz / self._elapsed, 1)
                for name in self.pids
            },
        }


# -- the load generator ---------------------------------------------------------------------
class Stats:
    def __init__(self) -> None:
        self.lat: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.loop_lag: list[float] = []  # the generator's own lateness (it shares the cores)

    def summary(self, seconds: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in sorted(self.lat):
            xs = sorted(self.lat[name])
            n = len(xs)

            def pct(p: float, xs: list[float] = xs, n: int = n) -> float:
                return round(xs[min(n - 1, int(p * n))] * 1000, 2) if n else float("nan")

            out[name] = {
                "requests": n,
                "errors": dict(self.errors[name]),
                "rps": round(n / seconds, 1),
                "p50_ms": pct(0.50),
                "p90_ms": pct(0.90),
                "p99_ms": pct(0.99),
                "max_ms": round(xs[-1] * 1000, 2) if n else None,
            }
        return out


async def client(
    port: int,
    token: str,
    endpoints: list[tuple[str, str]],
    rate: float,
    start: float,
    stop: float,
    stats: Stats,
    seed: int,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rng = random.Random(seed)
    requests = [
        (
            name,
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
            ).encode(),
        )
        for name, path in endpoints
    ]
    interval = 1.0 / rate if rate > 0 else 0.0
    due = start + rng.random() * interval
    try:
        while True:
            now = time.perf_counter()
            if interval:
                if due > now:
                    await asyncio.sleep(due - now)
            else:
                due = now
            if due >= stop:
                return
            name, raw = requests[rng.randrange(len(requests))]
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            done = time.perf_counter()
            if status == 200:
                stats.lat[name].append(done - due)
            else:
                stats.errors[name][status] += 1
            due += interval
    finally:
        writer.close()


Group = tuple[list[str], list[tuple[str, str]], float]  # tokens, endpoints, rate per client


async def probe_loop(stop: float, lags: list[float], interval: float = 0.01) -> None:
    """How late this process's own loop runs a timer: a late generator inflates the latency
    it reports, so its lag is reported next to the figures."""
    while (due := time.perf_counter() + interval) < stop:
        await asyncio.sleep(interval)
        lags.append(time.perf_counter() - due)


async def phase(port: int, groups: list[Group], seconds: float) -> Stats:
    """Every group's clients at once: one connection and one API key per client."""
    stats = Stats()
    start = time.perf_counter() + 0.5
    stop = start + seconds
    clients = [
        client(port, tok, endpoints, rate, start, stop, stats, hash((g, i)))
        for g, (tokens, endpoints, rate) in enumerate(groups)
        for i, tok in enumerate(tokens)
    ]
    await asyncio.gather(*clients, probe_loop(stop, stats.loop_lag))
    return stats


def scrape(p: Platform) -> str:
    with urllib.request.urlopen(p.url("/metrics"), timeout=10) as r:  # noqa: S310 - loopback
        return str(r.read().decode())


def histogram(text: str, name: str = "qilu_api_request_seconds") -> dict[str, dict[float, float]]:
    """A Prometheus histogram from the API's /metrics: route (or "") -> le -> count."""
    out: dict[str, dict[float, float]] = defaultdict(dict)
    prefix = f"{name}_bucket{{"
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        labels, value = line[len(prefix) :].split("} ")
        parts = dict(kv.split("=", 1) for kv in labels.split(","))
        le = parts["le"].strip('"')
        route = parts.get("route", '""').strip('"')
        out[route][float("inf") if le == "+Inf" else float(le)] = float(value)
    return out


def server_histogram(p: Platform) -> dict[str, dict[float, float]]:
    """The API's own latency histogram (qilu_api_request_seconds): route -> le -> count."""
    return histogram(scrape(p))


def loop_lag(
    before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]
) -> dict[str, Any]:
    """The API's event-loop lag over a phase (timer every 50 ms: how late it ran)."""
    b, a = before.get("", {}), after.get("", {})
    total = a.get(float("inf"), 0.0) - b.get(float("inf"), 0.0)
    if not total:
        return {"samples": 0}
    share = {le: (n - b.get(le, 0.0)) / total for le, n in a.items()}
    p99 = next(le for le in sorted(share) if share[le] >= 0.99)
    return {
        "samples": int(total),
        "within_5ms": round(share.get(0.005, 0.0), 4),
        "within_20ms": round(share.get(0.02, 0.0), 4),
        "p99_at_most_ms": None if p99 == float("inf") else p99 * 1000,
    }


def server_side(
    before: dict[str, dict[float, float]], after: dict[str, dict[float, float]], routes: set[str]
) -> dict[str, Any]:
    """Share of requests the server answered within each bucket bound, over ``routes``."""
    buckets: dict[float, float] = defaultdict(float)
    for route in routes:
        for le, n in after.get(route, {}).items():
            buckets[le] += n - before.get(route, {}).get(le, 0.0)
    total = buckets.get(float("inf"), 0.0)
    if not total:
        return {"requests": 0}
    p99_bound = next(le for le in sorted(buckets) if buckets[le] >= 0.99 * total)
    return {
        "requests": int(total),
        "within_20ms": round(buckets.get(0.02, 0.0) / total, 4),
        "p99_at_most_ms": None if p99_bound == float("inf") else p99_bound * 1000,
    }


COVERAGE_ROUTES = {"/v1/coverage", "/v1/coverage/{target_id}", "/v1/status"}
SERIES_ROUTES = {"/v1/devices/{device_id}/readings", "/v1/coverage/{target_id}/series"}


def endpoints(p: Platform) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    cat = load_catalog()
    cities = cat.city_codes
    coverage = [("GET /v1/coverage", "/v1/coverage")]
    coverage += [("GET /v1/coverage?city=", f"/v1/coverage?city={c}") for c in cities]
    coverage += [("GET /v1/coverage/{target}", f"/v1/coverage/{t.id}") for t in cat.targets]
    coverage += [("GET /v1/status", "/v1/status")]
    with connect(p.db) as conn:
        devs = [
            r[0]
            for r in conn.execute(
                "SELECT d.device_id FROM devices d JOIN device_liveness l USING (device_pk)"
                " ORDER BY d.device_pk LIMIT 200"
            )
        ]
    end = datetime.now(UTC) + timedelta(minutes=5)
    start = end - timedelta(hours=2)
    rng = f"start={start:%Y-%m-%dT%H:%M:%SZ}&end={end:%Y-%m-%dT%H:%M:%SZ}"
    series = [
        (
            f"GET /v1/devices/{{id}}/readings?resolution={res}",
            f"/v1/devices/{d}/readings?resolution={res}&{rng}&limit=200",
        )
        for d in devs
        for res in ("1m", "1h")
    ]
    series += [
        ("GET /v1/coverage/{target}/series", f"/v1/coverage/{t.id}/series") for t in cat.targets
    ]
    return coverage, series


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    ap.add_argument(
        "--rate",
        type=float,
        default=5.0,
        help="coverage requests/s per client (default 5: 250/s from 50 clients); 0 = closed loop",
    )
    ap.add_argument("--phase-s", type=float, default=20.0, help="seconds per phase (default 20)")
    ap.add_argument("--warmup-s", type=float, default=5.0, help="seconds of ingest before load")
    ap.add_argument("--scale", type=float, default=0.02, help="registry scale (default 0.02)")
    ap.add_argument("--no-ingest", action="store_true", help="do not run ingest and agents")
    ap.add_argument(
        "--ingest-nice",
        type=int,
        default=10,
        help="nice value of the ingest and agent processes (default 10; 0 = same as the API)",
    )
    ap.add_argument(
        "--api-nice",
        type=int,
        default=0,
        help="nice value of the API process (default 0; below 0 gives it a larger CPU share, "
        "as a deployment's Nice= or CPUWeight= would)",
    )
    ap.add_argument(
        "--generator-nice",
        type=int,
        default=0,
        help="nice value of this load generator (default 0; it stands for clients on other "
        "machines, so below 0 keeps its own waits for a core out of the latencies)",
    )
    ap.add_argument(
        "--series-rate",
        type=float,
        default=1.0,
        help="series requests/s per client (default 1); 0 = closed loop",
    )
    ap.add_argument(
        "--phases", default="coverage,series,both", help="comma-separated subset to run"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a short run for CI and the report's quick mode: 8 s per phase, 2 s warm-up",
    )
    ap.add_argument(
        "--out", type=Path, default=RESULTS, help="results folder (default bench/results)"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.phase_s, args.warmup_s = min(args.phase_s, 8.0), min(args.warmup_s, 2.0)
    unknown = set(args.phases.split(",")) - {"coverage", "series", "both"}
    if unknown:
        ap.error(f"unknown phase(s) {', '.join(sorted(unknown))}: use coverage, series, both")
    return args


def main() -> int:
    args = parse_args()

    import uvloop

    if args.generator_nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.generator_nice)
    base = load()
    p = Platform(base, args.scale, not args.no_ingest, args.ingest_nice, args.api_nice)
    say(f"starting the platform (scale {args.scale}, ingest {'on' if p.with_ingest else 'off'})")
    p.start()
    try:
        p.wait_ready()
        tokens = [
            create_key(p.settings, name=f"bench-{i}", scopes=["admin"], rate=100_000)[1]
            for i in range(args.clients)
        ]
        series_tokens = [
            create_key(p.settings, name=f"bench-s{i}", scopes=["admin"], rate=100_000)[1]
            for i in range(args.clients)
        ]
        time.sleep(args.warmup_s)
        cov, ser = endpoints(p)
        coverage_group: Group = (tokens, cov, args.rate)
        series_group: Group = (series_tokens, ser, args.series_rate)
        phases: dict[str, list[Group]] = {
            "coverage": [coverage_group],
            "series": [(tokens, ser, args.series_rate)],
            # 50 coverage clients and 50 series clients at the same time
            "both": [coverage_group, series_group],
        }
        pids = {name: proc.pid for name, proc in p.procs.items()} | {"load generator": os.getpid()}
        results: dict[str, Any] = {}
        for name in args.phases.split(","):
            groups = phases[name]
            before = p.stored_readings() if p.with_ingest else 0
            say(
                f"phase {name}: "
                + ", ".join(f"{len(g[0])} x {g[2] or 'max'} req/s" for g in groups)
                + f" for {args.phase_s:g} s"
            )
            text = scrape(p)
            hist_before, lag_before = histogram(text), histogram(text, "qilu_api_loop_lag_seconds")
            t0 = time.monotonic()
            with CpuWatch(pids) as cpu:
                stats = uvloop.run(phase(p.port, groups, args.phase_s))
            elapsed = time.monotonic() - t0 - 0.5  # until the last answer arrived
            text = scrape(p)
            hist_after, lag_after = histogram(text), histogram(text, "qilu_api_loop_lag_seconds")
            after = p.stored_readings() if p.with_ingest else 0
            summary = stats.summary(elapsed)
            total = sum(v["requests"] for v in summary.values())
            all_lat = sorted(x for xs in stats.lat.values() for x in xs)
            gen_lag = sorted(stats.loop_lag)
            results[name] = {
                "clients": [
                    {"clients": len(g[0]), "rate_per_client": g[2], "endpoints": len(g[1])}
                    for g in groups
                ],
                "offered_rps": sum(len(g[0]) * g[2] for g in groups)
                if all(g[2] for g in groups)
                else None,
                "achieved_rps": round(total / elapsed, 1),
                "seconds": round(elapsed, 1),
                "p50_ms": round(all_lat[len(all_lat) // 2] * 1000, 2) if all_lat else None,
                "p99_ms": round(all_lat[int(len(all_lat) * 0.99)] * 1000, 2) if all_lat else None,
                "max_ms": round(all_lat[-1] * 1000, 2) if all_lat else None,
                "errors": sum(sum(v["errors"].values()) for v in summary.values()),
                "ingested_readings_per_s": round((after - before) / max(elapsed, 1e-9), 1),
                "endpoints": summary,
                # measured inside the API (request in -> response start), by its histogram
                "server_side": {
                    "coverage": server_side(hist_before, hist_after, COVERAGE_ROUTES),
                    "series": server_side(hist_before, hist_after, SERIES_ROUTES),
                    "loop_lag": loop_lag(lag_before, lag_after),
                },
                # the load generator's own loop: how late it could be to send or to read
                "generator_loop_lag_ms": {
                    "p99": round(gen_lag[int(len(gen_lag) * 0.99)] * 1000, 2) if gen_lag else None,
                    "max": round(gen_lag[-1] * 1000, 2) if gen_lag else None,
                },
                "cpu": cpu.summary(),
            }
            r = results[name]
            say(
                f"  {r['achieved_rps']} req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                f"max {r['max_ms']} ms, errors {r['errors']}, "
                f"ingest {r['ingested_readings_per_s']} readings/s"
            )
            say(f"  server side: {r['server_side']}")
            say(f"  generator loop lag: {r['generator_loop_lag_ms']}; cpu: {r['cpu']}")
            for ep, s in summary.items():
                say(
                    f"    {ep:<52} {s['rps']:>8} req/s  p50 {s['p50_ms']:>7} ms"
                    f"  p99 {s['p99_ms']:>7} ms  errors {s['errors'] or 0}"
                )
        doc = {
            "benchmark": "api_load",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "config": {
                "clients": args.clients,
                "rate_per_client": args.rate,
                "phase_s": args.phase_s,
                "scale": args.scale,
                "ingest": p.with_ingest,
                "ingest_nice": args.ingest_nice,
                "api_nice": args.api_nice,
                "generator_nice": args.generator_nice,
                "api_processes": 1,
                "quick": args.quick,
                "load_generator": "asyncio + uvloop, one keep-alive connection per client, "
                "paced (latency from the due time, no coordinated omission)",
            },
            "target": "coverage endpoints p99 <= 20 ms with 50 clients while ingest runs",
            "coverage_p99_ok": bool(
                "coverage" in results
                and results["coverage"]["p99_ms"] is not None
                and results["coverage"]["p99_ms"] <= 20.0
                and results["coverage"]["errors"] == 0
            ),
            "phases": results,
            "note": "one host: load generator, API, ingest, agents, Kafka and PostgreSQL "
            "share its cores; figures move with whatever else runs",
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        say(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
        return 0
    finally:
        say("stopping the platform")
        p.stop()


if __name__ == "__main__":
    sys.exit(main())
