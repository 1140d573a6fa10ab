-- 002 (postgres mode): readings becomes a table partitioned by time, one partition per hour
-- (docs/adr/0003-storage-modes.md explains the interval). Partitions are created ahead by the
-- platform (`qilu storage maintain`, migrate and ingest at start, the writer on demand for
-- late data) and dropped by retention. The logical relation keeps its name, columns and key.

-- Which of our tables are partitioned, by what column and in which unit. The functions below
-- read it; anything else about partitions is an implementation detail of this mode.
CREATE TABLE partition_units (
    parent   text PRIMARY KEY,
    column_  text NOT NULL,
    unit     text NOT NULL CHECK (unit IN ('hour', 'day', 'month'))
);

-- Partition bounds are UTC-aligned whatever the session time zone.
CREATE FUNCTION qilu_partition_start(p_unit text, p_ts timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN date_trunc(p_unit, p_ts, 'UTC');

CREATE FUNCTION qilu_partition_next(p_unit text, p_start timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ((p_start AT TIME ZONE 'UTC') + ('1 ' || p_unit)::interval) AT TIME ZONE 'UTC';

-- Create the missing partitions of p_parent covering [p_from, p_to]; returns how many were
-- created. Safe to call concurrently: a partition created meanwhile by another process is
-- skipped. The partition is created detached and attached afterwards, which takes a weaker
-- lock on the parent than CREATE TABLE ... PARTITION OF, so concurrent inserts keep going.
CREATE FUNCTION qilu_ensure_partitions(p_parent text, p_from timestamptz, p_to timestamptz)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET lock_timeout = '10s'
AS $$
DECLARE
    v_col text;
    v_unit text;
    v_lo timestamptz;
    v_hi timestamptz;
    v_name text;
    v_created integer := 0;
BEGIN
    SELECT column_, unit INTO v_col, v_unit FROM partition_units WHERE parent = p_parent;
    IF v_unit IS NULL THEN
        RAISE EXCEPTION 'qilu: % is not a time-partitioned table of the platform', p_parent;
    END IF;
    IF p_from IS NULL OR p_to IS NULL OR NOT isfinite(p_from) OR NOT isfinite(p_to) THEN
        RETURN 0;
    END IF;
    v_lo := qilu_partition_start(v_unit, p_from);
    WHILE v_lo <= p_to LOOP
        v_hi := qilu_partition_next(v_unit, v_lo);
        v_name := p_parent || '_p' || to_char(v_lo AT TIME ZONE 'UTC',
            CASE v_unit WHEN 'hour' THEN 'YYYYMMDD"T"HH24' WHEN 'day' THEN 'YYYYMMDD' ELSE 'YYYYMM' END);
        IF to_regclass(quote_ident(v_name)) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', v_name, p_parent);
                -- the CHECK lets ATTACH skip its validation scan; dropped once attached
                EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (%I >= %L AND %I < %L)',
                    v_name, v_name || '_range', v_col, v_lo, v_col, v_hi);
                EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                    p_parent, v_name, v_lo, v_hi);
                EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', v_name, v_name || '_range');
                v_created := v_created + 1;
            EXCEPTION WHEN duplicate_table OR unique_violation THEN
                NULL;  -- created concurrently by another process (the catalog's unique
                       -- index reports the race when both started before either committed)
            END;
        END IF;
        v_lo := v_hi;
    END LOOP;
    RETURN v_created;
END
$$;

-- Drop the partitions of p_parent that hold only rows older than p_before; returns their
-- names. Retention, run by `qilu storage maintain`.
CREATE FUNCTION qilu_drop_partitions(p_parent text, p_before timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER
SET lock_timeout = '10s'
AS $$
DECLARE
    v_part record;
BEGIN
    FOR v_part IN
        SELECT c.relname AS name,
               substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz AS upper_
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass(quote_ident(p_parent))
        ORDER BY 2
    LOOP
        EXIT WHEN v_part.upper_ IS NULL OR v_part.upper_ > p_before;
        EXECUTE format('DROP TABLE %I', v_part.name);
        RETURN NEXT v_part.name;
    END LOOP;
END
$$;

-- Convert the table of migration 001, keeping whatever a development database holds.
ALTER TABLE readings RENAME TO readings_001;
ALTER INDEX readings_pkey RENAME TO readings_001_pkey;

CREATE TABLE readings (
    device_pk  integer NOT NULL,
    metric_id  smallint NOT NULL,
    ts         timestamptz NOT NULL,
    value      double precision NOT NULL,
    quality    smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (device_pk, metric_id, ts)
) PARTITION BY RANGE (ts);
-- Time-range scans of the rollup refresh; rows arrive roughly in time order, so a BRIN index
-- is small and cheap to keep while still skipping most of a partition. autosummarize: each
-- filled block range is summarized in the background, so the refresh of the last minute does
-- not scan every block written since the last vacuum.
CREATE INDEX readings_ts_brin ON readings USING brin (ts) WITH (autosummarize = on);

INSERT INTO partition_units (parent, column_, unit) VALUES ('readings', 'ts', 'hour');

SELECT qilu_ensure_partitions('readings', min(ts), max(ts)) FROM readings_001 HAVING count(*) > 0;
INSERT INTO readings SELECT device_pk, metric_id, ts, value, quality FROM readings_001;
DROP TABLE readings_001;

REVOKE ALL ON FUNCTION qilu_ensure_partitions(text, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION qilu_drop_partitions(text, timestamptz) FROM PUBLIC;

-- SECURITY DEFINER functions resolve names in this schema only, never in the caller's path.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION qilu_ensure_partitions(text, timestamptz, timestamptz)'
                   ' SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION qilu_drop_partitions(text, timestamptz)'
                   ' SET search_path = %I, pg_temp', current_schema());
END
$$;
