-- 041 (both modes): the temporal registry (issue 8, docs/adr/0009-temporal-registry.md).
--
-- `sites` and `devices` stay the registry as it is now (ingest, API and dashboards read them);
-- each gains a lifecycle `status`. Every state a site or device has had is kept in
-- `site_versions` / `device_versions` with its validity period [valid_from, valid_to) in the
-- province's calendar days (valid_to NULL = still valid). Coverage of day D counts the
-- versions valid on D, so a change effective today never alters an earlier day's figure.
--
-- The versions are written by statement triggers on `sites` and `devices`, whatever writes
-- them (the import, the lifecycle commands, the simulated-registry loader, a hand-written
-- INSERT): nothing can change the registry without its history. A change takes effect on
-- the date in the transaction setting `qilu.effective_date` (SET LOCAL, set by the registry
-- commands); without it a new row is valid since ever (valid_from '0001-01-01', Python's
-- date.min: the registry as it was always known) and a change is effective today (China
-- Standard Time). A change effective before the entity's last change is refused; two changes
-- on one day keep the later.

-- No foreign keys from the versions to the current tables: only the triggers below write the
-- versions, from the rows they version, and rows are never deleted; a foreign key would
-- double the per-row checks of a bulk import (bench/registry_import.py).

ALTER TABLE sites ADD COLUMN status text NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'maintenance', 'decommissioned'));
ALTER TABLE devices ADD COLUMN status text NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'maintenance', 'decommissioned'));

CREATE TABLE site_versions (
    site_id          text NOT NULL,
    valid_from       date NOT NULL,
    valid_to         date CHECK (valid_to IS NULL OR valid_to > valid_from),
    sector           text NOT NULL,
    city_code        text NOT NULL,
    name             text NOT NULL,
    public           boolean NOT NULL,
    networked        boolean NOT NULL,
    voltage_kv       integer NOT NULL,
    gis              boolean NOT NULL,
    one_key_control  boolean NOT NULL,
    smart            boolean NOT NULL,
    agri_base        boolean NOT NULL,
    status           text NOT NULL,
    PRIMARY KEY (site_id, valid_from)
);
CREATE UNIQUE INDEX site_versions_current ON site_versions (site_id) WHERE valid_to IS NULL;

CREATE TABLE device_versions (
    device_pk   integer NOT NULL,
    valid_from  date NOT NULL,
    valid_to    date CHECK (valid_to IS NULL OR valid_to > valid_from),
    site_id     text NOT NULL,
    kind        text NOT NULL,
    status      text NOT NULL,
    PRIMARY KEY (device_pk, valid_from)
);
CREATE UNIQUE INDEX device_versions_current ON device_versions (device_pk) WHERE valid_to IS NULL;

-- the registry as it was before this migration: valid since ever
INSERT INTO site_versions (site_id, valid_from, sector, city_code, name, public, networked,
    voltage_kv, gis, one_key_control, smart, agri_base, status)
SELECT site_id, '0001-01-01', sector, city_code, name, public, networked, voltage_kv, gis,
    one_key_control, smart, agri_base, status FROM sites;
INSERT INTO device_versions (device_pk, valid_from, site_id, kind, status)
SELECT device_pk, '0001-01-01', site_id, kind, status FROM devices;

-- The effective date of a change in this transaction, or `fallback`.
CREATE FUNCTION qilu_effective_date(fallback date) RETURNS date
LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('qilu.effective_date', true), '')::date, fallback)
$$;

-- Today in the province (UTC+8, no daylight saving), the default effective date of a change.
CREATE FUNCTION qilu_province_today() RETURNS date
LANGUAGE sql STABLE AS $$
    SELECT ((now() AT TIME ZONE 'UTC') + interval '8 hours')::date
$$;

CREATE FUNCTION qilu_sites_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO site_versions (site_id, valid_from, sector, city_code, name, public, networked,
        voltage_kv, gis, one_key_control, smart, agri_base, status)
    SELECT site_id, qilu_effective_date('0001-01-01'), sector, city_code, name, public,
        networked, voltage_kv, gis, one_key_control, smart, agri_base, status FROM new_rows;
    RETURN NULL;
END
$$;

CREATE FUNCTION qilu_sites_updated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    eff date := qilu_effective_date(qilu_province_today());
    late record;
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS _qilu_changed_sites (site_id text) ON COMMIT DROP;
    TRUNCATE _qilu_changed_sites;
    INSERT INTO _qilu_changed_sites
    SELECT n.site_id FROM new_rows n JOIN old_rows o ON o.site_id = n.site_id
    WHERE (n.*) IS DISTINCT FROM (o.*);
    SELECT v.site_id, v.valid_from INTO late FROM site_versions v
    JOIN _qilu_changed_sites c ON c.site_id = v.site_id
    WHERE v.valid_to IS NULL AND v.valid_from > eff LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'site %: effective date % is before its last change (%)',
            late.site_id, eff, late.valid_from USING ERRCODE = 'check_violation';
    END IF;
    DELETE FROM site_versions v USING _qilu_changed_sites c
    WHERE v.site_id = c.site_id AND v.valid_to IS NULL AND v.valid_from = eff;
    UPDATE site_versions v SET valid_to = eff FROM _qilu_changed_sites c
    WHERE v.site_id = c.site_id AND v.valid_to IS NULL;
    INSERT INTO site_versions (site_id, valid_from, sector, city_code, name, public, networked,
        voltage_kv, gis, one_key_control, smart, agri_base, status)
    SELECT n.site_id, eff, n.sector, n.city_code, n.name, n.public, n.networked, n.voltage_kv,
        n.gis, n.one_key_control, n.smart, n.agri_base, n.status
    FROM new_rows n JOIN _qilu_changed_sites c ON c.site_id = n.site_id;
    RETURN NULL;
END
$$;

CREATE FUNCTION qilu_devices_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO device_versions (device_pk, valid_from, site_id, kind, status)
    SELECT device_pk, qilu_effective_date('0001-01-01'), site_id, kind, status FROM new_rows;
    RETURN NULL;
END
$$;

CREATE FUNCTION qilu_devices_updated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    eff date := qilu_effective_date(qilu_province_today());
    late record;
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS _qilu_changed_devices (device_pk integer) ON COMMIT DROP;
    TRUNCATE _qilu_changed_devices;
    INSERT INTO _qilu_changed_devices
    SELECT n.device_pk FROM new_rows n JOIN old_rows o ON o.device_pk = n.device_pk
    WHERE (n.*) IS DISTINCT FROM (o.*);
    SELECT n.device_id, v.valid_from INTO late FROM device_versions v
    JOIN _qilu_changed_devices c ON c.device_pk = v.device_pk
    JOIN new_rows n ON n.device_pk = v.device_pk
    WHERE v.valid_to IS NULL AND v.valid_from > eff LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'device %: effective date % is before its last change (%)',
            late.device_id, eff, late.valid_from USING ERRCODE = 'check_violation';
    END IF;
    DELETE FROM device_versions v USING _qilu_changed_devices c
    WHERE v.device_pk = c.device_pk AND v.valid_to IS NULL AND v.valid_from = eff;
    UPDATE device_versions v SET valid_to = eff FROM _qilu_changed_devices c
    WHERE v.device_pk = c.device_pk AND v.valid_to IS NULL;
    INSERT INTO device_versions (device_pk, valid_from, site_id, kind, status)
    SELECT n.device_pk, eff, n.site_id, n.kind, n.status
    FROM new_rows n JOIN _qilu_changed_devices c ON c.device_pk = n.device_pk;
    RETURN NULL;
END
$$;

CREATE TRIGGER sites_versions_insert AFTER INSERT ON sites
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION qilu_sites_inserted();
CREATE TRIGGER sites_versions_update AFTER UPDATE ON sites
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qilu_sites_updated();
CREATE TRIGGER devices_versions_insert AFTER INSERT ON devices
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION qilu_devices_inserted();
CREATE TRIGGER devices_versions_update AFTER UPDATE ON devices
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qilu_devices_updated();
