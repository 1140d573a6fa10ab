-- 051 (timescale mode): one job refreshes the rollups, in the order they read each other.
--
-- TimescaleDB starts its background jobs by itself, runs them concurrently and in any order.
-- With one refresh policy per continuous aggregate (003), readings_1h and site_liveness_1h
-- could be refreshed before readings_1m, which they are built on, and late data reached them
-- only a cycle later. This migration replaces the three refresh policies by one user-defined
-- job: qilu_refresh_rollups_job refreshes readings_1m, then readings_1h, then
-- site_liveness_1h, each committed before the next starts, so one run of the job carries late
-- data through every level. The windows are those of the policies it replaces: 8 days back
-- (late data from a device offline up to 7 days), up to the bucket in progress (left to the
-- real-time part of the aggregates). The maintenance then widens the start to the raw
-- retention (storage.raw_retention_days, 30 days by default), as far back as the ingest accepts
-- late readings (storage/maintain.py align_retention_policies).
--
-- The names in the job's config are schema-qualified: a job runs with the server's default
-- search_path, not the migrating session's. A failing run raises, so TimescaleDB records it
-- (timescaledb_information.job_stats, job_errors) and retries with a backoff;
-- `qilu storage status`, the qilu_storage_job_failing metric and its alert surface that.

CREATE PROCEDURE qilu_refresh_rollups_job(job_id integer, config jsonb)
LANGUAGE plpgsql
AS $$
DECLARE
    r jsonb;
BEGIN
    FOR r IN SELECT e FROM jsonb_array_elements(config -> 'rollups') AS e LOOP
        CALL refresh_continuous_aggregate(
            (r ->> 'name')::regclass,
            now() - (r ->> 'start_offset')::interval,
            now() - (r ->> 'end_offset')::interval);
        COMMIT;
    END LOOP;
END
$$;

SELECT remove_continuous_aggregate_policy('readings_1m', if_exists => true);
SELECT remove_continuous_aggregate_policy('readings_1h', if_exists => true);
SELECT remove_continuous_aggregate_policy('site_liveness_1h', if_exists => true);

SELECT add_job(
    'qilu_refresh_rollups_job',
    INTERVAL '1 minute',
    config => jsonb_build_object('rollups', jsonb_build_array(
        jsonb_build_object('name', format('%I.%I', current_schema(), 'readings_1m'),
                           'start_offset', '8 days', 'end_offset', '1 minute'),
        jsonb_build_object('name', format('%I.%I', current_schema(), 'readings_1h'),
                           'start_offset', '8 days', 'end_offset', '1 hour'),
        jsonb_build_object('name', format('%I.%I', current_schema(), 'site_liveness_1h'),
                           'start_offset', '8 days', 'end_offset', '1 hour'))));
