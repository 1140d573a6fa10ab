-- 020: gaps reported by edge agents (issue 4): readings an agent dropped because its durable
-- buffer was full, held them too long, or was damaged. One row per gap record; the API serves
-- them (/v1/gaps). (agent_id, boot_id, gap_no) identifies a gap, so a redelivered envelope
-- stores nothing twice; gap_no is NULL only for rows written by hand.

CREATE TABLE agent_gaps (
    agent_id          text NOT NULL,
    boot_id           text NOT NULL,
    gap_no            integer,
    device_id         text,                   -- NULL: many or unknown devices
    start_ts          timestamptz NOT NULL,   -- first and last reading time of the dropped ones
    end_ts            timestamptz NOT NULL,
    dropped_readings  bigint NOT NULL CHECK (dropped_readings >= 0),
    reason            text NOT NULL,          -- buffer_full, max_age, corrupt_buffer[_count_unknown]
    received_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX agent_gaps_identity ON agent_gaps (agent_id, boot_id, gap_no);
CREATE INDEX agent_gaps_start ON agent_gaps (start_ts);
CREATE INDEX agent_gaps_device ON agent_gaps (device_id, start_ts) WHERE device_id IS NOT NULL;
