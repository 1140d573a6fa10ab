"""The whole province, live, on the cluster profile (issue 18): consumer lag and what each
component costs.

Runs ``qilu services up --profile cluster`` (starts the cluster's servers, three Kafka brokers,
etcd and two PostgreSQL nodes under Patroni, and restarts one whose configuration changed; the
nodes' roles go to the result as ``pg_roles``), then ``qilu run --profile cluster --scale 1.0``
(the ingest, the simulated
province's edge agents, the API and the simulated T/CEC 102 operators as ``qilu run``'s
children), waits until the children run, then every ``--every`` seconds for ``--duration``
seconds samples

- the ingest group's **consumer lag**, in records and in seconds (per partition the age of
  the oldest record not yet committed: now minus that record's timestamp; 0 when caught up);
- **CPU and memory per component** from /proc: CPU seconds per second of wall time (1.0 =
  one core) and PSS (proportional set size: shared pages counted once across a component's
  processes) of each process tree: every broker, etcd, each Patroni node with its
  PostgreSQL, and ``qilu run``'s children (CPU per process between two samples, so a
  database backend that ends is not counted negative);
- the readings the ingest stored (its ``qilu_ingest_readings_total{outcome="stored"}``
  counter), hence ``readings_stored_per_s`` against the province's 37,033/s
  (docs/capacity.md);
- the full builds of the incremental coverage models so far, by reason, and how long each
  model has counted an older registry, and how long its last full build took: the API's
  (``qilu_api_coverage_full_builds_total``, ``qilu_api_coverage_registry_behind_seconds``,
  ``qilu_api_coverage_full_build_seconds``) and the ingest's maintenance loop's
  (``qilu_storage_coverage_...``; docs/adr/0018-incremental-coverage.md, "Registry changes:
  bounded rebuilds");

and stops ``qilu run`` by itself (SIGINT, as Ctrl-C). The servers keep running
(``qilu services down --profile cluster`` stops them).

Each run measures a platform of its own (``--reuse`` measures the default one instead): a
database, a topic prefix, an ingest group and the agents' buffers named after the run
(``qprov<UTC time>``), dropped when it ends (``--keep`` keeps them; the next run drops what an
interrupted one left). On the default platform a run starts with whatever the previous one
left behind (records in the topics, readings not yet acknowledged in the agents' buffers,
late rollup ranges), so it measures a catch-up under the live load, not the live province.

    python bench/province_live.py [--duration 600] [--every 5] [--scale 1.0]

Writes bench/results/province_live.json: the samples, per component the mean and maximum
CPU and PSS, the lag's maximum and 95th percentile, whether the lag stayed under
``--lag-target-s`` (10 s) from ``--warmup`` seconds after the first reading stored on, the
readings stored per second and their share of the province's 37,033/s (a lag under target
means little if the readings do not flow), and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from bench.common import run_header  # noqa: E402
from ops.services.registry import client_settings  # noqa: E402
from qilu.settings import Settings, load  # noqa: E402
from stream.topics import readings_topics  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient
    from kafka.structs import TopicPartition

RESULT = REPO / "bench" / "results" / "province_live.json"
PROVINCE_RATE = 37_033  # readings/s of the whole province (docs/capacity.md)
# the cluster profile's servers, by their pid files
SERVERS = ("kafka-1", "kafka-2", "kafka-3", "etcd-1", "etcd-2", "etcd-3", "pg-1", "pg-2")
TICK = os.sysconf("SC_CLK_TCK")
# qilu run's children, by their command line
CHILDREN = {
    "ingest": " ingest",
    "agents": " agent province",
    "api": " api",
    "operators": " operators simulate",
}


def say(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- /proc


def parents() -> dict[int, int]:
    out: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                text = (d / "stat").read_text()
            except OSError:
                continue
            out[int(d.name)] = int(text[text.rindex(")") + 2 :].split()[1])
    return out


def tree(root: int, pp: dict[int, int]) -> list[int]:
    """``root`` and every process below it."""
    out, todo = [], [root]
    kids: dict[int, list[int]] = {}
    for pid, ppid in pp.items():
        kids.setdefault(ppid, []).append(pid)
    while todo:
        pid = todo.pop()
        if pid in pp and pid not in out:
            out.append(pid)
            todo.extend(kids.get(pid, []))
    return out


def cpu_ticks(pid: int) -> tuple[int, int] | None:
    """The process's CPU time (utime + stime) and its start, both in clock ticks since boot."""
    try:
        text = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12]), int(fields[19])


def uptime_ticks() -> int:
    return int(float(Path("/proc/uptime").read_text().split()[0]) * TICK)


def cpu_since(
    pids: list[int], now: dict[int, tuple[int, int]], prev: dict[int, int], since: int
) -> int:
    """CPU ticks of ``pids`` since the previous sample (taken at ``since`` ticks after boot):
    per process, its ticks now less its ticks then; a process started after that sample
    counts all of its ticks. Summing the processes' totals instead would count a backend that
    exits between two samples as negative CPU (the sum drops by all its ticks). A process that
    exits between two samples loses its last interval."""
    total = 0
    for pid in pids:
        if pid not in now:
            continue
        ticks, start = now[pid]
        if pid in prev:
            total += max(0, ticks - prev[pid])
        elif start >= since:
            total += ticks
    return total


def pss_kb(pid: int) -> int:
    try:
        for line in (Path("/proc") / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def pidfile(settings: Settings, name: str) -> int | None:
    try:
        return int((settings.services.state_dir / "run" / f"{name}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def components(settings: Settings, run_pid: int) -> dict[str, list[int]]:
    """Component name -> its processes, now."""
    pp = parents()
    out: dict[str, list[int]] = {}
    for name in SERVERS:
        pid = pidfile(settings, name)
        if pid is None or pid not in pp:
            continue
        pids = tree(pid, pp)
        if name.startswith("pg-"):  # Patroni's PostgreSQL runs detached from it
            try:
                post = (settings.services.state_dir / name / "data" / "postmaster.pid").read_text()
                pids += tree(int(post.split()[0]), pp)
            except (OSError, ValueError, IndexError):
                pass
        out[name] = pids
    for child in tree(run_pid, pp):
        if pp.get(child) != run_pid:
            continue
        line = cmdline(child)
        for name, marker in CHILDREN.items():
            if marker in line:
                out[name] = tree(child, pp)
    out["qilu run"] = [run_pid]
    return out


# ----------------------------------------------------------------------------- lag


def scrape(url: str) -> list[str] | None:
    """The lines of a Prometheus text endpoint (None: not reachable)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - http URLs built here
            return str(resp.read().decode()).splitlines()
    except OSError:
        return None


def ingest_metrics(settings: Settings) -> list[str] | None:
    return scrape(f"http://127.0.0.1:{settings.ingest.metrics_port}/metrics")


def api_metrics(settings: Settings) -> list[str] | None:
    return scrape(f"http://127.0.0.1:{settings.api.port}/metrics")


def readings_stored(lines: list[str] | None) -> float | None:
    """The ingest's ``qilu_ingest_readings_total{outcome="stored"}`` (its metrics endpoint)."""
    for line in lines or ():
        if line.startswith('qilu_ingest_readings_total{outcome="stored"}'):
            return float(line.split()[-1])
    return None


def coverage_model(lines: list[str] | None, prefix: str) -> dict[str, Any] | None:
    """A coverage model's full builds so far by reason, and how long it has been behind the
    registry (``<prefix>_coverage_full_builds_total``, ``..._registry_behind_seconds``)."""
    if lines is None:
        return None
    builds: dict[str, float] = {}
    behind = build_s = None
    for line in lines:
        if line.startswith(f"{prefix}_coverage_full_builds_total{{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            builds[reason] = float(line.split()[-1])
        elif line.startswith(f"{prefix}_coverage_registry_behind_seconds "):
            behind = float(line.split()[-1])
        elif line.startswith(f"{prefix}_coverage_full_build_seconds "):
            build_s = float(line.split()[-1])
    return {"full_builds": builds, "registry_behind_s": behind, "last_build_s": build_s}


def lag(settings: Settings, group: str) -> tuple[int, float]:
    """Records not yet committed by ``group`` and the age in seconds of the oldest of them."""
    ks = settings.kafka
    admin = KafkaAdminClient(bootstrap_servers=ks.bootstrap, client_id="bench-lag")
    consumer = KafkaConsumer(
        bootstrap_servers=ks.bootstrap,
        client_id="bench-lag",
        enable_auto_commit=False,
        max_poll_records=1,
    )
    try:
        parts = [
            TopicPartition(t, p)
            for t in readings_topics(ks)
            for p in consumer.partitions_for_topic(t) or ()
        ]
        ends = consumer.end_offsets(parts)
        starts = consumer.beginning_offsets(parts)
        done = admin.list_group_offsets({group: parts}).get(group, {})
        records, oldest_ms = 0, None
        for tp in parts:
            c = done.get(tp)
            pos = c.offset if c is not None and c.offset >= 0 else starts[tp]
            if pos >= ends[tp]:
                continue
            records += ends[tp] - pos
            consumer.assign([tp])
            consumer.seek(tp, pos)
            for recs in consumer.poll(timeout_ms=3000).values():
                for r in recs[:1]:
                    oldest_ms = r.timestamp if oldest_ms is None else min(oldest_ms, r.timestamp)
        age = max(0.0, time.time() - oldest_ms / 1000) if oldest_ms is not None else 0.0
        return records, age
    finally:
        consumer.close()
        admin.close()


def pg_roles(settings: Settings) -> dict[str, str]:
    """Which PostgreSQL node is the primary (Patroni's /cluster): name -> role."""
    s = settings.services
    url = f"http://{s.cluster_pg_hosts[0]}:{s.cluster_patroni_port}/cluster"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            doc = json.load(resp)
    except (OSError, ValueError):
        return {}
    return {m["name"]: m["role"] for m in doc.get("members", [])}


def servers_up(settings: Settings) -> dict[str, str]:
    """The cluster's servers with their current configuration (``services up`` restarts one
    whose rendered configuration changed; ``qilu run`` only reports it); the nodes' roles."""
    say("qilu services up --profile cluster")
    subprocess.run(
        [sys.executable, "-m", "ops.cli", "services", "up", "--profile", "cluster"],
        cwd=REPO,
        check=True,
    )
    return pg_roles(settings)


# ----------------------------------------------------------------------------- main


def pump(stream: Any, log: Path, started: threading.Event) -> None:
    """Copy ``qilu run``'s stderr to ``log``; set ``started`` at its last step."""
    with log.open("a") as out:
        for line in iter(stream.readline, ""):
            out.write(line)
            out.flush()
            if line.startswith("[5/5]"):
                started.set()


def summarise(samples: list[dict[str, Any]], warmup: float, target: float) -> dict[str, Any]:
    """The lag after ``warmup`` against ``target``; per component mean and max CPU and PSS."""
    # the warm-up runs from the first reading stored (the agents' start, simulators and
    # collectors, takes a minute or two on a loaded machine; with --reuse what earlier runs
    # left in the topics is its backlog, not the live lag)
    first = next((s["t_s"] for s in samples if s.get("readings_stored_total", 0) > 0), None)
    begin = (first if first is not None else 0.0) + warmup
    counted = [s for s in samples if s["t_s"] >= begin and "lag_s" in s]
    lags = [s["lag_s"] for s in counted]
    out: dict[str, Any] = {}
    out["lag"] = {
        "target_s": target,
        "warmup_s": warmup,
        "max_s": max(lags) if lags else None,
        "p95_s": (
            round(statistics.quantiles(lags, n=20, method="inclusive")[18], 2)
            if len(lags) >= 2
            else None
        ),
        "max_records": max((s["lag_records"] for s in counted), default=None),
        "under_target": bool(lags) and max(lags) < target,
        "samples_missed": sum(1 for s in samples if "lag_error" in s),
    }
    names = sorted({n for s in samples for n in s["components"]})
    budget: dict[str, Any] = {}
    for name in names:
        cpus = [c for s in samples if (c := s["components"].get(name, {}).get("cpu")) is not None]
        pss = [s["components"][name]["pss_mb"] for s in samples if name in s["components"]]
        budget[name] = {
            "cpu_mean": round(statistics.fmean(cpus), 3) if cpus else None,
            "cpu_max": max(cpus) if cpus else None,
            "pss_mb_mean": round(statistics.fmean(pss), 1) if pss else None,
            "pss_mb_max": max(pss) if pss else None,
        }
    out["budget"] = budget
    out["coverage_full_builds"] = full_builds(samples, first, warmup)
    # the rate over the same window as the lag (the agents' start would dilute it)
    stored = [
        (s["t_s"], s["readings_stored_total"])
        for s in samples
        if "readings_stored_total" in s and s["t_s"] >= begin
    ]
    if len(stored) >= 2 and stored[-1][0] > stored[0][0]:
        (t0, n0), (t1, n1) = stored[0], stored[-1]
        out["readings_stored_per_s"] = round((n1 - n0) / (t1 - t0))
        # a lag under target means little unless the province's readings flow
        out["share_of_the_province"] = round(out["readings_stored_per_s"] / PROVINCE_RATE, 3)
    share = out.get("share_of_the_province", 0.0)
    if share < 0.95:
        out["verdict"] = f"the province did not flow ({share:.1%} of its readings/s): no verdict"
    elif out["lag"]["under_target"]:
        out["verdict"] = "the province flowed and the lag stayed under the target"
    else:
        out["verdict"] = "the province flowed but the lag exceeded the target"
    return out


def full_builds(
    samples: list[dict[str, Any]], first: float | None, warmup: float
) -> dict[str, Any]:
    """Per coverage model, its full builds by reason: up to the end of the warm-up (the
    platform's start) and over the whole run."""
    out: dict[str, Any] = {}
    for model in ("api", "ingest"):
        seen = [
            (s["t_s"], s["coverage_models"][model]["full_builds"])
            for s in samples
            if model in s.get("coverage_models", {})
        ]
        if not seen:
            continue
        edge = (first if first is not None else 0.0) + warmup
        early = [b for t, b in seen if t <= edge]
        out[model] = {
            "by_the_warmup_edge": early[-1] if early else {},
            "in_all": seen[-1][1],
            "registry_changed_in_all": seen[-1][1].get("the registry changed", 0.0),
            "last_build_s_max": max(
                (
                    s["coverage_models"][model].get("last_build_s") or 0.0
                    for s in samples
                    if model in s.get("coverage_models", {})
                ),
                default=None,
            ),
            "registry_behind_s_max": max(
                (
                    s["coverage_models"][model]["registry_behind_s"] or 0.0
                    for s in samples
                    if model in s.get("coverage_models", {})
                ),
                default=None,
            ),
        }
    return out


def sample_once(
    settings: Settings, run_pid: int, t: float, prev: dict[int, int] | None, since: int, dt: float
) -> tuple[dict[str, Any], dict[int, int]]:
    """One sample: per component CPU since ``prev`` (each process's ticks at the previous
    sample, ``dt`` seconds ago, ``since`` ticks after boot) and PSS; the lag."""
    comps = components(settings, run_pid)
    now = {p: got for ps in comps.values() for p in ps if (got := cpu_ticks(p)) is not None}
    sample: dict[str, Any] = {"t_s": round(t, 1), "components": {}}
    for name, pids in comps.items():
        cpu = None if prev is None else cpu_since(pids, now, prev, since) / TICK / dt
        sample["components"][name] = {
            "cpu": None if cpu is None else round(cpu, 3),
            "pss_mb": round(sum(pss_kb(p) for p in pids) / 1024, 1),
            "processes": len(pids),
        }
    ingest = ingest_metrics(settings)
    stored = readings_stored(ingest)
    if stored is not None:
        sample["readings_stored_total"] = stored
    models = {
        "api": coverage_model(api_metrics(settings), "qilu_api"),
        "ingest": coverage_model(ingest, "qilu_storage"),
    }
    sample["coverage_models"] = {k: v for k, v in models.items() if v is not None}
    try:
        records, age = lag(settings, settings.ingest.group_id)
        sample |= {"lag_records": records, "lag_s": round(age, 2)}
    except Exception as exc:  # noqa: BLE001 - a sample missed, said in the result
        sample["lag_error"] = str(exc)[:200]
    sample["load"] = os.getloadavg()[0]
    return sample, {p: got[0] for p, got in now.items()}


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds sampled (600)")
    ap.add_argument("--every", type=float, default=5.0, help="seconds between samples (5)")
    ap.add_argument("--scale", type=float, default=1.0, help="province scale (1.0: all of it)")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before the lag counts")
    ap.add_argument("--lag-target-s", type=float, default=10.0, help="the lag's bound (10 s)")
    ap.add_argument(
        "--history-days", type=int, default=0, help="qilu run --history-days (default 0: none)"
    )
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="run on the default platform (database, topics, agents' buffers) instead of one "
        "of the run's own: what earlier runs left there becomes part of the measurement",
    )
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the run's own database, topics and buffers at the end (the next run drops them)",
    )
    ap.add_argument("--out", type=Path, default=RESULT, help="result file")
    ap.add_argument(
        "--log",
        type=Path,
        default=Path(tempfile.gettempdir()) / "province_live.log",
        help="qilu run's log (default: province_live.log in the temporary directory)",
    )
    return ap.parse_args()


RUN_PREFIX = "qprov"  # the runs' own platforms: databases, topic prefixes, groups


def drop_platforms(settings: Settings, keep: str = "") -> list[str]:
    """Drop the databases and delete the topics of runs' own platforms (names starting with
    ``qprov``) but ``keep``'s; returns what was dropped."""
    gone: list[str] = []
    with psycopg.connect(settings.db.conninfo(dbname="postgres"), autocommit=True) as conn:
        names = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s AND datname <> %s",
            (RUN_PREFIX + "%", keep),
        ).fetchall()
        for (name,) in names:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            gone.append(f"database {name}")
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap, client_id="bench-prov")
    try:
        topics = [
            t
            for t in admin.list_topics()
            if t.startswith(RUN_PREFIX) and not (keep and t.startswith(keep + "."))
        ]
        if topics:
            admin.delete_topics(topics, timeout_ms=60_000)
            gone += [f"topic {t}" for t in topics]
    finally:
        admin.close()
    for d in Path(tempfile.gettempdir()).glob(RUN_PREFIX + "*"):
        if d.name != keep:
            shutil.rmtree(d, ignore_errors=True)
            gone.append(f"agents' buffers {d}")
    return gone


def own_platform(settings: Settings) -> str:
    """Create this run's own platform and point this process (and so ``qilu run`` and the
    lag's reader) at it through the environment; returns its name."""
    name = RUN_PREFIX + time.strftime("%Y%m%d%H%M%S", time.gmtime())
    for line in drop_platforms(settings):
        say(f"dropped what an earlier run left: {line}")
    with psycopg.connect(settings.db.conninfo(dbname="postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    agents = Path(tempfile.gettempdir()) / name / "agents"
    agents.mkdir(parents=True)
    os.environ |= {
        "QILU_DB__NAME": name,
        "QILU_KAFKA__TOPIC_PREFIX": name,
        "QILU_INGEST__GROUP_ID": f"{name}-ingest",
        "QILU_AGENT__PROVINCE_DIR": str(agents),
    }
    say(f"this run's own platform: database, topic prefix and agents' buffers {name}")
    return name


def stop_run(run: subprocess.Popen[str]) -> None:
    """Stop ``qilu run`` as Ctrl-C does (it stops its children), killing it after 60 s."""
    if run.poll() is None:
        run.send_signal(signal.SIGINT)
        try:
            run.wait(timeout=60)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()


def sample_run(
    args: argparse.Namespace,
    settings: Settings,
    run: subprocess.Popen[str],
    started: threading.Event,
    began: float,
    out: dict[str, Any],
    samples: list[dict[str, Any]],
) -> None:
    """Wait for ``qilu run``'s last step, then sample every ``--every`` s for ``--duration``."""
    while not started.wait(2.0):
        if run.poll() is not None:
            raise SystemExit(f"qilu run exited ({run.returncode}) before starting; {args.log}")
    out["prepare_s"] = round(time.monotonic() - began, 1)
    say(f"platform starting after {out['prepare_s']} s of preparation; sampling")
    t_start = time.monotonic()
    prev: dict[int, int] | None = None
    prev_t, since = time.monotonic(), uptime_ticks()
    while time.monotonic() - t_start < args.duration:
        if run.poll() is not None:
            raise SystemExit(f"qilu run exited ({run.returncode}); see {args.log}")
        time.sleep(args.every)
        now = time.monotonic()
        at = uptime_ticks()
        sample, prev = sample_once(settings, run.pid, now - t_start, prev, since, now - prev_t)
        prev_t, since = now, at
        samples.append(sample)
        say(
            f"t={sample['t_s']:.0f}s lag={sample.get('lag_records')} records "
            f"{sample.get('lag_s')} s stored={sample.get('readings_stored_total')} "
            f"load={sample['load']:.1f}"
        )


def main() -> None:
    args = arguments()
    # a SIGTERM (or a shell that started this in the background, where SIGINT is ignored)
    # still stops qilu run and drops the run's platform
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = load()
    out: dict[str, Any] = {"benchmark": "province_live"} | run_header("bench/province_live.py")
    out["pg_roles"] = servers_up(base)
    platform = ""
    if not args.reuse:
        platform = own_platform(client_settings(base, "cluster"))
        base = load()
    out["platform"] = platform or "default (--reuse: what earlier runs left is its backlog)"
    settings = client_settings(base, "cluster")
    argv = [sys.executable, "-m", "ops.cli", "run", "--profile", "cluster"]
    argv += ["--scale", str(args.scale), "--history-days", str(args.history_days)]
    argv += ["--every", "60"]
    say(f"starting: {' '.join(argv[1:])} (log: {args.log})")
    began = time.monotonic()
    run = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    started = threading.Event()
    threading.Thread(target=pump, args=(run.stderr, args.log, started), daemon=True).start()
    samples: list[dict[str, Any]] = []
    try:
        sample_run(args, settings, run, started, began, out, samples)
    finally:
        stop_run(run)
        if platform and not args.keep:
            for line in drop_platforms(settings):
                say(f"dropped this run's {line}")
    out["samples"] = samples
    out |= summarise(samples, args.warmup, args.lag_target_s)
    out["duration_s"] = args.duration
    out["machine"]["load_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    keys = ("lag", "readings_stored_per_s", "coverage_full_builds", "budget")
    say(json.dumps({k: out.get(k) for k in keys}, indent=1))
    say(f"wrote {args.out}")


if __name__ == "__main__":
    main()
