-- 060 (both modes): a real registry import ends a simulated registry (review of issue 13).
--
-- When `qilu registry import` or `POST /v1/admin/registry/import` applies a real inventory to
-- a database whose registry the simulation generated (`qilu run`), the simulated shares of the
-- province (simulated_registry, 052) must no longer scale the thresholds, and the modelled
-- history (coverage_daily rows marked synthetic) must no longer stand for the past
-- (docs/adr/0013-scaled-thresholds.md). qilu_end_simulation() does both in the import's
-- transaction and returns what it removed for the audit row, or NULL when the registry was not
-- a simulated one. SECURITY DEFINER: the API role may run it, but may not delete from these
-- tables itself (least privilege, as 042).
CREATE FUNCTION qilu_end_simulation() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    shares jsonb;
    seed integer;
    scale double precision;
    removed bigint;
BEGIN
    SELECT jsonb_object_agg(s.sector, s.fraction), min(s.seed), min(s.scale)
      INTO shares, seed, scale
      FROM simulated_registry s;
    IF shares IS NULL THEN
        RETURN NULL;
    END IF;
    DELETE FROM simulated_registry;
    DELETE FROM coverage_daily WHERE synthetic;
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN jsonb_build_object(
        'shares', shares, 'seed', seed, 'scale', scale, 'synthetic_rows', removed);
END
$$;

REVOKE EXECUTE ON FUNCTION qilu_end_simulation() FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_api') THEN
        GRANT EXECUTE ON FUNCTION qilu_end_simulation() TO qilu_api;
    END IF;
END
$$;
