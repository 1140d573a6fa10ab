-- 062 (both modes): what the incremental coverage needs to know has changed
-- (docs/adr/0018-incremental-coverage.md).
--
-- liveness_changes           one row per statement that moved device_liveness forward: the
--                            devices and their new last_seen (microseconds since the epoch), the
--                            writing transaction's id and the time the row was logged. Written
--                            by statement triggers, so every writer (the ingest, a backfill, a
--                            test) is seen; the API's coverage refresher reads the rows of the
--                            transactions its previous snapshot could not see. Kept ten minutes
--                            (storage maintenance prunes it; a refresher further behind than
--                            that recomputes in full).
-- coverage_registry_version  one counter, bumped by every statement that changes what the
--                            coverage counts besides liveness (sites, devices, their versions,
--                            the device kinds' expected intervals, liveness rows deleted): the
--                            refresher recomputes in full when it moved.
CREATE TABLE liveness_changes (
    xact     xid8 NOT NULL DEFAULT pg_current_xact_id(),
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    devices  int4[] NOT NULL,
    seen_us  int8[] NOT NULL
);
CREATE INDEX liveness_changes_xact ON liveness_changes (xact);
CREATE INDEX liveness_changes_at ON liveness_changes (at);

CREATE FUNCTION qilu_log_liveness() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO liveness_changes (devices, seen_us)
    SELECT array_agg(device_pk), array_agg((extract(epoch FROM last_seen) * 1000000)::int8)
    FROM new_rows HAVING count(*) > 0;
    RETURN NULL;
END
$$;

-- INSERT ... ON CONFLICT DO UPDATE fires both: the inserted rows reach the first, the updated
-- ones (only those whose last_seen moved forward) the second.
CREATE TRIGGER liveness_logged_insert AFTER INSERT ON device_liveness
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION qilu_log_liveness();
CREATE TRIGGER liveness_logged_update AFTER UPDATE ON device_liveness
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION qilu_log_liveness();

CREATE TABLE coverage_registry_version (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    v    bigint NOT NULL
);
INSERT INTO coverage_registry_version VALUES (true, 1);

CREATE FUNCTION qilu_bump_coverage_registry() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE coverage_registry_version SET v = v + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER coverage_sites_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sites
    FOR EACH STATEMENT EXECUTE FUNCTION qilu_bump_coverage_registry();
CREATE TRIGGER coverage_devices_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION qilu_bump_coverage_registry();
CREATE TRIGGER coverage_site_versions_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON site_versions
    FOR EACH STATEMENT EXECUTE FUNCTION qilu_bump_coverage_registry();
CREATE TRIGGER coverage_device_versions_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON device_versions
    FOR EACH STATEMENT EXECUTE FUNCTION qilu_bump_coverage_registry();
-- liveness going backwards (a delete, a truncate) is not a change the log can carry
CREATE TRIGGER coverage_liveness_removed AFTER DELETE OR TRUNCATE ON device_liveness
    FOR EACH STATEMENT EXECUTE FUNCTION qilu_bump_coverage_registry();
CREATE TRIGGER coverage_device_kinds_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON device_kinds
    FOR EACH STATEMENT EXECUTE FUNCTION qilu_bump_coverage_registry();

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_ingest') THEN
        -- the maintenance the ingest runs prunes the log (its writes go through the triggers)
        GRANT SELECT, DELETE ON liveness_changes TO qilu_ingest;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_api') THEN
        GRANT SELECT ON liveness_changes, coverage_registry_version TO qilu_api;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_grafana') THEN
        GRANT SELECT ON liveness_changes, coverage_registry_version TO qilu_grafana;
    END IF;
END
$$;
