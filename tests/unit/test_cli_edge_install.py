"""`qilu` on an edge-only install (no `server` extra): the agent's commands work, the others
name the extra instead of a traceback. Simulated here by hiding the server packages from a
fresh interpreter; tests/integration/test_edge_install.py checks a real edge install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qilu import signing

SAMPLE = Path(__file__).resolve().parents[2] / "edge-agent" / "agent.sample.toml"

HIDE = (
    "import sys\n"
    "for name in ('psycopg', 'psycopg_pool', 'fastapi', 'uvicorn', 'jwt', 'pyarrow', 'yaml', "
    "'openpyxl', 'cryptography', 'grafana_foundation_sdk', 'grafana_client', 'pydantic', "
    "'pydantic_core', 'pydantic_settings'):\n"
    "    sys.modules[name] = None  # import raises ModuleNotFoundError, as when not installed\n"
    "from ops.cli import main\n"
)


def qilu(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    code = HIDE + f"sys.exit(main({list(argv)!r}))\n"
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


@pytest.mark.parametrize("argv", [["api", "--help"], ["ingest"], ["agents", "list"]])
def test_a_server_command_names_the_extra(argv: list[str]) -> None:
    r = qilu(*argv)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "pip install 'qilu-telemetry[server]'" in r.stderr
    assert "Traceback" not in r.stderr


def test_help_lists_what_is_missing_and_the_agent_commands_stay() -> None:
    r = qilu("--help")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "qilu-telemetry[server]" in r.stdout
    assert "api.cli" in r.stdout
    r = qilu("agent", "--help")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "check-config" in r.stdout


def test_the_agents_commands_run_without_pydantic() -> None:
    # the edge install holds no pydantic: `qilu agent check-config` reads the agent's file with
    # dataclasses and builds no platform settings
    env = {
        **os.environ,
        "QILU_EDGE__KAFKA__SASL_PASSWORD": "pw",
        "QILU_EDGE__AUTH__SIGNING_KEY": signing.generate_key().private_b64,
    }
    r = qilu("agent", "check-config", str(SAMPLE), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "configuration OK" in r.stdout


def test_other_missing_modules_still_fail_loudly() -> None:
    # only the server extra's packages are expected to be missing; anything else is a bug
    code = "import sys\nsys.modules['msgpack'] = None\nfrom ops.cli import main\nmain(['--help'])\n"
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert r.returncode == 1
    assert "ModuleNotFoundError" in r.stderr
