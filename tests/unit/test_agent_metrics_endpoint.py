"""The agent's metrics endpoint answers as prometheus_client's own did (``start_http_server``),
while loading prometheus_client's exposition module only for what a Prometheus server never
asks (edge_agent/metrics.py ``respond``; edge_agent/lean.py)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from edge_agent import metrics
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import _bake_output

from qilu.ports import free_port

REPO = Path(__file__).resolve().parents[2]
ACCEPTS = [
    # Prometheus 2.x
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    # Prometheus 3.x
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;"
    "escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "application/openmetrics-text; version=1.0.0; escaping=dots",
    "application/openmetrics-text; escaping=nonsense",
    "application/openmetrics-text",
    "application/openmetrics-text; version=0.0.1",
    "text/plain; version=1.0.0",
    "text/plain",
    "*/*",
    "",
]


@pytest.fixture(scope="module")
def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    c = Counter("qilu_agent_readings_in_total", "Readings in", ["agent"], registry=reg)
    c.labels("a-1").inc(3)
    Gauge("qilu_agent_buffer_bytes", 'Bytes "in" the\nbuffer', ["agent"], registry=reg).labels(
        "a-1"
    ).set(1.5e6)
    return reg


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize("encoding", ["", "gzip", "deflate, GZIP;q=0.5"])
def test_every_answer_is_prometheus_clients_own(
    registry: CollectorRegistry, accept: str, encoding: str
) -> None:
    status, headers, body = metrics.respond("GET", "/metrics", accept, encoding, registry)
    want = _bake_output(registry, accept, encoding, {}, False)  # type: ignore[no-untyped-call]
    want_status, want_headers, want_body = want
    assert (status, headers) == (want_status, want_headers)
    if ("Content-Encoding", "gzip") in headers:  # gzip stamps the time: compare the content
        body, want_body = gzip.decompress(body), gzip.decompress(want_body)
    assert body == want_body
    assert b"readings" in body  # (escaping=dots spells the names differently)


def test_a_selection_and_the_odd_paths_too(registry: CollectorRegistry) -> None:
    status, headers, body = metrics.respond(
        "GET", "/metrics?name[]=qilu_agent_buffer_bytes", "", "", registry
    )
    params = {"name[]": ["qilu_agent_buffer_bytes"]}
    want = _bake_output(registry, "", "", params, False)  # type: ignore[no-untyped-call]
    assert (status, headers, body) == want
    assert b"readings_in" not in body
    assert metrics.respond("GET", "/favicon.ico", "", "", registry) == ("200 OK", [], b"")
    assert metrics.respond("OPTIONS", "/", "", "", registry)[1] == [("Allow", "OPTIONS,GET")]


def _probe_run(tmp_path: Path) -> dict[str, Any]:
    port = free_port()
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'[agent]\nid = "probe"\nmetrics_port = {port}\n[kafka]\nbootstrap = "127.0.0.1:1"\n'
        f'[auth]\nunsigned = true\n[buffer]\npath = "{tmp_path / "buf.db"}"\n'
        '[collectors.m]\ntype = "mqtt"\nport = 1\n'
    )
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests" / "edge_probe.py"),
            "run",
            str(cfg),
            "5",
            "--scrape",
            str(port),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def test_a_prometheus_scrape_of_a_running_agent_loads_no_exposition_module(
    tmp_path: Path,
) -> None:
    out = _probe_run(tmp_path)
    assert out["rc"] == 0
    assert out["scraped"][0] == "HTTP/1.0 200 OK"
    assert any(
        line.startswith("Content-Type: application/openmetrics-text") for line in out["scraped"]
    )
    assert 'qilu_agent_readings_in_total{agent="probe"} 0.0' in out["scraped"]
    assert "process_resident_memory_bytes" in "\n".join(out["scraped"])
    assert out["scraped"][-1] == "# EOF"
    assert out["prometheus_deferred"] is True
    assert out["prometheus_exposition"] is False
