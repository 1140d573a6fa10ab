"""One benchmark report: run every benchmark of bench/, a shortened soak, and write REPORT.md.

    .venv/bin/python bench/report.py            # the full benchmarks (long: an hour or more)
    .venv/bin/python bench/report.py --quick    # short variants of each, for CI-ish runs
    .venv/bin/python bench/report.py --only api_load,wire_format --soak-min 2
    .venv/bin/python bench/report.py --report-only   # rebuild REPORT.md from the JSON there

What it does, in order (progress lines on stdout all along):
  1. keeps the results of the previous run: bench/results/*.json are copied to
     bench/results/previous/ before anything is overwritten;
  2. runs each benchmark script as its own process (ingest with its latency run, edge
     footprint, edge catch-up, edge outage, edge buffer, wire format, registry import, API
     load), each writing its JSON into bench/results/ as when run by hand; a failed or timed
     out benchmark is reported as such and the others still run;
  3. a soak: the platform (fresh database, `qilu ingest`, `qilu agent province`, `qilu api`)
     runs for --soak-min minutes; every few seconds the resident memory and open file
     descriptors of each process and the disk used by each state folder are sampled, and each
     series gets a least-squares slope and a verdict (flat, or growing: a leak);
  4. writes bench/results/REPORT.md: the machine, each figure against its issue's target,
     the change since the previous run, and PNG charts next to it (report_*.png).

--quick runs the short variant of every benchmark and a 1-minute soak, and keeps its files
apart (bench/results/quick/, compared with bench/results/quick/previous/), so a quick run
never overwrites the full figures.

All benchmarks share this machine's cores with whatever else runs; the report records the
load average and the CPU busy share around each benchmark so a slow figure can be judged.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def say(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


# -- what each benchmark reports ---------------------------------------------------------------
def dig(doc: Any, path: str) -> Any:
    """``doc`` at a dotted path ("a.b.0.c"), or None when any step is missing."""
    cur = doc
    for step in path.split("."):
        if isinstance(cur, dict):
            cur = cur.get(step)
        elif (
            isinstance(cur, list)
            and step.lstrip("-").isdigit()
            and -len(cur) <= int(step) < len(cur)
        ):
            cur = cur[int(step)]
        else:
            return None
        if cur is None:
            return None
    return cur


@dataclass(frozen=True)
class Figure:
    """One number of a benchmark's JSON, with its target when an issue sets one."""

    label: str
    path: str | Callable[[Any], Any]
    unit: str
    target: float | None = None
    better: str = "lower"  # "lower" or "higher": the direction of the target and of progress
    issue: str = ""

    def value(self, doc: Any) -> float | None:
        try:
            v = self.path(doc) if callable(self.path) else dig(doc, self.path)
        except (KeyError, IndexError, StopIteration, TypeError, ValueError, ZeroDivisionError):
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
            return None
        return float(v)

    def met(self, v: float | None) -> bool | None:
        if v is None or self.target is None:
            return None
        return v <= self.target if self.better == "lower" else v >= self.target


@dataclass(frozen=True)
class Bench:
    name: str  # also the JSON file name: bench/results/<name>.json
    script: str
    title: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    figures: tuple[Figure, ...]
    timeout_s: float = 3600.0
    note: str = ""


def _run_by_rate(rate: float, key: str) -> Callable[[Any], Any]:
    return lambda d: next(r[key] for r in d["runs"] if r["rate"] == rate)


def _uncapped(key: str) -> Callable[[Any], Any]:
    return lambda d: next(r[key] for r in d["runs"] if r["backlog_rate_cap"] == "uncapped")


def _variant_mean(variant: str) -> Callable[[Any], Any]:
    """bench/sink_cost.py: a variant's database CPU per row, the mean of its rounds."""

    def mean(d: Any) -> float:
        runs = [r["backend_us_per_row"] for r in d["runs"] if r["variant"] == variant]
        return sum(runs) / len(runs)

    return mean


BENCHES: tuple[Bench, ...] = (
    Bench(
        "ingest",
        "bench/ingest.py",
        "Ingest: sustained rate, produce-to-row latency, queries",
        (),
        (
            "--scale",
            "0.05",
            "--readings",
            "300000",
            "--latency-s",
            "10",
            "--rate",
            "5000",
            "--skip-big",
            "--skip-copy",
        ),
        (
            Figure(
                "sustained ingest",
                "sustained.readings_per_s",
                "readings/s",
                150_000,
                "higher",
                "3",
            ),
            Figure("latency p50", "latency.p50_ms", "ms", 30, "lower", "17"),
            Figure("latency p99", "latency.p99_ms", "ms", 100, "lower", "17"),
            Figure("ingest / raw COPY", "ratio_ingest_to_copy", "ratio", 0.7, "higher", "3"),
            Figure(
                "pipeline CPU per reading",
                "sustained.cpu_window.pipeline_us_per_reading",
                "µs",
                None,
                "lower",
                "17",
            ),
            Figure(
                "cost ratio (pipeline / parallel COPY)",
                "cost.ratio_pipeline_to_parallel_copy",
                "ratio",
                1.5,
                "lower",
                "17",
            ),
            # with 100 million readings stored: the answers the API gives (coverage from the
            # newest snapshot, a device's 24-hour 1-minute series from the rollup), and the
            # recomputation of that snapshot, which runs in the background every few seconds
            Figure("coverage answer p99", "queries.coverage_served_ms.p99", "ms", 50, "lower", "3"),
            Figure(
                "24 h 1-minute series p99", "queries.series_24h_1m_ms.p99", "ms", 50, "lower", "3"
            ),
            Figure("coverage recomputation p50 (background)", "queries.coverage_live_ms.p50", "ms"),
        ),
        timeout_s=4 * 3600,
    ),
    Bench(
        "edge_footprint",
        "bench/edge_footprint.py",
        "Edge agent footprint (one core)",
        (),
        ("--rates", "1000", "--warmup", "3", "--window", "10"),
        (
            Figure(
                "peak RSS at 1,000/s",
                _run_by_rate(1000.0, "peak_rss_mb"),
                "MB",
                40,
                "lower",
                "4",
            ),
            Figure(
                "CPU per 1,000 readings/s",
                _run_by_rate(1000.0, "cpu_pct_per_1000_readings_s"),
                "% of a core",
                3,
                "lower",
                "4",
            ),
            Figure(
                "peak RSS at 10,000/s",
                _run_by_rate(10_000.0, "peak_rss_mb"),
                "MB",
                40,
                "lower",
                "4",
            ),
        ),
    ),
    Bench(
        "edge_catchup",
        "bench/edge_catchup.py",
        "Edge agent catch-up after an outage",
        (),
        ("--backlog-s", "30", "--cap", "5000"),
        (
            Figure(
                "catch-up factor (uncapped)",
                _uncapped("catch_up_factor"),
                "x live rate",
                20,
                "higher",
                "4",
            ),
            Figure(
                "drain rate (uncapped)",
                _uncapped("drain_readings_per_s"),
                "readings/s",
                better="higher",
            ),
        ),
    ),
    Bench(
        "edge_outage",
        "bench/edge_outage.py",
        "Edge agent through a broker outage",
        (),
        ("--outage-s", "20"),
        (
            Figure(
                "readings lost",
                lambda d: d["readings"] - d["stored"],
                "readings",
                0,
                "lower",
                "4",
            ),
            Figure("duplicates", "duplicates", "rows", 0, "lower", "4"),
            Figure("peak buffer on disk", lambda d: d["peak_disk_bytes"] / 1e6, "MB"),
            Figure("stored after the broker is back", "stored_after_broker_back_s", "s"),
        ),
    ),
    Bench(
        "edge_buffer",
        "bench/edge_buffer.py",
        "Edge buffer store (SQLite WAL vs append log)",
        (),
        ("--readings", "20000"),
        (
            Figure(
                "SQLite append", "sqlite_wal.append_readings_per_s", "readings/s", better="higher"
            ),
            Figure("SQLite bytes per reading", "sqlite_wal.disk_bytes_per_reading", "bytes"),
        ),
    ),
    Bench(
        "wire_format",
        "bench/wire_format.py",
        "Wire format (size and codec cost per reading)",
        (),
        ("--rounds", "20"),
        (
            Figure(
                "chosen format, bytes/reading", lambda d: _chosen(d, "bytes_per_reading"), "bytes"
            ),
            Figure("chosen format, decode", lambda d: _chosen(d, "decode_ns_per_reading"), "ns"),
        ),
    ),
    Bench(
        "registry_import",
        "bench/registry_import.py",
        "Registry import (200,000 charging piles)",
        (),
        ("--piles", "20000"),
        (
            Figure("import (apply)", "phases.apply.wall_s", "s", 60, "lower", "8"),
            Figure("piles per second", "piles_per_s_apply", "piles/s", better="higher"),
        ),
    ),
    Bench(
        "faults",
        "bench/faults.py",
        "Faults and hostile input: lost, duplicates, latency under the corpus",
        ("--full",),
        ("--latency-s", "10"),
        (
            Figure("scenarios run", lambda d: len(d["faults"]["scenarios"]), "scenarios"),
            Figure(
                "readings lost (all scenarios)",
                lambda d: sum(int(t["lost"]) for t in d["faults"]["scenarios"]),
                "readings",
                0,
                "lower",
                "7",
            ),
            Figure(
                "duplicates (all scenarios)",
                lambda d: sum(int(t["duplicates"]) for t in d["faults"]["scenarios"]),
                "rows",
                0,
                "lower",
                "7",
            ),
            Figure(
                "good-record p95 under the corpus / baseline",
                "latency.p95_ratio",
                "x",
                2,
                "lower",
                "7",
            ),
        ),
        timeout_s=3 * 3600,
    ),
    Bench(
        "agent_auth",
        "bench/agent_auth.py",
        "Authenticated agents: cost of signing and verifying",
        (),
        ("--rounds", "200"),
        (
            Figure("sign, per envelope", "sign_us_per_envelope", "us"),
            Figure("verify + site check, per envelope", "auth_extra_us_per_envelope", "us"),
            Figure(
                "ingest CPU throughput change",
                "ingest_cpu_throughput_change",
                "ratio",
                better="higher",
            ),
        ),
    ),
    Bench(
        "api_load",
        "bench/api_load.py",
        "API under 50 clients while ingest runs",
        (),
        ("--quick",),
        (
            Figure("coverage p50", "phases.coverage.p50_ms", "ms", None, "lower", "5"),
            Figure("coverage p99", "phases.coverage.p99_ms", "ms", 20, "lower", "5"),
            Figure("coverage req/s", "phases.coverage.achieved_rps", "req/s", better="higher"),
            Figure("coverage p99 with series load", "phases.both.p99_ms", "ms"),
            Figure("series p99", "phases.series.p99_ms", "ms", None, "lower", "5"),
            Figure("machine CPU busy (coverage)", "phases.coverage.cpu.machine_busy_pct", "%"),
        ),
        timeout_s=900,
    ),
    Bench(
        "iec104",
        "bench/iec104.py",
        "IEC 104 collector: objects/s on one core, RSS of 10 x 2,000 points, reconnect",
        (),
        ("--seconds", "5", "--repeat", "2", "--outages", "0.5", "2"),
        (
            Figure(
                "objects into the agent's buffer, one core",
                "throughput.objects_per_s",
                "objects/s",
                50_000,
                "higher",
                "15",
            ),
            Figure("per CPU second of the collector", "throughput.objects_per_cpu_s", "objects/s"),
            Figure(
                "added RSS, 10 stations x 2,000 points", "memory.added_mb", "MB", 15, "lower", "15"
            ),
            Figure(
                "GI complete after the station's return (away <= 2 s)",
                lambda d: max(r["max_s"] for r in d["reconnect"] if r["outage_s"] <= 2),
                "s",
                2,
                "lower",
                "15",
            ),
        ),
        timeout_s=900,
    ),
    Bench(
        "tcec102",
        "bench/tcec102.py",
        "T/CEC 102 status pushes with ingest running: accepted/s, answer p99, request -> row",
        (),
        ("--seconds", "5"),
        (
            Figure("pushes accepted", "accepted_per_s", "pushes/s", 2000, "higher", "16"),
            Figure("answer p99", "answer_ms.p99", "ms", 50, "lower", "16"),
            Figure("answer p50", "answer_ms.p50", "ms"),
            Figure("request -> stored row p50", "request_to_row_ms.p50", "ms"),
            Figure("request -> stored row p99", "request_to_row_ms.p99", "ms"),
        ),
        timeout_s=900,
    ),
    Bench(
        "coverage_incremental",
        "bench/coverage_incremental.py",
        "Coverage kept incrementally at province scale, liveness changing every second",
        (),
        ("--scale", "0.1", "--seconds", "20"),
        (
            Figure("incremental p50", "incremental_ms.p50", "ms"),
            Figure("incremental p99", "incremental_ms.p99", "ms", 100, "lower", "17"),
            Figure("full recomputation", "full_coverage_compute_s", "s"),
        ),
        timeout_s=1800,
    ),
    Bench(
        "consumer_restart",
        "bench/consumer_restart.py",
        "A SIGKILLed ingest consumer restarted at once: back to storing (static membership)",
        (),
        ("--static-only",),
        (
            Figure(
                "storing again after the kill (static)",
                "static.tally.extra.resumed_max_s",
                "s",
                10,
                "lower",
                "18",
            ),
            Figure("lost", "static.tally.lost", "readings", 0, "lower", "18"),
            Figure("duplicates", "static.tally.duplicates", "readings", 0, "lower", "18"),
        ),
        timeout_s=900,
    ),
    Bench(
        "cluster_faults",
        "bench/cluster_faults.py",
        "Three-broker cluster: a broker killed, back empty, cut off; an ingest host lost",
        ("--scenario", "brokers", "--runs", "3"),
        ("--scenario", "broker", "--runs", "1"),
        (
            Figure("writes acknowledged again", "produce_resumed_s_max", "s", 10, "lower", "18"),
            Figure("rows stored again", "stored_resumed_s_max", "s"),
            Figure("lost", "lost", "readings", 0, "lower", "18"),
            Figure("duplicates", "duplicates", "readings", 0, "lower", "18"),
        ),
        timeout_s=3600,
        note="`--scenario postgres` (Patroni primary killed) writes bench/results/pg_failover.json",
    ),
    Bench(
        "sync_replication",
        "bench/sync_replication.py",
        "PostgreSQL synchronous replication (Patroni) on and off: the ingest's batch commit",
        (),
        ("--batches", "50", "--rounds", "1"),
        (
            Figure("commit p50, synchronous", "results.synchronous.commit_p50_ms", "ms"),
            Figure("commit p50, asynchronous", "results.asynchronous.commit_p50_ms", "ms"),
            Figure(
                "one writer's rate, synchronous / asynchronous",
                "synchronous_cost.readings_per_s_ratio",
                "",
                better="higher",
            ),
        ),
        timeout_s=1800,
    ),
    Bench(
        "province_live",
        "bench/province_live.py",
        "The whole province live on the cluster profile: consumer lag, CPU and memory",
        (),
        ("--duration", "90", "--warmup", "30"),
        (
            Figure("consumer lag (max after warm-up)", "lag.max_s", "s", 10, "lower", "18"),
            Figure("readings stored", "readings_stored_per_s", "/s", 37033, "higher", "18"),
        ),
        timeout_s=3600,
    ),
    Bench(
        "sink_cost",
        "bench/sink_cost.py",
        "The readings sink's database cost per row: COPY, liveness per batch, coalesced",
        (),
        ("--scale", "0.1", "--seconds", "30", "--rounds", "1"),
        (
            Figure("per batch (liveness with every batch)", _variant_mean("batch"), "us/row"),
            Figure("coalesced liveness (per kind)", _variant_mean("coalesced:30"), "us/row"),
        ),
        timeout_s=1800,
    ),
    Bench(
        "province_agents",
        "bench/province_agents.py",
        "The simulated province's agents: CPU per reading, before and after its own settings",
        (),
        ("--cities", "370100", "--warmup", "5", "--window", "20", "--rounds", "1"),
        (
            Figure(
                "agents' CPU per reading (province settings)",
                "summary.province.cpu_us_per_reading_mean",
                "us",
            ),
            Figure(
                "agents' CPU per reading (1 s / 500 readings)",
                "summary.before.cpu_us_per_reading_mean",
                "us",
            ),
        ),
        timeout_s=1800,
    ),
    Bench(
        "restore",
        "bench/restore.py",
        "Point-in-time restore of a province-scale database (pgBackRest)",
        (),
        ("--readings", "2000000"),
        (
            Figure("full backup", "backup_full_s", "s"),
            Figure("restore", "restore_s", "s"),
            Figure("WAL replay to promotion", "recovery_s", "s"),
            Figure("RTO", "rto_s", "s"),
        ),
        timeout_s=3 * 3600,
    ),
    Bench(
        "storage_size",
        "bench/storage_size.py",
        "Bytes per stored reading: PostgreSQL, TimescaleDB uncompressed and compressed",
        (),
        ("--devices", "100"),
        (
            Figure("PostgreSQL", "postgres.bytes_per_row", "B/row"),
            Figure("TimescaleDB uncompressed", "timescale.bytes_per_row_uncompressed", "B/row"),
            Figure("TimescaleDB compressed", "timescale.bytes_per_row_compressed", "B/row"),
        ),
        timeout_s=1800,
    ),
)


def _chosen(doc: Any, key: str) -> Any:
    """The figure of the encoding the platform uses (its name says "(chosen)")."""
    return next(r[key] for r in doc["results"] if "chosen" in str(r["encoding"]))


# -- the machine -------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gb = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    os_name = platform.system()
    release = Path("/etc/os-release")
    if release.exists():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU time of the machine since boot, all cores."""
    with Path("/proc/stat").open() as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


def busy_since(start: tuple[int, int]) -> float:
    """The machine's CPU busy share (%) since ``start`` (from :func:`cpu_ticks`)."""
    end = cpu_ticks()
    return round(100.0 * (end[0] - start[0]) / max(1, end[1] - start[1]), 1)


def busy_share(seconds: float) -> float:
    """The machine's CPU busy share (%) over the next ``seconds``."""
    start = cpu_ticks()
    time.sleep(seconds)
    return busy_since(start)


# -- running the benchmarks --------------------------------------------------------------------
@dataclass
class Outcome:
    name: str
    status: str  # "ok", "failed (exit N)", "timed out", "skipped"
    seconds: float
    load_before: float
    load_after: float
    command: str
    log_tail: list[str] = field(default_factory=list)
    cpu_busy_pct: float | None = None  # the machine's, all cores, while it ran


def run_bench(bench: Bench, quick: bool, out_dir: Path) -> Outcome:
    """Run one benchmark script (its output is relayed with a prefix); in quick mode its JSON
    is moved to ``out_dir`` and the full run's file put back."""
    args = bench.quick if quick else bench.full
    command = " ".join(["python", bench.script, *args])
    # quick mode: every file the script writes into bench/results (its JSON, a chart) is
    # moved to out_dir afterwards and the full run's file put back
    kept = {f.name: f.read_bytes() for f in RESULTS.iterdir() if f.is_file()} if quick else {}
    say(f"{bench.name}: {command}")
    started, load0, ticks0 = time.monotonic(), os.getloadavg()[0], cpu_ticks()
    tail: list[str] = []
    proc = subprocess.Popen(
        [sys.executable, "-u", str(ROOT / bench.script), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    timer = threading.Timer(bench.timeout_s, proc.kill)
    timer.start()
    assert proc.stdout is not None  # noqa: S101 - PIPE above
    for line in proc.stdout:
        print(f"    {bench.name} | {line.rstrip()}", flush=True)
        # kept in report.json: paths relative to the checkout, not this machine's
        tail = [*tail[-19:], line.rstrip().replace(f"{ROOT}/", "")]
    code = proc.wait()
    timed_out = not timer.is_alive() and code != 0
    timer.cancel()
    seconds = time.monotonic() - started
    status = "ok" if code == 0 else ("timed out" if timed_out else f"failed (exit {code})")
    if quick:
        set_aside(kept, out_dir if code == 0 else None)
    say(f"{bench.name}: {status} in {seconds:.0f} s")
    load1, busy = os.getloadavg()[0], busy_since(ticks0)
    return Outcome(bench.name, status, round(seconds, 1), load0, load1, command, tail, busy)


def set_aside(kept: dict[str, bytes], out_dir: Path | None) -> None:
    """Move what a quick run wrote into bench/results to ``out_dir`` (None: drop it) and put
    back the files as they were (``kept``: name -> bytes before the run)."""
    for f in RESULTS.iterdir():
        if not f.is_file() or kept.get(f.name) == (data := f.read_bytes()):
            continue
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f.name).write_bytes(data)
        if f.name in kept:
            f.write_bytes(kept[f.name])
        else:
            f.unlink()


def keep_previous(out_dir: Path, names: list[str]) -> None:
    """Copy this folder's results of the benchmarks about to run to out_dir/previous/."""
    previous = out_dir / "previous"
    previous.mkdir(parents=True, exist_ok=True)
    for name in [*names, "soak", "report"]:
        src = out_dir / f"{name}.json"
        if src.exists():
            shutil.copy2(src, previous / src.name)


# -- the soak ----------------------------------------------------------------------------------
def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _fds(pid: int) -> int | None:
    try:
        return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None


def _du_mb(path: Path) -> float:
    total = 0
    for f in path.rglob("*"):
        try:
            total += f.lstat().st_blocks * 512
        except OSError:  # gone between listing and stat (a rotated log, a WAL checkpoint)
            continue
    return total / 1e6


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return 0.0
    return sum((t - mx) * (v - my) for t, v in points) / sxx * 3600


# A series is flat when its fitted growth over the steady part of the run stays within
# this much (absolute, or relative to its mean): memory and descriptors of a healthy process
# wobble, a leak keeps climbing.
FLAT_ABS = {"rss_mb": 3.0, "fds": 2.0, "disk_mb": 5.0}
FLAT_REL = 0.05


def verdict(kind: str, points: list[tuple[float, float]]) -> dict[str, Any]:
    """Slope and verdict of one series, judged on its second half (after start-up)."""
    if len(points) < 4:
        return {"samples": len(points), "verdict": "too few samples"}
    t_end = points[-1][0]
    steady = [p for p in points if p[0] >= points[0][0] + (t_end - points[0][0]) / 2]
    per_h = slope_per_hour(steady)
    growth = per_h * (t_end - points[0][0]) / 3600  # the steady trend over the whole run
    mean = sum(v for _, v in steady) / len(steady)
    allowed = max(FLAT_ABS[kind], FLAT_REL * abs(mean))
    return {
        "samples": len(points),
        "first": round(points[0][1], 2),
        "last": round(points[-1][1], 2),
        "max": round(max(v for _, v in points), 2),
        "slope_per_hour": round(per_h, 2),
        "trend_growth": round(growth, 2),
        "allowed": round(allowed, 2),
        "verdict": "flat" if abs(growth) <= allowed else ("growing" if growth > 0 else "falling"),
    }


def soak(minutes: float, out_dir: Path, interval_s: float = 5.0) -> dict[str, Any]:
    """Run the platform for ``minutes`` and sample every process and state folder."""
    sys.path.insert(0, str(ROOT / "bench"))
    from api_load import Platform  # the same platform the API benchmark runs

    from qilu.settings import load

    say(f"soak: starting the platform for {minutes:g} min")
    p = Platform(load(), scale=0.02, with_ingest=True, ingest_nice=10)
    p.start()
    samples: list[dict[str, Any]] = []
    try:
        p.wait_ready()
        folders = {
            "agents state": ROOT / ".state" / f"bench-agents-{p.tag}",
            "logs": ROOT / ".state" / "logs",
        }
        t0 = time.monotonic()
        end = t0 + minutes * 60
        next_note = t0
        while (now := time.monotonic()) < end:
            row: dict[str, Any] = {"t": round(now - t0, 1)}
            for name, proc in p.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"soak: {name} exited with {proc.returncode}")
                row[f"{name}.rss_mb"] = _rss_mb(proc.pid)
                row[f"{name}.fds"] = _fds(proc.pid)
            for name, path in folders.items():
                row[f"{name}.disk_mb"] = _du_mb(path) if path.exists() else 0.0
            row["database.disk_mb"] = p.database_mb()
            row["stored_readings"] = p.stored_readings()
            samples.append(row)
            if now >= next_note:
                say(
                    f"soak: {row['t'] / 60:.1f}/{minutes:g} min, "
                    + ", ".join(
                        f"{n} {row[f'{n}.rss_mb']:.0f} MB/{row[f'{n}.fds']} fds" for n in p.procs
                    )
                    + f", {row['stored_readings']:,} readings stored"
                )
                next_note = now + 60
            time.sleep(max(0.0, interval_s - (time.monotonic() - now)))
    finally:
        say("soak: stopping the platform")
        p.stop()
    series: dict[str, Any] = {}
    for key in samples[0] if samples else {}:
        if key in ("t", "stored_readings") or key == "database.disk_mb":
            continue
        kind = key.rsplit(".", 1)[1]
        pts = [(s["t"], float(s[key])) for s in samples if s.get(key) is not None]
        series[key] = verdict(kind, pts)
    db = [(s["t"], float(s["database.disk_mb"])) for s in samples]
    stored = [(s["t"], float(s["stored_readings"])) for s in samples]
    result = {
        "benchmark": "soak",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "minutes": minutes,
        "interval_s": interval_s,
        "series": series,
        # the database grows with the data by design: report its rate, per reading stored
        "database": {
            "mb_per_hour": round(slope_per_hour(db), 1),
            "readings_per_s": round(slope_per_hour(stored) / 3600, 1),
            "bytes_per_reading": round(
                slope_per_hour(db) * 1e6 / max(1.0, slope_per_hour(stored)), 1
            ),
        },
        "flat": all(v.get("verdict") == "flat" for v in series.values()),
        "samples": samples,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    say(f"soak: {'flat' if result['flat'] else 'NOT flat'}; wrote soak.json")
    return result


# -- the report --------------------------------------------------------------------------------
def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "—"
    if abs(v) >= 1000:
        s = f"{v:,.0f}"
    elif abs(v) >= 100 or v == int(v):
        s = f"{v:.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return f"{s} {unit}".rstrip() if unit else s


def _change(now: float | None, before: float | None, better: str) -> str:
    if now is None or before is None:
        return "—"
    if before == 0:
        return "=" if now == 0 else "new"
    pct = 100.0 * (now - before) / abs(before)
    if abs(pct) < 0.5:
        return "="
    good = (pct < 0) == (better == "lower")
    return f"{pct:+.0f} % ({'better' if good else 'worse'})"


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def rows(out_dir: Path) -> Iterator[tuple[Bench, Figure, float | None, float | None]]:
    for bench in BENCHES:
        now = _load(out_dir / f"{bench.name}.json")
        before = _load(out_dir / "previous" / f"{bench.name}.json")
        for fig in bench.figures:
            yield (
                bench,
                fig,
                fig.value(now) if now is not None else None,
                fig.value(before) if before is not None else None,
            )


def charts(out_dir: Path, soak_doc: Any) -> list[str]:
    """PNG charts next to the report; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[str] = []
    # 1. each figure with a target, as a share of its target (1.0 = exactly the target)
    with_target = [(b, f, v) for b, f, v, _ in rows(out_dir) if f.target and v is not None]
    if with_target:
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(with_target) + 1.2))
        names = [f"{b.name}: {f.label}" for b, f, _ in with_target]
        ratios = [
            (v / f.target) if f.better == "lower" else (f.target / v if v else float("inf"))
            for _, f, v in with_target
            if f.target
        ]
        colours = ["tab:green" if r <= 1 else "tab:red" for r in ratios]
        ax.barh(names, [min(r, 3.0) for r in ratios], color=colours)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_xlabel("share of the target's allowance (< 1 meets it; capped at 3)")
        ax.invert_yaxis()
        fig.tight_layout()
        fig.savefig(out_dir / "report_targets.png", dpi=100)
        plt.close(fig)
        made.append("report_targets.png")
    # 2. the API's latency per phase
    api = _load(out_dir / "api_load.json")
    if api and api.get("phases"):
        phases = list(api["phases"])
        fig, ax = plt.subplots(figsize=(7, 3.5))
        x = range(len(phases))
        ax.bar(
            [i - 0.2 for i in x],
            [api["phases"][p]["p50_ms"] or 0 for p in phases],
            0.4,
            label="p50",
        )
        ax.bar(
            [i + 0.2 for i in x],
            [api["phases"][p]["p99_ms"] or 0 for p in phases],
            0.4,
            label="p99",
        )
        ax.axhline(20, color="grey", ls="-.", lw=0.8, label="coverage p99 target 20 ms")
        ax.set_xticks(list(x), phases)
        ax.set_yscale("log")
        ax.set_ylabel("ms (client side, log scale)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "report_api.png", dpi=100)
        plt.close(fig)
        made.append("report_api.png")
    # 3. the soak's series over time
    if soak_doc and soak_doc.get("samples"):
        samples = soak_doc["samples"]
        t = [s["t"] / 60 for s in samples]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
        for ax, kind, title in zip(
            axes,
            ("rss_mb", "fds", "disk_mb"),
            ("resident memory (MB)", "open files", "disk (MB)"),
            strict=True,
        ):
            for key in samples[0]:
                if key.endswith("." + kind):
                    ax.plot(t, [s.get(key) for s in samples], label=key.rsplit(".", 1)[0])
            ax.set_title(title)
            ax.set_xlabel("minutes")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "report_soak.png", dpi=100)
        plt.close(fig)
        made.append("report_soak.png")
    return made


def build_report(
    out_dir: Path,
    *,
    mode: str,
    machine_info: dict[str, Any],
    outcomes: list[Outcome],
    with_charts: bool = True,
    command: str = "",
) -> str:
    """REPORT.md from the JSON in ``out_dir`` (and ``out_dir/previous``); also written there."""
    soak_doc = _load(out_dir / "soak.json")
    images = charts(out_dir, soak_doc) if with_charts else []
    m = machine_info
    lines = [
        "# Benchmark report",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC ({mode} run"
        + (f": `{command}`" if command else "")
        + "). Benchmarks not run by that command keep the figures of their last run.",
        "",
        "## Machine",
        "",
        f"- CPU: {m.get('cpu')}, {m.get('cores')} cores",
        f"- RAM: {m.get('ram_gb')} GB",
        f"- OS: {m.get('os')} (kernel {m.get('kernel')}), Python {m.get('python')}",
        "- Every benchmark shares these cores with the platform's servers (Kafka, PostgreSQL)"
        " and with anything else running at the time; see the load columns below.",
        "",
    ]
    if outcomes:
        lines += [
            "## Runs",
            "",
            "| benchmark | result | seconds | load avg before → after | machine CPU busy "
            "| command |",
            "|---|---|---:|---|---:|---|",
        ]
        for o in outcomes:
            lines.append(
                f"| {o.name} | {o.status} | {o.seconds:.0f} | {o.load_before:.1f} → "
                f"{o.load_after:.1f} | {_fmt(o.cpu_busy_pct, '%')} | `{o.command}` |"
            )
        lines.append("")
    met = failed = 0
    lines += ["## Figures against the targets", ""]
    current = None
    ran = {
        b.name
        for b in BENCHES
        if (out_dir / f"{b.name}.json").exists()
        or (out_dir / "previous" / f"{b.name}.json").exists()
    }
    missing = [b for b in BENCHES if b.name not in ran]
    for bench, fig, now, before in rows(out_dir):
        if bench.name not in ran:
            continue
        if bench is not current:
            current = bench
            lines += [
                "",
                f"### {bench.title} (`{bench.script}`)",
                "",
                "| figure | value | target | verdict | previous | change |",
                "|---|---:|---:|---|---:|---|",
            ]
        ok = fig.met(now)
        met += ok is True
        failed += ok is False
        target = ""
        if fig.target is not None:
            sign = "=" if fig.target == 0 else ("≤" if fig.better == "lower" else "≥")
            target = f"{sign} {_fmt(fig.target, fig.unit)}"
            target += f" (issue {fig.issue})" if fig.issue else ""
        lines.append(
            f"| {fig.label} | {_fmt(now, fig.unit)} | {target} | "
            f"{'' if ok is None else ('met' if ok else '**not met**')} | "
            f"{_fmt(before, fig.unit)} | {_change(now, before, fig.better)} |"
        )
    if missing:
        lines += [
            "",
            "Without results in this folder (not run): "
            + ", ".join(f"`{b.script}`" for b in missing)
            + ".",
        ]
    lines += ["", f"Targets met: {met}; not met: {failed}.", ""]
    lines += soak_section(soak_doc, _load(out_dir / "previous" / "soak.json"))
    if images:
        lines += ["## Charts", ""]
        lines += [f"![{name}]({name})" for name in images]
        lines.append("")
    failures = [o for o in outcomes if o.status != "ok"]
    if failures:
        lines += ["## Failures (last lines of output)", ""]
        for o in failures:
            lines += [f"### {o.name}: {o.status}", "", "```", *o.log_tail, "```", ""]
    text = "\n".join(lines).rstrip() + "\n"
    (out_dir / "REPORT.md").write_text(text)
    return text


def soak_section(doc: Any, before: Any) -> list[str]:
    if not doc:
        return ["## Soak", "", "Not run.", ""]
    lines = [
        "## Soak",
        "",
        f"The platform ran for {doc['minutes']:g} min (sampled every {doc['interval_s']:g} s); "
        "each series is fitted by least squares over its second half (after start-up) and is "
        "flat when that trend, over the whole run, stays within max(absolute allowance, 5 % of "
        "its mean). A soak of a few minutes catches a steady leak, not a slow one.",
        "",
        f"**Verdict: {'flat' if doc.get('flat') else 'NOT flat'}.**",
        "",
        "| series | first | last | max | slope per hour | trend over the run | allowed "
        "| verdict | previous slope |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for key, v in doc["series"].items():
        prev = dig(before, f"series.{key}.slope_per_hour") if before else None
        lines.append(
            f"| {key} | {_fmt(v.get('first'))} | {_fmt(v.get('last'))} | {_fmt(v.get('max'))} "
            f"| {_fmt(v.get('slope_per_hour'))} | {_fmt(v.get('trend_growth'))} "
            f"| {_fmt(v.get('allowed'))} | {v.get('verdict')} | {_fmt(prev)} |"
        )
    db = doc.get("database", {})
    lines += [
        "",
        f"The database grows with the data, as it should: {_fmt(db.get('mb_per_hour'))} MB/h "
        f"at {_fmt(db.get('readings_per_s'))} readings/s stored "
        f"({_fmt(db.get('bytes_per_reading'))} bytes per reading, indexes included).",
        "",
    ]
    return lines


# -- command line ------------------------------------------------------------------------------
def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options, shared by this script and ``qilu bench``."""
    ap.add_argument("--quick", action="store_true", help="short variants, 1-minute soak")
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated benchmarks to run (default: all): "
        + ", ".join(b.name for b in BENCHES),
    )
    ap.add_argument("--skip-soak", action="store_true", help="do not run the soak")
    ap.add_argument(
        "--soak-min", type=float, default=None, help="soak minutes (default 10; quick 1)"
    )
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rebuild REPORT.md from the JSON already there",
    )


def parser(prog: str = "bench/report.py") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(ap)
    return ap


def checked(args: argparse.Namespace, ap: argparse.ArgumentParser) -> argparse.Namespace:
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - {b.name for b in BENCHES}
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    args.names = names or [b.name for b in BENCHES]
    if args.soak_min is None:
        args.soak_min = 1.0 if args.quick else 10.0
    return args


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    return run(checked(ap.parse_args(argv), ap))


def run(args: argparse.Namespace) -> int:
    out_dir = RESULTS / "quick" if args.quick else RESULTS
    mode = "quick" if args.quick else "full"
    info = machine()
    outcomes: list[Outcome] = []
    command = (
        "python bench/report.py"
        + "".join(f" {a}" for a in ("--quick",) if args.quick)
        + (f" --only {','.join(args.names)}" if args.only else "")
        + (" --skip-soak" if args.skip_soak else f" --soak-min {args.soak_min:g}")
    )
    if not args.report_only:
        say(
            f"{mode} run: {', '.join(args.names)}"
            + ("" if args.skip_soak else f", then a {args.soak_min:g}-minute soak")
            + f"; machine CPU busy now {busy_share(1.0)} %, load {os.getloadavg()[0]:.1f}"
        )
        keep_previous(out_dir, args.names)
        outcomes += [run_bench(b, args.quick, out_dir) for b in BENCHES if b.name in args.names]
        if not args.skip_soak:
            t0, load0, ticks0 = time.monotonic(), os.getloadavg()[0], cpu_ticks()
            try:
                soak(args.soak_min, out_dir)
                status = "ok"
            except (RuntimeError, OSError) as exc:
                say(f"soak failed: {exc}")
                status = f"failed: {exc}"
            outcomes.append(
                Outcome(
                    "soak",
                    status,
                    round(time.monotonic() - t0, 1),
                    load0,
                    os.getloadavg()[0],
                    f"soak {args.soak_min:g} min",
                    cpu_busy_pct=busy_since(ticks0),
                )
            )
        (out_dir / "report.json").write_text(
            json.dumps(
                {
                    "mode": mode,
                    "command": command,
                    "machine": info,
                    "outcomes": [o.__dict__ for o in outcomes],
                },
                indent=2,
            )
            + "\n"
        )
    else:
        saved = _load(out_dir / "report.json") or {}
        outcomes = [Outcome(**o) for o in saved.get("outcomes", [])]
        command = saved.get("command", "")
    build_report(out_dir, mode=mode, machine_info=info, outcomes=outcomes, command=command)
    say(f"wrote {(out_dir / 'REPORT.md').relative_to(ROOT)}")
    return 0 if all(o.status == "ok" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
