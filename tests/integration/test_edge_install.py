"""The edge distribution: `pip install qilu-telemetry` (no extra) into a fresh virtualenv, as
edge-agent/INSTALL-PI.md does on a Pi, holds only what the agent needs and runs it.

The virtualenv is made without pip and filled by this environment's pip (``--python``), so its
site-packages holds the install and nothing else; the packages come from pip's cache when the
development environment fetched them already (it did, for the same pins). Checked there:

- its site-packages stays within the edge's disk budget (printed: disk blocks and file bytes);
- none of the server extra is installed;
- ``python -m edge_agent --help`` and ``check-config`` of the sample work, and so does
  ``qilu agent check-config``; a server command says which extra it needs, without a
  traceback;
- the agent, run for real against the shared broker, imports no server package or stage
  (tests/edge_probe.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qilu import signing
from qilu.settings import KafkaSettings
from tests.edge_probe import SERVER_PACKAGES, SERVER_STAGES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "edge-agent" / "agent.sample.toml"
MB = 1 << 20
# issue 14: the edge install's site-packages at most 40 MB (the full install: ~600 MB)
BUDGET_MB = 40


def site_packages(venv: Path) -> Path:
    (sp,) = (venv / "lib").glob("python3*/site-packages")
    return sp


def sizes(root: Path) -> tuple[int, int]:
    """(bytes on disk: allocated blocks of the files and folders, as ``du`` counts them; bytes
    of the files) under ``root``."""
    disk = size = 0
    for folder, _, files in os.walk(root):
        disk += Path(folder).lstat().st_blocks * 512
        for name in files:
            st = (Path(folder) / name).lstat()
            disk += st.st_blocks * 512
            size += st.st_size
    return disk, size


@pytest.fixture(scope="module")
def edge_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("edge") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=800,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return venv


def run(
    venv: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    exe = argv[0] if argv[0].startswith("/") else str(venv / "bin" / argv[0])
    return subprocess.run(
        [exe, *argv[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=venv,  # not the repository: its packages must come from the install
        env={**os.environ, **(env or {})},
    )


def test_the_edge_install_fits_its_disk_budget_and_holds_no_server_package(
    edge_venv: Path,
) -> None:
    sp = site_packages(edge_venv)
    disk, size = sizes(sp)
    dists = sorted(p.name.split("-")[0].lower() for p in sp.glob("*.dist-info"))
    print(  # the figure this test is about
        f"edge install: site-packages {disk / MB:.1f} MB on disk ({size / MB:.1f} MB of files), "
        f"{len(dists)} distributions: {', '.join(dists)}"
    )
    assert "qilu_telemetry" in dists
    # pydantic among them: the platform's settings and catalog are the server extra's
    assert not [p for p in sp.iterdir() if p.name.split(".")[0] in SERVER_PACKAGES]
    assert {"pip", "setuptools"}.isdisjoint(dists)  # the budget is the install's alone
    # on disk (du: the blocks, 4 KiB each on ext4, compiled bytecode included) and the files
    assert disk <= BUDGET_MB * MB
    assert size <= BUDGET_MB * MB


def test_the_agents_commands_work_and_server_commands_name_their_extra(
    edge_venv: Path, tmp_path: Path
) -> None:
    where = run(edge_venv, "python", "-c", "import edge_agent; print(edge_agent.__file__)")
    assert str(edge_venv) in where.stdout  # the installed package, not the repository's
    r = run(edge_venv, "python", "-m", "edge_agent", "--help")
    assert r.returncode == 0, r.stderr
    assert "check-config" in r.stdout
    secrets = {
        "QILU_EDGE__KAFKA__SASL_PASSWORD": "pw",
        "QILU_EDGE__AUTH__SIGNING_KEY": signing.generate_key().private_b64,
    }
    r = run(edge_venv, "python", "-m", "edge_agent", "check-config", str(SAMPLE), env=secrets)
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout
    # the simulated collector's registry comes from the target catalog (pydantic): a
    # configuration error that names the extra, not a traceback
    sim = tmp_path / "sim.toml"
    sim.write_text(
        f'[agent]\nid = "sim"\n[auth]\nunsigned = true\n[buffer]\npath = "{tmp_path / "b.db"}"\n'
        '[collectors.demo]\ntype = "simulated"\nsites = ["CHG-370100-00001"]\n'
    )
    r = run(edge_venv, "python", "-m", "edge_agent", "check-config", str(sim))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "collectors.demo.type" in r.stderr
    assert "pip install 'qilu-telemetry[server]'" in r.stderr
    assert "Traceback" not in r.stderr
    r = run(edge_venv, "qilu", "agent", "check-config", str(SAMPLE), env=secrets)
    assert r.returncode == 0, r.stderr
    assert "collector ranch_lora: mqtt" in r.stdout
    for argv in (["api", "--help"], ["ingest"], ["agents", "list"], ["services", "--help"]):
        r = run(edge_venv, "qilu", *argv)
        assert r.returncode == 2, (argv, r.stdout, r.stderr)
        assert "pip install 'qilu-telemetry[server]'" in r.stderr, (argv, r.stderr)
        assert "Traceback" not in r.stderr
    r = run(edge_venv, "qilu", "--help")
    assert "qilu-telemetry[server]" in r.stdout


def test_the_running_agent_imports_no_server_package(
    edge_venv: Path, kafka: KafkaSettings, tmp_path: Path
) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'[agent]\nid = "edge-install"\nmetrics_port = 0\n'
        f'[kafka]\nbootstrap = "{kafka.bootstrap}"\ntopic_prefix = "{kafka.topic_prefix}"\n'
        f'[auth]\nunsigned = true\n[buffer]\npath = "{tmp_path / "buf.db"}"\n'
        '[collectors.m]\ntype = "mqtt"\nport = 1\n'
    )
    r = run(edge_venv, "python", str(REPO / "tests" / "edge_probe.py"), "run", str(cfg), "6")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["rc"] == 0, r.stderr[-3000:]
    held = set(out["modules"])
    assert {"edge_agent", "collectors", "kafka", "prometheus_client"} <= held
    assert out["kafka_deferred"] is True
    assert held.isdisjoint(SERVER_PACKAGES), sorted(held & set(SERVER_PACKAGES))
    assert held.isdisjoint(SERVER_STAGES), sorted(held & set(SERVER_STAGES))
