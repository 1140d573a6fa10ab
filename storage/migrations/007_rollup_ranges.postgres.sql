-- 007 (postgres mode): the rollups over a time range, as functions the planner can prune.
--
-- The views readings_1m / readings_1h (003) compare buckets with the watermark, a value read
-- at run time: the planner cannot leave out any partition, so a query plans every hourly raw
-- partition and every daily store partition (~18 ms of planning for one device's day). These
-- functions take the range as arguments: qilu_readings_1m(from, to) returns exactly the rows
-- of readings_1m with from <= bucket < to. They are plain SQL, so the planner inlines them
-- and, with the range known when the statement is planned, keeps only the store and raw
-- partitions of that range; the watermark then only decides, at run time, which of those few
-- partitions each part reads. Same columns and values as the views (the tests and
-- `qilu storage verify` compare both with a recomputation).
--
-- They run with the caller's rights (a SECURITY DEFINER function is never inlined): the API
-- role is granted the stores and the watermarks below. Grafana keeps reading the views (it may
-- not read raw readings, which the live part of these functions scans).

-- The first bucket boundary at or after p_t: floor(ts) < p_t exactly when ts < ceil(p_t).
-- IMMUTABLE for fixed steps (minutes, hours): buckets are aligned on 2000-01-01 UTC, so no
-- time zone enters. Folded to a constant when planned, which is what lets partitions go.
CREATE FUNCTION qilu_bucket_ceil(p_t timestamptz, p_step interval)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN date_bin(p_step, p_t + p_step - INTERVAL '1 microsecond',
                TIMESTAMPTZ '2000-01-01 00:00+00');

CREATE FUNCTION qilu_readings_1m(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (device_pk integer, metric_id smallint, bucket timestamptz, n bigint,
               min double precision, max double precision, avg double precision,
               last double precision)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
SELECT s.device_pk, s.metric_id, s.bucket, s.n, s.min, s.max, s.avg, s.last
FROM readings_1m_store s
WHERE s.bucket >= p_from AND s.bucket < p_to
  AND s.bucket < (SELECT w.watermark FROM rollup_state w WHERE w.name = 'readings_1m')
UNION ALL
SELECT r.device_pk,
       r.metric_id,
       date_bin(INTERVAL '1 minute', r.ts, TIMESTAMPTZ '2000-01-01 00:00+00'),
       count(*),
       min(r.value),
       max(r.value),
       avg(r.value),
       (array_agg(r.value ORDER BY r.ts DESC))[1]
FROM readings r
WHERE r.ts >= qilu_bucket_ceil(p_from, INTERVAL '1 minute')
  AND r.ts < qilu_bucket_ceil(p_to, INTERVAL '1 minute')
  AND r.ts >= (SELECT w.watermark FROM rollup_state w WHERE w.name = 'readings_1m')
GROUP BY 1, 2, 3
$$;

CREATE FUNCTION qilu_readings_1h(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (device_pk integer, metric_id smallint, bucket timestamptz, n bigint,
               min double precision, max double precision, avg double precision,
               last double precision)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
SELECT s.device_pk, s.metric_id, s.bucket, s.n, s.min, s.max, s.avg, s.last
FROM readings_1h_store s
WHERE s.bucket >= p_from AND s.bucket < p_to
  AND s.bucket < (SELECT w.watermark FROM rollup_state w WHERE w.name = 'readings_1h')
UNION ALL
SELECT m.device_pk,
       m.metric_id,
       date_bin(INTERVAL '1 hour', m.bucket, TIMESTAMPTZ '2000-01-01 00:00+00'),
       sum(m.n)::bigint,
       min(m.min),
       max(m.max),
       sum(m.avg * m.n) / sum(m.n),
       (array_agg(m.last ORDER BY m.bucket DESC))[1]
FROM qilu_readings_1m(qilu_bucket_ceil(p_from, INTERVAL '1 hour'),
                      qilu_bucket_ceil(p_to, INTERVAL '1 hour')) m
WHERE m.bucket >= (SELECT w.watermark FROM rollup_state w WHERE w.name = 'readings_1h')
GROUP BY 1, 2, 3
$$;

GRANT SELECT ON readings_1m_store, readings_1h_store, rollup_state TO qilu_api;
