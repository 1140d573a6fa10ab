"""`qilu dashboards sync` against a fake Grafana that checks requests as Grafana's HTTP API would.

The fake serves the endpoints sync uses, over real HTTP on loopback, with Grafana's paths,
status codes and response shapes. It refuses a request without ``Authorization: Bearer
<token>`` (401), a body that is not JSON (400), and payloads Grafana would reject (400 with
the reason): a dashboard without title or uid, a data source without name/type/access/url,
a rule group whose rules lack condition, data, a known noDataState/execErrState, or whose
folderUID / ruleGroup disagree with the path.
"""

from __future__ import annotations

import copy
import io
import json
import re
import threading
from collections.abc import Iterator
from contextlib import redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ops.cli import main

TOKEN = "glsa_test_token"


class FakeGrafana:
    def __init__(self) -> None:
        self.folders: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.groups: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[str] = []
        self.errors: list[str] = []


def _bad(problems: list[str], cond: bool, message: str) -> None:
    if not cond:
        problems.append(message)


def _check_rule_group(folder: str, group: str, body: dict[str, Any]) -> list[str]:
    p: list[str] = []
    _bad(p, body.get("title") == group, "title must equal the group in the path")
    _bad(p, isinstance(body.get("interval"), int) and body["interval"] > 0, "interval: seconds")
    rules = body.get("rules")
    _bad(p, isinstance(rules, list) and bool(rules), "rules: a non-empty list")
    for r in rules or []:
        uid = r.get("uid", "?")
        _bad(p, bool(r.get("title")), f"{uid}: title")
        _bad(p, r.get("folderUID") == folder, f"{uid}: folderUID must match the path")
        _bad(p, r.get("ruleGroup") == group, f"{uid}: ruleGroup must match the path")
        _bad(p, r.get("noDataState") in ("Alerting", "NoData", "OK"), f"{uid}: noDataState")
        _bad(p, r.get("execErrState") in ("Alerting", "Error", "OK"), f"{uid}: execErrState")
        _bad(p, bool(re.fullmatch(r"\d+[smhd]", str(r.get("for", "")))), f"{uid}: for")
        data = r.get("data") or []
        refs = {d.get("refId") for d in data}
        _bad(p, r.get("condition") in refs, f"{uid}: condition must name a query refId")
        for d in data:
            _bad(p, bool(d.get("datasourceUid")), f"{uid}: datasourceUid")
            model = d.get("model") or {}
            _bad(p, model.get("refId") == d.get("refId"), f"{uid}: model.refId")
            rtr = d.get("relativeTimeRange")
            if d.get("datasourceUid") != "__expr__":
                _bad(p, isinstance(rtr, dict) and "from" in rtr, f"{uid}: relativeTimeRange")
    return p


def make_handler(g: FakeGrafana) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            del format, args

        def _send(self, code: int, body: object) -> None:
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _body(self) -> Any:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n)
            if "application/json" not in (self.headers.get("Content-Type") or ""):
                raise ValueError("Content-Type must be application/json")
            return json.loads(raw)

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                g.errors.append(f"401 {self.command} {self.path}")
                self._send(401, {"message": "Unauthorized"})
                return False
            return True

        def do_GET(self) -> None:  # noqa: PLR0911 - one answer per route
            if not self._authorized():
                return None
            path = self.path.split("?")[0]
            if m := re.fullmatch(r"/api/folders/([\w-]+)", path):
                f = g.folders.get(m[1])
                return self._send(200, f) if f else self._send(404, {"message": "not found"})
            if m := re.fullmatch(r"/api/datasources/uid/([\w-]+)", path):
                d = g.datasources.get(m[1])
                if not d:
                    return self._send(404, {"message": "Data source not found"})
                out = {k: v for k, v in d.items() if k != "secureJsonData"}
                out["secureJsonFields"] = dict.fromkeys(d.get("secureJsonData", {}), True)
                return self._send(200, out)
            if m := re.fullmatch(r"/api/dashboards/uid/([\w-]+)", path):
                d = g.dashboards.get(m[1])
                if not d:
                    return self._send(404, {"message": "Dashboard not found"})
                return self._send(200, d)
            if m := re.fullmatch(
                r"/api/v1/provisioning/folder/([\w-]+)/rule-groups/([\w-]+)", path
            ):
                grp = g.groups.get((m[1], m[2]))
                if not grp:
                    return self._send(404, {"message": "rule group not found"})
                return self._send(200, grp)
            return self._send(404, {"message": f"no route {path}"})

        def _write(self) -> None:  # noqa: PLR0911, PLR0912 - Grafana's routes, one branch each
            if not self._authorized():
                return None
            path = self.path.split("?")[0]
            try:
                body = self._body()
            except (ValueError, json.JSONDecodeError) as exc:
                g.errors.append(f"400 {path}: {exc}")
                return self._send(400, {"message": str(exc)})
            problems: list[str] = []
            key = f"{self.command} {path}"
            if self.command == "POST" and path == "/api/folders":
                _bad(problems, bool(body.get("title")), "folder title")
                if not problems:
                    uid = body.get("uid") or "generated"
                    g.folders[uid] = {"uid": uid, "title": body["title"], "id": len(g.folders) + 1}
                    g.writes.append(key)
                    return self._send(200, g.folders[uid])
            elif self.command in ("POST", "PUT") and path.startswith("/api/datasources"):
                for field in ("name", "type", "access", "url"):
                    _bad(problems, bool(body.get(field)), f"datasource {field}")
                _bad(problems, body.get("access") in ("proxy", "direct"), "datasource access")
                if self.command == "PUT":
                    m = re.fullmatch(r"/api/datasources/uid/([\w-]+)", path)
                    _bad(problems, m is not None and m[1] in g.datasources, "PUT unknown uid")
                else:
                    _bad(problems, path == "/api/datasources", "POST path")
                    _bad(problems, body.get("uid") not in g.datasources, "409 exists")
                if not problems:
                    old = g.datasources.get(body["uid"], {})
                    stored = {**body, "id": len(g.datasources) + 1, "orgId": 1, "readOnly": False}
                    stored["secureJsonData"] = {
                        **old.get("secureJsonData", {}),
                        **body.get("secureJsonData", {}),
                    }
                    g.datasources[body["uid"]] = stored
                    g.writes.append(key)
                    return self._send(200, {"message": "Datasource added", "id": stored["id"]})
            elif self.command == "POST" and path == "/api/dashboards/db":
                dash = body.get("dashboard")
                _bad(problems, isinstance(dash, dict), "dashboard object")
                dash = dash or {}
                _bad(problems, bool(dash.get("title")) and bool(dash.get("uid")), "title, uid")
                _bad(problems, isinstance(dash.get("panels"), list), "panels list")
                _bad(problems, body.get("folderUid") in g.folders, "folderUid must exist")
                if not problems:
                    prev = g.dashboards.get(dash["uid"])
                    version = (prev["dashboard"]["version"] + 1) if prev else 1
                    stored = {**copy.deepcopy(dash), "id": 7, "version": version}
                    g.dashboards[dash["uid"]] = {
                        "dashboard": stored,
                        "meta": {"folderUid": body["folderUid"], "slug": dash["uid"]},
                    }
                    g.writes.append(key)
                    return self._send(
                        200,
                        {"id": 7, "uid": dash["uid"], "status": "success", "version": version},
                    )
            elif m := re.fullmatch(
                r"/api/v1/provisioning/folder/([\w-]+)/rule-groups/([\w-]+)", path
            ):
                if self.command != "PUT":
                    problems.append("rule groups are written with PUT")
                _bad(problems, m[1] in g.folders, "folder must exist")
                problems += _check_rule_group(m[1], m[2], body)
                if not problems:
                    stored = copy.deepcopy(body)
                    for i, r in enumerate(stored["rules"]):
                        r.update(
                            {"id": i + 1, "updated": "2026-11-23T00:00:00Z", "provenance": "api"}
                        )
                    g.groups[(m[1], m[2])] = stored
                    g.writes.append(key)
                    return self._send(200, stored)
            else:
                problems.append(f"no route {self.command} {path}")
            g.errors.append(f"400 {key}: {problems}")
            return self._send(400, {"message": "; ".join(problems)})

        do_POST = _write  # noqa: N815 - http.server's method naming
        do_PUT = _write  # noqa: N815

    return Handler


@pytest.fixture
def grafana(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGrafana]:
    g = FakeGrafana()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(g))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("QILU_GRAFANA__URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("QILU_GRAFANA__TOKEN", TOKEN)
    monkeypatch.setenv("QILU_GRAFANA__DB_PASSWORD", "grafana-read-only")
    yield g
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def run_sync(*extra: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["dashboards", "sync", *extra])
    return code, out.getvalue()


def test_first_sync_creates_everything_second_changes_nothing(grafana: FakeGrafana) -> None:
    code, first = run_sync()
    assert code == 0, first
    assert grafana.errors == []
    assert "11 created, 0 updated, 0 unchanged" in first, first
    assert set(grafana.dashboards) == {
        "qilu-coverage",
        "qilu-charging",
        "qilu-substations",
        "qilu-ranches",
        "qilu-pipeline",
    }
    assert {k[1] for k in grafana.groups} == {"coverage", "liveness", "pipeline"}
    pg = grafana.datasources["qilu-timescaledb"]
    assert pg["user"] == "qilu_grafana"
    assert pg["secureJsonData"] == {"password": "grafana-read-only"}
    writes = len(grafana.writes)

    code, second = run_sync()
    assert code == 0
    assert "0 created, 0 updated, 11 unchanged" in second, second
    assert len(grafana.writes) == writes, "an unchanged sync must not write"
    assert grafana.errors == []


def test_a_changed_dashboard_is_updated_and_reported(grafana: FakeGrafana) -> None:
    assert run_sync()[0] == 0
    grafana.dashboards["qilu-ranches"]["dashboard"]["title"] = "edited by hand"
    del grafana.groups[("qilu", "liveness")]
    code, out = run_sync()
    assert code == 0
    assert re.search(r"dashboard\s+Qilu — Ranches \(qilu-ranches\)\s+updated", out), out
    assert re.search(r"alert group\s+liveness \(2 rules\)\s+created", out), out
    assert "1 created, 1 updated, 9 unchanged" in out
    assert grafana.dashboards["qilu-ranches"]["dashboard"]["title"] == "Qilu — Ranches"


def test_dry_run_writes_nothing(grafana: FakeGrafana) -> None:
    code, out = run_sync("--dry-run")
    assert code == 0
    assert grafana.writes == []
    assert "11 created" in out
    assert "dry run" in out


def test_a_wrong_token_is_refused_with_a_clear_error(
    grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("QILU_GRAFANA__TOKEN", "wrong")
    code, _ = run_sync()
    assert code == 3
    assert grafana.writes == []
    assert any("401" in e for e in grafana.errors)
    assert "refused a request" in caplog.text


def test_no_token_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("QILU_GRAFANA__TOKEN", raising=False)
    code, _ = run_sync()
    assert code == 2
    assert "grafana.token" in caplog.text
