-- 069 (timescale mode): nothing to change. The postgres mode's refresh function now
-- recomputes late data per rollup in one statement; TimescaleDB's continuous aggregates
-- keep their own invalidation log.
SELECT 1;
