"""Commands of the storage stage: ``qilu migrate``, ``qilu registry``, ``qilu storage``."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql

from qilu.catalog import load_catalog
from qilu.errors import ConfigError
from qilu.registry import generate, sector_fractions
from qilu.settings import Settings, StorageMode
from storage import coverage, maintain, migrate, registry_cli, trajectories, verify
from storage import mode as modes
from storage.db import connect
from storage.jobs import job_health
from storage.registry_store import load_registry

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("migrate", help="apply database migrations (safe to run again)")
    p.set_defaults(handler=_migrate)

    p = sub.add_parser(
        "registry",
        help="the asset registry: inventories, lifecycle, history (docs/registry.md)",
    )
    rsub = p.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    g = rsub.add_parser(
        "generate",
        help="generate a simulated province registry and load it",
        description=(
            "Deterministic for a seed: the same --seed and --scale give the same assets. The "
            "share of the province it stands for is recorded, and count thresholds are "
            "compared scaled by it (docs/targets.md, 'A simulated registry')."
        ),
    )
    g.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    g.add_argument(
        "--scale", type=float, default=0.02, help="1.0 = province size (~240k piles); default 0.02"
    )
    g.set_defaults(handler=_registry_generate)
    registry_cli.add_actions(rsub)
    registry_cli.register(sub)  # `qilu audit`

    p = sub.add_parser(
        "storage",
        help="storage maintenance, status and role passwords",
        description=(
            "Partitions, retention, rollup refresh and the coverage series (docs/storage.md). "
            "The database's storage mode (timescale or postgres) was fixed by `qilu migrate`."
        ),
    )
    ssub = p.add_subparsers(dest="storage_command", required=True, metavar="ACTION")
    m = ssub.add_parser(
        "maintain",
        help="one maintenance pass (or a loop with --every)",
        description=(
            "postgres mode: create the coming hours' partitions, drop expired ones, refresh "
            "the rollups. timescale mode: align the retention policies with the settings "
            "(QILU_STORAGE__*_RETENTION_DAYS); the server runs the other policies. Both: "
            "record today's coverage in coverage_daily. Run it as the schema owner."
        ),
    )
    m.add_argument(
        "--every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="keep running, one rollup refresh per SECONDS (partitions and retention every "
        "tenth pass, coverage every QILU_STORAGE__COVERAGE_SNAPSHOT_INTERVAL_S)",
    )
    m.add_argument(
        "--run-jobs",
        action="store_true",
        help="timescale mode: also run every policy job now (refresh, compression, retention), "
        "for servers without background workers or after a bulk load",
    )
    m.add_argument("--no-coverage", action="store_true", help="skip the coverage snapshot")
    m.set_defaults(handler=_maintain)

    c = ssub.add_parser(
        "coverage-snapshot",
        help="record every target's current value as today's row of coverage_daily",
        description=(
            "Computes coverage per target and city now (from device_liveness and the registry) "
            "and upserts it as the row of today (province time, UTC+8). Idempotent per day."
        ),
    )
    c.set_defaults(handler=_coverage_snapshot)

    v = ssub.add_parser(
        "verify",
        help="check that the rollups equal a recomputation from the raw readings",
        description=(
            "Recomputes readings_1m, readings_1h and site_liveness_1h from readings over the "
            "last --hours whole hours and lists every bucket that differs. Exit status 1 if "
            "any does. Buckets newer than the last refresh are computed at query time, so "
            "they always match; run it after `qilu storage maintain` to check the stores."
        ),
    )
    v.add_argument("--hours", type=int, default=24, help="hours to check (default 24)")
    v.set_defaults(handler=_verify)

    st = ssub.add_parser(
        "status",
        help="mode, migrations, rollup watermarks, sizes, policies, background jobs",
        description=(
            "timescale mode also lists the server's background jobs of the platform (the "
            "rollup refresh, compression and retention) with their last runs; exit status 1 "
            "if the last run of any of them failed (the server then retries after a backoff)."
        ),
    )
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(handler=_status)

    pw = ssub.add_parser(
        "set-password",
        help="set the password of a platform role (qilu_ingest, qilu_api, qilu_grafana)",
        description=(
            "The migrations create the roles without a password, so they cannot log in until "
            "an operator sets one. The password is read from standard input when it is not a "
            'terminal (e.g. `printf %%s "$PW" | qilu storage set-password qilu_api`), otherwise '
            "prompted for twice. It is hashed (SCRAM-SHA-256) before it leaves this process."
        ),
    )
    pw.add_argument("role", choices=ROLES, help="the role")
    pw.set_defaults(handler=_set_password)


ROLES = ("qilu_ingest", "qilu_api", "qilu_grafana")


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    del args
    with connect(settings.db) as conn:
        result = migrate.run(conn, settings.db.mode)
    logger.info(
        "storage mode: %s; migrations: %s",
        result.mode,
        f"applied {', '.join(f'{v:03d}' for v in result.applied)}"
        if result.applied
        else "up to date",
    )
    return 0


def _registry_generate(args: argparse.Namespace, settings: Settings) -> int:
    reg = generate(args.seed, args.scale)
    with connect(settings.db) as conn:
        load_registry(conn, reg)
        # the share of the province it stands for: count thresholds are scaled by it
        trajectories.record_simulation(conn, sector_fractions(args.scale), args.seed, args.scale)
    return 0


def _db_mode(settings: Settings) -> StorageMode:
    with connect(settings.db) as conn:
        return modes.current(conn)


def _maintain(args: argparse.Namespace, settings: Settings) -> int:
    mode = _db_mode(settings)
    catalog = load_catalog()
    if args.every is not None:
        if args.every <= 0:
            raise ConfigError("--every", "must be a positive number of seconds")
        storage = settings.storage.model_copy(update={"refresh_interval_s": args.every})
        stop = threading.Event()
        logger.info("storage maintenance (%s mode) every %.0f s; Ctrl-C stops", mode, args.every)
        worker = maintain.Maintainer(settings.db, storage, mode, catalog, stop)
        try:
            worker.run()
        except KeyboardInterrupt:
            stop.set()
        return 0
    report = maintain.maintain_once(
        settings.db,
        settings.storage,
        mode,
        catalog,
        coverage_snapshot=not args.no_coverage,
        run_policy_jobs=args.run_jobs,
    )
    logger.info("storage mode: %s", report.mode)
    if mode is StorageMode.POSTGRES:
        logger.info(
            "partitions: %d created, %d dropped%s",
            report.partitions_created,
            len(report.partitions_dropped),
            f" ({', '.join(report.partitions_dropped)})" if report.partitions_dropped else "",
        )
        logger.info("rollups: %s", json.dumps(report.refresh, default=str))
    else:
        logger.info("retention policies changed: %s", ", ".join(report.policies_aligned) or "none")
        for job in report.jobs_run:
            logger.info("ran %s", job)
        for health in report.jobs:
            if health.failing:
                logger.warning("TimescaleDB job failing: %s", health.describe())
    logger.info(
        "deadletter_summary: %d minutes older than %d days pruned",
        report.deadletters_pruned,
        settings.storage.deadletter_retention_days,
    )
    if not args.no_coverage:
        logger.info("coverage_daily: %d rows for today", report.coverage_rows)
    for note in report.not_allowed:
        logger.warning("not allowed for this role: %s", note)
    return 1 if report.not_allowed else 0


def _coverage_snapshot(args: argparse.Namespace, settings: Settings) -> int:
    del args
    now = datetime.now(UTC)
    with connect(settings.db) as conn:
        rows = coverage.snapshot(conn, load_catalog(), now)
    logger.info("coverage_daily: %d rows for %s", rows, coverage.province_day(now))
    return 0


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    if args.hours < 1:
        raise ConfigError("--hours", "must be at least 1")
    hi = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    lo = hi - timedelta(hours=args.hours + 1)
    with connect(settings.db) as conn:
        result = verify.compare(conn, lo, hi)
    for relation, n in result.buckets.items():
        logger.info("%s: %d buckets compared", relation, n)
    for m in result.mismatches[:50]:
        logger.error("%s", m)
    if result.mismatches:
        logger.error("%d buckets differ", len(result.mismatches))
        return 1
    logger.info("rollups equal the recomputation from readings over %s .. %s", lo, hi)
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings.db) as conn:
        info = storage_status(conn)
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(render_status(info))
    # timescale mode: a failing job (the server retries it with a backoff) is a failed status
    return 1 if any(j["failing"] for j in info["jobs"]) else 0


def render_status(info: dict[str, Any]) -> str:
    """The text form of :func:`storage_status`."""
    lines = [f"mode          {info['mode']}", f"migrations    {info['migrations']}"]
    for name, value in info["watermarks"].items():
        lines.append(f"watermark     {name}: {value}")
    for name, value in info["sizes"].items():
        lines.append(f"size          {name}: {value}")
    lines.extend(f"policy        {p}" for p in info["policies"])
    lines.extend(f"job           {j}" for j in info["job_lines"])
    return "\n".join(lines) + "\n"


def storage_status(conn: Any) -> dict[str, Any]:
    """What ``qilu storage status`` shows, as a dict."""
    mode = modes.current(conn)
    versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    info: dict[str, Any] = {
        "mode": mode.value,
        "migrations": ", ".join(f"{v:03d}" for v in versions),
        "watermarks": {},
        "sizes": {},
        "policies": [],
        "jobs": [],  # timescale mode: each job's last runs (storage/jobs.py)
        "job_lines": [],
    }
    if mode is StorageMode.POSTGRES:
        for name, wm, at in conn.execute(
            "SELECT name, watermark::text, refreshed_at::text FROM rollup_state ORDER BY name"
        ):
            info["watermarks"][name] = f"{wm} (refreshed {at})"
        for parent, n, size in conn.execute(
            "SELECT p.parent, count(i.inhrelid),"
            " pg_size_pretty(coalesce(sum(pg_total_relation_size(i.inhrelid)), 0))"
            " FROM partition_units p LEFT JOIN pg_inherits i"
            " ON i.inhparent = to_regclass(quote_ident(p.parent))"
            " GROUP BY p.parent ORDER BY p.parent"
        ):
            info["sizes"][parent] = f"{n} partitions, {size}"
    else:
        for name, n, size in conn.execute(
            "SELECT h.hypertable_name, h.num_chunks,"
            " pg_size_pretty(hypertable_size(format('%I.%I', h.hypertable_schema,"
            " h.hypertable_name)::regclass))"
            " FROM timescaledb_information.hypertables h"
            " WHERE h.hypertable_schema = current_schema()"
        ):
            info["sizes"][name] = f"{n} chunks, {size}"
        # executed without parameters: the percent signs above reach the server as written
        for _job, relation, proc, config in maintain.policy_jobs(conn):
            info["policies"].append(f"{relation}: {proc} {json.dumps(config)}")
        health = job_health(conn)
        info["jobs"] = [h.as_dict() for h in health]
        info["job_lines"] = [h.describe() for h in health]
    return info


def _set_password(args: argparse.Namespace, settings: Settings) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass(f"new password for {args.role}: ")
        if password != getpass.getpass("again: "):
            raise ConfigError("password", "the two entries differ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 12:
        raise ConfigError("password", "use at least 12 characters")
    with connect(settings.db, autocommit=True) as conn:
        hashed = conn.pgconn.encrypt_password(
            password.encode(), args.role.encode(), b"scram-sha-256"
        )
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(args.role), sql.Literal(hashed.decode())
            )
        )
    logger.info("password of %s set", args.role)
    return 0
