-- 045 (both modes): edge agents, their signing keys and the sites they may report for
-- (issue 8 item 3, issue 7 item 4; docs/adr/0010-agent-authentication.md).
--
-- Only public keys are stored: an agent signs every envelope with its Ed25519 private key,
-- which provisioning shows once and never stores. Its Kafka SCRAM password is not stored here
-- either (the broker keeps a salted SCRAM hash of it). Rotating adds key_no + 1 and retires
-- the older keys (revoked_at, possibly in the future: a grace period); revoking the agent
-- sets agents.revoked_at. Rows are never deleted: the audit log and old records refer to them.
-- agent_sites has no foreign key to sites: a simulated province provisions its agents before
-- or after its registry is loaded; `qilu agents provision` checks the site ids itself.

CREATE TABLE agents (
    agent_id    text PRIMARY KEY CHECK (agent_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    note        text NOT NULL DEFAULT '',
    simulated   boolean NOT NULL DEFAULT false,  -- provisioned by `qilu agent province`
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE agent_keys (
    agent_id    text NOT NULL REFERENCES agents (agent_id),
    key_no      integer NOT NULL CHECK (key_no >= 1),
    public_key  bytea NOT NULL CHECK (octet_length(public_key) = 32),  -- raw Ed25519
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    PRIMARY KEY (agent_id, key_no)
);

CREATE TABLE agent_sites (
    agent_id  text NOT NULL REFERENCES agents (agent_id),
    site_id   text NOT NULL,
    PRIMARY KEY (agent_id, site_id)
);
CREATE INDEX agent_sites_site ON agent_sites (site_id);

-- One counter bumped by every change to the three tables: the ingest consumer polls it every
-- few seconds and reloads the agent registry only when it moved.
CREATE TABLE agent_registry_version (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    v    bigint NOT NULL
);
INSERT INTO agent_registry_version VALUES (true, 1);

CREATE FUNCTION qilu_bump_agent_registry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE agent_registry_version SET v = v + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER agents_changed AFTER INSERT OR UPDATE OR DELETE ON agents
    FOR EACH STATEMENT EXECUTE FUNCTION qilu_bump_agent_registry();
CREATE TRIGGER agent_keys_changed AFTER INSERT OR UPDATE OR DELETE ON agent_keys
    FOR EACH STATEMENT EXECUTE FUNCTION qilu_bump_agent_registry();
CREATE TRIGGER agent_sites_changed AFTER INSERT OR UPDATE OR DELETE ON agent_sites
    FOR EACH STATEMENT EXECUTE FUNCTION qilu_bump_agent_registry();

-- Least privilege: the ingest reads the registry; the API's admin endpoints (admin scope,
-- checked by the API) provision, rotate and revoke, and append to the audit log.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_ingest') THEN
        GRANT SELECT ON agents, agent_keys, agent_sites, agent_registry_version TO qilu_ingest;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_api') THEN
        GRANT SELECT, INSERT, UPDATE ON agents, agent_keys TO qilu_api;
        GRANT SELECT, INSERT, DELETE ON agent_sites TO qilu_api;
        GRANT SELECT, UPDATE ON agent_registry_version TO qilu_api;
        GRANT INSERT ON audit_log TO qilu_api;
    END IF;
END
$$;
