"""Ask the platform whether the agent's configured devices exist and are its own.

``check-config --online`` and the agent's start (when ``[platform] url`` is set) send the
device ids of every collector to ``POST /v1/agent/devices/check`` (api/routers/agent_self.py),
signed with the agent's Ed25519 key (qilu.signing.request_headers: method, path, time, nonce
and the body's hash; valid for a minute, each nonce once). The answer is judged without I/O
(:func:`judge`):

    unknown        the device id is not registered (misspelt?): its readings would be refused
    foreign_site   registered at a site that is not the agent's: refused as ``foreign_site``
    foreign_sector at a site of a sector the agent is not provisioned for: the broker refuses
                   the sector's topic, so its envelopes would end in the quarantine

``check-config --online`` fails on any of them; ``run`` refuses to start on ``foreign_sector``
and logs the others (a device registered later is accepted from then on). Device ids formed
at run time (an OCPP ``device_pattern``) cannot be listed, so they are not checked.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from collectors.base import Collector
from edge_agent.config import AgentConfig
from qilu.errors import ConfigError, RetryableError

CHECK_PATH = "/v1/agent/devices/check"


@dataclass(frozen=True, slots=True)
class Problem:
    collector: str
    device_id: str
    kind: str  # unknown | foreign_site | foreign_sector
    message: str

    @property
    def key(self) -> str:
        return f"collectors.{self.collector}"


def configured_devices(cfg: AgentConfig, collectors: Sequence[Collector]) -> dict[str, list[str]]:
    """Collector name -> the device ids it is configured with (registered ones for a
    simulated collector), each once, in configuration order."""
    out: dict[str, list[str]] = {}
    for c in collectors:
        listing = getattr(c, "devices", None)
        if callable(listing):
            ids = [d.device_id for d in listing()]
        else:
            ids = list(_device_ids(cfg.collectors.get(c.name, {})))
        out[c.name] = list(dict.fromkeys(ids))
    return out


def _device_ids(value: Any) -> Iterator[str]:
    """``device_id = "..."`` anywhere in a collector's table, and the string values of a
    ``devices`` table (OCPP's ``"<charge point>/<n>" = "<device id>"``)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if k == "device_id" and isinstance(v, str):
                yield v
            elif k == "devices" and isinstance(v, Mapping):
                for x in v.values():
                    if isinstance(x, str):
                        yield x
                    else:
                        yield from _device_ids(x)
            else:
                yield from _device_ids(v)
    elif isinstance(value, list):
        for v in value:
            yield from _device_ids(v)


def judge(agent_id: str, devices: Mapping[str, Sequence[str]], answer: Any) -> list[Problem]:
    """The problems in the platform's answer (pure)."""
    try:
        rows = {d["device_id"]: d for d in answer["devices"]}
        own_sectors = ", ".join(answer["sectors"]) or "none"
    except (KeyError, TypeError) as exc:
        raise RetryableError(f"the platform's answer is not a device check: {exc!r}") from exc
    problems = []
    for name, ids in devices.items():
        for device_id in ids:
            d = rows.get(device_id)
            if d is None or not d.get("known"):
                problems.append(
                    Problem(
                        name, device_id, "unknown",
                        f"device {device_id} is not registered on the platform (misspelt?)",
                    )
                )  # fmt: skip
            elif not d.get("own_sector"):
                problems.append(
                    Problem(
                        name, device_id, "foreign_sector",
                        f"device {device_id} is at site {d['site_id']} of sector {d['sector']}, "
                        f"which agent {agent_id} is not provisioned for (its sectors: "
                        f"{own_sectors}): the broker refuses that sector's topic",
                    )
                )  # fmt: skip
            elif not d.get("own_site"):
                problems.append(
                    Problem(
                        name, device_id, "foreign_site",
                        f"device {device_id} is at site {d['site_id']}, not one of agent "
                        f"{agent_id}'s sites: the platform refuses its readings (foreign_site)",
                    )
                )  # fmt: skip
    return problems


def ask(cfg: AgentConfig, device_ids: Sequence[str]) -> Any:
    """The platform's answer for these devices. ConfigError when the platform refuses the
    agent's signature (names ``auth``); RetryableError when it cannot be reached."""
    from qilu.signing import Signer, request_headers

    if not cfg.auth.key_no:
        raise ConfigError("auth", "the online check signs its request: it needs the signing key")
    signer = Signer(cfg.auth.key_no, cfg.auth.signing_key)
    body = json.dumps({"device_ids": list(device_ids)}).encode()
    headers = request_headers(signer, cfg.agent.id, "POST", CHECK_PATH, body, now_s=time.time())
    url = cfg.platform.url.rstrip("/") + CHECK_PATH
    req = urllib.request.Request(  # noqa: S310 - the scheme is checked by config.parse
        url, data=body, method="POST", headers={**headers, "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=cfg.platform.timeout_s) as r:  # noqa: S310
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        detail = _detail(exc)
        if exc.code == 401:
            raise ConfigError("auth", f"the platform refused the agent's key: {detail}") from exc
        raise RetryableError(f"{url}: HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RetryableError(f"{url}: {exc}") from exc


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("detail", ""))
    except (ValueError, AttributeError, OSError):
        return exc.reason or ""


def check(cfg: AgentConfig, collectors: Sequence[Collector]) -> tuple[int, list[Problem]]:
    """(devices checked, problems) for every collector's devices."""
    devices = configured_devices(cfg, collectors)
    ids = list(dict.fromkeys(d for ds in devices.values() for d in ds))
    if not ids:
        return 0, []
    return len(ids), judge(cfg.agent.id, devices, ask(cfg, ids))
