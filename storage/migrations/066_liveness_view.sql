-- 066 (both modes): the liveness rule, written once
-- (docs/adr/0018-incremental-coverage.md, "One liveness rule").
--
-- qilu_seen_within(last_seen, expected, at)  THE rule: a device is online at `at` when its
--                            newest valid reading is younger than its kind's expected
--                            interval. NULL (never seen) is not online. A plain SQL
--                            expression function: the planner inlines it, so a query that
--                            calls it runs exactly as one that spells it out.
-- qilu_province_day(at)      the province's calendar day (UTC+8, no daylight saving) of `at`:
--                            the day whose registry versions count (ADR 0009).
-- qilu_device_connected(at)  every device of the registry as it was on the province day of
--                            `at`, in service (active, on an active site), with its site's
--                            sector and city, its liveness and its state by the rule
--                            ('online', 'offline', 'never_seen'). Inlined too (one SELECT).
-- device_connected           qilu_device_connected(now()): what dashboards and alert rules
--                            read. Coverage's further conditions (a telecontrol gateway's
--                            interrogation, a T/CEC 102 operator's piles) stay in
--                            storage/coverage.py, on top of this rule.
-- sites_in_service           the site versions of today's province day, active: the sites
--                            coverage counts today (for panels that follow a target).
CREATE FUNCTION qilu_seen_within(last_seen timestamptz, expected interval, at timestamptz)
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT last_seen > at - expected
$$;

CREATE FUNCTION qilu_province_day(at timestamptz) RETURNS date
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT ((at AT TIME ZONE 'UTC') + interval '8 hours')::date
$$;

CREATE FUNCTION qilu_device_connected(at timestamptz)
RETURNS TABLE (
    device_pk          integer,
    device_id          text,
    site_id            text,
    kind               text,
    sector             text,
    city_code          text,
    last_seen          timestamptz,
    expected_interval  interval,
    state              text,
    online             boolean
)
LANGUAGE sql STABLE AS $$
    SELECT dv.device_pk, d.device_id, dv.site_id, dv.kind, sv.sector, sv.city_code,
        l.last_seen, k.expected_interval,
        CASE WHEN l.last_seen IS NULL THEN 'never_seen'
             WHEN qilu_seen_within(l.last_seen, k.expected_interval, at) THEN 'online'
             ELSE 'offline' END,
        coalesce(qilu_seen_within(l.last_seen, k.expected_interval, at), false)
    FROM device_versions dv
    JOIN devices d ON d.device_pk = dv.device_pk
    JOIN site_versions sv ON sv.site_id = dv.site_id
        AND sv.valid_from <= qilu_province_day(at)
        AND (sv.valid_to IS NULL OR sv.valid_to > qilu_province_day(at))
        AND sv.status = 'active'
    JOIN device_kinds k ON k.kind = dv.kind
    LEFT JOIN device_liveness l ON l.device_pk = dv.device_pk
    WHERE dv.valid_from <= qilu_province_day(at)
        AND (dv.valid_to IS NULL OR dv.valid_to > qilu_province_day(at))
        AND dv.status = 'active'
$$;

CREATE VIEW device_connected AS SELECT * FROM qilu_device_connected(now());

CREATE VIEW sites_in_service AS
    SELECT * FROM site_versions
    WHERE valid_from <= qilu_province_day(now())
        AND (valid_to IS NULL OR valid_to > qilu_province_day(now()))
        AND status = 'active';

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_api') THEN
        GRANT SELECT ON device_connected, sites_in_service TO qilu_api;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_grafana') THEN
        GRANT SELECT ON device_connected, sites_in_service TO qilu_grafana;
    END IF;
END
$$;
