"""Alert rules as code (Grafana unified alerting), built with the SDK's alerting models.

Each rule is one query (SQL on the read-only database role, or PromQL) followed by two
server-side expressions: B = reduce(A, last), C = threshold(B). SQL rules return one numeric
column and text columns; Grafana turns each row into an alert instance labelled by the text
columns (one per target, or per city and sector).

Rules:
- ``qilu-target-behind``: a target's province value is below its trajectory, the straight line
  from its first value in ``coverage_daily`` to the threshold on the due date;
- ``qilu-site-silent``: sites that reported within the last day but none of whose devices is
  online now (per city and sector);
- ``qilu-devices-silent``: share of recently active devices silent beyond their kind's
  expected interval (per city and sector) above 5 %;
  both read the view ``device_connected`` (migration 066: today's registry in service and the
  one liveness rule coverage, the API and the dashboards use);
- ``qilu-consumer-lag``, ``qilu-dead-letters``, ``qilu-edge-drops``: from Prometheus;
- ``qilu-ingest-stalled``: the ingest's poll loop made no progress for 5 minutes (its
  watchdog should have restarted it first: docs/operations.md);
- ``qilu-storage-job-failing`` (timescale mode): the last run of a TimescaleDB background job
  of the platform failed and the server backs off before retrying (storage/jobs.py);
- ``qilu-wal-archive-stalled``: WAL segments wait to be archived and archiving has made no
  progress for 2 minutes (the query of ``qilu backup status``, storage/wal_archive.py), so a stall
  fires within 5 minutes; ``qilu-backup-too-old``: the newest backup finished more than 26
  hours ago (from ``qilu backup schedule``'s metrics), or no backup time is exported at all
  (the scheduler stopped, no backup yet). docs/operations.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from grafana_foundation_sdk.builders import alerting as balert
from grafana_foundation_sdk.builders import expr as bexpr
from grafana_foundation_sdk.builders import prometheus as bprom
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import alerting as galert
from grafana_foundation_sdk.models import dashboard as gdash

from dashboards.board import PromSpec
from dashboards.common import MET_SQL, TRAJECTORY_CTES, N, S, expected_sql, targets_cte
from dashboards.model import EXPR_UID, PG_UID, PROM_UID, SqlQueryBuilder, SqlSpec
from dashboards.pipeline import AGENT_DROPPED
from qilu.catalog import Catalog
from storage.wal_archive import ARCHIVE_SQL

FOLDER_UID = "qilu"
FOLDER_TITLE = "Qilu Telemetry"
EXPR = gdash.DataSourceRef(type_val=EXPR_UID, uid=EXPR_UID)

Op = Literal["gt", "lt"]


@dataclass(frozen=True, slots=True)
class AlertSpec:
    uid: str
    title: str
    group: str
    query: SqlSpec | PromSpec
    op: Op
    threshold: float
    for_: str
    summary: str
    description: str
    severity: str = "warning"
    lookback_s: int = 600
    no_data: Literal["OK", "NoData", "Alerting"] = "OK"


@dataclass
class AlertGroup:
    title: str
    interval_s: int
    specs: list[AlertSpec] = field(default_factory=list)


def _target_behind(catalog: Catalog) -> SqlSpec:
    sql = f"""WITH {targets_cte(catalog)},
{TRAJECTORY_CTES}
SELECT t.target_id AS "target_id", t.sector AS "sector",
  CASE WHEN {MET_SQL} THEN 0.0
       ELSE greatest({expected_sql("l.day")} - l.value, 0) / t.threshold * 100 END
    AS "shortfall_pct"
FROM targets t
JOIN latest l ON l.target_id = t.target_id
JOIN base b ON b.target_id = t.target_id"""
    return SqlSpec(sql, (("target_id", S), ("sector", S), ("shortfall_pct", N)))


SITE_SILENT = SqlSpec(
    """WITH recent AS (
  SELECT DISTINCT site_id FROM site_liveness_1h
  WHERE bucket > now() - interval '24 hours' AND devices_reporting > 0),
per_site AS (
  SELECT c.site_id, c.city_code, c.sector, count(*) FILTER (WHERE c.online) AS live
  FROM device_connected c
  JOIN recent r ON r.site_id = c.site_id
  GROUP BY c.site_id, c.city_code, c.sector)
SELECT p.city_code AS "city_code", p.sector AS "sector",
  count(*) FILTER (WHERE p.live = 0)::float8 AS "silent_sites"
FROM per_site p
GROUP BY p.city_code, p.sector""",
    (("city_code", S), ("sector", S), ("silent_sites", N)),
)

DEVICES_SILENT = SqlSpec(
    """SELECT c.city_code AS "city_code", c.sector AS "sector",
  100.0 * count(*) FILTER (WHERE c.state = 'offline') / count(*) AS "silent_pct"
FROM device_connected c
WHERE c.last_seen > now() - interval '7 days'
GROUP BY c.city_code, c.sector""",
    (("city_code", S), ("sector", S), ("silent_pct", N)),
)


STORAGE_JOB_FAILING = AlertSpec(
    "qilu-storage-job-failing",
    "TimescaleDB job failing",
    "pipeline",
    PromSpec("max by (relation, policy) (qilu_storage_job_failing)"),
    "gt",
    0.0,
    "10m",
    "{{ $labels.policy }} on {{ $labels.relation }} failed its last run; TimescaleDB retries "
    "it after a backoff",
    "The last run of a TimescaleDB background job of the platform (the rollup refresh, "
    "compression or retention) failed and is still the last one after 10 minutes: rollups, "
    "compression or retention fall behind while the server backs off (minutes to hours). "
    "`qilu storage status` shows the error; `qilu storage maintain --run-jobs` runs the jobs now.",
)


# the same rule as `qilu backup status` (backup.max_archive_lag_s, default 120 s): with the
# group's 60 s interval and 1 minute pending, a stall fires within 120 + 60 + 60 s < 5 minutes
WAL_ARCHIVE_STALLED = AlertSpec(
    "qilu-wal-archive-stalled",
    "WAL archiving stalled",
    "pipeline",
    SqlSpec(
        f"WITH archiver AS (\n{ARCHIVE_SQL})\n"
        'SELECT archive_lag_s AS "archive_lag_s" FROM archiver',
        (("archive_lag_s", N),),
    ),
    "gt",
    120.0,
    "1m",
    "WAL archiving has made no progress for {{ humanize $values.B.Value }} s",
    "Completed WAL segments wait and none has reached the backup repository for over 2 "
    "minutes: a restore can only go back to the last archived segment, and pg_wal grows. "
    "`qilu backup status` shows the failure; pgBackRest's log says why (docs/operations.md).",
    severity="critical",
)
BACKUP_TOO_OLD = AlertSpec(
    "qilu-backup-too-old",
    "Last database backup too old",
    "pipeline",
    # no series (the scheduler stopped, so Prometheus has nothing to scrape, or no backup
    # ever finished) counts as infinitely old: the alert fires then too
    PromSpec(
        'time() - (max(qilu_backup_last_success_timestamp_seconds{type="any"}) or vector(-Inf))'
    ),
    "gt",
    26 * 3600.0,
    "10m",
    "The newest database backup finished {{ humanizeDuration $values.B.Value }} ago "
    "(+Inf: none known)",
    "No backup finished in the last 26 hours (a daily differential is scheduled), or "
    "`qilu backup schedule` exports no backup time (stopped, or no backup yet): "
    "`qilu backup status`; is `qilu backup schedule` running? (docs/operations.md)",
    no_data="Alerting",
)


def groups(catalog: Catalog) -> list[AlertGroup]:
    return [
        AlertGroup(
            "coverage",
            3600,
            [
                AlertSpec(
                    "qilu-target-behind",
                    "Coverage target behind its trajectory",
                    "coverage",
                    _target_behind(catalog),
                    "gt",
                    0.0,
                    "1h",
                    "{{ $labels.target_id }} is {{ humanize $values.B.Value }} % of its "
                    "threshold behind its trajectory",
                    "The province value in coverage_daily is below the straight line from the "
                    "target's first recorded value to its threshold on the due date.",
                    lookback_s=86400,
                )
            ],
        ),
        AlertGroup(
            "liveness",
            300,
            [
                AlertSpec(
                    "qilu-site-silent",
                    "Sites silent beyond their interval",
                    "liveness",
                    SITE_SILENT,
                    "gt",
                    0.0,
                    "10m",
                    "{{ humanize $values.B.Value }} {{ $labels.sector }} site(s) in "
                    "{{ $labels.city_code }} went silent",
                    "Sites that reported within the last 24 hours but have no device online "
                    "now (newest reading older than the kind's expected interval).",
                ),
                AlertSpec(
                    "qilu-devices-silent",
                    "Devices silent beyond their interval",
                    "liveness",
                    DEVICES_SILENT,
                    "gt",
                    5.0,
                    "10m",
                    "{{ humanize $values.B.Value }} % of {{ $labels.sector }} devices in "
                    "{{ $labels.city_code }} are silent",
                    "Share of devices seen within 7 days whose newest reading is older than "
                    "their kind's expected interval.",
                ),
            ],
        ),
        AlertGroup(
            "pipeline",
            60,
            [
                AlertSpec(
                    "qilu-consumer-lag",
                    "Ingest consumer lag",
                    "pipeline",
                    PromSpec("sum by (topic) (qilu_ingest_lag_records)"),
                    "gt",
                    50000.0,
                    "5m",
                    "{{ $labels.topic }} is {{ humanize $values.B.Value }} records behind",
                    "The ingest consumer group is more than 50,000 records behind the end of "
                    "a readings topic for 5 minutes: ingest is down or too slow.",
                    severity="critical",
                ),
                AlertSpec(
                    "qilu-ingest-stalled",
                    "Ingest poll loop stalled",
                    "pipeline",
                    PromSpec("time() - max(qilu_ingest_loop_progress_timestamp_seconds)"),
                    "gt",
                    300.0,
                    "2m",
                    "The ingest's poll loop has made no progress for "
                    "{{ humanize $values.B.Value }} s",
                    "No poll of the ingest consumer has returned for over 5 minutes, although "
                    "the process still answers Prometheus: its watchdog (ingest.stall_timeout_s) "
                    "should have restarted it. Its stacks: `kill -USR1 PID` (docs/operations.md).",
                    severity="critical",
                ),
                AlertSpec(
                    "qilu-dead-letters",
                    "Dead-letter rate",
                    "pipeline",
                    PromSpec(
                        "sum(rate(qilu_ingest_dead_letters_total[5m])) "
                        "/ sum(rate(qilu_ingest_records_total[5m]))"
                    ),
                    "gt",
                    0.01,
                    "10m",
                    "{{ humanizePercentage $values.B.Value }} of records go to the dead-letter "
                    "topic",
                    "More than 1 % of consumed records produced a dead letter for 10 minutes.",
                ),
                AlertSpec(
                    "qilu-edge-drops",
                    "Edge agents dropping readings",
                    "pipeline",
                    PromSpec(f"sum by (agent) (increase({AGENT_DROPPED}[10m]))"),
                    "gt",
                    0.0,
                    "0s",
                    "{{ $labels.agent }} dropped {{ humanize $values.B.Value }} readings",
                    "An agent's buffer was full and evicted readings: they are missing "
                    "downstream (see the agent's gap records).",
                    severity="critical",
                ),
                STORAGE_JOB_FAILING,
                WAL_ARCHIVE_STALLED,
                BACKUP_TOO_OLD,
            ],
        ),
    ]


def all_specs(catalog: Catalog) -> list[AlertSpec]:
    return [s for g in groups(catalog) for s in g.specs]


def _query_model(spec: AlertSpec) -> cogbuilder.Builder[cogvariants.Dataquery]:
    if isinstance(spec.query, SqlSpec):
        return SqlQueryBuilder(spec.query, "A")
    return (
        bprom.Dataquery()
        .expr(spec.query.expr)
        .ref_id("A")
        .instant()
        .datasource(gdash.DataSourceRef(type_val="prometheus", uid=PROM_UID))
    )


def rule(spec: AlertSpec) -> balert.Rule:
    ds = PG_UID if isinstance(spec.query, SqlSpec) else PROM_UID
    return (
        balert.Rule(spec.title)
        .uid(spec.uid)
        .folder_uid(FOLDER_UID)
        .rule_group(spec.group)
        .org_id(1)
        .condition("C")
        .queries(
            [
                balert.Query("A")
                .datasource_uid(ds)
                .relative_time_range(galert.RelativeTimeRange(from_val=spec.lookback_s, to=0))
                .model(_query_model(spec)),
                balert.Query("B")
                .datasource_uid(EXPR_UID)
                .model(
                    bexpr.TypeReduce()
                    .ref_id("B")
                    .datasource(EXPR)
                    .expression("A")
                    .reducer("last")
                    .settings(bexpr.ExprTypeReduceSettings().mode("dropNN"))
                ),
                balert.Query("C")
                .datasource_uid(EXPR_UID)
                .model(
                    bexpr.TypeThreshold()
                    .ref_id("C")
                    .datasource(EXPR)
                    .expression("B")
                    .conditions(
                        [
                            bexpr.ExprTypeThresholdConditions().evaluator(
                                bexpr.ExprTypeThresholdConditionsEvaluator()
                                .type(spec.op)
                                .params([spec.threshold])
                            )
                        ]
                    )
                ),
            ]
        )
        .for_val(spec.for_)
        .no_data_state(spec.no_data)
        .exec_err_state("Error")
        .labels({"severity": spec.severity, "platform": "qilu"})
        .annotations({"summary": spec.summary, "description": spec.description})
        .is_paused(False)
    )


def rule_groups(catalog: Catalog) -> list[galert.RuleGroup]:
    """The groups as Grafana's provisioning HTTP API takes them (PUT .../rule-groups/{title})."""
    return [
        balert.RuleGroup(g.title)
        .folder_uid(FOLDER_UID)
        .interval(g.interval_s)
        .rules([rule(s) for s in g.specs])
        .build()
        for g in groups(catalog)
    ]
