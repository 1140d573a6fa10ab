-- 055 (both modes): IEC 104 point tables (点表), issue 15 item 2; qilu/pointtable.py,
-- storage/point_tables.py, docs/registry.md "Point tables".
--
-- One table per (agent, station): which information object address (IOA) of the station's
-- telecontrol link is which metric of which registered device. An import replaces a station's
-- points in one transaction, audited (audit_log, entity 'import', action point_table.import);
-- the agent reads the checked table as CSV, exported from here. No foreign key to devices:
-- the importer checks the devices against the registry (they exist, belong to the agent's
-- sites, the metric belongs to their kind) and reports every refusal with its line.

CREATE TABLE point_tables (
    agent_id     text NOT NULL REFERENCES agents (agent_id),
    station      text NOT NULL CHECK (station ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    source       text NOT NULL DEFAULT '',   -- the imported file's name
    sha256       text NOT NULL DEFAULT '',   -- of the imported file's bytes
    imported_at  timestamptz NOT NULL DEFAULT now(),
    imported_by  text NOT NULL,               -- the audit actor
    PRIMARY KEY (agent_id, station)
);

CREATE TABLE point_table_points (
    agent_id     text NOT NULL,
    station      text NOT NULL,
    ioa          integer NOT NULL CHECK (ioa BETWEEN 1 AND 16777215),
    type_id      smallint NOT NULL,
    device_id    text NOT NULL,
    metric       text NOT NULL REFERENCES metrics (key),
    scale        double precision NOT NULL DEFAULT 1 CHECK (scale <> 0),
    "offset"     double precision NOT NULL DEFAULT 0,
    unit         text NOT NULL DEFAULT '',
    description  text NOT NULL DEFAULT '',
    PRIMARY KEY (agent_id, station, ioa),
    FOREIGN KEY (agent_id, station) REFERENCES point_tables (agent_id, station) ON DELETE CASCADE
);
CREATE INDEX point_table_points_device ON point_table_points (device_id);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_api') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON point_tables, point_table_points TO qilu_api;
    END IF;
END
$$;
