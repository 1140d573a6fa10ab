-- 030: API keys of the HTTP API (issue 5). Only a SHA-256 digest of each key's secret part is
-- stored; the token is shown once by `qilu apikey create`. Empty city/sector arrays = no limit.

CREATE TABLE api_keys (
    key_id         text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{12}$'),
    name           text NOT NULL,
    secret_sha256  bytea NOT NULL CHECK (octet_length(secret_sha256) = 32),
    scopes         text[] NOT NULL
                   CHECK (scopes <@ ARRAY['coverage:read', 'telemetry:read', 'admin']::text[]
                          AND cardinality(scopes) > 0),
    cities         text[] NOT NULL DEFAULT '{}',
    sectors        text[] NOT NULL DEFAULT '{}'
                   CHECK (sectors <@ ARRAY['charging', 'substation', 'ranch']::text[]),
    rate_per_s     double precision CHECK (rate_per_s IS NULL OR rate_per_s > 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz,
    revoked_at     timestamptz
);
