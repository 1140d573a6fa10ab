-- 006 (both modes): room for in-place updates of device_liveness.
--
-- Every batch moves last_seen forward for each device in it: at province scale that is the
-- single most frequent update of the platform (one row per device every reporting interval).
-- Half-empty pages keep each new row version on its page (a HOT update: no index entry, no
-- page split), which measured about 25 % less time per updated device on PostgreSQL 15
-- (docs/adr/0008-ingest-write-path.md). Pages written from now on use it.
ALTER TABLE device_liveness SET (fillfactor = 50);
