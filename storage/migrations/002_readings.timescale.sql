-- 002 (timescale mode): readings becomes a hypertable with one-hour chunks, compressed once
-- the stragglers of an hour have arrived, and dropped by a retention policy.
-- docs/adr/0003-storage-modes.md explains the numbers; `qilu storage maintain` adjusts the
-- retention to the configured value.

-- One hour: at province scale (~40,000 readings/s) an hour of rows plus its primary-key index
-- is ~13 GB, the most that should be hot in memory on the reference machine; each hour also
-- lines up with the hourly rollup, so a chunk is finished, compressed and dropped as a whole.
SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 hour'), migrate_data => true);

-- Segment by the series (device, metric): a per-device query or a late reading for one
-- device touches only that series' compressed batches; order by time, newest first, inside.
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_pk, metric_id',
    timescaledb.compress_orderby = 'ts DESC'
);

-- Compress a chunk three hours after it ends: live data and ordinary delays land in row
-- storage; later arrivals (a device offline for days) go into compressed chunks, which
-- TimescaleDB supports including the duplicate check of ON CONFLICT DO NOTHING.
SELECT add_compression_policy('readings', compress_after => INTERVAL '3 hours');
SELECT add_retention_policy('readings', drop_after => INTERVAL '30 days');
