"""``/v1/trajectories`` and the scaled thresholds of a simulated registry, against a real,
migrated PostgreSQL: constructed ``coverage_daily`` histories whose met and behind days are
known, the simulation's share recorded as ``qilu run`` records it, and the backfilled history.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.cli import create_key
from dashboards import coverage as dashboards_coverage
from dashboards.macros import Context, Variable, expand_sql
from dashboards.provisioning import GRAFANA_ROLE
from ops.demo import format_coverage
from qilu.catalog import load_catalog
from qilu.registry import generate, sector_fractions
from qilu.settings import Settings
from storage import coverage, trajectories
from storage.db import connect
from storage.registry_store import load_registry
from tests.helpers import wait_for
from tests.integration.test_api_endpoints import registry

pytestmark = pytest.mark.integration
PROVINCE, QINGDAO, JINAN = "370000", "370200", "370100"
CST = ZoneInfo("Asia/Shanghai")
MONITORING = "substation-220kv-monitoring-2024"  # ratio >= 1.0, due 2024-12-31
NETWORKED = "charging-networked-2025"  # count >= 100,000, due 2025-12-31, baseline 31,000
# (target, city) -> [(day, value)]: the constructed histories
HISTORIES: dict[tuple[str, str], list[tuple[date, float]]] = {
    # before the due date, met, then past due and short of it: behind since 2025-01-05
    (MONITORING, PROVINCE): [
        (date(2024, 12, 20), 0.9),
        (date(2024, 12, 25), 1.0),
        (date(2024, 12, 26), 1.0),
        (date(2025, 1, 5), 0.95),
        (date(2025, 1, 6), 0.97),
    ],
    # short, then met without a break since 2024-12-28
    (MONITORING, QINGDAO): [
        (date(2024, 12, 27), 0.8),
        (date(2024, 12, 28), 1.0),
        (date(2024, 12, 29), 1.0),
    ],
    # past due; scaled by 0.02 the threshold is 2,000: met, behind, then met since 2026-03-04
    (NETWORKED, PROVINCE): [
        (date(2026, 3, 1), 1500),
        (date(2026, 3, 2), 2100),
        (date(2026, 3, 3), 1900),
        (date(2026, 3, 4), 2000),
        (date(2026, 3, 5), 2050),
    ],
    (NETWORKED, QINGDAO): [(date(2026, 3, 1), 300), (date(2026, 3, 2), 310)],
}


@dataclass
class Api:
    client: TestClient
    token: str

    def get(self, path: str, **params: Any) -> Any:
        resp = self.client.get(
            path, params=params, headers={"Authorization": f"Bearer {self.token}"}
        )
        assert resp.status_code == 200, resp.text
        return resp.json()


def _store_histories(settings: Settings) -> None:
    with connect(settings.db) as conn, conn.transaction():
        for (target, city), points in HISTORIES.items():
            for day, value in points:
                n = round(value * 100) if value <= 1 else int(value)
                conn.execute(
                    "INSERT INTO coverage_daily (day, target_id, city_code, numerator,"
                    " denominator, value) VALUES (%s, %s, %s, %s, %s, %s)",
                    (day, target, city, n, 100 if value <= 1 else n, value),
                )


def _api(settings: Settings, *, share: float | None) -> Iterator[Api]:
    with connect(settings.db) as conn:
        load_registry(conn, registry())
        if share is not None:
            trajectories.record_simulation(
                conn, {"charging": share, "substation": share, "ranch": 0.5, "all": share}, 1, share
            )
    _store_histories(settings)
    _, token = create_key(settings, name="t", scopes=["coverage:read"], rate=100_000)
    with TestClient(create_app(settings)) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, 30, what="API ready")
        yield Api(client, token)


@pytest.fixture
def scaled(settings: Settings) -> Iterator[Api]:
    yield from _api(settings, share=0.02)


@pytest.fixture
def real(settings: Settings) -> Iterator[Api]:
    yield from _api(settings, share=None)


def test_series_is_the_coverage_series(scaled: Api) -> None:
    for (target, city), points in HISTORIES.items():
        traj = scaled.get(
            f"/v1/trajectories/{target}", **({} if city == PROVINCE else {"city": city})
        )
        stored = scaled.get(
            f"/v1/coverage/{target}/series", city=city, start="2020-01-01", end="2026-12-31"
        )["points"]
        assert [(p["day"], p["value"]) for p in traj["series"]] == [
            (p["day"], p["value"]) for p in stored
        ]
        assert [(p["day"], p["value"]) for p in traj["series"]] == [
            (d.isoformat(), v) for d, v in points
        ]
        assert not any(p["synthetic"] for p in traj["series"])


def test_met_on_and_behind_since_on_constructed_histories(scaled: Api) -> None:
    prov = scaled.get(f"/v1/trajectories/{MONITORING}")
    assert (prov["met_on"], prov["behind_since"]) == (None, "2025-01-05")
    assert prov["status"] == "behind"  # today's value (0: nothing reports) is past due
    assert prov["judgement_path"] == [
        {"day": "2024-12-20", "value": 0.9},
        {"day": "2024-12-31", "value": 1.0},
    ]
    assert prov["plan_path"] is None
    assert prov["baseline"] is None
    assert (prov["scaled"], prov["scale"], prov["threshold_effective"]) == (False, None, 1.0)

    city = scaled.get(f"/v1/trajectories/{MONITORING}", city=QINGDAO)
    assert (city["met_on"], city["behind_since"]) == ("2024-12-28", None)
    assert city["city"] == QINGDAO

    count = scaled.get(f"/v1/trajectories/{NETWORKED}")
    assert (count["met_on"], count["behind_since"]) == ("2026-03-04", None)
    # the first observation is after the due date: the judgement uses the threshold alone
    assert count["judgement_path"] == []


def test_scaled_count_threshold_plan_path_and_baseline(scaled: Api) -> None:
    t = scaled.get(f"/v1/trajectories/{NETWORKED}")
    assert (t["scaled"], t["scale"], t["threshold"]) == (True, 0.02, 100_000)
    assert t["threshold_effective"] == pytest.approx(2_000)
    assert t["baseline"]["day"] == "2020-12-31"
    assert t["baseline"]["value"] == 31_000
    assert "主要指标表" in t["baseline"]["source"]
    assert "数字强省建设规划" in t["baseline"]["source"]
    assert [p["day"] for p in t["plan_path"]] == ["2020-12-31", "2025-12-31"]
    assert [p["value"] for p in t["plan_path"]] == pytest.approx([620, 2_000])
    assert "scaled to the simulated 2.0% of the province" in t["explanation"]
    # a city's count is charted, not judged: the threshold is province-wide
    city = scaled.get(f"/v1/trajectories/{NETWORKED}", city=QINGDAO)
    assert city["status"] == "no_data"
    assert [p["value"] for p in city["series"]] == [300, 310]
    assert city["judgement_path"] == []
    assert city["plan_path"] is None


def test_coverage_answers_and_cli_table_mark_scaled_thresholds(scaled: Api) -> None:
    answers = {c["target_id"]: c for c in scaled.get("/v1/coverage")}
    net = answers[NETWORKED]
    assert (net["scaled"], net["scale"]) == (True, 0.02)
    assert net["threshold_effective"] == pytest.approx(2_000)
    assert net["threshold"] == 100_000
    ranch = answers["ranch-smart-built-2024"]
    assert (ranch["scale"], ranch["threshold_effective"]) == (0.5, 8)
    # the hand-made registry's one smart ranch reports nothing: 0 of a scaled 8
    assert ranch["met"] is False
    mon = answers[MONITORING]
    assert (mon["scaled"], mon["scale"], mon["threshold_effective"]) == (False, None, 1.0)
    status = scaled.client.get("/v1/status").json()
    assert {c["target_id"]: c["scaled"] for c in status["coverage"]}[NETWORKED] is True
    assert status["simulation"]["shares"] == {
        "all": 0.02,
        "charging": 0.02,
        "ranch": 0.5,
        "substation": 0.02,
    }
    assert "2.0 % of its charging stations" in status["simulation"]["note"]
    series = scaled.get(f"/v1/coverage/{NETWORKED}/series", start="2026-03-01", end="2026-03-05")
    assert (series["scaled"], series["threshold_effective"]) == (True, pytest.approx(2_000))
    assert [p["met"] for p in series["points"]] == [False, True, False, True, True]

    table = format_coverage(scaled.get("/v1/coverage"))
    line = next(row for row in table.splitlines() if row.startswith(NETWORKED))
    assert ">=2,000\u2020 2025" in line
    assert "\u2020 threshold scaled to the simulated share of the province" in table
    assert "charging 2.0 %" in table


def test_a_real_registry_is_judged_against_the_thresholds_as_written(real: Api) -> None:
    answers = {c["target_id"]: c for c in real.get("/v1/coverage")}
    assert not any(c["scaled"] for c in answers.values())
    assert answers[NETWORKED]["threshold_effective"] == 100_000
    t = real.get(f"/v1/trajectories/{NETWORKED}")
    assert (t["met_on"], t["behind_since"]) == (None, "2026-03-01")
    assert [p["value"] for p in t["plan_path"]] == [31_000, 100_000]
    assert "scaled" not in format_coverage(real.get("/v1/coverage"))
    assert real.client.get("/v1/status").json()["simulation"] is None


def test_targets_carry_their_baseline_and_its_source(real: Api) -> None:
    targets = {t["id"]: t for t in real.get("/v1/targets")}
    assert targets["iot-terminals-2025"]["baseline"]["value"] == 45_000_000
    assert "4500万" in targets["iot-terminals-2025"]["baseline"]["source"]
    assert targets["agri-bases-2022"]["baseline"]["value"] == 232
    assert targets[MONITORING]["baseline"] is None


def test_trajectory_access_follows_the_status_page(scaled: Api) -> None:
    # status_public (the default): no key needed, like /v1/status; a bad key is still refused
    assert scaled.client.get(f"/v1/trajectories/{NETWORKED}").status_code == 200
    bad = scaled.client.get(
        f"/v1/trajectories/{NETWORKED}", headers={"Authorization": "Bearer nope"}
    )
    assert bad.status_code == 401
    for _ in range(5):  # the same snapshot: the same answer, not sent again
        first = scaled.client.get(f"/v1/trajectories/{NETWORKED}")
        again = scaled.client.get(
            f"/v1/trajectories/{NETWORKED}", headers={"If-None-Match": first.headers["etag"]}
        )
        if again.status_code == 304:
            break
        assert again.json()["as_of"] != first.json()["as_of"]  # only a new snapshot differs
    else:
        pytest.fail("no 304 for five pairs of requests")
    assert scaled.client.get("/v1/trajectories/no-such-target").status_code == 404
    assert scaled.client.get(f"/v1/trajectories/{NETWORKED}?city=999999").status_code == 404


def test_backfill_models_history_before_the_first_day_only(settings: Settings) -> None:
    catalog = load_catalog()
    now = datetime.now(UTC)
    today = coverage.province_day(now)
    with connect(settings.db) as conn:
        load_registry(conn, generate(3, 0.002))
        trajectories.record_simulation(conn, sector_fractions(0.002), 3, 0.002)
        coverage.snapshot(conn, catalog, now)  # today's measured row (nothing reports: zeros)
        written = trajectories.backfill(conn, catalog, now, 10)
        assert written == 10 * len(catalog.targets) * 17
        assert trajectories.backfill(conn, catalog, now, 10) == 0  # nothing doubled
        rows = trajectories.series(conn, NETWORKED, PROVINCE, today - timedelta(days=20), today)
        registered = conn.execute(
            "SELECT denominator FROM coverage_daily WHERE target_id = %s AND city_code = %s"
            " AND day = %s",
            (NETWORKED, PROVINCE, today),
        ).fetchone()
    assert [r.day for r in rows] == [today - timedelta(days=10 - i) for i in range(11)]
    assert [r.synthetic for r in rows] == [True] * 10 + [False]
    assert rows[-1].value == 0  # the measured row is left as measured
    synthetic = [r.value for r in rows[:-1]]
    assert synthetic == sorted(synthetic)  # devices join and stay
    assert registered is not None
    assert 0.5 * registered[0] < synthetic[0] < 0.7 * registered[0]
    assert 0.9 * registered[0] < synthetic[-1] <= registered[0]


def test_backfill_of_a_large_registry_models_every_kth_day(settings: Settings) -> None:
    catalog = load_catalog()
    now = datetime.now(UTC)
    today = coverage.province_day(now)
    reg = generate(3, 0.002)
    with connect(settings.db) as conn:
        load_registry(conn, reg)
        coverage.snapshot(conn, catalog, now - timedelta(days=2))  # measured, two days ago
        # 8 days to model (10 back, up to the measured day), 3 days' worth of budget: every 3rd
        trajectories.backfill(conn, catalog, now, 10, budget=3 * len(reg.devices))
        rows = trajectories.series(conn, NETWORKED, PROVINCE, today - timedelta(days=20), today)
    assert [(r.day, r.synthetic) for r in rows] == [
        (today - timedelta(days=9), True),
        (today - timedelta(days=6), True),
        (today - timedelta(days=3), True),
        (today - timedelta(days=2), False),
    ]
    assert rows[0].value < rows[1].value < rows[2].value


def test_grafana_compares_with_the_scaled_threshold_and_draws_the_plan(settings: Settings) -> None:
    catalog = load_catalog()
    with connect(settings.db) as conn:
        load_registry(conn, registry())
        trajectories.record_simulation(conn, {"charging": 0.07, "all": 0.07}, 1, 0.07)
    _store_histories(settings)
    now = datetime.now(UTC)
    ctx = Context(
        start=datetime(2020, 1, 1, tzinfo=UTC),
        end=now,
        variables={
            "city": Variable("city", catalog.city_codes),
            "sector": Variable("sector", ("charging", "substation", "ranch")),
            "target": Variable("target", (NETWORKED,), multi=False, include_all=False),
        },
    )
    _, _, plan = dashboards_coverage.progress_sql(catalog)
    with connect(settings.db) as conn:
        conn.execute(f"SET ROLE {GRAFANA_ROLE}".encode())  # what Grafana may read
        table = conn.execute(
            expand_sql(dashboards_coverage.targets_table_sql(catalog).sql, ctx).encode()
        ).fetchall()
        path = conn.execute(expand_sql(plan.sql, ctx).encode()).fetchall()
    names = {t.name_en: t.id for t in catalog.targets}
    by_id = {names[r[0]]: r for r in table if names[r[0]] in (NETWORKED, MONITORING)}
    # threshold, document threshold, scaled to (%); 100,000 x 0.07 is exactly 7,000 here
    assert by_id[NETWORKED][3:5] == (7_000, 100_000)
    assert by_id[NETWORKED][5] == pytest.approx(7.0)
    assert by_id[NETWORKED][-1] == "missed"  # 2,050 on the last day, after the due date
    assert by_id[MONITORING][3:6] == (1.0, 1.0, None)  # a ratio: as written
    assert [r[1] for r in path] == [pytest.approx(2_170), 7_000]  # 31,000 and 100,000 x 0.07


@pytest.mark.parametrize(
    ("share", "expected"),
    [
        # scaled: 2,000 networked facilities; met since 2026-03-04 (after a behind day)
        (0.02, {MONITORING: ("behind", date(2025, 1, 5)), NETWORKED: ("met", date(2026, 3, 4))}),
        # a real registry: 100,000, never met, behind from the first (past due) day
        (None, {MONITORING: ("behind", date(2025, 1, 5)), NETWORKED: ("behind", date(2026, 3, 1))}),
    ],
)
def test_grafana_marks_the_day_met_or_behind_as_the_api_does(
    settings: Settings, share: float | None, expected: dict[str, tuple[str, date]]
) -> None:
    """The coverage dashboard's trajectory panel marks met since / behind since with the day
    /v1/trajectories answers as met_on / behind_since (read as qilu_grafana)."""
    catalog = load_catalog()
    for api in _api(settings, share=share):
        for target, (status, day) in expected.items():
            traj = api.get(f"/v1/trajectories/{target}")
            ctx = Context(
                start=datetime(2020, 1, 1, tzinfo=UTC),
                end=datetime.now(UTC),
                variables={
                    "city": Variable("city", catalog.city_codes),
                    "sector": Variable("sector", ("charging", "substation", "ranch")),
                    "target": Variable("target", (target,), multi=False, include_all=False),
                },
            )
            with connect(settings.db) as conn:
                conn.execute(f"SET ROLE {GRAFANA_ROLE}".encode())
                rows = conn.execute(
                    expand_sql(dashboards_coverage.marks_sql(catalog).sql, ctx).encode()
                ).fetchall()
            assert len(rows) == 1, rows
            (at, met, behind) = rows[0]
            marked = at.astimezone(CST).date()
            api_day = traj["met_on"] or traj["behind_since"]
            assert (status, day.isoformat()) == (
                "met" if traj["met_on"] else "behind",
                api_day,
            ), traj
            assert marked == day
            assert (met is not None, behind is not None) == (status == "met", status == "behind")
            shown = next(p["value"] for p in traj["series"] if p["day"] == day.isoformat())
            assert (met if status == "met" else behind) == pytest.approx(shown)


def test_a_private_status_page_needs_a_coverage_key_for_trajectories(settings: Settings) -> None:
    private = settings.model_copy(
        update={
            "api": settings.api.model_copy(
                update={"status_public": False, "anonymous_scopes": []}  # none in development
            )
        }
    )
    for api in _api(private, share=None):
        assert api.client.get(f"/v1/trajectories/{NETWORKED}").status_code == 401
        assert api.get(f"/v1/trajectories/{NETWORKED}")["target_id"] == NETWORKED
