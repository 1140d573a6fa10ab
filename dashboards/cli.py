"""``qilu dashboards``: Grafana dashboards, data sources and alert rules as code."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from qilu.errors import ConfigError, ServiceError
from qilu.settings import REPO_ROOT, Settings

logger = logging.getLogger(__name__)

DEFAULT_OUT = REPO_ROOT / "dashboards" / "generated"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "dashboards",
        help="build Grafana dashboards, data sources and alert rules; push them to Grafana",
        description=(
            "Dashboards (province coverage, charging, substations, ranches, pipeline health) and "
            "alert rules are Python code in dashboards/, built with grafana-foundation-sdk. "
            "`build` writes them as Grafana provisioning files; `sync` pushes the same objects "
            "to a running Grafana through its HTTP API."
        ),
    )
    s = p.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True)

    b = s.add_parser(
        "build",
        help="write dashboard JSON and provisioning YAML (data sources, dashboards, alerts)",
        description=(
            "Writes dashboards/<uid>.json and provisioning/{datasources,dashboards,alerting}/"
            "qilu.yaml under --out (default dashboards/generated, which docker-compose.yml "
            "mounts into Grafana). Files that no longer belong are removed. The data source "
            "password is written as ${QILU_GRAFANA_DB_PASSWORD}, expanded by Grafana."
        ),
    )
    b.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    b.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the files under --out differ from what the code builds",
    )
    b.set_defaults(handler=_build)

    y = s.add_parser(
        "sync",
        help="push folder, data sources, dashboards and alert rules to Grafana (idempotent)",
        description=(
            "Reads each object from Grafana and writes it only when missing or different; "
            "prints one line per object (created / updated / unchanged). Grafana URL and "
            "service-account token come from QILU_GRAFANA__URL and QILU_GRAFANA__TOKEN; the "
            "read-only database role's password from QILU_GRAFANA__DB_PASSWORD."
        ),
    )
    y.add_argument("--dry-run", action="store_true", help="only report what would change")
    y.add_argument(
        "--reset-passwords",
        action="store_true",
        help="resend the data source password even if Grafana already stores one",
    )
    y.set_defaults(handler=_sync)

    r = s.add_parser(
        "db-role",
        help="set the password of the read-only database role Grafana logs in with",
        description=(
            "The migrations create the role qilu_grafana without a password (it cannot log in). "
            "This sets its password from QILU_GRAFANA__DB_PASSWORD, connecting with the "
            "QILU_DB__* administrator settings; docker-compose.yml runs it after `qilu migrate`."
        ),
    )
    r.set_defaults(handler=_db_role)

    q = s.add_parser(
        "queries",
        help="list every panel and alert query (dashboard, panel, kind)",
        description="One line per query: dashboard uid, panel title, panel type, language.",
    )
    q.set_defaults(handler=_queries)


def _build(args: argparse.Namespace, settings: Settings) -> int:
    del settings
    from dashboards.provisioning import render
    from qilu.catalog import load_catalog

    files = render(load_catalog())
    out: Path = args.out
    stale = _differences(out, files)
    if args.check:
        for line in stale:
            sys.stdout.write(line + "\n")
        if stale:
            sys.stdout.write("generated files are out of date: run `qilu dashboards build`\n")
            return 1
        sys.stdout.write(f"{len(files)} files under {out} are up to date\n")
        return 0
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for extra in _extra_files(out, files):
        extra.unlink()
    sys.stdout.write(f"wrote {len(files)} files to {out} ({len(stale)} changed)\n")
    for line in stale:
        sys.stdout.write(f"  {line}\n")
    return 0


def _extra_files(out: Path, files: dict[str, str]) -> list[Path]:
    if not out.exists():
        return []
    return sorted(
        p
        for p in out.rglob("*")
        if p.is_file() and p.suffix in (".json", ".yaml") and str(p.relative_to(out)) not in files
    )


def _differences(out: Path, files: dict[str, str]) -> list[str]:
    lines = []
    for rel, text in sorted(files.items()):
        path = out / rel
        if not path.exists():
            lines.append(f"new      {rel}")
        elif path.read_text(encoding="utf-8") != text:
            lines.append(f"changed  {rel}")
    lines.extend(f"removed  {p.relative_to(out)}" for p in _extra_files(out, files))
    return lines


def _sync(args: argparse.Namespace, settings: Settings) -> int:
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException
    from niquests.exceptions import RequestException

    from dashboards.provisioning import DataSources
    from dashboards.sync import Change, Syncer, summary
    from qilu.catalog import load_catalog

    g = settings.grafana
    token = g.token.get_secret_value()
    if not token:
        raise ConfigError(
            "grafana.token", "set QILU_GRAFANA__TOKEN to a Grafana service-account token"
        )
    password = g.db_password.get_secret_value()
    if not password:
        raise ConfigError(
            "grafana.db_password",
            "set QILU_GRAFANA__DB_PASSWORD to the password of the read-only role qilu_grafana",
        )
    ds = DataSources(
        pg_host=g.db_url or f"{settings.db.host}:{settings.db.port}",
        pg_database=settings.db.name,
        pg_user=g.db_user,
        pg_password=password,
        pg_sslmode="disable" if settings.db.host in ("127.0.0.1", "localhost") else "require",
        prometheus_url=g.prometheus_url,
    )
    api = GrafanaApi.from_url(g.url, credential=token, timeout=g.timeout_s)

    def report(change: Change) -> None:
        sys.stdout.write(change.line() + "\n")
        sys.stdout.flush()

    verb = "would sync" if args.dry_run else "syncing"
    sys.stdout.write(f"{verb} to {g.url}\n")
    syncer = Syncer(
        api,
        load_catalog(),
        ds,
        dry_run=args.dry_run,
        reset_passwords=args.reset_passwords,
        report=report,
    )
    try:
        changes = syncer.run()
    except GrafanaException as exc:
        raise ServiceError(f"Grafana at {g.url} refused a request: {exc}") from exc
    except RequestException as exc:
        raise ServiceError(f"cannot reach Grafana at {g.url}: {exc}") from exc
    sys.stdout.write(summary(changes) + ("  (dry run: nothing written)" if args.dry_run else ""))
    sys.stdout.write("\n")
    return 0


def _queries(args: argparse.Namespace, settings: Settings) -> int:
    del args, settings
    from dashboards.alerts import all_specs
    from dashboards.model import SqlSpec
    from dashboards.provisioning import all_dashboards
    from qilu.catalog import load_catalog

    catalog = load_catalog()
    for built in all_dashboards(catalog):
        for q in built.queries:
            lang = "sql" if isinstance(q.query, SqlSpec) else "promql"
            sys.stdout.write(f"{q.dashboard:<18} {q.panel_type:<10} {lang:<6} {q.panel}\n")
    for a in all_specs(catalog):
        lang = "sql" if isinstance(a.query, SqlSpec) else "promql"
        sys.stdout.write(f"{'alert:' + a.group:<18} {'rule':<10} {lang:<6} {a.title}\n")
    return 0


def _db_role(args: argparse.Namespace, settings: Settings) -> int:
    del args
    from psycopg import sql

    from dashboards.provisioning import GRAFANA_ROLE
    from storage.db import connect

    password = settings.grafana.db_password.get_secret_value()
    if not password:
        raise ConfigError(
            "grafana.db_password", "set QILU_GRAFANA__DB_PASSWORD to the role's new password"
        )
    with connect(settings.db, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (GRAFANA_ROLE,))
        found = row.fetchone()
        if not found or not found[0]:
            raise ConfigError("grafana.db_user", f"role {GRAFANA_ROLE} missing: run `qilu migrate`")
        conn.execute(
            sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                sql.Identifier(GRAFANA_ROLE), sql.Literal(password)
            )
        )
    logger.info("password of database role %s set", GRAFANA_ROLE)
    return 0
