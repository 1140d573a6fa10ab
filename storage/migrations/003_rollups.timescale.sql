-- 003 (timescale mode): the rollups of ADR 0002 as continuous aggregates.
--
-- readings_1m      per device, metric and minute, from the raw hypertable
-- readings_1h      per device, metric and hour, from readings_1m (hierarchical)
-- site_liveness_1h per site and hour, from readings_1m joined with the registry
--
-- All three are real-time (materialized_only = false): buckets newer than the last refresh
-- are computed from the level below at query time, so readers always see every stored row.
-- A refresh re-materializes whole buckets from stored rows, so a redelivered reading (which
-- the primary key refused) never counts twice. Refresh policies look back 8 days: late data
-- from a device offline up to 7 days is in the rollups after the next run.

CREATE MATERIALIZED VIEW readings_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT device_pk,
       metric_id,
       time_bucket(INTERVAL '1 minute', ts) AS bucket,
       count(*) AS n,
       min(value) AS min,
       max(value) AS max,
       avg(value) AS avg,
       last(value, ts) AS last
FROM readings
GROUP BY device_pk, metric_id, time_bucket(INTERVAL '1 minute', ts)
WITH NO DATA;

CREATE MATERIALIZED VIEW readings_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT device_pk,
       metric_id,
       time_bucket(INTERVAL '1 hour', bucket) AS bucket,
       sum(n)::bigint AS n,
       min(min) AS min,
       max(max) AS max,
       sum(avg * n) / sum(n) AS avg,
       last(last, bucket) AS last
FROM readings_1m
GROUP BY device_pk, metric_id, time_bucket(INTERVAL '1 hour', bucket)
WITH NO DATA;

CREATE MATERIALIZED VIEW site_liveness_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT d.site_id,
       time_bucket(INTERVAL '1 hour', r.bucket) AS bucket,
       count(DISTINCT r.device_pk)::integer AS devices_reporting,
       sum(r.n)::bigint AS readings
FROM readings_1m r
JOIN devices d ON d.device_pk = r.device_pk
GROUP BY d.site_id, time_bucket(INTERVAL '1 hour', r.bucket)
WITH NO DATA;

-- Refresh every minute; leave the bucket in progress to the real-time part.
SELECT add_continuous_aggregate_policy('readings_1m',
    start_offset => INTERVAL '8 days', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('readings_1h',
    start_offset => INTERVAL '8 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('site_liveness_1h',
    start_offset => INTERVAL '8 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '1 minute');

-- The minute rollup is large (about one row per two raw readings for charging piles):
-- compress it once no refresh can touch it any more (after the 8-day window).
ALTER MATERIALIZED VIEW readings_1m SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_pk, metric_id',
    timescaledb.compress_orderby = 'bucket DESC'
);
SELECT add_compression_policy('readings_1m', compress_after => INTERVAL '10 days');

SELECT add_retention_policy('readings_1m', drop_after => INTERVAL '90 days');
SELECT add_retention_policy('readings_1h', drop_after => INTERVAL '730 days');
SELECT add_retention_policy('site_liveness_1h', drop_after => INTERVAL '730 days');
