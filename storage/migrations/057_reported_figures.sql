-- 057 (both modes): reported figures (issue 19; docs/reported.md).
--
-- A reported target's values are statistics another body reports (the communications
-- administration, a provincial department), not telemetry: one row per target, area (a city's
-- GB/T 2260 code, or 370000 for the province) and the day the figure is for. Each row says who
-- reported it (reporter), when (reported_on), the document or notice it comes from (source),
-- whether the simulation made it up (simulated) and who imported it when. Imports are
-- transactional and audited (entity 'reported_figure'); a second figure for the same target,
-- area and day replaces the first (a correction, audited with both values), so nothing is
-- counted twice. Rows are not deleted.

CREATE TABLE reported_figures (
    target_id    text NOT NULL CHECK (target_id ~ '^[a-z0-9-]+$'),
    area         text NOT NULL CHECK (area ~ '^37[0-9]{4}$'),
    day          date NOT NULL,
    value        double precision NOT NULL CHECK (value >= 0 AND value < 'Infinity'),
    reporter     text NOT NULL CHECK (reporter <> ''),
    reported_on  date NOT NULL CHECK (reported_on >= day),
    source       text NOT NULL CHECK (source <> ''),
    note         text NOT NULL DEFAULT '',
    simulated    boolean NOT NULL DEFAULT false,
    imported_at  timestamptz NOT NULL DEFAULT now(),
    imported_by  text NOT NULL CHECK (imported_by <> ''),
    PRIMARY KEY (target_id, area, day)
);
CREATE INDEX reported_figures_latest ON reported_figures (target_id, area, day DESC);

ALTER TABLE audit_log DROP CONSTRAINT IF EXISTS audit_log_entity_check;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_entity_check
    CHECK (entity IN ('site', 'device', 'agent', 'api_key', 'import', 'operator',
                      'reported_figure'));

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_api') THEN
        GRANT SELECT, INSERT, UPDATE ON reported_figures TO qilu_api;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_grafana') THEN
        GRANT SELECT ON reported_figures TO qilu_grafana;
    END IF;
END
$$;
