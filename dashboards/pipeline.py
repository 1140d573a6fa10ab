"""Pipeline health from Prometheus: edge agents, Kafka consumer lag, ingest, database, API.

Every metric name used here is listed in :data:`METRICS` with the component that exports it,
so a test can check each one against what the running exporters declare. Two panels read
PostgreSQL instead: what the ingest refused, by reason and by agent, from the summary table it
writes with each batch (``deadletter_summary``, docs/adr/0012-dead-letters.md).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as bcommon
from grafana_foundation_sdk.builders import dashboard as bdash
from grafana_foundation_sdk.builders import stat
from grafana_foundation_sdk.models import common as gcommon
from grafana_foundation_sdk.models import dashboard as gdash

from dashboards.board import Board, BuiltDashboard, PromSpec, thresholds
from dashboards.common import sector_variable, table_panel, ts_panel
from dashboards.model import PROM, ColType, SqlSpec
from storage.coverage import OPERATOR_LINK_HEALTHY

UID = "qilu-pipeline"

# metric -> component that exports it (edge-agent/edge_agent/agent.py, stream/metrics.py,
# api/app.py). Buffer metrics come from the agent's store-and-forward buffer.
AGENT_BUFFER_DEPTH = "qilu_agent_buffer_readings"
AGENT_BUFFER_OLDEST = "qilu_agent_oldest_unsent_seconds"
AGENT_DROPPED = "qilu_agent_readings_dropped_total"
STORAGE_JOB_FAILING = "qilu_storage_job_failing"
STORAGE_JOB_BACKOFF = "qilu_storage_job_backoff_seconds"
METRICS: dict[str, str] = {
    AGENT_BUFFER_DEPTH: "agent",
    AGENT_BUFFER_OLDEST: "agent",
    AGENT_DROPPED: "agent",
    "qilu_agent_readings_in_total": "agent",
    "qilu_agent_readings_sent_total": "agent",
    "qilu_agent_send_errors_total": "agent",
    "qilu_ingest_lag_records": "ingest",
    "qilu_ingest_readings_total": "ingest",
    "qilu_ingest_records_total": "ingest",
    "qilu_ingest_dead_letters_total": "ingest",
    "qilu_ingest_flush_seconds": "ingest",
    "qilu_ingest_retries_total": "ingest",
    "qilu_ingest_last_commit_timestamp_seconds": "ingest",
    "qilu_ingest_loop_progress_timestamp_seconds": "ingest",  # qilu-ingest-stalled
    STORAGE_JOB_FAILING: "ingest",  # the maintenance loop runs in ingest (storage/jobs.py)
    STORAGE_JOB_BACKOFF: "ingest",
    "qilu_api_request_seconds": "api",
    "qilu_api_requests_total": "api",
    # the T/CEC 102 endpoint runs in the API (interconnect/tcec102/server.py)
    "qilu_operator_requests_total": "api",
    "qilu_operator_answer_seconds": "api",
    # `qilu backup schedule` (ops/backup_cli.py), for qilu-backup-too-old
    "qilu_backup_last_success_timestamp_seconds": "backup",
}

AGENT = 'agent=~"$agent"'
# a whole refused envelope counts once, readings refused one by one count each
REFUSED = "CASE WHEN device_id = '' THEN records ELSE refused_readings END"
REFUSED_BY_REASON = SqlSpec(
    f"""SELECT $__timeGroupAlias(bucket, $__interval), reason AS "metric",
  sum({REFUSED}) AS "refused"
FROM deadletter_summary
WHERE $__timeFilter(bucket)
GROUP BY 1, 2
ORDER BY 1""",
    (("time", ColType.TIME), ("metric", ColType.TEXT), ("refused", ColType.NUMBER)),
    "time_series",
)
REFUSED_BY_AGENT = SqlSpec(
    f"""SELECT agent_id AS "agent", reason AS "reason", sum(records) AS "records",
  sum(refused_readings) AS "refused_readings", count(DISTINCT nullif(device_id, '')) AS "devices",
  max(bucket) AS "last"
FROM deadletter_summary
WHERE $__timeFilter(bucket)
GROUP BY 1, 2
ORDER BY sum({REFUSED}) DESC, 1, 2
LIMIT 100""",
    (
        ("agent", ColType.TEXT),
        ("reason", ColType.TEXT),
        ("records", ColType.NUMBER),
        ("refused_readings", ColType.NUMBER),
        ("devices", ColType.NUMBER),
        ("last", ColType.TIME),
    ),
)
TOPIC = 'topic=~".*[.]readings[.]${sector:regex}"'
# T/CEC 102 operators' links, by the coverage rule (storage/coverage.py, docs/adr/0015)
OPERATOR_LINKS = SqlSpec(
    """SELECT o.operator_id AS "operator", o.name AS "name",
  (SELECT count(*) FROM operator_connectors c WHERE c.operator_id = o.operator_id) AS "connectors",
  CASE WHEN {healthy}
    THEN 1 ELSE 0 END AS "healthy",
  l.last_push AS "last push", l.last_pull AS "last pull", l.token_expires_at AS "token expires",
  l.failures AS "failures", l.last_failure_reason AS "last failure"
FROM operators o LEFT JOIN operator_links l USING (operator_id)
WHERE o.revoked_at IS NULL
ORDER BY 4, 1
LIMIT 500""".replace("{healthy}", OPERATOR_LINK_HEALTHY.format(l="l", o="o", now="now()")),
    (
        ("operator", ColType.TEXT),
        ("name", ColType.TEXT),
        ("connectors", ColType.NUMBER),
        ("healthy", ColType.NUMBER),
        ("last push", ColType.TIME),
        ("last pull", ColType.TIME),
        ("token expires", ColType.TIME),
        ("failures", ColType.NUMBER),
        ("last failure", ColType.TEXT),
    ),
)


def build() -> BuiltDashboard:
    board = (
        Board(
            UID,
            "Qilu — Pipeline health",
            description=(
                "Edge agents (buffer, oldest unsent reading, drops), Kafka consumer lag, ingest "
                "and dead-letter rates, database write latency and API latency (Prometheus)."
            ),
            tags=["pipeline"],
            time_from="now-3h",
            refresh="30s",
        )
        .variable(sector_variable())
        .variable(
            bdash.QueryVariable("agent")
            .label("Agent")
            .datasource(PROM)
            .query("label_values(qilu_agent_readings_in_total, agent)")
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .refresh(gdash.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(gdash.VariableSort.ALPHABETICAL_ASC)
            .current(gdash.VariableOption(selected=True, text=["All"], value=["$__all"]))
        )
    )

    board.row("Targets")
    board.prom(
        stat.Panel()
        .title("Scrape targets up")
        .unit("bool_yes_no")
        .description("1 = Prometheus reaches the component's /metrics endpoint.")
        .span(24)
        .height(4)
        .thresholds(thresholds((None, "red"), (1.0, "green")))
        .reduce_options(bcommon.ReduceDataOptions().calcs(["lastNotNull"]))
        .graph_mode(gcommon.BigValueGraphMode.NONE)
        .color_mode(gcommon.BigValueColorMode.BACKGROUND),
        PromSpec('up{job=~"qilu-.*|prometheus"}', "{{job}} {{instance}}"),
    )

    board.row("Edge agents")
    board.prom(
        ts_panel("Buffer depth (readings not yet acknowledged)", "short", span=8),
        PromSpec(f"sum by (agent) ({AGENT_BUFFER_DEPTH}{{{AGENT}}})", "{{agent}}"),
    )
    board.prom(
        ts_panel(
            "Oldest unsent reading",
            "s",
            steps=((None, "green"), (60.0, "orange"), (600.0, "red")),
            span=8,
        ),
        PromSpec(f"max by (agent) ({AGENT_BUFFER_OLDEST}{{{AGENT}}})", "{{agent}}"),
    )
    board.prom(
        ts_panel(
            "Readings dropped at the edge",
            "short",
            description="Readings evicted from a full buffer (each one is missing downstream).",
            steps=((None, "green"), (1.0, "red")),
            span=8,
        ),
        PromSpec(
            f"sum by (agent) (increase({AGENT_DROPPED}{{{AGENT}}}[$__rate_interval]))",
            "{{agent}}",
        ),
    )
    board.prom(
        ts_panel("Readings in and sent", "reqps", span=12),
        PromSpec(
            f"sum(rate(qilu_agent_readings_in_total{{{AGENT}}}[$__rate_interval]))",
            "collected",
        ),
        PromSpec(
            f"sum(rate(qilu_agent_readings_sent_total{{{AGENT}}}[$__rate_interval]))",
            "acknowledged by Kafka",
        ),
    )
    board.prom(
        ts_panel(
            "Send errors (retried)", "reqps", steps=((None, "green"), (0.1, "orange")), span=12
        ),
        PromSpec(
            f"sum by (agent) (rate(qilu_agent_send_errors_total{{{AGENT}}}[$__rate_interval]))",
            "{{agent}}",
        ),
    )

    board.row("Kafka and ingest")
    board.prom(
        ts_panel(
            "Consumer lag",
            "short",
            description="Records behind the end of each readings topic (ingest consumer group).",
            steps=((None, "green"), (10000.0, "orange"), (50000.0, "red")),
            span=8,
        ),
        PromSpec(f"sum by (topic) (qilu_ingest_lag_records{{{TOPIC}}})", "{{topic}}"),
    )
    board.prom(
        ts_panel("Ingest rate", "reqps", span=8, stacked=True),
        PromSpec(
            "sum by (outcome) (rate(qilu_ingest_readings_total[$__rate_interval]))",
            "{{outcome}}",
        ),
    )
    board.prom(
        ts_panel(
            "Dead letters",
            "reqps",
            steps=((None, "green"), (0.1, "orange"), (1.0, "red")),
            span=8,
        ),
        PromSpec(
            "sum by (reason) (rate(qilu_ingest_dead_letters_total[$__rate_interval]))",
            "{{reason}}",
        ),
    )
    board.prom(
        ts_panel(
            "Database write latency per batch",
            "s",
            steps=((None, "green"), (0.5, "orange"), (1.0, "red")),
            span=8,
        ),
        PromSpec(
            "histogram_quantile(0.5, sum by (le) "
            "(rate(qilu_ingest_flush_seconds_bucket[$__rate_interval])))",
            "p50",
        ),
        PromSpec(
            "histogram_quantile(0.99, sum by (le) "
            "(rate(qilu_ingest_flush_seconds_bucket[$__rate_interval])))",
            "p99",
        ),
    )
    board.prom(
        ts_panel("Ingest retries", "reqps", steps=((None, "green"), (0.01, "orange")), span=8),
        PromSpec("sum by (cause) (rate(qilu_ingest_retries_total[$__rate_interval]))", "{{cause}}"),
    )
    board.prom(
        ts_panel("Seconds since the last offset commit", "s", span=8),
        PromSpec("time() - max(qilu_ingest_last_commit_timestamp_seconds)", "ingest"),
    )

    board.sql(
        ts_panel(
            "Refused by reason",
            "short",
            description=(
                "What the ingest refused per interval, by reason, from the summary it writes "
                "with each batch (counted once even when a batch is read again): a whole "
                "envelope (malformed, unsigned, unknown_agent...) counts once, readings refused "
                "one by one (unknown_device, value_out_of_range...) count each. "
                "`qilu deadletters summary` and `tail` tell more."
            ),
            steps=((None, "green"), (1.0, "orange")),
            span=12,
            stacked=True,
        ),
        REFUSED_BY_REASON,
    )
    board.sql(
        table_panel("Refused by agent and reason (time range)", span=12).description(
            "Dead-letter records and refused readings per agent and reason in the time range; "
            "agent empty when the record did not say. `qilu deadletters show` decodes one."
        ),
        REFUSED_BY_AGENT,
    )
    board.row("API")
    board.prom(
        ts_panel(
            "API latency (p99 by route)",
            "s",
            steps=((None, "green"), (0.02, "orange"), (0.1, "red")),
        ),
        PromSpec(
            "histogram_quantile(0.99, sum by (le, route) "
            "(rate(qilu_api_request_seconds_bucket[$__rate_interval])))",
            "{{route}}",
        ),
    )
    board.prom(
        ts_panel("API requests by status", "reqps", stacked=True),
        PromSpec("sum by (status) (rate(qilu_api_requests_total[$__rate_interval]))", "{{status}}"),
    )
    _storage_jobs(board)
    _operators(board)
    return board.build()


def _operators(board: Board) -> None:
    """T/CEC 102 charging operators: their links (SQL) and the endpoint's answers."""
    board.row("Charging operators (T/CEC 102)")
    board.sql(
        table_panel("Operator links", span=24).description(
            "Each active operator: connectors linked to piles; healthy (1) while a push was "
            "accepted or a pull succeeded within twice its pull interval, the rule under which "
            "its quiet piles count as connected; failures are refused requests and failed "
            "pulls. `qilu operators show` tells more."
        ),
        OPERATOR_LINKS,
    )
    board.prom(
        ts_panel(
            "Operator requests by interface and result",
            "reqps",
            description="Ret codes of the standard (0 accepted, -1 busy, 4001-4004 refused) "
            "and HTTP 413/429.",
            stacked=True,
            span=12,
        ),
        PromSpec(
            "sum by (interface, result) (rate(qilu_operator_requests_total[$__rate_interval]))",
            "{{interface}} {{result}}",
        ),
    )
    board.prom(
        ts_panel(
            "Operator answer time (p99)",
            "s",
            description="Until the answer, Kafka's acknowledgement of an accepted push included.",
            steps=((None, "green"), (0.05, "orange"), (0.25, "red")),
            span=12,
        ),
        PromSpec(
            "histogram_quantile(0.99, sum by (le, interface) "
            "(rate(qilu_operator_answer_seconds_bucket[$__rate_interval])))",
            "{{interface}}",
        ),
    )


JOB_LEGEND = "{{policy}} on {{relation}}"


def _storage_jobs(board: Board) -> None:
    """timescale mode: the server's background jobs of the platform (storage/jobs.py)."""
    board.row("Storage jobs (timescale mode)")
    board.prom(
        ts_panel(
            "TimescaleDB jobs failing",
            "short",
            description=(
                "1 while the last run of a job (the rollup refresh, compression, retention) "
                "failed; the server retries after a backoff. `qilu storage status` shows the "
                "error. Empty in postgres mode."
            ),
            steps=((None, "green"), (1.0, "red")),
            min_val=0.0,
        ),
        PromSpec(f"max by (relation, policy) ({STORAGE_JOB_FAILING})", JOB_LEGEND),
    )
    board.prom(
        ts_panel(
            "Backoff of failing jobs",
            "s",
            description="How much later than its schedule a failing job's next try comes.",
            steps=((None, "green"), (300.0, "orange"), (3600.0, "red")),
            min_val=0.0,
        ),
        PromSpec(f"max by (relation, policy) ({STORAGE_JOB_BACKOFF})", JOB_LEGEND),
    )
