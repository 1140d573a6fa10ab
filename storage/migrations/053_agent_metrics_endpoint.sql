-- 053 (both modes): where each edge agent serves its Prometheus metrics (issue 12 item 4).
--
-- Provisioning gives every agent an explicit metrics port that no other active agent on the
-- same host holds (the default 9102 is the simulated province's, and two agents on one
-- gateway would both try to bind it). The platform writes the Prometheus file_sd targets of
-- the agents from these columns (`qilu agents targets`, docs/services.md). NULL for agents
-- provisioned before this migration and for the simulated province's agents, which share
-- one endpoint (the province process's QILU_AGENT__METRICS_PORT).

ALTER TABLE agents
    ADD COLUMN metrics_host text CHECK (metrics_host <> ''),
    ADD COLUMN metrics_port integer CHECK (metrics_port BETWEEN 1 AND 65535),
    ADD CONSTRAINT agents_metrics_endpoint CHECK ((metrics_host IS NULL) = (metrics_port IS NULL));

-- one active agent per host and port; a revoked agent's port can be given again
CREATE UNIQUE INDEX agents_metrics_endpoint_active ON agents (metrics_host, metrics_port)
    WHERE revoked_at IS NULL AND metrics_port IS NOT NULL;
