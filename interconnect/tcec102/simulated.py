"""A simulated operator platform, both roles, over the real protocol (tests, benchmarks, demo).

As a server it answers ``query_token``, ``query_stations_info`` (paged; ``LastQueryTime``
returns only stations changed since) and ``query_station_status`` for a generated set of
stations, checking our requests with the keys it gave us. As a client it pushes
``notification_stationStatus`` to our endpoint with the keys we gave it. ``fault`` makes it
misbehave: ``"timeout"`` (answers after ``delay_s``), ``"garbage"`` (HTTP 200 with HTML),
``"http500"``. A standard-library HTTP server in a thread; the protocol is the exchange layer.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from interconnect.tcec102.exchange import (
    CST,
    ExchangeError,
    KeySet,
    Ret,
    open_request,
    open_response,
    read_envelope,
    seal_request,
    seal_response,
)

DISTRICTS = ("02", "03", "04", "05", "12", "13")


@dataclass(slots=True)
class SimStation:
    info: dict[str, Any]
    changed_at: datetime


def generate_stations(
    operator_id: str, n: int, cities: list[str], seed: int = 1
) -> list[dict[str, Any]]:
    """``n`` StationInfos spread over ``cities`` (district AreaCodes), 1-3 piles of 1-2
    connectors each, StationType 1 (public) for most."""
    rnd = random.Random(seed)  # noqa: S311 - simulation, not cryptography
    out = []
    for i in range(n):
        city = cities[i % len(cities)]
        sid = f"S{i:06d}"
        equipment = []
        for e in range(rnd.randint(1, 3)):
            eid = f"{sid}E{e}"
            conns = [{"ConnectorID": f"{eid}C{c}", "ConnectorType": 4, "Power": 60.0}
                     for c in range(rnd.randint(1, 2))]  # fmt: skip
            equipment.append({"EquipmentID": eid, "EquipmentType": 1, "ConnectorInfos": conns})
        out.append(
            {
                "StationID": sid,
                "OperatorID": operator_id,
                "EquipmentOwnerID": operator_id,
                "StationName": f"模拟充电站{i}",
                "CountryCode": "CN",
                "AreaCode": city[:4] + rnd.choice(DISTRICTS),
                "Address": "",
                "StationType": 1 if rnd.random() < 0.8 else 50,
                "StationStatus": 50,
                "StationLng": 117.0,
                "StationLat": 36.6,
                "Construction": 1,
                "EquipmentInfos": equipment,
            }
        )
    return out


@dataclass
class SimulatedOperator:
    operator_id: str
    province_keys: KeySet  # what it gave us to call it: it checks our requests with these
    stations: list[dict[str, Any]]
    fault: str | None = None
    delay_s: float = 5.0
    calls: dict[str, int] = field(default_factory=dict)
    _tokens: set[str] = field(default_factory=set)
    _by_id: dict[str, SimStation] = field(default_factory=dict)
    _status: dict[str, int] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        start = datetime.now(UTC) - timedelta(days=1)
        for s in self.stations:
            self._by_id[s["StationID"]] = SimStation(s, start)
            for eq in s["EquipmentInfos"]:
                for c in eq["ConnectorInfos"]:
                    self._status[c["ConnectorID"]] = 1

    # -------------------------------------------------------------- server role

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                name = self.path.rsplit("/", 1)[-1]
                sim.calls[name] = sim.calls.get(name, 0) + 1
                if sim.fault == "timeout":
                    time.sleep(sim.delay_s)
                if sim.fault == "http500":
                    self._send(500, b"{}")
                    return
                if sim.fault == "garbage":
                    self._send(200, b"<html><body>502 Bad Gateway</body></html>")
                    return
                answer = sim.answer(name, body, self.headers.get("Authorization"))
                self._send(200, json.dumps(answer, ensure_ascii=False).encode())

            def _send(self, status: int, data: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                del format, args

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://{host}:{self._server.server_address[1]}/evcs/v1"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def answer(self, name: str, body: bytes, authorization: str | None) -> dict[str, Any]:
        keys = self.province_keys
        try:
            env = read_envelope(body)
            payload = open_request(env, keys, datetime.now(UTC), timedelta(minutes=5))
        except ExchangeError as exc:
            return seal_response(exc.ret, keys, msg=exc.reason)
        if name == "query_token":
            return self._token(payload)
        if (authorization or "").removeprefix("Bearer ") not in self._tokens:
            return seal_response(Ret.TOKEN, keys)
        if name == "query_stations_info":
            return seal_response(Ret.OK, keys, self._stations_page(payload))
        if name == "query_station_status":
            return seal_response(Ret.OK, keys, self._status_of(payload.get("StationIDs") or []))
        return seal_response(Ret.BUSINESS_PARAMETERS, keys, msg=f"unknown interface {name}")

    def _token(self, payload: dict[str, Any]) -> dict[str, Any]:
        keys = self.province_keys
        if payload.get("OperatorSecret") != keys.operator_secret:
            data = {"OperatorID": self.operator_id, "SuccStat": 1, "AccessToken": "",
                    "TokenAvailableTime": 0, "FailReason": 2}  # fmt: skip
            return seal_response(Ret.OK, keys, data)
        token = secrets.token_hex(16)
        self._tokens.add(token)
        data = {"OperatorID": self.operator_id, "SuccStat": 0, "AccessToken": token,
                "TokenAvailableTime": 7200, "FailReason": 0}  # fmt: skip
        return seal_response(Ret.OK, keys, data)

    def _stations_page(self, payload: dict[str, Any]) -> dict[str, Any]:
        since_text = payload.get("LastQueryTime") or ""
        items = list(self._by_id.values())
        if since_text:
            since = datetime.strptime(since_text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=CST)
            items = [s for s in items if s.changed_at >= since]
        size = max(1, min(int(payload.get("PageSize") or 100), 1000))
        page = max(1, int(payload.get("PageNo") or 1))
        count = max(1, -(-len(items) // size))
        chunk = items[(page - 1) * size : page * size]
        return {"PageNo": page, "PageCount": count, "ItemSize": len(chunk),
                "StationInfos": [s.info for s in chunk]}  # fmt: skip

    def _status_of(self, station_ids: list[str]) -> dict[str, Any]:
        out = []
        for sid in station_ids:
            st = self._by_id.get(sid)
            if st is None:
                continue
            conns = [
                {
                    "ConnectorID": c["ConnectorID"],
                    "Status": self._status[c["ConnectorID"]],
                    "ParkStatus": 0,
                    "LockStatus": 0,
                }
                for eq in st.info["EquipmentInfos"]
                for c in eq["ConnectorInfos"]
            ]
            out.append({"StationID": sid, "ConnectorStatusInfos": conns})
        return {"Total": len(out), "StationStatusInfos": out}

    def touch(self, station_id: str, **changes: Any) -> None:
        """Change a station (its info), as the operator would; an incremental pull sees it."""
        st = self._by_id[station_id]
        st.info.update(changes)
        st.changed_at = datetime.now(UTC)

    def set_status(self, connector_id: str, status: int) -> None:
        self._status[connector_id] = status

    # -------------------------------------------------------------- client role

    def push_status(
        self, base_url: str, our_keys: KeySet, connector_id: str, status: int, token: str
    ) -> int:
        """Push one connector's status to the province; returns the answer's Ret."""
        self._status[connector_id] = status
        env = seal_request(
            self.operator_id,
            {"ConnectorStatusInfo": {"ConnectorID": connector_id, "Status": status}},
            our_keys,
            datetime.now(UTC),
        )
        return _post(f"{base_url}/notification_stationStatus", env.as_json(), our_keys, token)[0]

    def province_token(self, base_url: str, our_keys: KeySet) -> str:
        env = seal_request(
            self.operator_id,
            {"OperatorID": self.operator_id, "OperatorSecret": our_keys.operator_secret},
            our_keys,
            datetime.now(UTC),
        )
        _ret, payload = _post(f"{base_url}/query_token", env.as_json(), our_keys, None)
        return str((payload or {}).get("AccessToken", ""))


def _post(
    url: str, body: dict[str, str], keys: KeySet, token: str | None
) -> tuple[int, dict[str, Any] | None]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")  # noqa: S310 - our own endpoint
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
        out = open_response(resp.read(), keys)
    return out.ret, out.payload


# ------------------------------------------------------------------------------ qilu run


def simulated_operator_id(city_code: str, n: int) -> str:
    """``S`` + the city code + two digits: nine characters, like an organisation code."""
    return f"S{city_code}{n:02d}"


class Province:
    """A few simulated operators per city, connected to the platform over the real protocol:
    each serves its stations (we pull them) and pushes status changes to our endpoint."""

    def __init__(
        self,
        settings: Any,
        cities: list[str],
        per_city: int,
        stations: int,
        api_url: str,
        seed: int = 1,
    ) -> None:
        self.settings = settings
        self.api_url = api_url.rstrip("/")
        self.rnd = random.Random(seed)  # noqa: S311 - simulation
        self.operators: dict[str, tuple[SimulatedOperator, KeySet]] = {}
        self._plan = [
            (simulated_operator_id(c, k), c, seed * 1000 + i * 10 + k)
            for i, c in enumerate(cities)
            for k in range(1, per_city + 1)
        ]
        self._stations = stations
        self._tokens: dict[str, str] = {}  # operator -> our endpoint's token, renewed on failure

    def connect(self) -> None:
        """Start each operator's server and add it (or point it at the new server and give it
        new keys when it exists from an earlier run), audited as ``qilu-run``."""
        from interconnect.tcec102 import operators as ops
        from interconnect.tcec102.secrets import random_keyset
        from storage import operators as store
        from storage.db import connect

        for op, city, seed in self._plan:
            keys = random_keyset()
            sim = SimulatedOperator(op, keys, generate_stations(op, self._stations, [city], seed))
            url = sim.start()
            with connect(self.settings.db) as conn:
                row = store.get(conn, op)
            if row is None:
                shown = ops.add(
                    self.settings, op, name=f"模拟运营商 {op}", endpoint_url=url, site_ids=[],
                    cities=[], outbound=keys, actor="qilu-run", pull_interval_s=60,
                )  # fmt: skip
            elif row.revoked_at is None:
                with connect(self.settings.db) as conn, conn.transaction():
                    store.set_endpoint(conn, op, url, actor="qilu-run")
                shown = ops.rotate(self.settings, op, outbound=keys, actor="qilu-run")
            else:
                sim.stop()
                continue
            self.operators[op] = (sim, shown.inbound)

    def push_some(self, n: int) -> int:
        """``n`` random status changes pushed to the endpoint; returns how many were accepted."""
        accepted = 0
        ops = list(self.operators.values())
        for _ in range(n):
            sim, inbound = self.rnd.choice(ops)
            connectors = list(sim._status)  # the simulation's own state
            if not connectors:
                continue
            cid = self.rnd.choice(connectors)
            status = self.rnd.choice((1, 1, 2, 3, 3, 4, 255, 0))
            ret = self._push(sim, inbound, cid, status)
            if ret == Ret.TOKEN:  # expired (after token_lifetime_s) or retired: a new one, once
                ret = self._push(sim, inbound, cid, status)
            accepted += ret == Ret.OK
        return accepted

    def _push(self, sim: SimulatedOperator, inbound: KeySet, cid: str, status: int) -> int | None:
        """One push with the cached token; the Ret, or None when it failed on the way. The
        token is dropped when it was refused (4002) or the exchange failed."""
        try:
            token = self._token(sim, inbound)
            ret = sim.push_status(self.api_url, inbound, cid, status, token)
        except (OSError, ExchangeError):
            self._tokens.pop(sim.operator_id, None)
            return None
        if ret == Ret.TOKEN:
            self._tokens.pop(sim.operator_id, None)
        return ret

    def _token(self, sim: SimulatedOperator, inbound: KeySet) -> str:
        tok = self._tokens.get(sim.operator_id)
        if not tok:
            tok = self._tokens[sim.operator_id] = sim.province_token(self.api_url, inbound)
        return tok

    def stop(self) -> None:
        for sim, _ in self.operators.values():
            sim.stop()
