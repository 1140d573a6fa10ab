"""The walk-through of edge-agent/README.md, run as written against ``qilu run``.

The README's ```` ```sh walkthrough ```` blocks are taken from the file and fed, in order, to
one bash process (so a variable set in one block is there in the next), in the repository,
as a user's second terminal would run them while ``make run`` runs. The platform is
``qilu run`` itself (the code path of ``make run``), isolated from a developer's demo on the
same servers: a private database, topic prefix and consumer group, free ports for the API and
the metrics endpoints, and its own buffers for the simulated province, all through ``QILU_*``
variables (and no modelled coverage history, which the walk-through does not look at). The
README's variables (``QILU_URL``, ``AGENT``, ``WT``, the ports, the ChirpStack application id
on the shared Mosquitto) default to what ``make run`` uses; the test sets them.

Blocks marked ``sh walkthrough check`` only look (readings, dead letters): they are run again
until what the README says they show is there (the agent sends within a second, the ingest
stores batch by batch), within a bound. What is asserted is what the README promises: the
two silent devices never seen before the agent, online after it; each device's readings with
the values the programs sent; the refused ``"abc"`` in the agent's log; one dead letter,
``foreign_site``, for the Jinan collar.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from ops.services.tools import Apt
from qilu.ports import free_port
from qilu.settings import REPO_ROOT, DatabaseSettings, KafkaSettings, Settings
from tests.helpers import scalar, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

README = REPO_ROOT / "edge-agent" / "README.md"
BLOCK = re.compile(r"^```sh walkthrough( check)?\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SENTINEL = "__walkthrough_block_done__"
BLOCK_TIMEOUT_S = 120.0
CHECK_TIMEOUT_S = 120.0

PILE, TRANSFORMER, COLLAR = (
    "CHG-370200-00010-0005",
    "SUB-370200-00003-0003",
    "RAN-370200-00001-0001",
)
FOREIGN_COLLAR = "RAN-370100-00001-0001"
SEEN_COLLAR = (  # COLLAR's rows
    "SELECT count(*) FROM device_liveness JOIN devices USING (device_pk)"
    " WHERE device_id = 'RAN-370200-00001-0001'"
)


@dataclass(frozen=True)
class Block:
    code: str
    check: bool


def walkthrough_blocks(text: str) -> list[Block]:
    return [Block(code, bool(check)) for check, code in BLOCK.findall(text)]


def test_readme_has_the_walkthrough_blocks() -> None:
    """The extraction finds the steps: provisioning, configuration, checks, run, drive, look."""
    blocks = walkthrough_blocks(README.read_text(encoding="utf-8"))
    text = "\n".join(b.code for b in blocks)
    for step in ("qilu agents provision", "qilu agent check-config --online", "qilu agent run",
                 "charge_point.py", "rtu.py", "mosquitto_pub", "qilu deadletters summary",
                 "qilu apikey create"):  # fmt: skip
        assert step in text, step
    assert [b.check for b in blocks].count(True) == 2


def test_a_failure_shows_the_warnings_errors_and_tracebacks_of_the_whole_log() -> None:
    """A child's crash early in a long log (ingest's traceback, then minutes of other lines)
    is in what a failure shows; INFO lines are not."""
    log = "\n".join([
        "[5/5] starting ingest, edge agents and the API",
        "2026-12-06 16:35:26,690 WARNING collectors.iec104.collector: link down",
        "2026-12-06 16:35:26,781 INFO    stream.ingest: ingest stopped",
        "Traceback (most recent call last):",
        '  File "stream/agents.py", line 98, in check',
        "KeyError: 'tcec102-S37150001'",
        "2026-12-06 16:35:26,933 ERROR   qilu.demo: ingest exited with code 1; stopping",
        *(f"2026-12-06 16:35:27,000 INFO    storage.registry_admin: inventory {n}"
          for n in range(200)),
    ])  # fmt: skip
    assert [line.split(": ", 1)[1] for line in notable(log)] == [
        "2026-12-06 16:35:26,690 WARNING collectors.iec104.collector: link down",
        "Traceback (most recent call last):",
        '  File "stream/agents.py", line 98, in check',
        "KeyError: 'tcec102-S37150001'",
        "2026-12-06 16:35:26,933 ERROR   qilu.demo: ingest exited with code 1; stopping",
    ]
    digest = log_digest(log, head=2, tail=80)
    assert "KeyError: 'tcec102-S37150001'" in digest
    assert "[5/5] starting ingest" in digest  # the head
    assert "inventory 199" in digest  # the end
    assert "inventory 100" not in digest


def _port_pair() -> int:
    """A free port whose next one is free too: the province's metrics port and, above it, the
    one provisioning gives the walk-through's agent (the lowest above it)."""
    while True:
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port


class Shell:
    """One bash process fed block after block, its output read line by line."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log.open("a", encoding="utf-8")
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self._send("set -euo pipefail\n")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.write(line)
            self.log.flush()
            self.lines.put(line)
        self.lines.put(None)

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def run(self, block: Block) -> tuple[int, str]:
        """Run a block; a check block in a subshell (a failing look must not end the shell).
        Returns its exit status and output."""
        self.log.write(f"\n$ # {'check ' if block.check else ''}block\n{block.code}")
        code = f"( {block.code} )" if block.check else block.code
        self._send(f"{code}\necho {SENTINEL} $?\n")
        out: list[str] = []
        deadline = time.monotonic() + BLOCK_TIMEOUT_S
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"block did not finish in {BLOCK_TIMEOUT_S:.0f} s:\n{block.code}\n"
                            f"output so far:\n{''.join(out)}")  # fmt: skip
            if line is None:
                pytest.fail(
                    f"the shell ended in this block:\n{block.code}\noutput:\n{''.join(out)}"
                )
            if line.startswith(SENTINEL):
                return int(line.split()[1]), "".join(out)
            out.append(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.log.close()


@dataclass
class Platform:
    env: dict[str, str]
    url: str
    work: Path
    agent: str


LOG_LEVEL = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) ")


def notable(text: str) -> list[str]:
    """A log's WARNING, ERROR and CRITICAL lines and its tracebacks (a child's crash is no log
    line), numbered."""
    found: list[str] = []
    in_traceback = False
    for no, line in enumerate(text.splitlines(), 1):
        level = LOG_LEVEL.match(line)
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif level:
            in_traceback = False
        if in_traceback or (level and level[1] in ("WARNING", "ERROR", "CRITICAL")):
            found.append(f"{no:5d}: {line}")
    return found


def log_digest(text: str, head: int = 100, tail: int = 3000) -> str:
    """What a failure needs of a long log: its first ``head`` lines, the notable lines of the
    whole log, and its end."""
    lines, marked = text.splitlines(), notable(text)
    return (
        f"--- first {head} of {len(lines)} lines\n" + "\n".join(lines[:head])
        + f"\n--- warnings, errors and tracebacks ({len(marked)} lines)\n" + "\n".join(marked)
        + f"\n--- last {tail} characters\n{text[-tail:]}"
    )  # fmt: skip


def _failed(what: str, log: Path) -> NoReturn:
    """Fail the setup: what went wrong and the notable lines of qilu run's log (the whole log's
    digest is printed at the fixture's end)."""
    lines = notable(log.read_text())
    pytest.fail(f"{what}; qilu run's warnings, errors and tracebacks:\n" + "\n".join(lines))


def _running(proc: subprocess.Popen[bytes], log: Path) -> bool:
    """A wait's guard: ``qilu run`` is up (it starts a failed child again and stops only after
    repeated quick failures; a failure's ERROR line is in the digest either way)."""
    if proc.poll() is not None:
        _failed(f"qilu run exited ({proc.returncode})", log)
    return True


def _wait_for_api(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 240
    while _running(proc, log) and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v1/coverage", timeout=5) as resp:  # noqa: S310
                if resp.status == 200:
                    return
        except (urllib.error.URLError, TimeoutError, ConnectionError):
            pass
        time.sleep(1)
    _failed("the API of qilu run did not answer within 240 s", log)


@pytest.fixture
def platform(
    base_settings: Settings, db: DatabaseSettings, kafka: KafkaSettings, tmp_path: Path
) -> Iterator[Platform]:
    """``qilu run`` as ``make run`` starts it, on a private database, topic prefix, consumer
    group and ports."""
    # the README's commands need curl and jq, as it says; installed on first use like the servers
    missing = [tool for tool in ("curl", "jq") if shutil.which(tool) is None]
    if missing:
        Apt(tmp_path / "apt.log").install(
            missing, why="the edge-agent walk-through", progress=lambda _line: None
        )
    api_port, ingest_port, agent_port = free_port(), free_port(), _port_pair()
    url = f"http://127.0.0.1:{api_port}"
    agent = f"edge-walkthrough-{uuid.uuid4().hex[:8]}"
    work = tmp_path / "wt"
    env = {
        **os.environ,
        "QILU_DB__NAME": db.name,
        "QILU_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
        "QILU_INGEST__GROUP_ID": f"walkthrough-{uuid.uuid4().hex[:8]}",
        "QILU_API__PORT": str(api_port),
        "QILU_INGEST__METRICS_PORT": str(ingest_port),
        "QILU_AGENT__METRICS_PORT": str(agent_port),
        "QILU_AGENT__TARGETS_FILE": str(tmp_path / "targets.json"),
        "QILU_AGENT__PROVINCE_DIR": str(tmp_path / "province"),
        # the README's own variables
        "QILU_URL": url,
        "AGENT": agent,
        "WT": str(work),
        "OCPP_PORT": str(free_port()),
        "MODBUS_PORT": str(free_port()),
        "MQTT_PORT": str(base_settings.services.mosquitto_port),
        "APP": str(uuid.uuid4()),  # the shared Mosquitto: uplinks of this run reach no other
    }
    qilu = str(Path(sys.executable).with_name("qilu"))
    log = tmp_path / "qilu-run.log"
    with log.open("wb") as out:
        # `make run` is `qilu run`; --history-days 0 leaves out only the modelled coverage
        # history of the charts (up to a minute on a loaded machine), which no step uses
        proc = subprocess.Popen(
            [qilu, "run", "--history-days", "0"], cwd=REPO_ROOT, env=env, stdout=out, stderr=out
        )
    try:
        _wait_for_api(url, proc, log)
        # the reader comes to the README once `make run` streams: the simulated ranch agent
        # has delivered the collar the walk-through shows as seen before its own agent starts
        try:
            wait_for(
                lambda: _running(proc, log) and scalar(db, SEEN_COLLAR) > 0,
                timeout=180,
                what=f"the simulated province's first reading of {COLLAR}",
            )
        except AssertionError as exc:
            _failed(str(exc), log)
        yield Platform(env, url, work, agent)
    finally:
        for pid_file in work.glob("*.pid"):  # the README's background programs, if still there
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
        proc.send_signal(signal.SIGINT)  # Ctrl-C, as after make run
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for shown in [log, *sorted(work.glob("*.log"))]:  # shown on failure
            print(f"=== {shown.name}\n{log_digest(shown.read_text(errors='replace'))}")
        # the agent's Kafka user lives on the shared broker: remove it (the database goes)
        subprocess.run(
            [qilu, "agents", "revoke", agent], env=env, cwd=REPO_ROOT, capture_output=True,
            check=False, timeout=60,
        )  # fmt: skip


def _states(out: str) -> dict[str, str]:
    """'DEVICE KIND STATE' or 'DEVICE STATE' lines -> device: state."""
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and re.fullmatch(r"[A-Z]{3}-\d{6}-\d{5}-\d{4}", parts[0]) and len(parts) <= 3:
            found[parts[0]] = parts[-1]
    return found


def _readings(out: str) -> dict[str, set[tuple[str, float]]]:
    """The readings block's output: per device (the line before its readings), the set of
    (metric, value)."""
    by_device: dict[str, set[tuple[str, float]]] = {}
    device = ""
    for line in out.splitlines():
        if line.startswith("["):
            _, metric, value = json.loads(line)
            by_device.setdefault(device, set()).add((metric, float(value)))
        elif line.split() and line.split()[0] in (PILE, TRANSFORMER, COLLAR):
            device = line.split()[0]
    return by_device


def _readings_as_promised(out: str) -> str | None:
    """What is still missing of what step 7 promises, or None."""
    got = _readings(out)
    want = {
        PILE: {("connector_status", 1.0), ("connector_status", 2.0), ("connector_status", 0.0),
               ("energy_kwh", 12.345), ("power_kw", 7.2)},
        TRANSFORMER: {("oil_temp_c", 61.5), ("winding_temp_c", 70.2), ("load_pct", 43.8)},
        COLLAR: {("body_temp_c", 39.4), ("activity", 412.0), ("battery_pct", 87.0),
                 ("battery_pct", 86.0)},
    }  # fmt: skip
    for device, readings in want.items():
        if missing := readings - got.get(device, set()):
            return f"{device}: {sorted(missing)} not (yet) served"
    states = _states(out)
    if states.get(PILE) != "online" or states.get(TRANSFORMER) != "online":
        return f"states {states}"
    if not re.search(r'not_a_number: 0004a30b001c0530: "abc" is not a number for metric '
                     r"body_temp_c", out):  # fmt: skip
        return "the refused 'abc' is not in the agent's log"
    return None


def _deadletters_as_promised(out: str) -> str | None:
    rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
    if not rows:
        return "no dead letters yet"
    if [r[:4] for r in rows] != [["foreign_site", FOREIGN_COLLAR, "1", "1"]]:
        return f"dead letters: {rows}"
    return None


def _until(shell: Shell, block: Block, promised: Callable[[str], str | None]) -> str:
    deadline = time.monotonic() + CHECK_TIMEOUT_S
    while True:
        status, out = shell.run(block)
        missing = promised(out) if status == 0 else f"exit status {status}"
        if missing is None:
            return out
        if time.monotonic() > deadline:
            pytest.fail(f"after {CHECK_TIMEOUT_S:.0f} s: {missing}\n{block.code}\n{out}")
        time.sleep(1)


def test_the_readme_walkthrough_works_as_written(platform: Platform, tmp_path: Path) -> None:
    blocks = walkthrough_blocks(README.read_text(encoding="utf-8"))
    checks: list[Callable[[str], str | None]] = [_readings_as_promised, _deadletters_as_promised]
    shell = Shell(platform.env, tmp_path / "walkthrough.log")
    try:
        for i, block in enumerate(blocks):
            if block.check:
                _until(shell, block, checks.pop(0))
                continue
            status, out = shell.run(block)
            assert status == 0, f"block {i} failed ({status}):\n{block.code}\n{out}"
            if "qilu apikey create" in block.code:  # the sites, before the agent
                states = _states(out)
                assert states[PILE] == "never_seen", states
                assert states[TRANSFORMER] == "never_seen", states
                assert states[COLLAR] != "never_seen", states
            if "check-config --online" in block.code:
                assert "3 devices checked" in out, out
                assert "all registered, at the agent's sites" in out, out
        # step 9 stopped the agent: a clean stop (exit after SIGTERM) leaves no traceback
        agent_pid = int((platform.work / "agent.pid").read_text())
        deadline = time.monotonic() + 60
        while _alive(agent_pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _alive(agent_pid), "the agent did not stop on SIGTERM"
        assert "Traceback" not in (platform.work / "agent.log").read_text()
    finally:
        shell.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (stopped, not reaped by the shell yet) counts as stopped
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
