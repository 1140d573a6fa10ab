-- 042 (both modes): what the roles of 005 may do with the temporal registry (041) and the
-- audit log (040). Least privilege:
--   qilu_api      reads the history; for the admin endpoints (`/v1/admin/...`, admin scope
--                 checked by the API) it may add and change sites and devices and append to
--                 the audit log. It cannot delete them, nor write their history directly:
--                 the history is written by the triggers of 041 (SECURITY DEFINER).
--   qilu_ingest   reads the current device versions: the effective date of a decommissioning
--                 decides which late readings it still accepts (docs/registry.md).
--   qilu_grafana  reads the history (coverage as it was on a day), nothing more.
-- Which API keys may call the admin endpoints is the API's business (scope `admin`); a reader
-- key never reaches these statements.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_api') THEN
        GRANT SELECT ON site_versions, device_versions TO qilu_api;
        GRANT INSERT, UPDATE ON sites, devices TO qilu_api;
        GRANT INSERT ON audit_log TO qilu_api;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_ingest') THEN
        GRANT SELECT ON device_versions TO qilu_ingest;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_grafana') THEN
        GRANT SELECT ON site_versions, device_versions TO qilu_grafana;
    END IF;
END
$$;
