"""The status page in headless Chromium against a running platform.

Envelopes (the shared wire contract) go to the real Kafka, the real ingest consumer stores
them in a fresh PostgreSQL database, and the API runs under uvicorn on a loopback port. The
browser (Debian's ``chromium``, installed by this test when missing) is driven over the
DevTools protocol: the page's figures must equal the API's, a new device reporting must show
up without a reload (server-sent events), the trajectory charts and the province view must
plot what ``/v1/trajectories`` and ``/v1/status`` answer, the page must work from the keyboard
and in both languages. Screenshots at phone (390x844) and desktop (1440x900) widths are
written to tests/results/ as test artefacts; the README's and docs/api.md's images come from a
real ``qilu run`` instead (scripts/screenshots.py).
"""

from __future__ import annotations

import base64
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
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jwt
import pytest
import uvicorn
from kafka import KafkaProducer
from pydantic import SecretStr
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from api.app import create_app
from interconnect.tcec102 import operators as ops
from ops.services.tools import Apt
from qilu.catalog import TargetKind, load_catalog
from qilu.contract import Envelope, Reading
from qilu.devices import KINDS
from qilu.ports import free_port
from qilu.settings import ApiSettings, Settings
from storage import coverage
from storage import operators as store
from storage.db import connect
from storage.registry_store import load_registry
from stream.topics import readings_topic
from tests.helpers import scalar, signing_headers, wait_for
from tests.integration.test_api_endpoints import registry

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)
RESULTS = Path(__file__).resolve().parents[1] / "results"
# the registry as a simulated share of the province, per sector (as `qilu run` records it)
SIMULATED_SHARES = {"charging": 0.02, "substation": 0.05, "ranch": 0.5, "all": 0.02}
HISTORY_START = date(2024, 1, 1)
MEASURED_DAYS = 10  # the last days of the seeded history are measured, the rest modelled
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
        # with Network.enable: request id -> URL, and the headers each request went out with
        self.urls: dict[str, str] = {}
        self.sent_headers: dict[str, dict[str, str]] = {}
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
            if msg.get("method") == "Network.requestWillBeSent":
                self.urls[msg["params"]["requestId"]] = msg["params"]["request"]["url"]
            if msg.get("method") == "Network.requestWillBeSentExtraInfo":
                self.sent_headers[msg["params"]["requestId"]] = {
                    k.lower(): v for k, v in msg["params"]["headers"].items()
                }
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
        """The whole page at 1500 px wide."""
        height = self.eval("document.documentElement.scrollHeight")
        self.viewport(1500, int(height))
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))

    def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )

    def shot(self, path: Path) -> None:
        """What the viewport shows, as a person would see it."""
        data = self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(data["data"]))

    def press(self, key: str) -> None:
        """One key as the keyboard types it (keyDown with its text, then keyUp)."""
        code, vk, text = {
            "Tab": ("Tab", 9, ""),
            "Enter": ("Enter", 13, "\r"),
            " ": ("Space", 32, " "),
        }[key]
        common = {"key": key, "code": code, "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk}
        self.send("Input.dispatchKeyEvent", type="keyDown", text=text, **common)
        self.send("Input.dispatchKeyEvent", type="keyUp", **common)

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

    def get(self, path: str, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        req = urllib.request.Request(self.url + path, headers=headers)  # noqa: S310
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
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
    seed_history(settings, now)
    fast = settings.model_copy(
        update={"api": ApiSettings(coverage_cache_s=1.0, anonymous_scopes=["coverage:read"])}
    )
    server = ApiServer(fast)
    try:
        wait_for(lambda: _ready(server), 30, what="the first coverage snapshot")
        yield fast, server
    finally:
        server.stop()


_SEED_DAYS = (
    "INSERT INTO coverage_daily"
    " (day, target_id, city_code, numerator, denominator, value, synthetic, computed_at)"
    " SELECT g.day::date, u.t, u.c, n.k, u.den,"
    "  CASE WHEN NOT u.ratio THEN n.k WHEN u.den > 0 THEN n.k::float8 / u.den END,"
    "  g.day::date < %(measured_from)s, %(now)s"
    " FROM unnest(%(t)s::text[], %(c)s::text[], %(num)s::int4[], %(den)s::int4[],"
    "  %(ratio)s::bool[]) AS u(t, c, num, den, ratio)"
    " CROSS JOIN generate_series(%(start)s::date, %(end)s::date, interval '1 day') AS g(day)"
    " CROSS JOIN LATERAL (SELECT floor(u.num * ((g.day::date - %(start)s::date) + 1)::float8"
    "  / ((%(end)s::date - %(start)s::date) + 1))::int AS k) AS n"
)


def seed_history(settings: Settings, now: datetime) -> None:
    """A daily history for every target and area up to yesterday, growing linearly to today's
    figures: modelled (``synthetic``, as the simulation's backfill marks it) until
    MEASURED_DAYS ago, measured after. And the registry recorded as a simulated share of the
    province (SIMULATED_SHARES), so count thresholds are scaled (the page's banner and marks)."""
    catalog = load_catalog()
    today = coverage.province_day(now)
    with connect(settings.db) as conn:
        figures = coverage.compute(conn, catalog, now)
        rows = [
            (tc.target.id, f.city_code, f.numerator, f.denominator, tc.target.kind)
            for tc in figures
            for f in (tc.province, *tc.cities)
        ]
        with conn.transaction():
            conn.execute(
                _SEED_DAYS,
                {
                    "t": [r[0] for r in rows],
                    "c": [r[1] for r in rows],
                    "num": [r[2] for r in rows],
                    "den": [r[3] for r in rows],
                    "ratio": [r[4] is TargetKind.RATIO for r in rows],
                    "start": HISTORY_START,
                    "end": today - timedelta(days=1),
                    "measured_from": today - timedelta(days=MEASURED_DAYS),
                    "now": now,
                },
            )
            for sector, share in SIMULATED_SHARES.items():
                conn.execute(
                    "INSERT INTO simulated_registry (sector, fraction, seed, scale)"
                    " VALUES (%s, %s, 1, 0.02)",
                    (sector, share),
                )


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
        # the data's time in China Standard Time, the due dates' calendar, whatever the
        # browser's zone (this one runs in UTC)
        shown_at, iso = browser.eval(
            "[document.getElementById('as-of').textContent,"
            " document.getElementById('as-of').getAttribute('datetime')]"
        )
        cst = datetime.fromisoformat(iso).astimezone(ZoneInfo("Asia/Shanghai"))
        assert shown_at == cst.strftime("%Y-%m-%d %H:%M:%S CST")
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

        save_screenshot(browser, "status_page.png", full_page=True)
        assert_no_page_errors(browser)
    finally:
        browser.close()


def expected_chart(tr: dict[str, Any]) -> list[list[Any]]:
    """The columns the page must hand uPlot for one /v1/trajectories answer: x (UTC midnight,
    seconds), measured value, modelled value, threshold (none on a city's chart of a count
    target: that threshold is the province's), judgement path, plan path."""
    measured = {p["day"]: p["value"] for p in tr["series"] if not p["synthetic"]}
    modelled = {p["day"]: p["value"] for p in tr["series"] if p["synthetic"]}
    judged = {p["day"]: p["value"] for p in tr["judgement_path"]}
    plan = {p["day"]: p["value"] for p in tr["plan_path"] or []}
    days = sorted({*measured, *modelled, *judged, *plan})
    return [
        [datetime.fromisoformat(d).replace(tzinfo=UTC).timestamp() for d in days],
        *([line.get(d) for d in days] for line in (measured, modelled)),
        [None if tr["city"] and tr["kind"] == "count" else tr["threshold_effective"]] * len(days),
        *([line.get(d) for d in days] for line in (judged, plan)),
    ]


def page_chart(browser: Browser, target_id: str) -> dict[str, Any]:
    """What one card's chart plots and marks, and how many of its canvas pixels are drawn."""
    got: dict[str, Any] = json.loads(
        browser.eval(
            f"""(() => {{
  const card = document.querySelector('article[data-target="{target_id}"]');
  const chart = card.querySelector('.chart');
  const plot = window.qiluCharts['{target_id}'];
  const canvas = chart.querySelector('canvas');
  let inked = 0;
  if (canvas) {{
    const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 3; i < px.length; i += 4) if (px[i]) inked++;
  }}
  return JSON.stringify({{state: chart.dataset.state, area: chart.dataset.area,
    metOn: chart.dataset.metOn, behindSince: chart.dataset.behindSince,
    data: chart.dataset.state === 'drawn' ? plot.data : null, inked,
    marks: [...card.querySelectorAll('.chart-marks .mark')].map(m => m.dataset.mark)}});
}})()"""
        )
    )
    return got


def assert_charts_match(
    browser: Browser, server: ApiServer, city: str | None, token: str | None = None
) -> int:
    """Every card's chart plots its /v1/trajectories answer; returns how many were drawn."""
    area = city or "370000"
    wait_for(
        lambda: browser.eval("document.body.dataset.trajectories") == area,
        30,
        what=f"the trajectories of {area} to load",
    )
    drawn = 0
    for target in server.get("/v1/targets", token):
        query = f"?city={city}" if city else ""
        tr = server.get(f"/v1/trajectories/{target['id']}{query}", token)
        got = page_chart(browser, target["id"])
        assert got["area"] == area, target["id"]
        assert got["metOn"] == (tr["met_on"] or ""), target["id"]
        assert got["behindSince"] == (tr["behind_since"] or ""), target["id"]
        assert got["marks"] == [m for m in ("met_on", "behind_since") if tr[m]], target["id"]
        if not tr["series"]:
            assert got["state"] == "empty", target["id"]
            continue
        assert got["state"] == "drawn", target["id"]
        assert got["data"] == expected_chart(tr), target["id"]
        assert got["inked"] > 1000, f"{target['id']}: the chart's canvas is blank"
        drawn += 1
    return drawn


def focused(browser: Browser) -> tuple[str, str]:
    """The focused element (its id, or its city code for a tile) and its outline style."""
    got: list[str] = json.loads(
        browser.eval(
            "JSON.stringify([document.activeElement.id || document.activeElement.dataset.city"
            " || document.activeElement.className,"
            " getComputedStyle(document.activeElement).outlineStyle])"
        )
    )
    return got[0], got[1]


def save_screenshot(browser: Browser, name: str, *, full_page: bool = False) -> Path:
    """The viewport (focus taken off), or with ``full_page`` the whole page 1500 px wide, as a
    PNG in tests/results/ (a test artefact, not a README image)."""
    RESULTS.mkdir(exist_ok=True)
    ignore = RESULTS / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# written by the test run\n*\n")
    path = RESULTS / name
    if full_page:
        browser.screenshot(path)
    else:
        browser.eval("document.activeElement && document.activeElement.blur()")
        browser.shot(path)
    assert path.stat().st_size > 20_000, f"{name} looks empty"
    return path


def assert_no_page_errors(browser: Browser) -> None:
    """No exception was thrown in the page's scripts (as the DevTools console reported them)."""
    assert not [c for c in browser.console if "exceptionId" in c], browser.console


def test_status_page_charts_province_view_keyboard_and_languages(
    chromium: str, running: tuple[Settings, ApiServer], tmp_path: Path
) -> None:
    _, server = running
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    browser = Browser(chromium, profile)
    try:
        browser.send("Network.enable")  # to see the headers the trajectory requests carry
        browser.viewport(1440, 900)
        browser.send("Page.navigate", url=server.url + "/")
        wait_for(
            lambda: browser.eval("document.body && document.body.dataset.live") == "live",
            30,
            what="the page to load and open its event stream",
        )
        status = server.get("/v1/status")
        cities = {c["code"]: c for c in status["cities"]}

        # --- keyboard: skip link, language, target picker, then the tiles row by row --------
        order = []
        for _ in range(3 + len(cities)):
            browser.press("Tab")
            element, outline = focused(browser)
            assert outline == "solid", f"{element} has no visible focus"
            order.append(element)
        tiles = json.loads(
            browser.eval(
                "JSON.stringify([...document.querySelectorAll('#province-map .ctile')].map("
                "b => [b.dataset.city, +b.style.gridRow.split(' ')[0],"
                " +b.style.gridColumn.split(' ')[0], b.tagName]))"
            )
        )
        assert {t[3] for t in tiles} == {"BUTTON"}
        place = {code: (row, col) for code, row, col, _ in tiles}
        assert set(place) == set(cities)
        assert len(set(place.values())) == 16
        reading_order = sorted(place, key=lambda code: place[code])
        assert order == ["skip", "lang", "map-target", *reading_order]
        # laid out like the province: west to east in each row, north to south in each column
        for axis, coord, sign in ((0, "lon", 1), (1, "lat", -1)):
            lines: dict[int, list[str]] = {}
            for code, pos in place.items():
                lines.setdefault(pos[axis], []).append(code)
            for codes in lines.values():
                by_tile = sorted(codes, key=lambda code: place[code][1 - axis])
                assert by_tile == sorted(codes, key=lambda code: sign * cities[code][coord])

        # --- the scaled thresholds are said plainly, and marked ---------------------------
        assert browser.eval("document.getElementById('scaled-banner').hidden") is False
        banner = browser.eval("document.getElementById('scaled-banner').textContent")
        for words in ("2 % of its charging piles", "5 % of its substations", "50 % of its ranches"):
            assert words in banner
        for c in status["coverage"]:
            goal = json.loads(
                browser.eval(
                    "JSON.stringify((g => [g.dataset.threshold, !!g.querySelector('.scaled-mark')])"
                    f"(document.querySelector('article[data-target=\"{c['target_id']}\"] .goal')))"
                )
            )
            assert goal == [repr_js(c["threshold_effective"]), c["scaled"]], c["target_id"]
            assert c["scaled"] == (c["kind"] == "count"), c["target_id"]

        # --- the charts plot /v1/trajectories; the province view /v1/status ----------------
        assert assert_charts_match(browser, server, None) >= 10
        # pointing at the last day of a chart reads that day's figures out under it
        piles = server.get("/v1/trajectories/charging-public-piles-2024")
        box = json.loads(
            browser.eval(
                "(o => { o.scrollIntoView({block: 'center'}); const r = o.getBoundingClientRect();"
                " return JSON.stringify([r.right - 1, r.top + r.height / 2]); })("
                'document.querySelector(\'article[data-target="charging-public-piles-2024"]'
                " .u-over'))"
            )
        )
        browser.send("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])
        last = piles["series"][-1]
        readout = browser.eval(
            'document.querySelector(\'article[data-target="charging-public-piles-2024"]'
            " .chart-readout').textContent"
        )
        assert readout.startswith(last["day"]), readout
        assert f"value per day {int(last['value'])}" in readout, readout
        browser.send("Input.dispatchMouseEvent", type="mouseMoved", x=0, y=0)
        browser.eval("window.scrollTo(0, 0)")

        def map_matches(target: dict[str, Any]) -> None:
            shown = json.loads(
                browser.eval(
                    "JSON.stringify([...document.querySelectorAll('#province-map .ctile')].map("
                    "b => [b.dataset.city, b.dataset.target, b.dataset.value, b.dataset.status]))"
                )
            )
            want = [
                [
                    c["city_code"],
                    target["target_id"],
                    "" if c["value"] is None else repr_js(c["value"]),
                    c["judgement"]["status"] if c["judgement"] else "city_count",
                ]
                for c in target["cities"]
            ]
            assert sorted(shown) == sorted(want)

        by_id = {c["target_id"]: c for c in server.get("/v1/status")["coverage"]}
        first_ratio = next(c for c in status["coverage"] if c["kind"] == "ratio")["target_id"]
        assert browser.eval("document.getElementById('map-target').value") == first_ratio
        map_matches(by_id[first_ratio])
        browser.eval(
            "(s => { s.value = 'charging-public-piles-2024';"
            " s.dispatchEvent(new Event('change')); })(document.getElementById('map-target'))"
        )
        map_matches(by_id["charging-public-piles-2024"])

        save_screenshot(browser, "status-desktop.png")
        browser.screenshot(RESULTS / "status-desktop-full.png")
        browser.viewport(1440, 900)

        # --- Enter on the focused Qingdao tile filters the page to Qingdao ----------------
        browser.eval("document.querySelector('#province-map .ctile[data-city=\"370200\"]').focus()")
        browser.press("Enter")
        assert browser.eval("document.body.dataset.city") == "370200"
        assert focused(browser)[0] == "370200", "the focus stays on the chosen tile"
        assert (
            browser.eval(
                "document.querySelector('.ctile[data-city=\"370200\"]').getAttribute('aria-pressed')"
            )
            == "true"
        )
        assert assert_charts_match(browser, server, "370200") >= 10
        browser.screenshot(RESULTS / "status-qingdao-full.png")
        browser.viewport(1440, 900)
        for c in server.get("/v1/status")["coverage"]:
            qingdao = next(x for x in c["cities"] if x["city_code"] == "370200")
            shown = browser.eval(
                f"document.querySelector('article[data-target=\"{c['target_id']}\"] .value')"
                ".dataset.value"
            )
            assert shown == ("" if qingdao["value"] is None else repr_js(qingdao["value"]))
        # Space on it again: back to the whole province
        browser.press(" ")
        assert browser.eval("document.body.dataset.city") == "370000"
        assert_charts_match(browser, server, None)
        # the province's trajectories were fetched before: the browser revalidated its copies
        # with their ETags (a 304 when the snapshot has not changed), not fetched them blind
        province = [
            rid
            for rid, url in browser.urls.items()
            if "/v1/trajectories/" in url and "city=" not in url
        ]
        assert any("if-none-match" in browser.sent_headers.get(rid, {}) for rid in province)

        # --- the language switch: everything the page writes, in Chinese; remembered -------
        en, zh = json.loads(
            browser.eval(
                "JSON.stringify([Object.keys(qiluI18n.en).sort(), Object.keys(qiluI18n.zh).sort()])"
            )
        )
        assert en == zh
        browser.eval("document.getElementById('lang').focus()")
        browser.press("Enter")

        def chinese() -> bool:
            untranslated = browser.eval(
                "[...document.querySelectorAll('[data-i18n]')].filter("
                "e => e.textContent !== qiluI18n.zh[e.dataset.i18n]).length"
            )
            return bool(
                untranslated == 0 and browser.eval("document.documentElement.lang") == "zh-CN"
            )

        assert chinese()
        names = {t["key"]: t for t in server.get("/v1/names")["targets"]}
        for c in status["coverage"]:
            h3 = browser.eval(
                f"document.querySelector('article[data-target=\"{c['target_id']}\"] h3')"
                ".textContent"
            )
            assert h3 == names[c["target_id"]]["name_zh"]
        tile = browser.eval(
            "document.querySelector('.ctile[data-city=\"370200\"] .cname').textContent"
        )
        assert tile == cities["370200"]["name_zh"]
        assert "充电桩的 2%" in browser.eval("document.getElementById('scaled-banner').textContent")
        assert browser.eval("localStorage.getItem('qilu.lang')") == "zh"

        browser.viewport(390, 844, mobile=True)
        wait_for(lambda: assert_charts_match(browser, server, None) >= 10, 30, what="charts")
        save_screenshot(browser, "status-phone-zh.png")

        # remembered: a new visit opens in Chinese; the switch goes back to English
        browser.send("Page.navigate", url=server.url + "/")
        wait_for(
            lambda: browser.eval("document.body && document.body.dataset.live") == "live",
            30,
            what="the page to load again",
        )
        assert chinese()
        browser.eval("document.getElementById('lang').click()")
        assert browser.eval("document.documentElement.lang") == "en"
        assert browser.eval("localStorage.getItem('qilu.lang')") == "en"
        wait_for(
            lambda: browser.eval("document.body.dataset.trajectories") == "370000",
            30,
            what="the charts after the reload",
        )
        # phone width: nothing wider than the screen but the table's own scroller
        too_wide = browser.eval(
            "[...document.querySelectorAll('body *')].filter(e => !e.closest('.table-wrap')"
            " && e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)"
            ".map(e => e.tagName + '.' + e.className).slice(0, 5)"
        )
        assert too_wide == [], too_wide
        save_screenshot(browser, "status-phone.png")
        # the sticky header keeps the data's time in view after scrolling
        browser.eval(
            "window.scrollTo(0, document.getElementById('targets').getBoundingClientRect().top"
            " + window.scrollY - 90)"
        )
        assert browser.eval("window.scrollY") > 800
        top = browser.eval("document.getElementById('as-of').getBoundingClientRect().top")
        assert 0 <= top < 120
        save_screenshot(browser, "status-phone-charts.png")
        assert_no_page_errors(browser)
    finally:
        browser.close()


def test_private_status_page_asks_for_a_key_and_opens_on_its_cities(
    chromium: str, running: tuple[Settings, ApiServer], tmp_path: Path
) -> None:
    """``api.status_public = false``: the page asks for a key once, and a key limited to two
    cities sees them only: the page opens on the first, the charts read that city's
    trajectories with the key, and the other city is one tile away."""
    settings, _ = running
    secret = "browser-test-secret-" + "s" * 40
    private = settings.model_copy(
        update={
            "api": ApiSettings(
                coverage_cache_s=1.0,
                anonymous_scopes=[],
                status_public=False,
                jwt_secret=secret,  # type: ignore[arg-type]
            )
        }
    )
    server = ApiServer(private)
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    browser = Browser(chromium, profile)
    token = jwt.encode(
        {
            "sub": "operator",
            "iss": "qilu",
            "aud": "qilu-api",
            "exp": datetime.now(UTC) + timedelta(minutes=10),
            "scope": "coverage:read",
            "cities": ["370200", "370100"],
        },
        secret,
        algorithm="HS256",
    )
    try:
        wait_for(lambda: _ready(server), 30, what="the private API")
        browser.viewport(1440, 900)
        browser.send("Page.navigate", url=server.url + "/")
        wait_for(
            lambda: browser.eval(
                "!!document.getElementById('key-form') && "
                "!document.getElementById('key-form').hidden"
            ),
            30,
            what="the page to ask for a key",
        )
        assert browser.eval("document.activeElement.id") == "key-input"
        browser.send("Input.insertText", text=token)
        browser.press("Enter")
        wait_for(
            lambda: browser.eval("document.body.dataset.live") == "live",
            30,
            what="the page to open its event stream with the key",
        )
        area = server.get("/v1/status", token)["coverage"][0]["area"]
        assert sorted(area) == ["370100", "370200"]
        assert browser.eval("document.body.dataset.city") == area[0]
        tiles = browser.eval(
            "[...document.querySelectorAll('#province-map .ctile')].map(b => b.dataset.city)"
        )
        assert sorted(tiles) == ["370100", "370200"]
        assert browser.eval("document.getElementById('clear-city').hidden") is True
        assert assert_charts_match(browser, server, area[0], token) >= 10
        other = area[1]
        browser.eval(f"document.querySelector('.ctile[data-city=\"{other}\"]').click()")
        assert browser.eval("document.body.dataset.city") == other
        assert assert_charts_match(browser, server, other, token) >= 10
        # choosing the same city again keeps it: this key has no province to go back to
        browser.eval(f"document.querySelector('.ctile[data-city=\"{other}\"]').click()")
        assert browser.eval("document.body.dataset.city") == other
        assert browser.eval("document.getElementById('key-form').hidden") is True
        assert_no_page_errors(browser)
    finally:
        browser.close()
        server.stop()


REPORTED_SECRET = "browser-reported-secret-" + "k" * 48
REPORTED_ROWS = """
JSON.stringify(Object.fromEntries([...document.querySelectorAll('#reported tr[data-reported]')]
  .map(tr => [tr.dataset.reported, {kind: tr.dataset.kind, status: tr.dataset.status,
    fresh: tr.dataset.fresh, area: tr.dataset.area,
    value: tr.querySelector('[data-role=value]').dataset.value,
    age: tr.querySelector('[data-role=age]').textContent,
    reporter: tr.querySelector('[data-role=reporter]').textContent,
    badges: [...tr.querySelectorAll('.kind')].map(b => b.dataset.kind)}])))
"""


def _post(server: ApiServer, path: str, body: bytes, token: str) -> tuple[int, Any]:
    req = urllib.request.Request(  # noqa: S310
        server.url + path, data=body, method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_reported_figures_imported_through_the_api_appear_on_the_page(
    chromium: str, settings: Settings, tmp_path: Path
) -> None:
    """Issue 19: a bad file changes nothing and names its line; a good one shows on the page
    with its source kind (reported), reporter and day, judged; a figure past its reporting
    interval shows as stale; a measured proxy shows its reported counterpart beside it."""
    with connect(settings.db) as conn:
        load_registry(conn, registry())
    api = ApiSettings(
        coverage_cache_s=1.0,
        anonymous_scopes=["coverage:read"],
        jwt_secret=SecretStr(REPORTED_SECRET),
    )
    server = ApiServer(settings.model_copy(update={"api": api}))
    admin = jwt.encode(
        {
            "sub": "ops",
            "iss": "qilu",
            "aud": "qilu-api",
            "exp": datetime.now(UTC) + timedelta(minutes=10),
            "scope": "admin",
        },
        REPORTED_SECRET,
        algorithm="HS256",
    )
    browser = None
    try:
        wait_for(lambda: _ready(server), 30, what="the API")
        head = "target,city,as_of,value,reporter,reported_on,source\n"
        today = coverage.province_day(datetime.now(UTC))
        recent, old = today - timedelta(days=15), today - timedelta(days=200)
        bad = (
            head + f"telecom-5g-stations-2024,province,{recent},251000,省通信管理局,{today},通报\n"
            f"telecom-5g-stations-2024,province,{recent},lots,省通信管理局,{today},通报\n"
        ).encode()
        code, answer = _post(server, "/v1/admin/reported/import?name=q3.csv", bad, admin)
        assert code == 422
        assert answer["result"]["errors"][0]["reason"].startswith("q3.csv:3: value 'lots'")
        assert scalar(settings.db, "SELECT count(*) FROM reported_figures") == 0

        good = (
            head + f"telecom-5g-stations-2024,province,{recent},251000,省通信管理局,{today},"
            "2026年三季度通信业统计通报\n"
            f"telecom-5g-user-share-2025,青岛,{recent},0.612,青岛市通信管理局,{today},季度通报\n"
            f"telecom-5g-user-share-2025,济南,{old},0.50,济南市通信管理局,{old},季度通报\n"
            f"iot-terminals-reported-2022,province,{recent},2.61亿,省通信管理局,{today},通报\n"
        ).encode()
        code, answer = _post(server, "/v1/admin/reported/import?name=q3.csv", good, admin)
        assert code == 200, answer
        assert answer["summary"] == {
            "added": 4,
            "changed": 0,
            "unchanged": 0,
            "simulated_removed": 0,
        }
        api_targets = {t["id"]: t for t in server.get("/v1/reported")["targets"]}
        stations = api_targets["telecom-5g-stations-2024"]["province"]
        assert stations["judgement"]["status"] == "met"  # 251,000 > 240,000

        profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
        browser = Browser(chromium, profile)
        browser.send("Page.navigate", url=server.url + "/")
        try:
            wait_for(
                lambda: (
                    browser is not None
                    and browser.eval("document.body && document.body.dataset.reported") == "43"
                ),
                30,
                what="the page to load the reported figures",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; console: {browser.console}") from exc
        rows = json.loads(browser.eval(REPORTED_ROWS))
        assert len(rows) == len(api_targets)
        s = rows["telecom-5g-stations-2024"]
        assert s["kind"] == "reported"
        assert s["value"] == "251000"
        assert s["reporter"] == "省通信管理局"
        assert s["age"] == f"{recent} (15 days)"
        assert (s["status"], s["fresh"]) == ("met", "current")
        assert s["badges"] == ["reported"]
        assert rows["telecom-key-places-2024"]["age"] == "no figure yet"
        # the measured proxy (the platform's own terminals) and the province's reported total
        card = (
            "document.querySelector('article[data-target=\"iot-terminals-2022\"]')"
            ".querySelector('{}')"
        )
        assert browser.eval(card.format(".kind") + ".dataset.kind") == "measured"
        line = card.format('[data-reported="iot-terminals-reported-2022"]')
        assert browser.eval(line + ".dataset.status") == "met"  # 261 million >= 150 million
        assert "261,000,000" in browser.eval(line + ".textContent")

        # a city: its own figure; Jinan's is 200 days old, past the quarterly interval
        browser.eval("chooseCity('370200')")
        qd = json.loads(browser.eval(REPORTED_ROWS))["telecom-5g-user-share-2025"]
        assert (qd["area"], qd["value"], qd["reporter"]) == ("370200", "0.612", "青岛市通信管理局")
        assert (qd["status"], qd["fresh"]) == ("met", "current")
        browser.eval("chooseCity('370200'); chooseCity('370100')")
        jn = json.loads(browser.eval(REPORTED_ROWS))["telecom-5g-user-share-2025"]
        assert (jn["area"], jn["fresh"], jn["status"]) == ("370100", "stale", "behind")
        assert jn["badges"] == ["reported", "stale"]
        assert jn["age"] == f"{old} (200 days)"
        browser.eval("document.getElementById('lang').click()")
        assert browser.eval("document.querySelector('#reported-h span').textContent") == "报告数据"
        assert (
            browser.eval("document.querySelector('#reported tr[data-reported] .kind').textContent")
            == "报告数"
        )

        save_screenshot(browser, "status_page_reported.png", full_page=True)
        assert_no_page_errors(browser)
    finally:
        if browser is not None:
            browser.close()
        server.stop()


# the rows and the data's time they were drawn at, read at once (a new snapshot redraws both)
OPERATOR_ROWS = """
JSON.stringify([document.getElementById('as-of').getAttribute('datetime'),
  Object.fromEntries([...document.querySelectorAll('#operators tr[data-operator]')]
  .map(tr => {
    const cell = role => tr.querySelector(`[data-role=${role}]`);
    const first = role => cell(role).childNodes[0].textContent;
    const at = role => cell(role).querySelector('.at')?.textContent ?? null;
    return [tr.dataset.operator, {health: tr.dataset.health, token: tr.dataset.token,
      push: tr.dataset.push, pull: tr.dataset.pull, name: tr.querySelector('th').textContent,
      healthText: cell('health').textContent, pushAge: first('push'), pushAt: at('push'),
      pullAge: first('pull'), pullAt: at('pull'), failures: first('failures'),
      why: cell('failures').querySelector('.why')?.textContent ?? null,
      tokenText: first('token'), tokenAt: at('token'), connectors: cell('connectors').textContent}];
  }))])
"""
CST = ZoneInfo("Asia/Shanghai")


def _ms(iso: str) -> int:
    """Milliseconds since the epoch, as JavaScript's Date.parse reads the API's time."""
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def js_duration(seconds: float, lang: str) -> str:
    """status.js's duration(): seconds, minutes or hours with one decimal."""
    n, unit = (
        (seconds, "s")
        if seconds < 120
        else (seconds / 60, "min")
        if seconds < 7200
        else (seconds / 3600, "h")
    )
    if lang == "zh":
        unit = {"s": "秒", "min": "分钟", "h": "小时"}[unit]
    return f"{n:.1f} {unit}"


def _cst(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(CST).strftime("%Y-%m-%d %H:%M:%S CST")


def test_operator_links_show_the_api_health_in_both_languages(
    chromium: str, settings: Settings, tmp_path: Path
) -> None:
    """Issue 16, item 5: the status page lists every T/CEC 102 operator with the API's link
    health - linked / silent / never connected, the last push's and pull's age from the data's
    time (and their CST times), failures with the last one's reason, the token's state - in
    English and in Chinese, whatever city is chosen, one block per operator on a phone."""
    now = datetime.now(UTC)
    with connect(settings.db) as conn:
        load_registry(conn, registry())
    for op, name, city in (
        ("MA0000001", "国网山东", "370200"),
        ("MB0000002", "特来电", "370100"),
        ("MC0000003", "星星充电", "370200"),
    ):
        ops.add(
            settings,
            op,
            name=name,
            endpoint_url="",
            site_ids=[],
            cities=[city],
            outbound=None,
            actor="test",
        )
    with connect(settings.db) as conn, conn.transaction():
        store.link_connectors(
            conn,
            "MA0000001",
            [
                store.ConnectorLink("C1", "E1", "S1", "CHG-Q-1-01"),
                store.ConnectorLink("C2", "E2", "S1", "CHG-Q-1-02"),
            ],
        )
        store.record_links(
            conn,
            {
                "MA0000001": store.LinkDelta(
                    last_push=now - timedelta(minutes=2),
                    last_token=now - timedelta(minutes=2),
                    token_expires_at=now + timedelta(hours=3),
                ),
                "MB0000002": store.LinkDelta(
                    last_pull=now - timedelta(hours=3),
                    token_expires_at=now - timedelta(hours=1),
                    failures=3,
                    last_failure=now - timedelta(minutes=30),
                    last_failure_reason="pull: HTTP 503 from the operator",
                ),
            },
        )
    server = ApiServer(
        settings.model_copy(
            update={"api": ApiSettings(coverage_cache_s=1.0, anonymous_scopes=["coverage:read"])}
        )
    )
    browser = None
    try:
        wait_for(lambda: _ready(server), 30, what="the API")
        profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
        browser = Browser(chromium, profile)
        browser.send("Page.navigate", url=server.url + "/")
        wait_for(
            lambda: (
                browser is not None
                and browser.eval("document.body && document.body.dataset.operators") == "3"
            ),
            30,
            what="the page to list the operators",
        )
        api = {o["operator_id"]: o for o in server.get("/v1/status")["operators"]}
        assert [api[k]["healthy"] for k in sorted(api)] == [True, False, False]

        def check(lang: str) -> dict[str, Any]:
            as_of, rows = json.loads(browser.eval(OPERATOR_ROWS))
            assert isinstance(rows, dict)
            assert set(rows) == set(api)
            for op, o in api.items():
                row = rows[op]
                assert row["name"] == o["name"] + op
                assert row["failures"] == str(o["failures"])
                assert row["connectors"] == str(o["connectors"])
                for key in ("push", "pull"):
                    iso = o[f"last_{key}"]
                    assert row[key] == (iso or "")
                    if iso is None:
                        assert row[f"{key}Age"] == ("从未" if lang == "zh" else "never")
                        continue
                    age = js_duration((_ms(as_of) - _ms(iso)) / 1000, lang)
                    assert row[f"{key}Age"] == (f"{age}前" if lang == "zh" else f"{age} ago")
                    assert row[f"{key}At"] == _cst(iso)
                expires = o["token_expires_at"]
                if expires is None:
                    assert row["tokenText"] == ("未签发" if lang == "zh" else "none issued")
                    continue
                left = (_ms(expires) - _ms(as_of)) / 1000
                age = js_duration(abs(left), lang)
                words = {
                    ("en", True): f"valid for {age}",
                    ("en", False): f"expired {age} ago",
                    ("zh", True): f"有效，剩余 {age}",
                    ("zh", False): f"已过期 {age}",
                }
                assert row["tokenText"] == words[(lang, left > 0)]
                assert row["tokenAt"] == ("到期时间 " if lang == "zh" else "expires ") + _cst(
                    expires
                )
            return rows

        rows = check("en")
        a, b, c = rows["MA0000001"], rows["MB0000002"], rows["MC0000003"]
        assert (a["health"], a["healthText"], a["token"]) == ("healthy", "linked", "valid")
        assert a["tokenText"].endswith(" h")  # about three hours
        assert (a["connectors"], a["why"]) == ("2", None)
        assert (b["health"], b["healthText"], b["token"]) == ("silent", "silent", "expired")
        assert b["tokenText"].endswith(" min ago")  # an hour ago (60.x min)
        assert b["failures"] == "3"
        assert b["why"] == (
            f"last {_cst(api['MB0000002']['last_failure'])}: pull: HTTP 503 from the operator"
        )
        assert b["pushAge"] == "never"
        assert b["pullAge"].endswith(" h ago")  # three hours ago
        assert (c["health"], c["healthText"], c["token"], c["tokenText"]) == (
            "never",
            "never connected",
            "none",
            "none issued",
        )
        # operators carry no city: the same list whichever city is chosen
        browser.eval("chooseCity('370200')")
        assert browser.eval("document.body.dataset.city") == "370200"
        assert set(json.loads(browser.eval(OPERATOR_ROWS))[1]) == set(api)
        assert (
            browser.eval("document.querySelector('#operators-section .table-wrap').tabIndex") == 0
        )

        browser.eval("document.getElementById('lang').click()")
        assert browser.eval("document.getElementById('operators-h').textContent") == "运营商连接"
        rows = check("zh")
        a, b, c = rows["MA0000001"], rows["MB0000002"], rows["MC0000003"]
        assert (a["healthText"], b["healthText"], c["healthText"]) == ("正常", "中断", "从未连接")
        assert (a["token"], b["token"], c["token"]) == ("valid", "expired", "none")
        assert b["why"] == (
            f"最近一次 {_cst(api['MB0000002']['last_failure'])}：pull: HTTP 503 from the operator"
        )
        heads = json.loads(
            browser.eval(
                "JSON.stringify([...document.querySelectorAll('#operators thead th')]"
                ".map(th => th.textContent))"
            )
        )
        assert heads == ["运营商", "连接", "最近推送", "最近拉取", "失败次数", "令牌", "充电接口"]

        RESULTS.mkdir(exist_ok=True)
        browser.viewport(1440, 900)
        browser.eval("document.getElementById('operators-section').scrollIntoView()")
        browser.shot(RESULTS / "status_page_operators.png")
        # a phone: one block per operator, each figure beside its label
        browser.viewport(390, 844, mobile=True)
        shape = json.loads(
            browser.eval(
                "JSON.stringify((() => { const tr = document.querySelector("
                "'#operators tr[data-operator=MB0000002]');"
                " const td = tr.querySelector('[data-role=failures]');"
                " return [getComputedStyle(tr).display, getComputedStyle(td).display,"
                " getComputedStyle(td, '::before').content,"
                " tr.getBoundingClientRect().width <= window.innerWidth]; })())"
            )
        )
        assert shape == ["block", "block", '"失败次数"', True]
        browser.eval("document.getElementById('operators-section').scrollIntoView()")
        save_screenshot(browser, "status_page_operators_phone.png")
        assert_no_page_errors(browser)
    finally:
        if browser is not None:
            browser.close()
        server.stop()
