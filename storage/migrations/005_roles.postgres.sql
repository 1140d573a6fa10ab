-- 005 (postgres mode): least-privilege roles. See 005_roles.timescale.sql for the rules; this
-- mode adds what the writer and the maintenance need of this mode's internals.
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

-- ingest: resolve device and metric ids, write readings and liveness, nothing else
GRANT SELECT ON devices, metrics, storage_meta TO qilu_ingest;
GRANT INSERT ON readings TO qilu_ingest;
GRANT SELECT, INSERT, UPDATE ON device_liveness TO qilu_ingest;
GRANT SELECT ON rollup_state TO qilu_ingest;
GRANT INSERT ON rollup_invalidations TO qilu_ingest;
GRANT EXECUTE ON FUNCTION qilu_ensure_partitions(text, timestamptz, timestamptz) TO qilu_ingest;
-- recomputes rollups from stored rows only: it cannot write anything of the caller's choosing
GRANT EXECUTE ON FUNCTION qilu_refresh_rollups(timestamptz, timestamptz) TO qilu_ingest;

-- API: reads every logical relation
GRANT SELECT ON storage_meta, cities, device_kinds, metrics, sites, devices, readings, device_liveness,
    readings_1m, readings_1h, site_liveness_1h, coverage_daily TO qilu_api;

-- Grafana: the registry, liveness, rollups and coverage series; never the raw readings
GRANT SELECT ON cities, device_kinds, metrics, sites, devices, device_liveness,
    readings_1m, readings_1h, site_liveness_1h, coverage_daily TO qilu_grafana;
