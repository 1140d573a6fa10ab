-- 063 (both modes): a real import of reported figures ends that target's simulation (review of
-- issue 19).
--
-- `qilu run` stores simulated figures up to 30 days before today; a real figure imported for an
-- earlier day would stay hidden behind them. qilu_end_reported_simulation(targets) deletes the
-- simulated figures of the given targets in the import's transaction and returns how many it
-- removed per target, for the audit rows (storage/reported.py). SECURITY DEFINER: the API role
-- may run it but may not delete figures itself (least privilege, as 060).
--
-- The index reported_figures_latest (057) repeated the primary key's columns
-- (target_id, area, day): the primary key's index serves the same reads, backwards.

CREATE FUNCTION qilu_end_reported_simulation(targets text[])
RETURNS TABLE (target_id text, removed bigint)
LANGUAGE sql SECURITY DEFINER SET search_path FROM CURRENT AS $$
    WITH gone AS (
        DELETE FROM reported_figures f
        WHERE f.simulated AND f.target_id = ANY (targets)
        RETURNING f.target_id)
    SELECT gone.target_id, count(*) FROM gone GROUP BY gone.target_id ORDER BY gone.target_id
$$;

REVOKE EXECUTE ON FUNCTION qilu_end_reported_simulation(text[]) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_api') THEN
        GRANT EXECUTE ON FUNCTION qilu_end_reported_simulation(text[]) TO qilu_api;
    END IF;
END
$$;

DROP INDEX IF EXISTS reported_figures_latest;
