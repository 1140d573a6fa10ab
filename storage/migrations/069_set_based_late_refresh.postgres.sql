-- 069 (postgres mode): the rollup refresh recomputes late data (ranges of one device) with
-- one statement per rollup instead of a DELETE and an INSERT per device.
--
-- After the ingest fell a few minutes behind, every reading it then stored was late (older
-- than the minute watermark): each batch recorded one range per device, and the next refresh
-- looped over ~116,000 devices, 0.6 ms each, 72 s of a 120 s window on the primary, which
-- made the ingest fall further behind (bench/province_live.py on the cluster profile, issue
-- 18). A device's ranges are disjoint (qilu_dev1, qilu_devh and qilu_site are built with
-- range_agg), so deleting all of them and then aggregating all of them writes the same rows
-- as the loop did; the temporary tables are analysed first, so a few devices still get index
-- lookups and many get one pass over the time range. Everything else is 003's function as it
-- was.

CREATE OR REPLACE FUNCTION qilu_refresh_rollups(p_now timestamptz DEFAULT now(),
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
    -- one statement for all of them (069): a device's ranges are disjoint, so deleting every
    -- range and then aggregating every range is what the loop over devices did
    IF v_dev1 > 0 THEN
        ANALYZE qilu_dev1;
        DELETE FROM readings_1m_store s USING qilu_dev1 d
         WHERE s.device_pk = d.device_pk AND s.bucket >= d.lo AND s.bucket < d.hi;
        INSERT INTO readings_1m_store (device_pk, metric_id, bucket, n, min, max, avg, last)
        SELECT r.device_pk, r.metric_id, date_bin(one_min, r.ts, o), count(*), min(r.value),
               max(r.value), avg(r.value), (array_agg(r.value ORDER BY r.ts DESC))[1]
          FROM qilu_dev1 d
          JOIN readings r ON r.device_pk = d.device_pk AND r.ts >= d.lo AND r.ts < d.hi
         WHERE r.ts >= (SELECT min(lo) FROM qilu_dev1) AND r.ts < (SELECT max(hi) FROM qilu_dev1)
         GROUP BY 1, 2, 3;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_rows_1m := v_rows_1m + v_n;
    END IF;

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
    IF v_devh > 0 THEN
        ANALYZE qilu_devh;
        DELETE FROM readings_1h_store s USING qilu_devh d
         WHERE s.device_pk = d.device_pk AND s.bucket >= d.lo AND s.bucket < d.hi;
        INSERT INTO readings_1h_store (device_pk, metric_id, bucket, n, min, max, avg, last)
        SELECT m.device_pk, m.metric_id, date_bin(one_hour, m.bucket, o), sum(m.n), min(m.min),
               max(m.max), sum(m.avg * m.n) / sum(m.n),
               (array_agg(m.last ORDER BY m.bucket DESC))[1]
          FROM qilu_devh d
          JOIN readings_1m_store m
            ON m.device_pk = d.device_pk AND m.bucket >= d.lo AND m.bucket < d.hi
         WHERE m.bucket >= (SELECT min(lo) FROM qilu_devh)
           AND m.bucket < (SELECT max(hi) FROM qilu_devh)
         GROUP BY 1, 2, 3;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_rows_1h := v_rows_1h + v_n;
    END IF;

    CREATE TEMP TABLE qilu_site ON COMMIT DROP AS
    SELECT site_id, lower(x) AS lo, upper(x) AS hi
      FROM (SELECT dv.site_id, unnest(range_agg(tstzrange(h.lo, h.hi))) AS x
              FROM qilu_devh h JOIN devices dv ON dv.device_pk = h.device_pk
             GROUP BY dv.site_id) s;
    GET DIAGNOSTICS v_sites = ROW_COUNT;
    IF v_sites > 0 THEN
        ANALYZE qilu_site;
        DELETE FROM site_liveness_1h_store s USING qilu_site d
         WHERE s.site_id = d.site_id AND s.bucket >= d.lo AND s.bucket < d.hi;
        INSERT INTO site_liveness_1h_store (site_id, bucket, devices_reporting, readings)
        SELECT dv.site_id, h.bucket, count(DISTINCT h.device_pk), sum(h.n)
          FROM qilu_site d
          JOIN devices dv ON dv.site_id = d.site_id
          JOIN readings_1h_store h
            ON h.device_pk = dv.device_pk AND h.bucket >= d.lo AND h.bucket < d.hi
         WHERE h.bucket >= (SELECT min(lo) FROM qilu_site)
           AND h.bucket < (SELECT max(hi) FROM qilu_site)
         GROUP BY 1, 2;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_rows_site := v_rows_site + v_n;
    END IF;

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

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION qilu_refresh_rollups(timestamptz, timestamptz)'
                   ' SET search_path = %I, pg_temp', current_schema());
END
$$;
