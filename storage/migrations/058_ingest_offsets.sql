-- 058 (both modes): the Kafka offsets the database has stored, per topic partition
-- (docs/adr/0016-offsets-in-the-database.md, docs/operations.md).
--
-- ingest_offsets  per source partition of the readings topics, the offset after the last
--                 record whose readings (and dead-letter counts) this database holds. The
--                 ingest writes it in the same transaction as the rows, one upsert per batch
--                 (storage/offsets.py). It moves only forward. After a point-in-time restore,
--                 or a failover that lost the last transactions, the table says where the
--                 database really is; on every partition assignment the ingest seeks back to
--                 it when Kafka's committed offset is ahead, so the readings Kafka still
--                 holds are stored again, exactly once.
CREATE TABLE ingest_offsets (
    topic        text NOT NULL,
    partition    integer NOT NULL CHECK (partition >= 0),
    next_offset  bigint NOT NULL CHECK (next_offset >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_ingest') THEN
        GRANT SELECT, INSERT, UPDATE ON ingest_offsets TO qilu_ingest;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_api') THEN
        GRANT SELECT ON ingest_offsets TO qilu_api;
    END IF;
END
$$;
