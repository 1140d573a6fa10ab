"""Reported figures against the real PostgreSQL: `qilu reported import` and the admin API as a
user runs them (a bad row changes nothing and names its line; a good file appears in
/v1/reported with its source kind, reporter and day), corrections audited, the simulation's
figures never replacing a reported one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from api import reported_view
from api.app import create_app
from api.schemas import ReportedAreaOut
from dashboards.coverage import TODAY_CST, reported_table_sql
from qilu.catalog import load_catalog
from qilu.contract import Sector
from qilu.reported import Figure, Report, simulated_figures
from qilu.settings import DatabaseSettings, Settings
from storage import reported as store
from storage.db import connect
from storage.queries_api import Area
from tests.helpers import scalar, wait_for

pytestmark = pytest.mark.integration
SAMPLES = Path(__file__).parents[2] / "docs" / "samples"
SECRET = "reported-figures-secret-" + "k" * 48
HEAD = "target,city,as_of,value,reporter,reported_on,source\n"


@pytest.fixture
def jwt_secret() -> str:
    return SECRET


@pytest.fixture
def client(api_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as c:
        wait_for(lambda: c.get("/readyz").status_code == 200, 30, what="API ready")
        yield c


def _one(db: DatabaseSettings, query: str, params: tuple[Any, ...] = ()) -> Any:
    with connect(db) as conn, conn.cursor() as cur:
        cur.execute(query.encode(), params)
        row = cur.fetchone()
        return None if row is None else row[0]


def _token(scope: str, sub: str = "ops") -> str:
    body = {
        "sub": sub,
        "iss": "qilu",
        "aud": "qilu-api",
        "exp": datetime.now(UTC) + timedelta(minutes=5),
        "scope": scope,
    }
    return jwt.encode(body, SECRET, algorithm="HS256")


def test_cli_import_bad_row_changes_nothing_good_file_is_audited(
    cli: Any, api_settings: Settings, tmp_path: Path
) -> None:
    db = api_settings.db
    bad = SAMPLES / "reported_figures_bad.csv"
    code, _, err = cli("reported", "import", str(bad))
    assert code == 1
    assert f"{bad}:3: value '130%' is above 100 %" in err
    assert "1 bad row(s) of 2: nothing imported" in err
    assert scalar(db, "SELECT count(*) FROM reported_figures") == 0

    good = str(SAMPLES / "reported_figures.csv")
    code, out, _ = cli("reported", "import", good, "--dry-run")
    assert code == 0
    assert "figures: 5 added, 0 corrected, 0 unchanged" in out
    assert scalar(db, "SELECT count(*) FROM reported_figures") == 0

    code, out, _ = cli("reported", "import", good)
    assert code == 0
    assert "figures: 5 added" in out
    assert scalar(db, "SELECT count(*) FROM reported_figures WHERE NOT simulated") == 5
    assert scalar(db, "SELECT count(*) FROM audit_log WHERE action = 'reported.add'") == 5
    code, out, _ = cli("reported", "import", good)  # the same file again: nothing changes
    assert "figures: 0 added, 0 corrected, 5 unchanged" in out
    assert scalar(db, "SELECT count(*) FROM audit_log WHERE entity = 'import'") == 1

    fix = tmp_path / "correction.csv"
    fix.write_text(
        HEAD + "telecom-5g-stations-2024,province,2024-12-31,243500,省通信管理局,2025-02-01,"
        "correction notice\n",
        encoding="utf-8",
    )
    code, out, _ = cli("reported", "import", str(fix))
    assert "figures: 0 added, 1 corrected, 0 unchanged" in out
    assert "telecom-5g-stations-2024 370000 2024-12-31: 243000 -> 243500" in out
    assert scalar(db, "SELECT count(*) FROM reported_figures") == 5  # replaced, not doubled
    correction = _one(
        db,
        "SELECT (before->>'value') || ' -> ' || (after->>'value') FROM audit_log"
        " WHERE action = 'reported.correct'",
    )
    assert correction == "243000.0 -> 243500.0"
    code, out, _ = cli("audit", "--entity", "reported_figure", "--json")
    assert code == 0
    assert out.count("reported.add") == 5
    assert "telecom-5g-stations-2024:370000:2024-12-31" in out
    code, out, _ = cli("reported", "list")
    assert code == 0
    assert "telecom-5g-stations-2024" in out
    assert "243,500 as of 2024-12-31" in out
    assert "STALE" in out  # a 2024 figure is long past its quarterly interval


def test_admin_api_import_and_reported_answers(client: TestClient, api_settings: Settings) -> None:
    admin = {"Authorization": f"Bearer {_token('admin')}"}
    reader = {"Authorization": f"Bearer {_token('coverage:read', 'reader')}"}
    bad = (SAMPLES / "reported_figures_bad.csv").read_bytes()
    r = client.post("/v1/admin/reported/import?name=bad.csv", content=bad, headers=admin)
    assert r.status_code == 422
    assert r.json()["result"]["errors"][0]["reason"].startswith("bad.csv:3: value '130%'")
    assert scalar(api_settings.db, "SELECT count(*) FROM reported_figures") == 0
    r = client.post("/v1/admin/reported/import", content=bad, headers=reader)
    assert r.status_code == 403

    today = datetime.now(UTC).date()
    as_of = today - timedelta(days=10)
    body = (
        HEAD + f"telecom-5g-user-share-2025,370200,{as_of},61%,青岛市通信管理局,{today},"
        "季度通报\n"
        f"telecom-5g-user-share-2025,370100,{as_of - timedelta(days=200)},0.5,"
        f"济南市通信管理局,{today},季度通报\n"
    ).encode()
    r = client.post(
        "/v1/admin/reported/import?name=q.csv&dry_run=true", content=body, headers=admin
    )
    assert r.status_code == 200
    assert (r.json()["applied"], r.json()["summary"]["added"]) == (False, 2)
    r = client.post("/v1/admin/reported/import?name=q.csv", content=body, headers=admin)
    assert r.status_code == 200
    assert r.json()["applied"]
    by = _one(api_settings.db, "SELECT DISTINCT imported_by FROM reported_figures")
    assert by == "api:jwt:ops"

    r = client.get("/v1/reported", headers=reader)
    assert r.status_code == 200
    targets = {t["id"]: t for t in r.json()["targets"]}
    assert set(targets) == {t.id for t in load_catalog().reported}
    t = targets["telecom-5g-user-share-2025"]
    assert t["source_kind"] == "reported"
    cities = {c["area"]: c for c in t["cities"]}
    qd, jn = cities["370200"], cities["370100"]
    assert qd["source_kind"] == "reported"
    assert qd["figure"]["reporter"] == "青岛市通信管理局"
    assert qd["figure"]["as_of"] == as_of.isoformat()
    assert qd["figure"]["simulated"] is False
    assert (qd["freshness"], qd["judgement"]["status"]) == ("current", "met")  # 61 % >= 56 %
    assert jn["freshness"] == "stale"  # 210 days > 92
    assert jn["judgement"]["status"] == "behind"
    assert jn["judgement"]["explanation"].startswith("stale: ")
    assert t["province"]["basis"] == "no_data"  # a ratio's cities are not summed

    r = client.get("/v1/reported/telecom-5g-user-share-2025", headers=reader)
    assert [f["area"] for f in r.json()["figures"]] == ["370100", "370200"]
    assert client.get("/v1/reported/nope", headers=reader).status_code == 404
    # the measured proxy names its reported counterpart; both are judged separately
    r = client.get("/v1/targets/iot-terminals-2022", headers=reader)
    assert r.json()["source_kind"] == "measured"
    assert r.json()["reported"] == ["iot-terminals-reported-2022"]


def test_a_real_import_ends_its_targets_simulation(api_settings: Settings) -> None:
    """qilu run stores simulated figures up to 30 days ago; a real figure for an earlier day
    must not stay hidden behind them: the import deletes its target's simulated figures
    (audited), and the simulation adds none for that target again."""
    db = api_settings.db
    cat = load_catalog()
    today = datetime.now(UTC).date()
    figures = simulated_figures(cat, today)
    tid = "telecom-5g-stations-2024"
    mine = [f for f in figures if f.target_id == tid]
    with connect(db) as conn:
        assert store.save_simulated(conn, figures) == len(figures)
        newest_sim = max(f.day for f in mine)
        real = Figure(tid, "370000", date(2024, 12, 31), 241_500.0, "省通信管理局", today, "通报")
        assert real.day < newest_sim
        rep = Report(None, rows=1, figures=[real])
        src = store.ImportSource("t.csv", "0" * 64)
        dry = store.import_figures(conn, rep, actor="cli:test", source=src, dry_run=True)
        assert dry.simulated_removed == {tid: len(mine)}
        assert scalar(db, "SELECT count(*) FROM reported_figures") == len(figures)
        done = store.import_figures(conn, rep, actor="cli:test", source=src, dry_run=False)
        assert done.summary() == {
            "added": 1,
            "changed": 0,
            "unchanged": 0,
            "simulated_removed": len(mine),
        }
        assert store.save_simulated(conn, figures) == 0  # never again for this target
        stored = [f for f in store.all_figures(conn) if f.target_id == tid]
    assert stored == [real]
    assert scalar(db, "SELECT count(*) FROM reported_figures WHERE simulated") == len(
        figures
    ) - len(mine)
    removed = _one(
        db,
        "SELECT before->>'simulated_figures' FROM audit_log"
        " WHERE action = 'reported.end_simulation' AND entity_id = %s",
        (f"{tid}:simulated",),
    )
    assert removed == str(len(mine))
    t = cat.reported_target(tid)
    assert t is not None
    view = reported_view.target_out(cat, t, stored, {}, datetime.now(UTC), Area())
    assert view.province.value == 241_500
    assert view.province.figure is not None
    assert view.province.figure.simulated is False


def test_simulated_figures_fill_gaps_and_never_replace_a_report(api_settings: Settings) -> None:
    db = api_settings.db
    cat = load_catalog()
    today = datetime.now(UTC).date()
    figures = simulated_figures(cat, today)
    real = next(f for f in figures if f.target_id == "telecom-5g-stations-2024")
    others = [f for f in figures if f.target_id != real.target_id]
    with connect(db) as conn:
        rep_fig = Figure(
            real.target_id, real.area, real.day, 1.0, "省通信管理局", real.reported_on, "通报"
        )
        store.import_figures(
            conn,
            Report(None, rows=1, figures=[rep_fig]),
            actor="cli:test",
            source=store.ImportSource("t.csv", "0" * 64),
            dry_run=False,
        )
        added = store.save_simulated(conn, figures)
        assert added == len(others)  # none for the target with a real figure
        assert store.save_simulated(conn, figures) == 0
    key = (real.target_id, real.area, real.day)
    assert (
        _one(
            db,
            "SELECT value FROM reported_figures WHERE target_id = %s AND area = %s AND day = %s",
            key,
        )
        == 1.0
    )
    assert scalar(db, "SELECT count(*) FROM reported_figures WHERE simulated") == len(others)


def _grafana_rows(db: DatabaseSettings, today: str | None = None) -> list[dict[str, Any]]:
    """The Grafana table's rows, its variables expanded as Grafana would (every city and
    sector); ``today``: a day to judge on instead of the database's clock."""
    spec = reported_table_sql(load_catalog())
    codes = ",".join(f"'{c.code}'" for c in load_catalog().cities)
    query = spec.sql.replace("${sector}", ",".join(f"'{s.value}'" for s in Sector))
    query = query.replace("${city}", codes)
    if today is not None:
        query = query.replace(TODAY_CST, f"DATE '{today}'")
    with connect(db) as conn, conn.cursor() as cur:
        cur.execute(query.encode())
        names = [d.name for d in cur.description or ()]
        assert tuple(names) == spec.column_names
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def test_the_grafana_table_shows_source_kind_age_and_freshness(
    cli: Any, api_settings: Settings
) -> None:
    code, _, _ = cli("reported", "import", str(SAMPLES / "reported_figures.csv"))
    assert code == 0
    got = _grafana_rows(api_settings.db)
    rows = {(r["id"], r["code"]): r for r in got}
    cat = load_catalog()
    # one row per target for the province (same-named targets told apart by id and due)
    assert {k for k in rows if k[1] == "370000"} == {(t.id, "370000") for t in cat.reported}
    five_g = rows["telecom-5g-stations-2024", "370000"]
    assert (five_g["target"], five_g["due"]) == ("5G base stations", date(2024, 12, 31))
    assert five_g["source kind"] == "reported"
    assert five_g["value"] == 243_000
    assert five_g["reporter"] == "省通信管理局"
    assert five_g["freshness"] == "stale"  # as of 2024-12-31, reported quarterly
    assert five_g["status"] == "met"
    places = rows["telecom-key-places-2024", "370000"]
    assert (places["freshness"], places["status"]) == ("no figure", "no_data")


# The same figures through the Grafana SQL and the API: the cases of the review of issue 19
CASES_TODAY = ("2023-01-21", "2023-06-30", "2024-09-30", "2025-04-10", None)


def _case_figures() -> tuple[list[Figure], list[Figure]]:
    cat = load_catalog()
    cities = [c.code for c in cat.cities]

    def f(tid: str, area: str, day: str, value: float, sim: bool = False) -> Figure:
        d = date.fromisoformat(day)
        reporter = "模拟" if sim else f"报送{area[-2:]}"
        return Figure(tid, area, d, value, reporter, d, "通报", simulated=sim)

    g24, g22, pon = (
        "telecom-5g-stations-2024",
        "telecom-5g-stations-2022",
        "telecom-10gpon-ports-2022",
    )
    share, racks = "telecom-5g-user-share-2024", "computing-racks-2022"
    iot = "iot-terminals-reported-2025"  # 4,500万 in 2020 -> 25,000万 by 2025-12-31
    real = [
        f(iot, "370000", "2022-12-31", 127_000_000),  # on the plan's path that day (126.95M)
        f(g24, "370000", "2022-12-31", 146_000),
        f(g24, "370000", "2024-12-31", 230_000),  # missed on the due date
        f(g24, "370000", "2025-03-31", 250_000),  # a late figure
        f(g24, "370100", "2025-06-30", 30_000),  # one city, newer than the province's
        f(pon, "370100", "2022-06-30", 20_000),  # two cities of 16: no province figure
        f(pon, "370200", "2022-09-30", 30_000),
        f(share, "370000", "2024-12-31", 0.59),
        f(share, "370100", "2023-06-30", 0.30),
        f(share, "370100", "2024-12-31", 0.50),
        f(share, "370100", "2026-09-30", 0.70),
        f(share, "370200", "2023-06-30", 0.40),
        f(share, "370200", "2024-06-30", 0.55),
        f(racks, "370000", "2022-12-31", 250_000),  # not more than 250,000
    ]
    # every city for 2022-09-30, one of them simulated: the sum is newer than the province's
    sim = [f(g22, c, "2022-09-30", 9_000, sim=c == cities[0]) for c in cities]
    real += [f(g22, "370000", "2022-06-30", 100_000)]
    real += [x for x in sim if not x.simulated]
    return real, [x for x in sim if x.simulated]


def test_the_grafana_table_and_the_api_judge_the_same_figures_alike(
    api_settings: Settings,
) -> None:
    db = api_settings.db
    cat = load_catalog()
    real, sim = _case_figures()
    with connect(db) as conn:
        store.import_figures(
            conn,
            Report(None, rows=len(real), figures=real),
            actor="cli:test",
            source=store.ImportSource("cases.csv", "1" * 64),
            dry_run=False,
        )
        # a simulated part of a real sum (written directly: an import ends a simulation)
        (part,) = sim
        conn.execute(
            b"INSERT INTO reported_figures (target_id, area, day, value, reporter, reported_on,"
            b" source, simulated, imported_by) VALUES (%s, %s, %s, %s, %s, %s, %s, true, 'test')",
            (part.target_id, part.area, part.day, part.value, part.reporter, part.day, "sim"),
        )
        conn.commit()
        figures, first = store.all_figures(conn), store.earliest(conn)
    seen: dict[tuple[str, str, str], str] = {}
    for today in CASES_TODAY:
        day = date.fromisoformat(today) if today else datetime.now(UTC).date()
        now = datetime(day.year, day.month, day.day, 4, tzinfo=UTC)  # noon in China
        rows = {(r["id"], r["code"]): r for r in _grafana_rows(db, today)}
        api: dict[tuple[str, str], ReportedAreaOut] = {}
        for t in cat.reported:
            out = reported_view.target_out(cat, t, figures, first, now, Area())
            api[t.id, "370000"] = out.province
            api.update({(t.id, c.area): c for c in out.cities if c.figure is not None})
        assert set(rows) == set(api), today
        for key, a in api.items():
            r = rows[key]
            status = a.judgement.status if a.judgement is not None else ""
            assert (r["value"], r["as of"], r["status"], r["freshness"]) == (
                a.value,
                a.figure.as_of if a.figure else None,
                status,
                a.freshness if a.figure else "no figure",
            ), (today, key, a.judgement.explanation if a.judgement else None)
            assert ("sum of the 16 cities" in r["note"]) == (a.basis == "sum_of_cities")
            assert ("simulated" in r["note"]) == bool(a.figure and a.figure.simulated)
            assert r["reporter"] == (a.figure.reporter if a.figure else "")
            seen[(today or "now", *key)] = status
    # the review's cases, as both answer them
    g24, share = "telecom-5g-stations-2024", "telecom-5g-user-share-2024"
    iot = "iot-terminals-reported-2025"
    assert seen["2023-01-21", iot, "370000"] == "on_track"
    assert seen["2023-06-30", iot, "370000"] == "on_track"  # the same figure, half a year old
    assert seen["2025-04-10", g24, "370000"] == "behind"  # missed at due; 250,000 came later
    assert seen["now", g24, "370000"] == "behind"
    assert seen["now", "computing-racks-2022", "370000"] == "behind"  # 250,000 is not > 250,000
    assert seen["now", "telecom-10gpon-ports-2022", "370000"] == "no_data"
    assert seen["now", share, "370100"] == "behind"  # 50 % at due; 70 % later does not count
    assert seen["now", share, "370200"] == "behind"
    assert seen["2024-09-30", share, "370200"] in {"on_track", "at_risk", "behind"}
    rows = {(r["id"], r["code"]): r for r in _grafana_rows(db)}
    g24_row = rows[g24, "370000"]
    assert (g24_row["value"], g24_row["as of"]) == (250_000, date(2025, 3, 31))  # not Jinan's
    pon_row = rows["telecom-10gpon-ports-2022", "370000"]
    assert "2 of 16 cities reported" in pon_row["note"]
    g22 = rows["telecom-5g-stations-2022", "370000"]
    assert (g22["value"], g22["status"]) == (144_000, "behind")
    assert "simulated" in g22["note"]


def test_qilu_reported_simulate_then_list(
    cli: Any, api_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    code, out, _ = cli("reported", "simulate")
    assert code == 0
    added = int(out.split()[0].replace(",", ""))
    assert added == scalar(api_settings.db, "SELECT count(*) FROM reported_figures WHERE simulated")
    code, out, _ = cli("reported", "simulate")  # again: nothing new
    assert out.startswith("0 simulated figures added")
    code, out, _ = cli("reported", "list")
    lines = out.splitlines()
    assert len(lines) == len(load_catalog().reported)
    assert all("simulated" in line for line in lines)
    # reporting on the 2022 action plan's increments stopped a year after: stale, as it would be
    assert "STALE" in next(
        line for line in lines if line.startswith("telecom-5g-stations-new-2022")
    )
    assert "current" in next(line for line in lines if line.startswith("telecom-5g-stations-2024"))
    code, out, _ = cli(
        "reported", "list", "--target", "telecom-5g-user-share-2025", "--city", "青岛市"
    )
    assert code == 0
    (line,) = out.splitlines()
    assert line.startswith("telecom-5g-user-share-2025")
    assert " Qingdao " in line
    assert "simulated" in line
    assert line.split("(")[1].split(")")[0].split(", ")[-1] in {"met", "behind"}
    code, _, err = cli("reported", "list", "--city", "Atlantis")
    assert code != 0
    assert "unknown city 'Atlantis'" in err + caplog.text
