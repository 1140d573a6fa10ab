-- 040: the audit log (issue 8). Every change to the registry, to agents and to API keys made
-- through the CLI or the admin API is recorded here in the same transaction as the change:
-- who (actor: "cli:<os user>" or "api:<key id>"), when, what (action on entity/entity_id),
-- and the entity's state before and after as JSON (NULL for creation / deletion).
-- Rows are only ever inserted; the API role may read them.

CREATE TABLE audit_log (
    audit_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL CHECK (actor <> ''),
    action     text NOT NULL CHECK (action ~ '^[a-z][a-z_.]*$'),
    entity     text NOT NULL CHECK (entity IN ('site', 'device', 'agent', 'api_key', 'import')),
    entity_id  text NOT NULL,
    before     jsonb,
    after      jsonb
);
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id, at);
CREATE INDEX audit_log_at ON audit_log (at);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_api') THEN
        GRANT SELECT ON audit_log TO qilu_api;
    END IF;
END
$$;
