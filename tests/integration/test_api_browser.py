"""The status page in headless Chromium against a running platform.

Envelopes (the shared wire contract) go to the real Kafka, the real ingest consumer stores
them in a fresh PostgreSQL database, and the API runs under uvicorn on a loopback port. The
browser (Debian's ``chromium``, installed by this test when missing) is driven over the
DevTools protocol: the page's figures must equal the API's, a new device reporting must show
up without a reload (server-sent events), and a screenshot is written to tests/results/.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from kafka import KafkaProducer
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from api.app import create_app
from qilu.contract import Envelope, Reading
from qilu.devices import KINDS
from qilu.ports import free_port
from qilu.services.tools import Apt
from qilu.settings import ApiSettings, Settings
from storage.db import connect
from storage.registry_store import load_registry
from stream.topics import readings_topic
from tests.helpers import scalar, signing_headers, wait_for
from tests.integration.test_api_endpoints import registry

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)
RESULTS = Path(__file__).resolve().parents[1] / "results"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1500,1100",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--remote-debugging-port=0",
)


def ensure_chromium(state_dir: Path) -> str:
    """Debian's chromium (and a font with Chinese glyphs for the city names), installed with
    apt-get on first use (as root), like the servers."""
    missing = []
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        missing.append("chromium")
    fonts = (
        subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True, check=False).stdout
        if shutil.which("fc-list")
        else ""
    )
    if not fonts.strip():
        missing.append("fonts-wqy-microhei")
    if missing:
        Apt(state_dir / "logs" / "apt-chromium.log").install(
            missing, why="the status page browser test", progress=logger.info
        )
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is still missing after apt-get install"
    return found


class Browser:
    """A headless Chromium and one page, driven over the DevTools protocol."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: close() ends every helper process
        )
        self._stack = contextlib.ExitStack()
        self._ids = itertools.count(1)
        self.console: list[str] = []
        try:
            port_file = profile / "DevToolsActivePort"
            wait_for(port_file.exists, 60, what="Chromium's DevTools port")
            wait_for(lambda: bool(port_file.read_text().split()), 10, what="DevToolsActivePort")
            port = int(port_file.read_text().split()[0])
            url = f"http://127.0.0.1:{port}/json/list"
            with urllib.request.urlopen(url, timeout=10) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            self.ws: ClientConnection = self._stack.enter_context(
                ws_connect(pages[0]["webSocketDebuggerUrl"], max_size=None)
            )
            self.send("Page.enable")
            self.send("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("method") == "Runtime.consoleAPICalled":
                self.console.append(" ".join(str(a.get("value")) for a in msg["params"]["args"]))
            if msg.get("method") == "Runtime.exceptionThrown":
                self.console.append(json.dumps(msg["params"]["exceptionDetails"])[:500])
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result

    def eval(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise AssertionError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def screenshot(self, path: Path) -> None:
        import base64

        height = self.eval("document.documentElement.scrollHeight")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=1500,
            height=int(height),
            deviceScaleFactor=1,
            mobile=False,
        )
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            time.sleep(0.5)  # helpers leave after the main process; make sure of it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


class ApiServer:
    """The API under uvicorn on a free loopback port, in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 30, what="uvicorn to start")
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:  # noqa: S310
            return json.load(r)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def send_readings(settings: Settings, devices: list[str], at: datetime) -> None:
    """One envelope per sector with a reading of each device's first metric, via Kafka."""
    by_sector: dict[str, Envelope] = {}
    kinds = {d.device_id: d.kind for d in registry().devices}
    boot = str(uuid.uuid4())
    for i, device in enumerate(devices):
        kind = KINDS[kinds[device]]
        env = by_sector.setdefault(
            kind.sector.value,
            Envelope(f"browser-test-{kind.sector.value}", boot, i, int(time.time() * 1e6)),
        )
        m = kind.metrics[0]
        env.add(Reading.at(device, m.key, at, (m.low + m.high) / 2))
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    try:
        for sector, env in by_sector.items():
            topic = readings_topic(settings.kafka, KINDS[kinds[env.devices[0]]].sector)
            value = env.encode()
            headers = signing_headers(settings, env.agent_id)(value)
            fut = producer.send(topic, key=env.agent_id.encode(), value=value, headers=headers)
            fut.get(timeout=30)
            del sector
    finally:
        producer.close(timeout=10)


@pytest.fixture
def chromium(base_settings: Settings) -> str:
    return ensure_chromium(base_settings.services.state_dir)


@pytest.fixture
def running(
    settings: Settings, start_ingest: Callable[[], object]
) -> Iterator[tuple[Settings, ApiServer]]:
    with connect(settings.db) as conn:
        load_registry(conn, registry())
    now = datetime.now(UTC)
    live = ["CHG-Q-1-01", "CHG-Q-1-02", "CHG-J-1-01", "SUB-J-1-01", "RAN-Q-1-01"]
    send_readings(settings, live, now)
    send_readings(settings, ["CHG-Q-1-03"], now - timedelta(hours=1))
    start_ingest()  # after the first records: the topics' metadata is settled when it joins
    wait_for(
        lambda: scalar(settings.db, "SELECT count(*) FROM device_liveness") == 6,
        90,
        what="ingest to store the first readings",
    )
    fast = settings.model_copy(
        update={"api": ApiSettings(coverage_cache_s=1.0, anonymous_scopes=["coverage:read"])}
    )
    server = ApiServer(fast)
    try:
        wait_for(lambda: _ready(server), 30, what="the first coverage snapshot")
        yield fast, server
    finally:
        server.stop()


def _ready(server: ApiServer) -> bool:
    try:
        server.get("/readyz")
    except OSError:
        return False
    return True


PAGE_CELLS = """
JSON.stringify([...document.querySelectorAll('td[data-city]')].map(td => [
  td.dataset.target, td.dataset.city, td.dataset.value, td.textContent]))
"""


def page_cells(browser: Browser) -> dict[tuple[str, str], tuple[str, str]]:
    cells = json.loads(browser.eval(PAGE_CELLS))
    return {(t, c): (v, text) for t, c, v, text in cells}


def api_cells(coverage: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    out = {}
    for t in coverage:
        out[(t["target_id"], "370000")] = "" if t["value"] is None else repr_js(t["value"])
        for c in t["cities"]:
            out[(t["target_id"], c["city_code"])] = (
                "" if c["value"] is None else repr_js(c["value"])
            )
    return out


def repr_js(v: float) -> str:
    """How JavaScript's String(number) prints a JSON number (integers without '.0')."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def test_status_page_shows_the_api_figures_and_updates_live(
    chromium: str, running: tuple[Settings, ApiServer], tmp_path: Path
) -> None:
    settings, server = running
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    browser = Browser(chromium, profile)
    try:
        browser.send("Page.navigate", url=server.url + "/")
        wait_for(
            lambda: browser.eval("document.body && document.body.dataset.live") == "live",
            30,
            what="the page to load and open its event stream",
        )
        browser.eval("window.__noReload = 'still the same document'")

        # --- the figures on the page are the API's --------------------------------------
        def matches() -> bool:
            status = server.get("/v1/status")
            shown = browser.eval("document.body.dataset.version")
            return shown == str(status["version"]) and {
                k: v for k, (v, _) in page_cells(browser).items()
            } == api_cells(status["coverage"])

        wait_for(matches, 20, what="page cells to equal /v1/status")
        cells = page_cells(browser)
        coverage = {t["target_id"]: t for t in server.get("/v1/coverage")}
        assert len(cells) == len(coverage) * 17
        piles = coverage["charging-public-piles-2024"]
        assert piles["value"] == 3  # Q-1-01, Q-1-02, J-1-01: public, networked, reporting
        assert cells[("charging-public-piles-2024", "370000")] == ("3", "3")
        assert cells[("charging-public-piles-2024", "370200")] == ("2", "2")
        assert cells[("substation-220kv-monitoring-2024", "370100")] == ("0", "0.0%")
        status = browser.eval(
            "document.querySelector('article[data-target=\"charging-public-piles-2024\"]')"
            ".dataset.status"
        )
        assert status == piles["judgement"]["status"]
        pipeline = server.get("/v1/status")["pipeline"]
        assert browser.eval("document.querySelector('[data-field=online]').textContent") == str(
            pipeline["online"]
        )

        # --- a device that never reported starts reporting: the page follows, no reload ---
        version_before = int(browser.eval("document.body.dataset.version"))
        send_readings(settings, ["CHG-Q-1-04", "SUB-J-1-02"], datetime.now(UTC))
        wait_for(
            lambda: (
                browser.eval(
                    'document.querySelector(\'td[data-target="charging-public-piles-2024"]'
                    '[data-city="370000"]\').dataset.value'
                )
                == "4"
            ),
            60,
            what="the live update to reach the page",
        )
        assert browser.eval("window.__noReload") == "still the same document"
        assert int(browser.eval("document.body.dataset.version")) > version_before
        # the substation reading travels on its own topic: it may arrive a snapshot later
        wait_for(
            lambda: page_cells(browser)[("substation-220kv-monitoring-2024", "370100")][0] == "1",
            60,
            what="the substation reading to reach the page",
        )
        wait_for(matches, 20, what="page cells to equal /v1/status after the update")

        RESULTS.mkdir(exist_ok=True)
        ignore = RESULTS / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# written by the test run\n*\n")
        shot = RESULTS / "status_page.png"
        browser.screenshot(shot)
        assert shot.stat().st_size > 20_000
        assert not [c for c in browser.console if "exceptionId" in c], browser.console
    finally:
        browser.close()
