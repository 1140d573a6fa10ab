"""Inventory import at province scale: 200,000 charging piles from one CSV.

Generates a charging inventory (Chinese headers, UTF-8 with BOM, the shape of
docs/samples/charging_inventory.csv) of ``--piles`` piles in stations of 4-12, creates a fresh
database, and runs the real command three times, timing each (wall clock, the whole process:
start-up, parsing and validation, diff against the registry, the transaction with its history
and audit rows) and the CPU seconds of the command and of its database backend (a figure that
does not depend on the other work sharing the machine):

    1. ``qilu registry import FILE --sector charging --dry-run``  (empty registry: all added)
    2. ``qilu registry import FILE --sector charging``            (apply, one transaction)
    3. ``qilu registry import FILE --sector charging``            (again: nothing changes)

The command's progress lines go to this terminal. The issue asks for < 60 s for the apply on
the 2-core machine.

    python bench/registry_import.py [--piles 200000] [--keep-file PATH]

Needs PostgreSQL (``qilu services up postgres``). Writes bench/results/registry_import.json.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from psycopg import sql

from qilu.catalog import load_catalog
from qilu.settings import Settings, load
from storage import migrate
from storage.db import connect

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def generate(path: Path, piles: int, seed: int = 200) -> tuple[int, int]:
    """A charging inventory of exactly ``piles`` piles; returns (stations, piles)."""
    rng = random.Random(seed)
    cities = load_catalog().cities
    weights = [c.weight for c in cities]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["站点编号", "站点名称", "城市", "桩编号", "是否公共", "是否联网"])
    n = station = 0
    while n < piles:
        station += 1
        c = rng.choices(cities, weights)[0]
        public = rng.random() < 0.8
        networked = rng.random() < (0.97 if public else 0.6)
        sid = f"CS{c.code}-{station:06d}"
        name = f"{c.name_zh}充电站{station}号"
        flags = ["是" if public else "否", "是" if networked else "否"]
        for k in range(1, min(rng.randint(4, 12), piles - n) + 1):
            w.writerow([sid, name, c.name_zh, f"{sid}-{k:02d}", *flags])
            n += 1
    path.write_bytes(b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8"))
    return station, n


TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a local process (the PostgreSQL backend serving the import)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


class BackendCpu(threading.Thread):
    """Samples the CPU time of the backend connected to the bench database (only the command
    under test connects to it) until stopped: with the client's CPU time, a figure that does
    not depend on what else the machine runs."""

    def __init__(self, settings: Settings, database: str) -> None:
        super().__init__(daemon=True)
        self.settings, self.database = settings, database
        self.stop, self.cpu_s = threading.Event(), 0.0

    def run(self) -> None:
        with connect(self.settings.db, autocommit=True) as conn:
            pid = None
            while not self.stop.is_set():
                if pid is None:
                    row = conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = %s"
                        " AND backend_type = 'client backend'",
                        (self.database,),
                    ).fetchone()
                    pid = row[0] if row else None
                if pid is not None:
                    cpu = _proc_cpu_s(pid)
                    if cpu is None:
                        pid = None
                    else:
                        self.cpu_s = max(self.cpu_s, cpu)
                self.stop.wait(0.05)


def run(
    argv: list[str], env: dict[str, str], settings: Settings, database: str
) -> dict[str, float | int]:
    """Run ``qilu ARGV``; wall seconds, exit code, client and database backend CPU seconds."""
    sampler = BackendCpu(settings, database)
    sampler.start()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(
        [str(REPO / ".venv" / "bin" / "qilu"), *argv],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler.stop.set()
    sampler.join()
    sys.stdout.write(proc.stdout)
    client = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "wall_s": round(elapsed, 2),
        "code": proc.returncode,
        "client_cpu_s": round(client, 2),
        "db_backend_cpu_s": round(sampler.cpu_s, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--piles", type=int, default=200_000, help="charging piles in the CSV (default 200000)"
    )
    ap.add_argument("--keep-file", type=Path, default=None, help="write the CSV here and keep it")
    ap.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "registry_import.json",
        help="result JSON (default bench/results/registry_import.json)",
    )
    args = ap.parse_args()

    settings = load()
    name = f"qilu_bench_reg_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep_file or Path(tmp) / "charging_200k.csv"
        t0 = time.monotonic()
        stations, piles = generate(path, args.piles)
        print(
            f"generated {path}: {stations:,} stations, {piles:,} piles, "
            f"{path.stat().st_size / 1e6:.1f} MB in {time.monotonic() - t0:.1f} s",
            flush=True,
        )
        with connect(settings.db, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        dbs = settings.db.model_copy(update={"name": name})
        try:
            with connect(dbs) as conn:
                migrate.apply(conn)
            env = {**os.environ, "QILU_DB__NAME": name}
            base = ["registry", "import", str(path), "--sector", "charging"]
            phases: dict[str, dict[str, float | int]] = {}
            for phase, extra in (("dry_run", ["--dry-run"]), ("apply", []), ("reimport", [])):
                print(f"--- {phase}", flush=True)
                r = run([*base, *extra], env, settings, name)
                if r["code"] != 0:
                    print(f"{phase} failed with exit code {r['code']}", file=sys.stderr)
                    return 1
                phases[phase] = r
                print(
                    f"{phase}: {r['wall_s']:.1f} s wall; CPU: client {r['client_cpu_s']:.1f} s,"
                    f" database {r['db_backend_cpu_s']:.1f} s",
                    flush=True,
                )
            with connect(dbs) as conn:
                counts = conn.execute(
                    "SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM device_versions),"
                    " (SELECT count(*) FROM audit_log)"
                ).fetchone()
            if counts is None:
                return 1
        finally:
            with connect(settings.db, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
    result = {
        "piles": piles,
        "stations": stations,
        "phases": phases,
        "piles_per_s_apply": round(piles / float(phases["apply"]["wall_s"])),
        "devices_after": counts[0],
        "device_versions_after": counts[1],
        "audit_rows_after": counts[2],
        "under_a_minute": float(phases["apply"]["wall_s"]) < 60,
        # what the apply needs on an idle machine: the client and its backend take turns
        # (parse, then the transaction), so wall time there is about their sum
        "apply_cpu_s_total": round(
            float(phases["apply"]["client_cpu_s"]) + float(phases["apply"]["db_backend_cpu_s"]),
            2,
        ),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "note": "wall clock of the whole `qilu registry import` process; other work shared "
        "the 2 CPU cores during the run (see load_avg), so wall figures are noisy; CPU "
        "seconds (client process + its database backend) are not",
    }
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
