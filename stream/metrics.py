"""Prometheus metrics of the ingest consumer (numbers go here, not to the log)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter("qilu_ingest_records_total", "Kafka records consumed, by outcome", ["outcome"])
READINGS = Counter(
    "qilu_ingest_readings_total",
    "Readings seen by ingest: stored, duplicate (already stored) or rejected",
    ["outcome"],
)
DEAD_LETTERS = Counter(
    "qilu_ingest_dead_letters_total", "Dead-letter records produced, by reason", ["reason"]
)
REJECTED = Counter(
    "qilu_ingest_rejected_total",
    "Readings and gap records refused inside a dead-lettered envelope, by reason "
    "(too_old, conflicting_duplicate, bad_timestamp, ...: stream/validate.py)",
    ["reason"],
)
FLUSH_SECONDS = Histogram(
    "qilu_ingest_flush_seconds",
    "Database transaction time per flushed batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RECORD_AGE = Histogram(
    "qilu_ingest_record_age_seconds",
    "Time since the broker appended a record (its LogAppendTime) when the ingest had polled it"
    " (stage=polled), stored its readings (stage=stored: the database transaction committed)"
    " and committed its offset (stage=committed): where produce-to-stored latency goes",
    ["stage"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10),
)
RETRIES = Counter(
    "qilu_ingest_retries_total", "Batches retried after a database or broker failure", ["cause"]
)
LAG = Gauge("qilu_ingest_lag_records", "Records behind the partition end", ["topic", "partition"])
LAST_COMMIT = Gauge(
    "qilu_ingest_last_commit_timestamp_seconds", "Unix time of the last offset commit"
)
LOOP_PROGRESS = Gauge(
    "qilu_ingest_loop_progress_timestamp_seconds",
    "Unix time the poll loop last made progress (a poll returned; the stall watchdog's beat)",
)
REPLAY_LOST = Counter(
    "qilu_ingest_replay_lost_records",
    "Records between the database's stored offset and the broker's first retained one when "
    "the ingest resumed from the database (a restore or failover older than Kafka's "
    "retention): never stored, lost with the database",
    ["topic", "partition"],
)
