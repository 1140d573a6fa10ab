-- 067 (both modes): a writer of device_liveness may log its own changes
-- (docs/adr/0018-incremental-coverage.md, "Who writes the change log").
--
-- The statement triggers of migration 062 log every statement that moved device_liveness
-- forward: they collect the moved rows in a transition table, aggregate them into arrays and
-- turn each last_seen back into microseconds with a numeric extract(epoch ...), per row.
-- The ingest's sink has those arrays already (int4 devices, int8 microseconds) and writes
-- them into liveness_changes in the same statement as its liveness upsert; it sets the
-- transaction-local setting qilu.liveness_logged to 'on' first, and the trigger function
-- then returns at once. Every other writer (a backfill, a registry script, a test) sets
-- nothing and is logged by the triggers as before.
--
-- A writer that sets the flag must log at least the devices it moved, each with a time not
-- older than the one it stored: the coverage model keeps the newest time per device, so
-- devices that did not move (a redelivery, late data) may be logged too and change nothing.
CREATE OR REPLACE FUNCTION qilu_log_liveness() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF current_setting('qilu.liveness_logged', true) = 'on' THEN
        RETURN NULL;  -- the writing statement logged its own changes
    END IF;
    INSERT INTO liveness_changes (devices, seen_us)
    SELECT array_agg(device_pk), array_agg((extract(epoch FROM last_seen) * 1000000)::int8)
    FROM new_rows HAVING count(*) > 0;
    RETURN NULL;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_ingest') THEN
        -- the sink inserts its own log rows
        GRANT INSERT ON liveness_changes TO qilu_ingest;
    END IF;
END
$$;
