-- 005 (timescale mode): least-privilege roles.
--
--   qilu_ingest   resolves device and metric ids, inserts readings, keeps device_liveness
--   qilu_api      reads every logical relation of ADR 0002
--   qilu_grafana  reads the registry, liveness, rollups and coverage series: never the raw
--                 readings, so no panel can scan the largest table
--
-- Roles are created without a password (they cannot log in until an operator sets one with
-- `qilu storage set-password ROLE` or ALTER ROLE); roles are cluster-wide, so an existing
-- role is kept as it is.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['qilu_ingest', 'qilu_api', 'qilu_grafana'] LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I LOGIN', r);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- exists already (another database of this cluster, or a concurrent run)
        END;
        -- the schema the platform lives in (public by default, where USAGE is granted anyway)
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), r);
    END LOOP;
END
$$;

GRANT SELECT ON devices, metrics, storage_meta TO qilu_ingest;
GRANT INSERT ON readings TO qilu_ingest;
GRANT SELECT, INSERT, UPDATE ON device_liveness TO qilu_ingest;

GRANT SELECT ON storage_meta, cities, device_kinds, metrics, sites, devices, readings, device_liveness,
    readings_1m, readings_1h, site_liveness_1h, coverage_daily TO qilu_api;

GRANT SELECT ON cities, device_kinds, metrics, sites, devices, device_liveness,
    readings_1m, readings_1h, site_liveness_1h, coverage_daily TO qilu_grafana;
