"""`qilu api --ssl-certfile --ssl-keyfile`: the API serves HTTPS itself (uvicorn), with a
certificate of `qilu pki`; a client trusting that CA gets its answers, plain HTTP gets none."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ops.cli import main
from qilu.ports import free_port
from qilu.settings import REPO_ROOT, Settings
from tests.helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_api_serves_https_with_the_given_certificate(settings: Settings, tmp_path: Path) -> None:
    d = tmp_path / "pki"
    assert main(["pki", "init", "--dir", str(d)]) == 0
    assert main(["pki", "issue", "--dir", str(d), "--name", "127.0.0.1"]) == 0
    port = free_port()
    env = {
        **os.environ,
        "QILU_DB__NAME": settings.db.name,
        "QILU_DB__PORT": str(settings.db.port),
        "QILU_DB__HOST": settings.db.host,
    }
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "api", "--port", str(port),
         "--ssl-certfile", str(d / "broker.crt"), "--ssl-keyfile", str(d / "broker.key")],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=log,
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}/metrics"
    try:
        trusting = ssl.create_default_context(cafile=str(d / "ca.crt"))

        def answers() -> bool:
            try:
                with urllib.request.urlopen(url, context=trusting, timeout=2) as resp:
                    return int(resp.status) == 200
            except (urllib.error.URLError, OSError):
                return False

        wait_for(answers, 90, "the API over HTTPS")
        # plain HTTP on the TLS port: no answer
        with pytest.raises((urllib.error.URLError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        # the system's CAs do not know the platform's
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(url, timeout=5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_api_refuses_half_a_tls_configuration(tmp_path: Path) -> None:
    assert main(["api", "--ssl-certfile", str(tmp_path / "x.crt")]) == 2
