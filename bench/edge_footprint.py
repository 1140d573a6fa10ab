"""Edge-agent footprint: CPU share and peak RSS at 1,000 and 10,000 readings/s, one core.

Runs the real agent process (``python -m edge_agent run``, what the systemd unit starts)
pinned to one core with ``taskset``, durable buffering on (SQLite WAL, fsync per commit),
sending to the local Kafka with acks from all in-sync replicas. The readings come from an
in-process rate generator (bench/edge_support.py), whose cost is included. After a warm-up,
CPU time (user + system, all threads, from /proc) is measured over a window (the mean, and
the median of its ``--slice`` parts, less exposed to bursts of other work on a shared
machine); peak RSS is the kernel's high-water mark (VmHWM) over the whole run, start-up
included.

At low rates the CPU is mostly a cost per wake-up, not per reading: the agent's threads (the
event loop with the collectors' hand-overs and the group commit, the buffer's and the
sender's threads, kafka-python's network thread) wake ~100 times a second at 1,000
readings/s, and the CPU time of a wake-up depends on the core as much as on the agent (on
this virtual machine: whether the core was idle in between, its caches cold). So the result
records the wake-ups per second, the CPU time per wake-up and how idle the pinned core was
otherwise during the window; a CPU figure from a quiet machine and one from a loaded one
differ for that reason (bench/results/edge_footprint.json, docs/adr/0007).

Also measures what each import costs in RSS (fresh interpreters), because the RSS target is
mostly interpreter and libraries, and where the running agent's RSS is at the end of each
window (/proc/<pid>/smaps: anonymous memory, the malloc heap, the libraries' pages).

``--tls``: the agent as a production Pi runs it, over TLS: SASL/SCRAM on a SASL_SSL agents'
listener, the broker's certificate checked against a CA of ``qilu pki``. That is a private
broker of the benchmark's own (tests/integration/faults.py ``private_kafka``), started and
removed by it; the shared broker's agents' listener is plaintext SASL. ``--edge-install``: run
the agent (and the import measurements) in a fresh virtualenv holding only the edge install
(``pip install qilu-telemetry`` without an extra, as edge-agent/INSTALL-PI.md does on a Pi),
made and removed by the benchmark, and record its site-packages' size (disk blocks as ``du``
counts them, and the files' bytes); ``--python``: another interpreter of your own.

    python bench/edge_footprint.py [--rates 1000 10000] [--warmup 10] [--window 30] [--cpu 1]
                                   [--tls] [--edge-install | --python PATH]

The set-up shared with bench/edge_catchup.py (topics, the agent process, the result file)
is in bench/edge_support.py.

Needs Kafka (``qilu services up``). Writes bench/results/edge_footprint.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edge_support import (
    REPO,
    UNIT_ENV,
    add_common_args,
    agent_config,
    bench_topics,
    cpu_seconds,
    running_agent,
    scrape,
    status_kb,
    write_result,
)

from qilu.ports import free_port

AGENT_ID = "bench-agent"  # edge_support.agent_config's
MB = 1 << 20

# "!lean": what python -m edge_agent does first (edge_agent/lean.py): kafka-python's,
# prometheus_client's and crc32c's package __init__ deferred, so only what the agent uses loads
PROMETHEUS_USED = (
    "prometheus_client.metrics,prometheus_client.registry,prometheus_client.process_collector,"
    "prometheus_client.gc_collector,prometheus_client.platform_collector,"
    "prometheus_client.openmetrics.exposition"
)
IMPORT_STEPS = [
    ("python", ""),
    ("asyncio (with ssl)", "asyncio,ssl"),
    # OpenSSL's SSL initialisation, once per process: what the producer's first TLS connection
    # costs before its own buffers (a second context adds ~10 KB)
    ("+ a TLS client context (OpenSSL's SSL init)", "!tls"),
    ("+ sqlite3, msgpack, tomllib", "sqlite3,msgpack,tomllib"),
    (
        "+ prometheus_client's metrics and OpenMetrics (package init deferred)",
        f"!lean,{PROMETHEUS_USED}",
    ),
    (
        "+ kafka-python's producer (package inits deferred: kafka, kafka.protocol.admin and "
        ".consumer, kafka.net and kafka.net.sasl; its schemas read without importlib.resources' "
        "package)",
        "kafka.producer,kafka.net.compat",
    ),
    ("+ edge_agent runtime", "edge_agent.runtime"),
    (
        "+ the deferred package inits (kafka's admin and consumer, their protocol schemas, "
        "its proxies and SASL mechanisms, prometheus exposition, crc32c's version lookup and "
        "CLI, importlib.resources: not used)",
        "!inits",
    ),
]
# the packages edge_agent/lean.py defers; "!inits" runs their real __init__
DEFERRED = (
    "kafka",
    "kafka.protocol.admin",
    "kafka.protocol.consumer",
    "kafka.net",
    "kafka.net.sasl",
    "prometheus_client",
    "crc32c",
    "importlib.resources",
)


def import_costs(python: str) -> list[dict[str, object]]:
    """RSS after importing each step cumulatively, in a fresh interpreter per step (with the
    environment the systemd unit gives the agent)."""
    out = []
    mods: list[str] = []
    for label, step in IMPORT_STEPS:
        mods += [m for m in step.split(",") if m]
        code = (
            "import importlib, sys, warnings\nwarnings.simplefilter('ignore')\n"
            f"for m in {mods!r}:\n"
            "    if m == '!lean':\n"
            "        from edge_agent import lean\n"
            "        lean.defer_all()\n"
            "    elif m == '!tls':\n"
            "        import ssl\n"
            "        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n"
            "    elif m == '!inits':\n"
            f"        for p in {DEFERRED!r}:\n"
            "            getattr(importlib.import_module(p), '__all__', None)\n"
            "    else:\n"
            "        importlib.import_module(m)\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])"
        )
        kb = int(
            subprocess.check_output(
                [python, "-c", code], cwd=REPO, text=True, env={**os.environ, **UNIT_ENV}
            )
        )
        out.append({"step": label, "rss_mb": round(kb / 1024, 1)})
    for prev, cur in zip([None, *out[:-1]], out, strict=True):
        cur["adds_mb"] = round(float(cur["rss_mb"]) - float(prev["rss_mb"]), 1) if prev else None  # type: ignore[arg-type]
    return out


def site_packages(python: str) -> dict[str, object]:
    """The size of ``python``'s site-packages: disk blocks (what ``du`` counts; 4 KiB each on
    ext4, compiled bytecode included), the files' bytes, and its distributions."""
    where = subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip()
    disk = size = 0
    for folder, _, files in os.walk(where):
        disk += os.lstat(folder).st_blocks * 512
        for name in files:
            st = (Path(folder) / name).lstat()
            disk += st.st_blocks * 512
            size += st.st_size
    dists = sorted(p.name.split("-")[0].lower() for p in Path(where).glob("*.dist-info"))
    return {
        "disk_mb": round(disk / MB, 1),
        "files_mb": round(size / MB, 1),
        "distributions": dists,
    }


def wakeups(pid: int) -> int:
    """Voluntary context switches of all a process's threads: how often they went to sleep
    waiting for something (a timer, a socket, another thread), i.e. its wake-ups."""
    n = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        n += sum(
            int(line.split()[1])
            for line in status.splitlines()
            if line.startswith("voluntary_ctxt_switches:")
        )
    return n


def core_ticks(cpu: int) -> tuple[int, int]:
    """(idle, total) clock ticks of one core so far (/proc/stat; idle includes iowait)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            ticks = [int(x) for x in line.split()[1:]]
            return ticks[3] + ticks[4], sum(ticks[:8])
    return 0, 0


def rss_breakdown(pid: int) -> dict[str, object]:
    """Where a process's RSS is (MB): anonymous (the malloc heap, pymalloc's arenas and
    thread stacks in other anonymous mappings) and file-backed (the libraries' pages), with
    the largest mappings by name."""
    by_name: dict[str, int] = {}
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if "-" in parts[0] and not parts[0].endswith(":"):
            name = Path(parts[5]).name if len(parts) > 5 else "[anon]"
        elif parts[0] == "Rss:":
            by_name[name] = by_name.get(name, 0) + int(parts[1])
    rollup = {
        line.split(":")[0]: int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    }
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:8]
    return {
        "anonymous_mb": round(rollup["Anonymous"] / 1024, 1),
        "file_backed_mb": round((rollup["Rss"] - rollup["Anonymous"]) / 1024, 1),
        "largest_mappings_mb": {k: round(v / 1024, 1) for k, v in top},
    }


@dataclass(frozen=True)
class Target:
    """Where the agent sends: the bootstrap it is given and its ``[kafka]`` security lines;
    ``internal``: the broker's plaintext listener (topics, grants)."""

    internal: str
    agent_bootstrap: str
    kafka_extra: str = ""
    password: str = ""  # SASL: the agent's, granted its topics by :func:`grant`


@contextmanager
def tls_target(password: str) -> Iterator[tuple[Target, Path]]:
    """A private broker whose agents' listener is SASL_SSL with a certificate of a fresh
    ``qilu pki`` CA (the CA file is the second item)."""
    from ops.cli import main as qilu
    from qilu.settings import load
    from tests.integration.faults import private_kafka

    with tempfile.TemporaryDirectory(prefix="qilu-edge-bench-pki-") as tmp:
        pki = Path(tmp)
        for argv in (["init"], ["issue", "--name", "127.0.0.1"]):
            if qilu(["pki", *argv, "--dir", str(pki)]) != 0:
                raise RuntimeError(f"qilu pki {argv[0]} failed")
        with private_kafka(load(), agent_tls_dir=pki) as broker:
            extra = (
                'security_protocol = "SASL_SSL"\n'
                f'sasl_username = "{AGENT_ID}"\nsasl_password = "{password}"\n'
                f'ssl_cafile = "{pki / "ca.crt"}"'
            )
            yield Target(broker.bootstrap, broker.agent_bootstrap, extra, password), pki / "ca.crt"


@contextmanager
def edge_interpreter(args: argparse.Namespace) -> Iterator[str]:
    """``--edge-install``: the python of a virtualenv with only the edge install (no pip in it:
    this environment's pip fills it), removed afterwards; else ``--python``."""
    if not args.edge_install:
        yield args.python
        return
    with tempfile.TemporaryDirectory(prefix="qilu-edge-venv-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", str(REPO)],
            check=True,
        )
        yield python


@contextmanager
def target_of(args: argparse.Namespace) -> Iterator[Target]:
    if not args.tls:
        yield Target(args.bootstrap, args.bootstrap)
        return
    with tls_target(uuid.uuid4().hex) as (target, _):
        yield target


def grant(target: Target, prefix: str) -> None:
    """SASL_SSL: the agent's user may write its prefix's readings topics (as provisioning)."""
    if not target.password:
        return
    from qilu.settings import KafkaSettings
    from stream.provisioning import broker_grant
    from stream.topics import readings_topics

    ks = KafkaSettings(bootstrap=target.internal, topic_prefix=prefix)
    broker_grant(ks, AGENT_ID, target.password, readings_topics(ks))


def measure(
    rate: float, args: argparse.Namespace, target: Target, prefix: str
) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="qilu-edge-bench-") as tmp:
        folder = Path(tmp)
        port = free_port()
        cfg = agent_config(
            folder,
            rate=rate,
            bootstrap=target.agent_bootstrap,
            prefix=prefix,
            metrics_port=port,
            fsync=args.fsync,
            tick_s=args.tick,
            kafka_extra=target.kafka_extra,
        )
        with running_agent(
            cfg, folder / "agent.log", cpu=args.cpu, metrics_port=port, python=args.python
        ) as proc:
            time.sleep(args.warmup)
            m0, c0, t0 = scrape(port), cpu_seconds(proc.pid), time.monotonic()
            w0, (i0, k0) = wakeups(proc.pid), core_ticks(args.cpu)
            peak_rss = 0
            marks = [(t0, c0)]  # (time, cpu seconds) every --slice seconds
            while time.monotonic() - t0 < args.window:
                time.sleep(1)
                peak_rss = max(peak_rss, status_kb(proc.pid, "VmRSS"))
                if time.monotonic() - marks[-1][0] >= args.slice:
                    marks.append((time.monotonic(), cpu_seconds(proc.pid)))
            m1, c1, t1 = scrape(port), cpu_seconds(proc.pid), time.monotonic()
            w1, (i1, k1) = wakeups(proc.pid), core_ticks(args.cpu)
            hwm = status_kb(proc.pid, "VmHWM")
            threads = status_kb(proc.pid, "Threads")
            breakdown = rss_breakdown(proc.pid)
        log = (folder / "agent.log").read_text()[-2000:]
    dt = t1 - t0
    cpu_share = (c1 - c0) / dt * 100
    # the share in each slice: other work on the shared machine comes in bursts that inflate
    # the agent's CPU time too (cache, wake-ups); the median slice is less exposed to them
    slices = sorted((c - pc) / (t - pt) * 100 for (pt, pc), (t, c) in itertools.pairwise(marks))
    median = slices[len(slices) // 2] if slices else cpu_share
    sent = m1.get("qilu_agent_readings_sent_total", 0) - m0.get("qilu_agent_readings_sent_total", 0)
    got = m1.get("qilu_agent_readings_in_total", 0) - m0.get("qilu_agent_readings_in_total", 0)
    res: dict[str, object] = {
        "rate": rate,
        "window_s": round(dt, 1),
        "readings_in_per_s": round(got / dt),
        "readings_sent_per_s": round(sent / dt),
        "buffer_readings_at_end": m1.get("qilu_agent_buffer_readings"),
        "cpu_pct_of_one_core": round(cpu_share, 2),
        "cpu_pct_per_1000_readings_s": round(cpu_share / (rate / 1000), 2),
        "cpu_pct_per_1000_readings_s_median_slice": round(median / (rate / 1000), 2),
        "cpu_pct_slices": [round(x, 2) for x in slices],
        # the CPU at low rates is mostly a cost per wake-up (timers, hand-overs between the
        # agent's threads), which depends on the core's state: see the module docstring
        "wakeups_per_s": round((w1 - w0) / dt),
        "cpu_us_per_wakeup": round((c1 - c0) / max(1, w1 - w0) * 1e6, 1),
        "pinned_core_idle_pct": round((i1 - i0) / max(1, k1 - k0) * 100, 1),
        "peak_rss_mb": round(hwm / 1024, 1),
        "steady_rss_mb": round(peak_rss / 1024, 1),
        "threads": threads,
        "rss_at_end": breakdown,
    }
    if "Traceback" in log:
        res["agent_log_tail"] = log
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[1000.0, 10_000.0],
        help="readings/s, one run each (default 1000 10000)",
    )
    ap.add_argument(
        "--warmup", type=float, default=10.0, help="seconds before measuring (default 10)"
    )
    ap.add_argument(
        "--window", type=float, default=30.0, help="seconds measured per rate (default 30)"
    )
    ap.add_argument("--slice", type=float, default=5.0, help="seconds per CPU sample")
    ap.add_argument("--fsync", default="batch", choices=["batch", "os"], help="buffer.fsync")
    ap.add_argument(
        "--tick", type=float, default=0.05, help="seconds between the generator's hand-overs"
    )
    ap.add_argument(
        "--tls",
        action="store_true",
        help="the agent over TLS (SASL_SSL, the broker checked against a qilu pki CA) to a "
        "private broker the benchmark starts",
    )
    ap.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter that runs the agent, e.g. a virtualenv's with only the edge "
        "install (default: this one)",
    )
    ap.add_argument(
        "--edge-install",
        action="store_true",
        help="run the agent in a fresh virtualenv with only the edge install (made for the "
        "run: pip install of this repository without an extra)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the result here instead of bench/results/edge_footprint.json",
    )
    add_common_args(ap)
    args = ap.parse_args()
    runs = []
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with (
        edge_interpreter(args) as python,
        target_of(args) as target,
        bench_topics(target.internal) as prefix,
    ):
        args.python = python
        installed = site_packages(python) if args.edge_install else None
        grant(target, prefix)
        for rate in args.rates:
            print(
                f"rate {rate:,.0f} readings/s: warm-up {args.warmup:.0f} s, "
                f"window {args.window:.0f} s ...",
                flush=True,
            )
            r = measure(rate, args, target, prefix)
            print(json.dumps(r), flush=True)
            runs.append(r)
        imports = import_costs(args.python)
    for row in imports:
        print(f"  {row['step']:<42} {row['rss_mb']:>6} MB  (+{row['adds_mb']})")
    fields = {
        "pinned_cpu": args.cpu,
        "durable_buffer": f"sqlite WAL, buffer.fsync = {args.fsync}",
        "handover_every_s": args.tick,
        "kafka": "SASL_SSL (TLS, SCRAM-SHA-512), private broker" if args.tls else "PLAINTEXT",
        "interpreter": (
            "a fresh virtualenv with only the edge install"
            if args.edge_install
            else "this one"
            if args.python == sys.executable
            else "--python"
        ),
        "load_average_before": load_before,
        "load_average_after": Path("/proc/loadavg").read_text().split()[:3],
        "targets": {"peak_rss_mb": 33, "cpu_pct_per_1000_readings_s": 3},
        "runs": runs,
        "import_rss": imports,
    }
    if installed:
        fields["edge_install_site_packages"] = installed
        fields["targets"]["site_packages_disk_mb"] = 40
    if args.out:
        args.out.write_text(json.dumps({"benchmark": "edge_footprint", **fields}, indent=2) + "\n")
    else:
        write_result("edge_footprint", fields)


if __name__ == "__main__":
    main()
