"""The agent's metrics endpoint: only the agent's series, and a busy port named as a key."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
from edge_agent import metrics
from edge_agent.__main__ import main as lean_main

from qilu.errors import ConfigError
from qilu.ports import free_port


def test_endpoint_shows_the_agents_series_and_not_the_ingests() -> None:
    import stream.metrics  # the ingest's metrics, registered wherever they are imported

    del stream.metrics
    port = free_port()
    server = metrics.serve("127.0.0.1", port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert "qilu_agent_readings_sent_total" in text
    assert "process_resident_memory_bytes" in text  # the agent process's own
    assert "qilu_ingest_" not in text
    assert "qilu_api_" not in text


def test_a_busy_metrics_port_is_a_configuration_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError) as err:
            metrics.serve("127.0.0.1", port)
        assert err.value.key == "agent.metrics_port"
        assert "in use" in err.value.problem
        cfg = tmp_path / "agent.toml"
        cfg.write_text(
            f'[agent]\nid = "a"\nmetrics_port = {port}\n[auth]\nunsigned = true\n'
            f'[buffer]\npath = "{tmp_path / "buf.db"}"\n'
            '[collectors.m]\ntype = "mqtt"\nport = 1\n'
        )
        caplog.set_level("ERROR")
        assert lean_main(["run", "--config", str(cfg)]) == 2  # exit 2, not a traceback
    assert "agent.metrics_port" in caplog.text
    assert "Traceback" not in caplog.text
