"""Unit tier: the benchmark report (bench/report.py) built from captured results.

tests/fixtures/bench_report/ holds JSON written by real runs of the benchmarks and of the
soak (``previous/`` an earlier run's); no benchmark runs here.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
CAPTURED = ROOT / "tests" / "fixtures" / "bench_report"


def _report_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


report = _report_module()
MACHINE = {
    "cpu": "Test CPU",
    "cores": 2,
    "ram_gb": 8.0,
    "os": "Debian",
    "kernel": "6",
    "python": "3.11",
}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    shutil.copytree(CAPTURED, out)
    return out


def _row(text: str, label: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_figures_are_judged_against_their_targets(results: Path) -> None:
    outcomes = [report.Outcome("api_load", "ok", 80.0, 1.5, 2.0, "python bench/api_load.py")]
    text = report.build_report(
        results, mode="full", machine_info=MACHINE, outcomes=outcomes, with_charts=False
    )
    assert (results / "REPORT.md").read_text() == text
    assert "- CPU: Test CPU, 2 cores" in text
    assert "| api_load | ok | 80 | 1.5 → 2.0 | — | `python bench/api_load.py` |" in text
    # values come from the JSON, verdicts from the targets
    _, value, target, verdict, *_ = _row(text, "sustained ingest")
    assert (value, target, verdict) == (
        "177,870 readings/s",
        "≥ 150,000 readings/s (issue 3)",
        "met",
    )
    _, value, target, verdict, *_ = _row(text, "CPU per 1,000 readings/s")
    assert (value, verdict) == ("3.13 % of a core", "**not met**")  # 3.13 > 3
    _, value, target, verdict, *_ = _row(text, "readings lost")
    assert (value, target, verdict) == ("0 readings", "= 0 readings (issue 4)", "met")
    # a figure the JSON lacks is shown as missing, not invented
    _, value, _, verdict, *_ = _row(text, "latency p99")
    assert (value, verdict) == ("—", "")


def test_changes_since_the_previous_run(results: Path) -> None:
    text = report.build_report(
        results, mode="full", machine_info=MACHINE, outcomes=[], with_charts=False
    )
    *_, previous, change = _row(text, "coverage p99")
    assert previous == "108 ms"  # the previous run's api_load.json
    assert change.endswith("(better)")
    now = float(_row(text, "coverage p99")[1].split()[0])
    assert change == f"{100 * (now - 108.31) / 108.31:+.0f} % (better)"
    *_, previous, change = _row(text, "peak RSS at 1,000/s")
    assert (previous, change) == ("—", "—")  # no previous figure


def test_soak_series_get_a_slope_and_a_verdict(results: Path) -> None:
    text = report.build_report(
        results, mode="quick", machine_info=MACHINE, outcomes=[], with_charts=False
    )
    assert "## Soak" in text
    soak = (results / "soak.json").read_text()
    for key in ("api.rss_mb", "ingest.fds", "agents state.disk_mb"):
        assert key in soak
        cells = _row(text, key)
        assert cells[7] in ("flat", "growing", "falling")
    assert "MB/h" in text


def test_charts_are_written_and_linked(results: Path) -> None:
    text = report.build_report(results, mode="full", machine_info=MACHINE, outcomes=[])
    for name in ("report_targets.png", "report_api.png", "report_soak.png"):
        png = results / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{name}]({name})" in text


def test_a_leak_is_not_flat_and_noise_is() -> None:
    climbing = [(float(t), 100.0 + t * 0.1) for t in range(0, 600, 5)]  # +1 MB per 10 s
    wobbling = [(float(t), 100.0 + (1.0 if t % 10 else -1.0)) for t in range(0, 600, 5)]
    assert report.verdict("rss_mb", climbing)["verdict"] == "growing"
    assert report.verdict("rss_mb", wobbling)["verdict"] == "flat"
    assert report.slope_per_hour(climbing) == pytest.approx(360.0)
    assert report.verdict("fds", [(0.0, 1.0)])["verdict"] == "too few samples"


def test_failed_runs_are_reported_with_their_output(results: Path) -> None:
    failed = report.Outcome("ingest", "failed (exit 1)", 3.0, 1.0, 1.0, "python x", ["boom"])
    text = report.build_report(
        results, mode="full", machine_info=MACHINE, outcomes=[failed], with_charts=False
    )
    assert "### ingest: failed (exit 1)" in text
    assert "boom" in text


def test_quick_arguments_are_accepted_by_each_script() -> None:
    """Each quick variant names only options its script defines (read from its source)."""
    for bench in report.BENCHES:
        source = (ROOT / bench.script).read_text()
        for arg in bench.quick:
            if arg.startswith("--"):
                assert f'"{arg}"' in source, f"{bench.script} has no {arg}"


def test_a_quick_run_leaves_the_full_results_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results, quick = tmp_path / "results", tmp_path / "results" / "quick"
    results.mkdir()
    (results / "ingest.json").write_text("full")
    (results / "ingest.png").write_bytes(b"full chart")
    (results / "other.json").write_text("untouched")
    monkeypatch.setattr(report, "RESULTS", results)
    kept = {f.name: f.read_bytes() for f in results.iterdir() if f.is_file()}
    # what a quick run of the script writes: its JSON, its chart, a new file
    (results / "ingest.json").write_text("quick")
    (results / "ingest.png").write_bytes(b"quick chart")
    (results / "new.json").write_text("quick only")
    report.set_aside(kept, quick)
    assert (results / "ingest.json").read_text() == "full"
    assert (results / "ingest.png").read_bytes() == b"full chart"
    assert not (results / "new.json").exists()
    assert (results / "other.json").read_text() == "untouched"
    assert (quick / "ingest.json").read_text() == "quick"
    assert (quick / "ingest.png").read_bytes() == b"quick chart"
    assert (quick / "new.json").read_text() == "quick only"
    assert not (quick / "other.json").exists()


def test_every_benchmark_script_is_in_the_report() -> None:
    """A new bench/*.py must be added to bench/report.py's BENCHES (helpers excepted)."""
    helpers = {"report.py", "edge_support.py", "common.py"}
    scripts = {p.name for p in (ROOT / "bench").glob("*.py")} - helpers
    assert scripts == {Path(b.script).name for b in report.BENCHES}


def test_qilu_bench_takes_the_report_options() -> None:
    from ops import bench_cli
    from ops.cli import build_parser

    args = build_parser().parse_args(["bench", "--quick", "--only", "api_load,wire_format"])
    assert args.handler is bench_cli._run
    mod = bench_cli._report()
    assert mod is not None
    checked = mod.checked(args, args.bench_parser)
    assert checked.names == ["api_load", "wire_format"]
    assert checked.soak_min == 1.0  # quick: a 1-minute soak
    with pytest.raises(SystemExit):
        mod.checked(build_parser().parse_args(["bench", "--only", "nope"]), args.bench_parser)
