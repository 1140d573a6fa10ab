-- 003 (postgres mode): the rollups of ADR 0002, kept current by the platform itself.
--
-- Each rollup is a view over two parts, like a real-time continuous aggregate:
--   * a materialized store (readings_1m_store, readings_1h_store, site_liveness_1h_store)
--     holding every bucket older than the rollup's watermark (rollup_state), and
--   * the buckets at or after the watermark, aggregated from the level below at query time.
-- qilu_refresh_rollups() advances the watermarks and re-materializes whole buckets that late
-- data touched, always from the stored rows: a redelivered reading, refused by the primary
-- key of readings, can never count twice, and a rollup always equals a recomputation.
--
-- The writer records what each batch touched in rollup_invalidations, in the same
-- transaction as the rows: one time range for the rows at or after the minute watermark
-- (live data), and one range per device for older rows (late data), so a device uploading a
-- week of backlog costs a recomputation of that device only.

CREATE TABLE rollup_state (
    name          text PRIMARY KEY,
    watermark     timestamptz NOT NULL,
    refreshed_at  timestamptz
);
INSERT INTO rollup_state (name, watermark) VALUES
    ('readings_1m', '-infinity'),
    ('readings_1h', '-infinity');

CREATE TABLE rollup_invalidations (
    device_pk  integer,               -- NULL: every device
    lo         timestamptz NOT NULL,  -- oldest and newest reading touched, inclusive
    hi         timestamptz NOT NULL
);

CREATE TABLE readings_1m_store (
    device_pk  integer NOT NULL,
    metric_id  smallint NOT NULL,
    bucket     timestamptz NOT NULL,
    n          bigint NOT NULL,
    min        double precision NOT NULL,
    max        double precision NOT NULL,
    avg        double precision NOT NULL,
    last       double precision NOT NULL,
    PRIMARY KEY (device_pk, metric_id, bucket)
) PARTITION BY RANGE (bucket);
CREATE INDEX readings_1m_store_bucket_brin ON readings_1m_store USING brin (bucket)
    WITH (autosummarize = on);

CREATE TABLE readings_1h_store (LIKE readings_1m_store, PRIMARY KEY (device_pk, metric_id, bucket))
    PARTITION BY RANGE (bucket);
CREATE INDEX readings_1h_store_bucket_brin ON readings_1h_store USING brin (bucket)
    WITH (autosummarize = on);

CREATE TABLE site_liveness_1h_store (
    site_id            text NOT NULL,
    bucket             timestamptz NOT NULL,
    devices_reporting  integer NOT NULL,
    readings           bigint NOT NULL,
    PRIMARY KEY (site_id, bucket)
) PARTITION BY RANGE (bucket);
CREATE INDEX site_liveness_1h_store_bucket ON site_liveness_1h_store (bucket);

INSERT INTO partition_units (parent, column_, unit) VALUES
    ('readings_1m_store', 'bucket', 'day'),
    ('readings_1h_store', 'bucket', 'month'),
    ('site_liveness_1h_store', 'bucket', 'month');

-- [bucket of p_lo, end of the bucket of p_hi): the whole buckets holding p_lo .. p_hi.
-- Buckets are aligned on 2000-01-01 UTC, like TimescaleDB's time_bucket.
CREATE FUNCTION qilu_bins(p_lo timestamptz, p_hi timestamptz, p_step interval)
RETURNS tstzrange
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN tstzrange(date_bin(p_step, p_lo, TIMESTAMPTZ '2000-01-01 00:00+00'),
                 date_bin(p_step, p_hi, TIMESTAMPTZ '2000-01-01 00:00+00') + p_step);

-- The logical relations. Column names and types match the TimescaleDB mode exactly.
CREATE VIEW readings_1m AS
SELECT device_pk, metric_id, bucket, n, min, max, avg, last
FROM readings_1m_store
WHERE bucket < (SELECT watermark FROM rollup_state WHERE name = 'readings_1m')
UNION ALL
SELECT device_pk,
       metric_id,
       date_bin(INTERVAL '1 minute', ts, TIMESTAMPTZ '2000-01-01 00:00+00') AS bucket,
       count(*) AS n,
       min(value) AS min,
       max(value) AS max,
       avg(value) AS avg,
       (array_agg(value ORDER BY ts DESC))[1] AS last
FROM readings
WHERE ts >= (SELECT watermark FROM rollup_state WHERE name = 'readings_1m')
GROUP BY 1, 2, 3;

CREATE VIEW readings_1h AS
SELECT device_pk, metric_id, bucket, n, min, max, avg, last
FROM readings_1h_store
WHERE bucket < (SELECT watermark FROM rollup_state WHERE name = 'readings_1h')
UNION ALL
SELECT device_pk,
       metric_id,
       date_bin(INTERVAL '1 hour', bucket, TIMESTAMPTZ '2000-01-01 00:00+00') AS bucket,
       sum(n)::bigint AS n,
       min(min) AS min,
       max(max) AS max,
       sum(avg * n) / sum(n) AS avg,
       (array_agg(last ORDER BY bucket DESC))[1] AS last
FROM readings_1m
WHERE bucket >= (SELECT watermark FROM rollup_state WHERE name = 'readings_1h')
GROUP BY 1, 2, 3;

CREATE VIEW site_liveness_1h AS
SELECT site_id, bucket, devices_reporting, readings
FROM site_liveness_1h_store
WHERE bucket < (SELECT watermark FROM rollup_state WHERE name = 'readings_1h')
UNION ALL
SELECT d.site_id,
       date_bin(INTERVAL '1 hour', r.bucket, TIMESTAMPTZ '2000-01-01 00:00+00') AS bucket,
       count(DISTINCT r.device_pk)::integer AS devices_reporting,
       sum(r.n)::bigint AS readings
FROM readings_1m r
JOIN devices d ON d.device_pk = r.device_pk
WHERE r.bucket >= (SELECT watermark FROM rollup_state WHERE name = 'readings_1h')
GROUP BY 1, 2;

-- One refresh cycle: process the invalidations recorded since the last cycle, then advance
-- the watermarks over the buckets that are complete (a minute one minute after it ended, an
-- hour once all its minutes are materialized). Nothing older than p_keep_after is touched
-- (raw rows there may already be dropped by retention). One refresher at a time; a second
-- caller returns at once. Returns what it did, as JSON.
CREATE FUNCTION qilu_refresh_rollups(p_now timestamptz DEFAULT now(),
                                     p_keep_after timestamptz DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
AS $$
DECLARE
    o CONSTANT timestamptz := '2000-01-01 00:00+00';
    one_min CONSTANT interval := '1 minute';
    one_hour CONSTANT interval := '1 hour';
    tick CONSTANT interval := '1 microsecond';
    v_floor tstzmultirange := tstzmultirange(tstzrange(p_keep_after, NULL));
    v_oldest timestamptz;
    wm1_old timestamptz;
    wm1_new timestamptz;
    wmh_old timestamptz;
    wmh_new timestamptz;
    c1 tstzmultirange;
    ch tstzmultirange;
    g1 tstzmultirange;
    gh tstzmultirange;
    r tstzrange;
    d record;
    v_n bigint;
    v_inv bigint;
    v_rows_1m bigint := 0;
    v_rows_1h bigint := 0;
    v_rows_site bigint := 0;
    v_dev1 bigint;
    v_devh bigint;
    v_sites bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(1903520622) THEN  -- 0x71757265 "qure"
        RETURN jsonb_build_object('skipped', 'another refresh is running');
    END IF;
    SELECT watermark INTO wm1_old FROM rollup_state WHERE name = 'readings_1m';
    SELECT watermark INTO wmh_old FROM rollup_state WHERE name = 'readings_1h';
    wm1_new := greatest(wm1_old, date_bin(one_min, p_now - one_min, o));
    wmh_new := greatest(wmh_old, date_bin(one_hour, wm1_new, o));
    c1 := tstzmultirange(tstzrange(NULL, wm1_old)) * v_floor;
    ch := tstzmultirange(tstzrange(NULL, wmh_old)) * v_floor;
    -- rollup partitions are needed from the oldest raw partition on
    SELECT min(substring(pg_get_expr(c.relpartbound, c.oid)
                         FROM 'FROM \(''([^'']+)''\)')::timestamptz)
      INTO v_oldest
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'readings'::regclass;
    v_oldest := greatest(v_oldest, p_keep_after);  -- never before what retention keeps

    DROP TABLE IF EXISTS pg_temp.qilu_inv, pg_temp.qilu_dev1, pg_temp.qilu_devh,
        pg_temp.qilu_site;
    CREATE TEMP TABLE qilu_inv (device_pk integer, lo timestamptz, hi timestamptz)
        ON COMMIT DROP;
    WITH taken AS (DELETE FROM rollup_invalidations RETURNING device_pk, lo, hi)
    INSERT INTO qilu_inv SELECT device_pk, lo, hi FROM taken;
    GET DIAGNOSTICS v_inv = ROW_COUNT;

    -- minutes: ranges recomputed for every device (live rows the last cycle missed, and
    -- the advance of the watermark) ...
    SELECT coalesce(range_agg(qilu_bins(lo, hi, one_min)), '{}') INTO g1
      FROM qilu_inv WHERE device_pk IS NULL AND lo < wm1_old;
    g1 := (g1 * c1 + tstzmultirange(tstzrange(wm1_old, wm1_new))) * v_floor;
    FOR r IN SELECT unnest(g1) LOOP
        PERFORM qilu_ensure_partitions('readings_1m_store', greatest(lower(r), v_oldest),
                                       upper(r) - tick);
        DELETE FROM readings_1m_store WHERE bucket >= lower(r) AND bucket < upper(r);
        INSERT INTO readings_1m_store (device_pk, metric_id, bucket, n, min, max, avg, last)
        SELECT device_pk, metric_id, date_bin(one_min, ts, o), count(*), min(value),
               max(value), avg(value), (array_agg(value ORDER BY ts DESC))[1]
          FROM readings
         WHERE ts >= lower(r) AND ts < upper(r)
         GROUP BY 1, 2, 3;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_rows_1m := v_rows_1m + v_n;
    END LOOP;

    -- ... and ranges recomputed for one device (late data)
    CREATE TEMP TABLE qilu_dev1 ON COMMIT DROP AS
    SELECT device_pk, lower(x) AS lo, upper(x) AS hi
      FROM (SELECT device_pk, unnest(range_agg(qilu_bins(lo, hi, one_min)) * c1 - g1) AS x
              FROM qilu_inv
             WHERE device_pk IS NOT NULL AND lo < wm1_old
             GROUP BY device_pk) s;
    GET DIAGNOSTICS v_dev1 = ROW_COUNT;
    IF v_dev1 > 0 THEN
        PERFORM qilu_ensure_partitions('readings_1m_store',
                                       greatest((SELECT min(lo) FROM qilu_dev1), v_oldest),
                                       (SELECT max(hi) FROM qilu_dev1) - tick);
    END IF;
    FOR d IN SELECT * FROM qilu_dev1 LOOP
        DELETE FROM readings_1m_store
         WHERE device_pk = d.device_pk AND bucket >= d.lo AND bucket < d.hi;
        INSERT INTO readings_1m_store (device_pk, metric_id, bucket, n, min, max, avg, last)
        SELECT device_pk, metric_id, date_bin(one_min, ts, o), count(*), min(value),
               max(value), avg(value), (array_agg(value ORDER BY ts DESC))[1]
          FROM readings
         WHERE device_pk = d.device_pk AND ts >= d.lo AND ts < d.hi
         GROUP BY 1, 2, 3;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_rows_1m := v_rows_1m + v_n;
    END LOOP;

    -- hours (and site liveness): every hour holding a recomputed minute range, and the
    -- advance of the hour watermark; all from the minute store
    SELECT coalesce(range_agg(qilu_bins(lower(x), upper(x) - tick, one_hour)), '{}') INTO gh
      FROM unnest(g1) AS x;
    gh := (gh * ch + tstzmultirange(tstzrange(wmh_old, wmh_new))) * v_floor;
    FOR r IN SELECT unnest(gh) LOOP
        PERFORM qilu_ensure_partitions('readings_1h_store', greatest(lower(r), v_oldest),
                                       upper(r) - tick);
        PERFORM qilu_ensure_partitions('site_liveness_1h_store', greatest(lower(r), v_oldest),
                                       upper(r) - tick);
        DELETE FROM readings_1h_store WHERE bucket >= lower(r) AND bucket < upper(r);
        INSERT INTO readings_1h_store (device_pk, metric_id, bucket, n, min, max, avg, last)
        SELECT device_pk, metric_id, date_bin(one_hour, bucket, o), sum(n), min(min), max(max),
               sum(avg * n) / sum(n), (array_agg(last ORDER BY bucket DESC))[1]
          FROM readings_1m_store
         WHERE bucket >= lower(r) AND bucket < upper(r)
         GROUP BY 1, 2, 3;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_rows_1h := v_rows_1h + v_n;
        DELETE FROM site_liveness_1h_store WHERE bucket >= lower(r) AND bucket < upper(r);
        INSERT INTO site_liveness_1h_store (site_id, bucket, devices_reporting, readings)
        SELECT dv.site_id, h.bucket, count(DISTINCT h.device_pk), sum(h.n)
          FROM readings_1h_store h JOIN devices dv ON dv.device_pk = h.device_pk
         WHERE h.bucket >= lower(r) AND h.bucket < upper(r)
         GROUP BY 1, 2;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_rows_site := v_rows_site + v_n;
    END LOOP;

    CREATE TEMP TABLE qilu_devh ON COMMIT DROP AS
    SELECT device_pk, lower(x) AS lo, upper(x) AS hi
      FROM (SELECT device_pk,
                   unnest(range_agg(qilu_bins(lo, hi - tick, one_hour)) * ch - gh) AS x
              FROM qilu_dev1 GROUP BY device_pk) s;
    GET DIAGNOSTICS v_devh = ROW_COUNT;
    IF v_devh > 0 THEN
        PERFORM qilu_ensure_partitions('readings_1h_store',
                                       greatest((SELECT min(lo) FROM qilu_devh), v_oldest),
                                       (SELECT max(hi) FROM qilu_devh) - tick);
        PERFORM qilu_ensure_partitions('site_liveness_1h_store',
                                       greatest((SELECT min(lo) FROM qilu_devh), v_oldest),
                                       (SELECT max(hi) FROM qilu_devh) - tick);
    END IF;
    FOR d IN SELECT * FROM qilu_devh LOOP
        DELETE FROM readings_1h_store
         WHERE device_pk = d.device_pk AND bucket >= d.lo AND bucket < d.hi;
        INSERT INTO readings_1h_store (device_pk, metric_id, bucket, n, min, max, avg, last)
        SELECT device_pk, metric_id, date_bin(one_hour, bucket, o), sum(n), min(min), max(max),
               sum(avg * n) / sum(n), (array_agg(last ORDER BY bucket DESC))[1]
          FROM readings_1m_store
         WHERE device_pk = d.device_pk AND bucket >= d.lo AND bucket < d.hi
         GROUP BY 1, 2, 3;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_rows_1h := v_rows_1h + v_n;
    END LOOP;

    CREATE TEMP TABLE qilu_site ON COMMIT DROP AS
    SELECT site_id, lower(x) AS lo, upper(x) AS hi
      FROM (SELECT dv.site_id, unnest(range_agg(tstzrange(h.lo, h.hi))) AS x
              FROM qilu_devh h JOIN devices dv ON dv.device_pk = h.device_pk
             GROUP BY dv.site_id) s;
    GET DIAGNOSTICS v_sites = ROW_COUNT;
    FOR d IN SELECT * FROM qilu_site LOOP
        DELETE FROM site_liveness_1h_store
         WHERE site_id = d.site_id AND bucket >= d.lo AND bucket < d.hi;
        INSERT INTO site_liveness_1h_store (site_id, bucket, devices_reporting, readings)
        SELECT dv.site_id, h.bucket, count(DISTINCT h.device_pk), sum(h.n)
          FROM devices dv JOIN readings_1h_store h ON h.device_pk = dv.device_pk
         WHERE dv.site_id = d.site_id AND h.bucket >= d.lo AND h.bucket < d.hi
         GROUP BY 1, 2;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_rows_site := v_rows_site + v_n;
    END LOOP;

    UPDATE rollup_state SET watermark = wm1_new, refreshed_at = p_now
     WHERE name = 'readings_1m';
    UPDATE rollup_state SET watermark = wmh_new, refreshed_at = p_now
     WHERE name = 'readings_1h';
    RETURN jsonb_build_object(
        'invalidations', v_inv,
        'watermark_1m', wm1_new,
        'watermark_1h', wmh_new,
        'ranges_all_devices_1m', (SELECT count(*) FROM unnest(g1)),
        'ranges_one_device_1m', v_dev1,
        'ranges_one_device_1h', v_devh,
        'sites_recomputed', v_sites,
        'rows_1m', v_rows_1m,
        'rows_1h', v_rows_1h,
        'rows_site_1h', v_rows_site);
END
$$;

REVOKE ALL ON FUNCTION qilu_refresh_rollups(timestamptz, timestamptz) FROM PUBLIC;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION qilu_refresh_rollups(timestamptz, timestamptz)'
                   ' SET search_path = %I, pg_temp', current_schema());
END
$$;
