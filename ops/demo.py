"""``qilu run``: the whole platform on this machine, a simulated province streaming through it.

Steps: start the local servers, migrate, load a generated registry (recording the share of the
province it stands for, and modelling ``--history-days`` of coverage history before the first
recorded day, marked synthetic), create topics, then run the ingest consumer, the simulated
edge agents, the API and simulated T/CEC 102 charging operators (``qilu operators simulate``)
as child processes, and print the coverage table (targets x cities)
from the API every few seconds. Count thresholds are compared scaled to the simulated share
and marked so (docs/adr/0013-scaled-thresholds.md). A child that fails (a crash, a kill, the
ingest's stall watchdog) is started again after a doubling delay, as systemd's
``Restart=on-failure`` would (:class:`Restarts`); only a child that keeps failing within a
minute of its start stops the whole run. Ctrl-C stops the children
cleanly; a ``qilu run`` killed outright takes its children with it (the kernel's parent-death
signal). The servers keep running (``qilu services down`` stops them).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from ops.services.prometheus import agent_targets_file
from qilu.catalog import load_catalog
from qilu.registry import generate, sector_fractions
from qilu.settings import Settings

logger = logging.getLogger(__name__)
SCALED_MARK = "\u2020"  # a dagger: this threshold is scaled (see the table's footnote)


@dataclass(slots=True)
class Restarts:
    """When a child that failed is started again (no I/O): after ``first_delay_s``, doubling
    with each failure that comes within ``quick_s`` of the start before it, up to
    ``max_delay_s``; a run longer than ``quick_s`` starts the count again. The
    ``limit + 1``-th quick failure in a row gives up."""

    quick_s: float = 60.0
    limit: int = 5
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    quick: int = 0  # failures in a row, each within quick_s of its start

    def after_failure(self, ran_s: float) -> float | None:
        """The delay before the next start of a child that failed after running ``ran_s``
        seconds; None: give up."""
        self.quick = self.quick + 1 if ran_s < self.quick_s else 1
        if self.quick > self.limit:
            return None
        return min(self.first_delay_s * (1 << (self.quick - 1)), self.max_delay_s)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _parent_death_signal() -> Callable[[], None] | None:
    """What runs in each child between fork and exec: have the kernel send the child SIGTERM
    when ``qilu run`` dies, however it dies. Ctrl-C and SIGTERM stop the children in
    :meth:`_Children.stop`; a SIGKILL (or a crash) of the parent would otherwise leave the
    ingest, the agents, the API and the operators running and streaming into the servers,
    unowned. libc is looked up here, in the parent: the child only makes two system calls."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


class _Children:
    """The platform's processes, each started again after a failure (:class:`Restarts`)."""

    def __init__(self, commands: dict[str, list[str]], env: dict[str, str]) -> None:
        self._commands, self._env = commands, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._started: dict[str, float] = {}
        self._restarts = {name: Restarts() for name in commands}
        self._due: dict[str, float] = {}  # name -> when it is started again (monotonic)
        self._in_child = _parent_death_signal()
        for name in commands:
            self._start(name)

    def _start(self, name: str) -> None:
        self.procs[name] = subprocess.Popen(
            self._commands[name],
            env=self._env,
            preexec_fn=self._in_child,  # noqa: PLW1509 - qilu run starts no thread of its own
        )
        self._started[name] = time.monotonic()

    def check(self) -> bool:
        """Restart what failed and is due; False when a child should stop the run (it ended
        on its own, or failed too often in a row)."""
        now = time.monotonic()
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is None or name in self._due:
                continue
            if code == 0:  # not a failure: nothing to restart (systemd's on-failure)
                logger.error("%s exited; stopping", name)
                return False
            delay = self._restarts[name].after_failure(now - self._started[name])
            if delay is None:
                logger.error(
                    "%s exited with code %s, the %d-th time in a row within %.0f s of its "
                    "start; stopping",
                    name,
                    code,
                    self._restarts[name].quick,
                    self._restarts[name].quick_s,
                )
                return False
            logger.warning("%s exited with code %s; starting it again in %.0f s", name, code, delay)
            self._due[name] = now + delay
        for name, at in list(self._due.items()):
            if now >= at:
                del self._due[name]
                self._start(name)
                logger.warning("%s started again (pid %d)", name, self.procs[name].pid)
        return True

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in 20 s; killing it", name)
                proc.kill()


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="start everything and stream a simulated province (the README's first command)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seed", type=int, default=1, help="registry and simulation seed (default 1)")
    p.add_argument(
        "--scale",
        type=float,
        default=0.02,
        help="province scale, 1.0 = ~240k piles (default 0.02: ~5k devices)",
    )
    p.add_argument(
        "--history-days",
        type=int,
        default=90,
        help="days of coverage history to model before the first recorded day, marked "
        "synthetic, so the charts show something on first start (default 90; 0: none). "
        "Costs one coverage query per measure and modelled day over the whole registry, on "
        "the first start only: 16-27 s at the default scale on a busy 2-core machine; a "
        "registry beyond 600,000 device-days gets every k-th day (docs/targets.md)",
    )
    p.add_argument(
        "--operators-per-city",
        type=int,
        default=2,
        help="simulated T/CEC 102 charging operators per city, pushing to the API and pulled "
        "from (`qilu operators simulate`, docs/adr/0015-tcec102.md; default 2, 0: none)",
    )
    p.add_argument(
        "--profile",
        choices=("single", "cluster"),
        default="single",
        help="the servers: single (one of each, the default) or cluster (three Kafka brokers, "
        "three etcd members and two PostgreSQL nodes under Patroni, docs/services.md; the "
        "platform's processes get every broker and both nodes with target_session_attrs="
        "read-write)",
    )
    p.add_argument("--every", type=float, default=10.0, help="seconds between coverage tables")
    p.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    p.set_defaults(handler=_run)

    p = sub.add_parser("coverage", help="print the coverage table (targets x cities) from the API")
    p.add_argument("--url", default=None, help="API base URL (default http://127.0.0.1:8080)")
    p.set_defaults(handler=_coverage)


def _coverage(args: argparse.Namespace, settings: Settings) -> int:
    url = args.url or f"http://{settings.api.host}:{settings.api.port}"
    table = _coverage_table(url)
    if not table:
        logger.error("no answer from the API at %s (is `qilu api` running?)", url)
        return 1
    sys.stdout.write(table)
    return 0


def _step(n: int, total: int, text: str) -> None:
    sys.stderr.write(f"[{n}/{total}] {text}\n")
    sys.stderr.flush()


def _prepare(args: argparse.Namespace, settings: Settings) -> None:
    """Servers up, schema current, registry loaded, topics there: steps 1 to 4."""
    from ops.services import Services
    from qilu.reported import simulated_figures
    from storage import migrate
    from storage.coverage import province_day
    from storage.db import connect
    from storage.registry_store import load_registry
    from storage.reported import save_simulated
    from storage.trajectories import backfill, record_simulation
    from stream.topics import ensure_topics

    total = 5
    if args.profile == "cluster":
        _step(
            1,
            total,
            "starting Mosquitto and Prometheus, three Kafka brokers, etcd and PostgreSQL under "
            "Patroni (first run installs them: a few minutes)",
        )
        Services(settings.services, settings.db).up(["mosquitto", "prometheus"])
        Services(settings.services, settings.db, profile="cluster").up()
    else:
        _step(
            1,
            total,
            "starting Kafka, PostgreSQL, Mosquitto and the TimescaleDB engine "
            "(first run installs them: a few minutes)",
        )
        Services(settings.services, settings.db).up()
    _step(2, total, "applying database migrations")
    with connect(settings.db) as conn:
        migrate.apply(conn)
        _step(3, total, f"loading the simulated registry (seed {args.seed}, scale {args.scale})")
        reg = generate(args.seed, args.scale)
        load_registry(conn, reg)
        # a share of the province: count thresholds are compared scaled by it (ADR 0013)
        record_simulation(conn, sector_fractions(args.scale), args.seed, args.scale)
        if args.history_days > 0:
            sys.stderr.write(
                f"      modelling up to {args.history_days} days of coverage history "
                "before the first recorded day (marked synthetic; first start only)\n"
            )
            backfill(conn, load_catalog(), datetime.now(UTC), args.history_days)
        # reported figures (5G base stations, racks...) as a simulated operator would report
        # them, marked simulated; a stored figure is never replaced (docs/reported.md)
        save_simulated(conn, simulated_figures(load_catalog(), province_day(datetime.now(UTC))))
    _step(
        4, total, f"creating Kafka topics; {len(reg.sites):,} sites, {len(reg.devices):,} devices"
    )
    ensure_topics(settings.kafka)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from ops.services.registry import client_env, client_settings

    settings = client_settings(settings, args.profile)
    _prepare(args, settings)
    _step(5, 5, "starting ingest, edge agents and the API")
    base = [sys.executable, "-m", "ops.cli"]
    # agent changes (the province's, the API's) rewrite the targets the local Prometheus reads
    targets = settings.agent.targets_file or agent_targets_file(
        settings.services.state_dir.resolve()
    )
    # the children reach the profile's servers (the same as before for the single profile)
    env = {**os.environ, "QILU_AGENT__TARGETS_FILE": str(targets), **client_env(settings)}
    commands = {
        "ingest": [*base, "ingest"],
        "agents": [
            *base,
            "agent",
            "province",
            "--seed",
            str(args.seed),
            "--scale",
            str(args.scale),
        ],
        "api": [*base, "api"],
    }
    if args.operators_per_city > 0:
        commands["operators"] = [
            *base,
            "operators",
            "simulate",
            "--per-city",
            str(args.operators_per_city),
        ]
    children = _Children(commands, env)
    url = f"http://{settings.api.host}:{settings.api.port}"
    stopping = False

    def on_signal(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    next_table = started + 5.0
    code = 0
    try:
        while not stopping:
            time.sleep(0.2)
            if not children.check():
                stopping, code = True, 1
            if args.duration and time.monotonic() - started >= args.duration:
                break
            if time.monotonic() >= next_table:
                next_table = time.monotonic() + args.every
                table = _coverage_table(url)
                if table:
                    sys.stdout.write(table)
                    sys.stdout.flush()
    finally:
        sys.stderr.write(
            "stopping ingest, agents, operators and API (servers keep running: "
            "`qilu services down` stops them)\n"
        )
        children.stop()
    sys.stderr.write(f"API was at {url}/docs\n")
    return code


def _coverage_table(url: str) -> str:
    try:
        with urllib.request.urlopen(f"{url}/v1/coverage", timeout=5) as resp:  # noqa: S310
            data = json.load(resp)
    except (urllib.error.URLError, TimeoutError, ConnectionError):
        return ""
    return format_coverage(data)


def _limit(v: float, ratio: bool) -> str:
    """A threshold as shown: a scaled count keeps its fraction (>= 5.33 ranches is not >= 5)."""
    if ratio:
        return f"{v:.1%}"
    return f"{v:,.0f}" if v == round(v) else f"{v:,.2f}".rstrip("0").rstrip(".")


def format_coverage(data: list[dict[str, Any]]) -> str:
    """The API's coverage answer as a targets x cities text table.

    A count threshold compared scaled to a simulated registry's share of the province
    (docs/adr/0013-scaled-thresholds.md) is shown scaled, marked with a dagger and explained
    under the table."""
    cities = load_catalog().cities
    name_w, goal_w, prov_w, cell_w = 33, 19, 12, 8
    head = "target".ljust(name_w) + "goal".rjust(goal_w) + "province".rjust(prov_w)
    head += "".join(c.name_en[:7].rjust(cell_w) for c in cities)
    when = datetime.now(UTC).astimezone().strftime("%H:%M:%S")
    lines = [f"\ncoverage at {when} (connected assets; * = threshold met)", head]
    scales: dict[str, float] = {}
    for t in data:
        ratio = t["kind"] == "ratio"

        def fmt(v: float | None, ratio: bool = ratio) -> str:
            if v is None:
                return "-"
            return f"{v:.1%}" if ratio else f"{v:,.0f}"

        due = date.fromisoformat(t["due"]).year
        # answers of an API older than the scaled thresholds carry only ``threshold``
        threshold = t.get("threshold_effective", t["threshold"])
        mark = SCALED_MARK if t.get("scaled") else ""
        if t.get("scaled"):
            scales[t["sector"]] = t["scale"]
        goal = f"{t['comparator']}{_limit(threshold, ratio)}{mark} {due}"
        row = t["target_id"][: name_w - 1].ljust(name_w) + goal.rjust(goal_w)
        row += (fmt(t["value"]) + ("*" if t["met"] else " ")).rjust(prov_w)
        by_code = {c["city_code"]: c for c in t["cities"]}
        row += "".join(fmt(by_code[c.code]["value"]).rjust(cell_w) for c in cities)
        lines.append(row)
    if scales:
        shares = ", ".join(
            f"{sector} {share:.1%}".replace("%", " %") for sector, share in sorted(scales.items())
        )
        lines.append(
            f"{SCALED_MARK} threshold scaled to the simulated share of the province ({shares}): "
            "the registry is a simulation of part of Shandong, so its counts are compared "
            "with the same part of each threshold"
        )
    return "\n".join(lines) + "\n"
