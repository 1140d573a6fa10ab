-- 007 (timescale mode): the rollups over a time range, the same functions as in postgres mode
-- (see 007_rollup_ranges.postgres.sql), so readers run one SQL text in both modes:
-- qilu_readings_1m(from, to) returns the rows of readings_1m with from <= bucket < to. Here
-- they are thin wrappers: the continuous aggregates prune chunks by themselves. Plain SQL,
-- inlined by the planner, with the caller's rights.

CREATE FUNCTION qilu_readings_1m(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (device_pk integer, metric_id smallint, bucket timestamptz, n bigint,
               min double precision, max double precision, avg double precision,
               last double precision)
LANGUAGE sql STABLE
AS $$
SELECT r.device_pk, r.metric_id, r.bucket, r.n, r.min, r.max, r.avg, r.last
FROM readings_1m r
WHERE r.bucket >= p_from AND r.bucket < p_to
$$;

CREATE FUNCTION qilu_readings_1h(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (device_pk integer, metric_id smallint, bucket timestamptz, n bigint,
               min double precision, max double precision, avg double precision,
               last double precision)
LANGUAGE sql STABLE
AS $$
SELECT r.device_pk, r.metric_id, r.bucket, r.n, r.min, r.max, r.avg, r.last
FROM readings_1h r
WHERE r.bucket >= p_from AND r.bucket < p_to
$$;
