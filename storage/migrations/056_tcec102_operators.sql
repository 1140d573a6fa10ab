-- 056 (both modes): charging operators connected over T/CEC 102 (issue 16;
-- docs/adr/0015-tcec102.md).
--
-- An operator is identified by its OperatorID (a 9-character organisation code). Its secrets
-- (the key sets of both directions and the signing key of its platform-side agent) are stored
-- sealed with AES-256-GCM under the platform's tcec102.secret_key, never in plain text; key_no
-- counts rotations (bearer tokens carry it, so a rotation retires them). Each operator reports
-- through its own agent identity (agents.agent_id = 'tcec102-<OperatorID>'), so the ingest's
-- signature and site checks apply to it as to any edge agent. Rows are never deleted.

CREATE TABLE operators (
    operator_id   text PRIMARY KEY CHECK (operator_id ~ '^[0-9A-Za-z]{9}$'),
    name          text NOT NULL DEFAULT '',
    endpoint_url  text NOT NULL DEFAULT '',  -- where we call them ('' = we do not)
    agent_id      text NOT NULL UNIQUE REFERENCES agents (agent_id),
    key_no        integer NOT NULL DEFAULT 1 CHECK (key_no >= 1),
    secrets       bytea NOT NULL,  -- nonce || AES-GCM(JSON), associated data = operator_id
    pull_interval_s integer NOT NULL DEFAULT 300 CHECK (pull_interval_s > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    rotated_at    timestamptz,
    revoked_at    timestamptz
);

-- Which pile (registry device) each of an operator's connectors belongs to.
CREATE TABLE operator_connectors (
    operator_id   text NOT NULL REFERENCES operators (operator_id),
    connector_id  text NOT NULL,
    equipment_id  text NOT NULL,
    station_id    text NOT NULL DEFAULT '',
    device_id     text NOT NULL,
    first_seen    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operator_id, connector_id)
);
CREATE INDEX operator_connectors_device ON operator_connectors (device_id);

-- The link's health as the endpoint sees it: one row per operator, upserted.
CREATE TABLE operator_links (
    operator_id       text PRIMARY KEY REFERENCES operators (operator_id),
    last_push         timestamptz,
    last_pull         timestamptz,
    last_token        timestamptz,
    token_expires_at  timestamptz,
    failures          bigint NOT NULL DEFAULT 0,
    last_failure      timestamptz,
    last_failure_reason text NOT NULL DEFAULT ''
);

ALTER TABLE audit_log DROP CONSTRAINT IF EXISTS audit_log_entity_check;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_entity_check
    CHECK (entity IN ('site', 'device', 'agent', 'api_key', 'import', 'operator'));

-- The API serves the endpoint and the admin routes; coverage (computed by the API and the
-- maintenance) and the dashboards read link health and connectors, never the secrets column.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_api') THEN
        GRANT SELECT, INSERT, UPDATE ON operators, operator_links TO qilu_api;
        GRANT SELECT, INSERT, UPDATE ON operator_connectors TO qilu_api;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_ingest') THEN
        GRANT SELECT (operator_id, pull_interval_s, revoked_at) ON operators TO qilu_ingest;
        GRANT SELECT ON operator_connectors, operator_links TO qilu_ingest;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_grafana') THEN
        GRANT SELECT (operator_id, name, key_no, pull_interval_s, created_at, revoked_at)
            ON operators TO qilu_grafana;
        GRANT SELECT ON operator_connectors, operator_links TO qilu_grafana;
    END IF;
END
$$;
