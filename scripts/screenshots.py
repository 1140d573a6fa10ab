"""The status page screenshots of the README and docs/api.md, from a real ``qilu run``.

Runs ``qilu run`` at its defaults (seed 1, scale 0.02, 90 modelled days) as a platform of its
own on the shared servers: a private database, topic prefix, consumer group, API port, ingest
and agent metrics ports, agent buffer folder and Prometheus targets file (all as ``QILU_*``
environment variables), so a demo already running is neither read nor disturbed. After
``--minutes`` of streaming, headless Chromium (the helpers of the status page's browser test)
takes the page at desktop (1440x900) and phone (390x844) widths, in English and Chinese, into
``--out`` (default docs/images/). Then it stops ``qilu run``, drops the database and deletes
the topics it made.

    .venv/bin/python scripts/screenshots.py [--minutes 3] [--out docs/images]

The browser test's own screenshots (an 8-device fixture) stay in tests/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psycopg import sql  # noqa: E402

from qilu.ports import free_port  # noqa: E402
from qilu.settings import Settings, load  # noqa: E402
from storage.db import connect  # noqa: E402
from stream.topics import ensure_topics  # noqa: E402
from tests.helpers import wait_for  # noqa: E402
from tests.integration.test_api_browser import Browser, ensure_chromium  # noqa: E402

logger = logging.getLogger("screenshots")


def private_env(tag: str, work: Path) -> dict[str, str]:
    """QILU_* variables that give ``qilu run`` nothing in common with a running demo but the
    servers."""
    return {
        "QILU_DB__NAME": f"qilu_shots_{tag}",
        "QILU_KAFKA__TOPIC_PREFIX": f"shots{tag}",
        "QILU_INGEST__GROUP_ID": f"shots-{tag}",
        "QILU_INGEST__METRICS_PORT": str(free_port()),
        "QILU_API__PORT": str(free_port()),
        "QILU_AGENT__METRICS_PORT": str(free_port()),
        "QILU_AGENT__PROVINCE_DIR": str(work / "agents"),
        "QILU_AGENT__TARGETS_FILE": str(work / "agents.json"),
    }


def api_get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - loopback URL we built
        return json.load(r)


def api_up(url: str) -> bool:
    try:
        return bool(api_get(url + "/v1/status")["coverage"])
    except (urllib.error.URLError, TimeoutError, ConnectionError, KeyError):
        return False


def shoot(browser: Browser, url: str, out: Path) -> list[Path]:
    def loaded() -> bool:
        return bool(
            browser.eval("document.body && document.body.dataset.live") == "live"
            and browser.eval("document.body.dataset.trajectories") == "370000"
        )

    def save(name: str) -> Path:
        path = out / name
        browser.eval("document.activeElement && document.activeElement.blur()")
        browser.shot(path)
        return path

    taken = []
    browser.viewport(1440, 900)
    browser.send("Page.navigate", url=url + "/")
    wait_for(loaded, 60, what="the status page with its charts")
    browser.eval("localStorage.setItem('qilu.lang', 'en')")
    browser.send("Page.navigate", url=url + "/")
    wait_for(loaded, 60, what="the status page in English")
    time.sleep(2)  # let the charts finish drawing
    taken.append(save("status-desktop.png"))
    browser.viewport(390, 844, mobile=True)
    time.sleep(2)
    browser.eval("window.scrollTo(0, 0)")
    taken.append(save("status-phone.png"))
    browser.eval(
        "window.scrollTo(0, document.getElementById('targets').getBoundingClientRect().top"
        " + window.scrollY - 90)"
    )
    time.sleep(1)
    taken.append(save("status-phone-charts.png"))
    browser.eval("window.scrollTo(0, 0)")
    browser.eval("document.getElementById('lang').click()")
    wait_for(lambda: browser.eval("document.documentElement.lang") == "zh-CN", 30, what="Chinese")
    time.sleep(2)
    taken.append(save("status-phone-zh.png"))
    browser.eval("localStorage.setItem('qilu.lang', 'en')")
    return taken


def clean_up(settings: Settings, env: dict[str, str]) -> None:
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    admin_db = settings.db
    with connect(admin_db, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(env["QILU_DB__NAME"])
            )
        )
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    try:
        prefix = env["QILU_KAFKA__TOPIC_PREFIX"] + "."
        mine = [t for t in admin.list_topics() if t.startswith(prefix)]
        if mine:
            admin.delete_topics(mine)
        with contextlib.suppress(KafkaError):  # an empty group expires on its own anyway
            admin.delete_groups([env["QILU_INGEST__GROUP_ID"]])
    finally:
        admin.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--minutes", type=float, default=3.0, help="minutes of streaming before the screenshots"
    )
    ap.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "images", help="folder for the PNG files"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # a plain `kill` stops this script the way Ctrl-C does: qilu run, database and topics go
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    settings = load()
    tag = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="qilu-shots-"))
    env = private_env(tag, work)
    url = f"http://127.0.0.1:{env['QILU_API__PORT']}"
    with connect(settings.db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(env["QILU_DB__NAME"])))
    # The topics exist before `qilu run` starts: an ingest that joins its group while brand-new
    # topics have no partition metadata yet was seen to get no partitions and store nothing.
    ensure_topics(
        settings.kafka.model_copy(update={"topic_prefix": env["QILU_KAFKA__TOPIC_PREFIX"]})
    )
    time.sleep(5)
    log = (work / "run.log").open("w")
    logger.info("qilu run (private: %s), log in %s", env["QILU_DB__NAME"], log.name)
    run = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "run", "--every", "60"],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: api_up(url) or run.poll() is not None, 1800, what="qilu run's API")
        if run.poll() is not None:
            logger.error("qilu run exited with %s; see %s", run.returncode, log.name)
            return 1
        logger.info("API up at %s; streaming for %.1f minutes", url, args.minutes)
        time.sleep(args.minutes * 60)
        online = api_get(url + "/v1/status")["pipeline"]["online"]
        if not online:
            logger.error("no device is online after %.1f minutes; see %s", args.minutes, log.name)
            return 1
        args.out.mkdir(parents=True, exist_ok=True)
        profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=work))
        browser = Browser(ensure_chromium(settings.services.state_dir), profile)
        try:
            for path in shoot(browser, url, args.out):
                logger.info("wrote %s", path)
        finally:
            browser.close()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGINT)
            try:
                run.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait(10)
        log.close()
        clean_up(settings, env)
        shutil.rmtree(work / "agents", ignore_errors=True)  # the agents' buffers; the log stays
    return 0


if __name__ == "__main__":
    sys.exit(main())
