"""``qilu dashboards sync``: push folder, data sources, dashboards and alert rules to a Grafana.

Idempotent: each object is read first and written only when it is missing or differs from what
the code builds, so a second run changes nothing and says so. Uses grafana-client (Grafana's
HTTP API) with a service-account token sent as ``Authorization: Bearer``.

What is compared:
- folder: exists with the same title;
- data source: name, type, access, URL, user, default flag and ``jsonData``; the password is
  sent when the data source is created or when Grafana reports none stored (Grafana never
  returns secrets, so a changed password is not detected: ``--reset-passwords`` resends it);
- dashboard: the stored JSON without the ``id`` and ``version`` Grafana adds, and its folder;
- alert rule group: interval and, per rule uid, every field the code sets.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from dashboards import alerts, provisioning
from dashboards.provisioning import DataSources
from qilu.catalog import Catalog

logger = logging.getLogger(__name__)

_DS_KEYS = ("name", "type", "access", "url", "user", "isDefault", "jsonData")
_DASHBOARD_VOLATILE = ("id", "version")


class Action(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class Change:
    kind: str
    name: str
    action: Action

    def line(self) -> str:
        return f"{self.kind:<12} {self.name:<58} {self.action}"


def _missing(exc: GrafanaClientError) -> bool:
    return bool(exc.status_code == 404)


class Syncer:
    def __init__(
        self,
        api: GrafanaApi,
        catalog: Catalog,
        ds: DataSources,
        *,
        dry_run: bool = False,
        reset_passwords: bool = False,
        report: Callable[[Change], None] | None = None,
    ) -> None:
        self.api = api
        self.catalog = catalog
        self.ds = ds
        self.dry_run = dry_run
        self.reset_passwords = reset_passwords
        self._report = report
        self.changes: list[Change] = []

    def _done(self, kind: str, name: str, action: Action) -> None:
        change = Change(kind, name, action)
        self.changes.append(change)
        if self._report is not None:
            self._report(change)

    def run(self) -> list[Change]:
        self.folder()
        for source in provisioning.datasources(self.ds):
            self.datasource(source)
        for built in provisioning.all_dashboards(self.catalog):
            self.dashboard(built.uid, provisioning.dashboard_json(built))
        for group in provisioning.alert_groups_api(self.catalog):
            self.rule_group(group)
        return self.changes

    # ------------------------------------------------------------------ objects

    def folder(self) -> None:
        uid, title = alerts.FOLDER_UID, alerts.FOLDER_TITLE
        name = f"{title} ({uid})"
        try:
            current = self.api.folder.get_folder(uid)
        except GrafanaClientError as exc:
            if not _missing(exc):
                raise
            if not self.dry_run:
                self.api.folder.create_folder(title, uid=uid)
            self._done("folder", name, Action.CREATED)
            return
        if current.get("title") == title:
            self._done("folder", name, Action.UNCHANGED)
            return
        if not self.dry_run:
            self.api.folder.update_folder(uid, title=title, overwrite=True)
        self._done("folder", name, Action.UPDATED)

    def datasource(self, wanted: dict[str, Any]) -> None:
        payload = {k: v for k, v in wanted.items() if k != "editable"}
        uid = payload["uid"]
        name = f"{payload['name']} ({uid})"
        try:
            current = self.api.datasource.get_datasource_by_uid(uid)
        except GrafanaClientError as exc:
            if not _missing(exc):
                raise
            if not self.dry_run:
                self.api.datasource.create_datasource(payload)
            self._done("datasource", name, Action.CREATED)
            return
        same = all(current.get(k) == payload.get(k) for k in _DS_KEYS)
        secrets = set((current.get("secureJsonFields") or {}).keys())
        wanted_secrets = set((payload.get("secureJsonData") or {}).keys())
        if same and wanted_secrets <= secrets and not self.reset_passwords:
            self._done("datasource", name, Action.UNCHANGED)
            return
        if not self.dry_run:
            self.api.datasource.update_datasource_by_uid(uid, payload)
        self._done("datasource", name, Action.UPDATED)

    def dashboard(self, uid: str, wanted: dict[str, Any]) -> None:
        name = f"{wanted.get('title', uid)} ({uid})"
        body = {
            "dashboard": {k: v for k, v in wanted.items() if k not in _DASHBOARD_VOLATILE},
            "folderUid": alerts.FOLDER_UID,
            "overwrite": True,
            "message": "qilu dashboards sync",
        }
        try:
            current = self.api.dashboard.get_dashboard(uid)
        except GrafanaClientError as exc:
            if not _missing(exc):
                raise
            if not self.dry_run:
                self.api.dashboard.update_dashboard(body)
            self._done("dashboard", name, Action.CREATED)
            return
        stored = {
            k: v for k, v in current.get("dashboard", {}).items() if k not in _DASHBOARD_VOLATILE
        }
        folder = (current.get("meta") or {}).get("folderUid")
        if stored == body["dashboard"] and folder == alerts.FOLDER_UID:
            self._done("dashboard", name, Action.UNCHANGED)
            return
        if not self.dry_run:
            self.api.dashboard.update_dashboard(body)
        self._done("dashboard", name, Action.UPDATED)

    def rule_group(self, wanted: dict[str, Any]) -> None:
        title = wanted["title"]
        rules = wanted.get("rules", [])
        name = f"{title} ({len(rules)} rule{'s' if len(rules) != 1 else ''})"
        try:
            current = self.api.alertingprovisioning.get_rule_group(alerts.FOLDER_UID, title)
        except GrafanaClientError as exc:
            if not _missing(exc):
                raise
            current = None
        if current is not None and _same_group(current, wanted):
            self._done("alert group", name, Action.UNCHANGED)
            return
        if not self.dry_run:
            self.api.alertingprovisioning.update_rule_group(alerts.FOLDER_UID, title, wanted)
        self._done("alert group", name, Action.CREATED if current is None else Action.UPDATED)


def _same_group(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    if current.get("interval") != wanted.get("interval"):
        return False
    have = {r.get("uid"): r for r in current.get("rules") or []}
    want = {r.get("uid"): r for r in wanted.get("rules") or []}
    if set(have) != set(want):
        return False
    return all({k: have[uid].get(k) for k in rule} == rule for uid, rule in want.items())


def summary(changes: list[Change]) -> str:
    counts = {a: sum(1 for c in changes if c.action is a) for a in Action}
    return ", ".join(f"{counts[a]} {a}" for a in Action)
