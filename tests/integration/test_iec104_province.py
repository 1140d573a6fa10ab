"""The simulated province's IEC 104 path end to end: `qilu agent province` reads Jinan's
substations through simulated stations and the real IEC 104 collector, and the readings and
the telecontrol links' state reach PostgreSQL through Kafka and the real ingest, so the links
count in liveness (docs/targets.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qilu.ports import free_port
from qilu.registry import generate
from qilu.settings import Settings
from storage.db import connect
from storage.registry_store import load_registry
from tests.helpers import scalar, wait_for
from tests.integration.test_dashboards_sql import SCALE, SEED, platform_env, qilu_process

JINAN = "370100"


def test_jinan_substations_over_iec104_reach_storage_and_liveness(
    settings: Settings, start_ingest: Callable[[], object], tmp_path: Path
) -> None:
    reg = generate(SEED, SCALE)
    sites = {
        s.site_id for s in reg.sites if s.sector.value == "substation" and s.city_code == JINAN
    }
    devices = [d for d in reg.devices if d.site_id in sites]
    gateways = sorted(d.device_id for d in devices if d.kind == "telecontrol_gateway")
    assert gateways, "the test registry should hold Jinan substations"
    with connect(settings.db) as conn:
        load_registry(conn, reg)
    start_ingest()
    db = settings.db
    args = [
        *("agent", "province", "--seed", str(SEED), "--scale", str(SCALE)),
        *("--sector", "substation", "--city", JINAN, "--iec104-city", JINAN),
        *("--silence", "none", "--state-dir", str(tmp_path / "agents")),
        *("--metrics-port", str(free_port())),
    ]
    live = (
        "SELECT count(*) FROM device_liveness l JOIN devices d USING (device_pk)"
        " WHERE d.site_id LIKE 'SUB-370100-%'"
    )
    with qilu_process(args, platform_env(settings), tmp_path / "province.log"):
        wait_for(
            lambda: scalar(db, live) == len(devices),
            timeout=90,
            what="every device of Jinan's substations to be seen",
        )
    rows = """SELECT d.device_id, m.key, r.value, r.ts FROM readings r
      JOIN devices d USING (device_pk) JOIN metrics m USING (metric_id)
      WHERE d.device_id = ANY(%s)"""
    with connect(db) as conn:
        got = conn.execute(rows, ([d.device_id for d in devices],)).fetchall()
    gi = {(dev, v) for dev, key, v, _ in got if key == "gi_complete"}
    # gi_complete = 0 while the first GI ran: only the IEC 104 collector reports that (the
    # plain simulation always says 1), then 1 once it completed
    assert {(g, 0.0) for g in gateways} | {(g, 1.0) for g in gateways} <= gi
    assert {dev for dev, key, v, _ in got if key == "link_up" and v == 1.0} == set(gateways)
    # the station's measured values came as CP56Time2a time tags: whole milliseconds
    measured = [ts for dev, key, _, ts in got if key not in ("link_up", "gi_complete")]
    assert measured
    assert all(ts.microsecond % 1000 == 0 for ts in measured)
