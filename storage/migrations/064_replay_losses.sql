-- 064 (both modes): records lost past Kafka's retention when the ingest replayed from the
-- database's offsets (storage/replay_losses.py, docs/operations.md, docs/adr/0016).
--
-- replay_losses  one row per partition and loss: offsets first_offset .. end_offset - 1
--                were never stored by this database and the broker no longer held them
--                (a restore or failover older than the retention, or a group without a
--                committed offset behind the retention). records is exact. first_kept_at:
--                the broker's append time of the oldest record it still held (the lost
--                ones were appended before it), when the topic records append times.
--                agents_reported: the per-agent rows (agent_gaps, reason kafka_retention,
--                boot_id 'kafka:<topic>/<partition>@<first_offset>') are written; agents
--                how many. Written by the ingest in the transaction of a batch.
CREATE TABLE replay_losses (
    topic             text NOT NULL,
    partition         integer NOT NULL CHECK (partition >= 0),
    first_offset      bigint NOT NULL CHECK (first_offset >= 0),
    end_offset        bigint NOT NULL,
    records           bigint NOT NULL CHECK (records = end_offset - first_offset),
    committed_offset  bigint,                -- Kafka's committed offset then (NULL: none)
    detected_at       timestamptz NOT NULL DEFAULT now(),
    first_kept_at     timestamptz,
    agents_reported   boolean NOT NULL DEFAULT false,
    agents            integer,
    PRIMARY KEY (topic, partition, first_offset),
    CHECK (end_offset > first_offset)
);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_ingest') THEN
        GRANT SELECT, INSERT, UPDATE ON replay_losses TO qilu_ingest;
        -- the per-agent rows, and where each agent's loss began (its last stored reading)
        GRANT SELECT, INSERT ON agent_gaps TO qilu_ingest;
        GRANT SELECT ON readings TO qilu_ingest;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_api') THEN
        GRANT SELECT ON replay_losses TO qilu_api;
    END IF;
END
$$;
