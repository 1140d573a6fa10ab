-- 050 (both modes): what the ingest refused, summed so an operator can read it
-- (`qilu deadletters`, /v1/admin/deadletters, the pipeline dashboard; docs/adr/0012).
--
-- deadletter_summary  one row per (minute the ingest refused it, agent, reason, device): how
--                     many dead-letter records (envelopes) and readings. Whole-envelope
--                     refusals (undecodable bytes, unsigned, unknown agent...) have the
--                     envelope's reason and device ''; agent '' when the bytes did not say.
--                     Readings refused one by one have the reading's reason (unknown_device,
--                     value_out_of_range...) and its device. example_* is the newest record
--                     of the row: its place in the readings topic and the refusal's detail.
-- deadletter_marks    per source partition, the offset after the last dead letter counted.
--                     Written in the batch's transaction with the summary, so a batch read
--                     again after a crash or a rebalance is not counted twice.
CREATE TABLE deadletter_summary (
    bucket           timestamptz NOT NULL,   -- minute of the refusal (ingest time)
    agent_id         text NOT NULL,
    reason           text NOT NULL,
    device_id        text NOT NULL,
    records          bigint NOT NULL CHECK (records >= 0),
    refused_readings bigint NOT NULL CHECK (refused_readings >= 0),
    example_source   text NOT NULL,          -- <topic>/<partition>/<offset> of the original record
    example_detail   text NOT NULL,
    PRIMARY KEY (bucket, agent_id, reason, device_id)
);
CREATE INDEX deadletter_summary_reason ON deadletter_summary (reason, bucket);
CREATE INDEX deadletter_summary_agent ON deadletter_summary (agent_id, bucket);

CREATE TABLE deadletter_marks (
    topic        text NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, partition)
);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_ingest') THEN
        GRANT SELECT, INSERT, UPDATE ON deadletter_summary, deadletter_marks TO qilu_ingest;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_api') THEN
        GRANT SELECT ON deadletter_summary TO qilu_api;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'qilu_grafana') THEN
        GRANT SELECT ON deadletter_summary TO qilu_grafana;
    END IF;
END
$$;
