-- 051 (postgres mode): nothing to change. qilu_refresh_rollups() (003) already refreshes the
-- rollups in dependency order (readings_1m, then the rollups built on it) in one call; the
-- timescale variant gives TimescaleDB's background jobs the same order.
SELECT 1;
