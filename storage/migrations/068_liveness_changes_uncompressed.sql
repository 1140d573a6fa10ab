-- 068 (both modes): the change log's arrays stored out of line without compression
-- (docs/adr/0018-incremental-coverage.md, "Who writes the change log").
--
-- A liveness statement of the ingest logs ~20,000 devices in catch-up (an int4 and an int8
-- array, ~270 kB): the default storage compressed them with pglz on every insert, ~5 ms of
-- the writing process per row of the log for a third off the size (measured on
-- PostgreSQL 15: 9.5-10.0 ms per insert compressed, 4.4-4.7 ms uncompressed). The log keeps
-- ten minutes, read once by the coverage refresher: its size does not matter, its cost does.
ALTER TABLE liveness_changes
    ALTER COLUMN devices SET STORAGE EXTERNAL,
    ALTER COLUMN seen_us SET STORAGE EXTERNAL;
