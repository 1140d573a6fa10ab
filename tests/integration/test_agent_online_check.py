"""``check-config --online`` against the real API and database: the platform tells the agent
which of its configured devices are unknown or not its own, through a request signed with the
agent's Ed25519 key; and the endpoint refuses unsigned, stale, replayed, altered and revoked
requests.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from edge_agent.__main__ import main as lean_main

from qilu import signing
from qilu.contract import Sector
from qilu.registry import Registry, generate
from qilu.settings import DatabaseSettings, Settings
from storage import agents as store
from storage.db import connect
from storage.registry_store import load_registry
from tests.integration.test_api_browser import ApiServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
SCALE = 0.002
AGENT = "gw-online"
PATH = "/v1/agent/devices/check"


@pytest.fixture
def settings(base_settings: Settings, db: DatabaseSettings) -> Settings:
    return base_settings.model_copy(update={"db": db})


@pytest.fixture
def registry(settings: Settings) -> Registry:
    reg = generate(1, SCALE)
    with connect(settings.db) as conn:
        load_registry(conn, reg)
    return reg


@pytest.fixture
def api(settings: Settings, registry: Registry) -> Iterator[ApiServer]:
    del registry
    server = ApiServer(settings)
    try:
        yield server
    finally:
        server.stop()


def devices_at(reg: Registry, sector: Sector, n: int) -> list[tuple[str, str]]:
    """(site id, device id) of the first device of ``n`` sites of ``sector``."""
    out = []
    for site in [s for s in reg.sites if s.sector is sector][:n]:
        dev = next(d for d in reg.devices if d.site_id == site.site_id)
        out.append((site.site_id, dev.device_id))
    return out


def provision(settings: Settings, sites: list[str]) -> signing.KeyPair:
    key = signing.generate_key()
    with connect(settings.db) as conn, conn.transaction():
        store.provision(conn, AGENT, sites, key.public, actor="test")
    return key


def agent_file(tmp: Path, url: str, key: str, devices: list[str]) -> Path:
    mapping = "\n".join(f'"CP{i}/1" = "{d}"' for i, d in enumerate(devices))
    path = tmp / f"agent-{len(list(tmp.glob('agent-*.toml')))}.toml"
    path.write_text(
        f'[agent]\nid = "{AGENT}"\nmetrics_port = 0\n'
        f'[auth]\nkey_no = 1\nsigning_key = "{key}"\n'
        f'[buffer]\npath = "{tmp / "buf.db"}"\n'
        f'[platform]\nurl = "{url}"\n'
        f'[collectors.piles]\ntype = "ocpp"\nport = 0\n[collectors.piles.devices]\n{mapping}\n'
    )
    return path


def test_online_check_names_unknown_and_foreign_devices(
    settings: Settings,
    registry: Registry,
    api: ApiServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    (own_site, own), (_, other_site_device) = devices_at(registry, Sector.CHARGING, 2)
    ((_, substation_device),) = devices_at(registry, Sector.SUBSTATION, 1)
    key = provision(settings, [own_site])

    good = agent_file(tmp_path, api.url, key.private_b64, [own])
    assert lean_main(["check-config", str(good)]) == 0  # offline: not asked
    assert lean_main(["check-config", "--online", str(good)]) == 0
    assert f"1 devices checked at {api.url}" in capsys.readouterr().out

    misspelt = own[:-1] + ("9" if own[-1] != "9" else "8")
    bad = agent_file(tmp_path, api.url, key.private_b64, [own, misspelt])
    caplog.clear()
    assert lean_main(["check-config", bad.as_posix()]) == 0  # a misspelt id passes offline
    assert lean_main(["check-config", "--online", str(bad)]) == 2
    assert (
        f"collectors.piles: 1 device problem(s): device {misspelt} is not registered on the "
        "platform (misspelt?)"
    ) in caplog.text

    foreign = agent_file(
        tmp_path, api.url, key.private_b64, [own, other_site_device, substation_device]
    )
    caplog.clear()
    assert lean_main(["check-config", "--online", str(foreign)]) == 2
    assert f"device {other_site_device} is at site" in caplog.text
    assert "not one of agent gw-online's sites" in caplog.text
    assert f"device {substation_device} is at site" in caplog.text
    assert "of sector substation, which agent gw-online is not provisioned for" in caplog.text

    # run refuses to start with a device of a sector the agent may not write
    caplog.clear()
    assert lean_main(["run", "--config", str(foreign)]) == 2
    assert "1 device(s) refused" in caplog.text
    assert not (tmp_path / "buf.db").exists()  # nothing started


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(  # noqa: S310 - a loopback test server
        url + PATH,
        data=body,
        method="POST",
        headers={**headers, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["detail"]


def test_signed_requests_cannot_be_forged_replayed_or_kept(
    settings: Settings, registry: Registry, api: ApiServer
) -> None:
    ((site, device),) = devices_at(registry, Sector.RANCH, 1)
    key = provision(settings, [site])
    signer = signing.Signer(1, key.private_b64)
    body = json.dumps({"device_ids": [device]}).encode()

    def signed(at: float, b: bytes = body) -> dict[str, str]:
        return signing.request_headers(signer, AGENT, "POST", PATH, b, now_s=at)

    headers = signed(time.time())
    status, text = post(api.url, body, headers)
    assert status == 200, text
    assert json.loads(text)["devices"] == [
        {
            "device_id": device,
            "known": True,
            "site_id": site,
            "sector": "ranch",
            "own_site": True,
            "own_sector": True,
        }
    ]
    assert post(api.url, body, headers) == (401, "signed request refused: replayed")
    assert post(api.url, body, {})[0] == 401  # unsigned
    stale = post(api.url, body, signed(time.time() - 300))
    assert stale == (401, "signed request refused: stale (check the agent's clock)")
    altered = body.replace(device.encode(), b"SOMEONE-ELSES")
    assert post(api.url, altered, signed(time.time())) == (
        401,
        "signed request refused: bad_signature",
    )
    forged = signing.Signer(1, signing.generate_key().private_b64)
    assert post(
        api.url, body, signing.request_headers(forged, AGENT, "POST", PATH, body, now_s=time.time())
    ) == (401, "signed request refused: bad_signature")
    with connect(settings.db) as conn, conn.transaction():
        store.revoke(conn, AGENT, actor="test")
    assert post(api.url, body, signed(time.time())) == (401, f"agent {AGENT!r} is revoked")
