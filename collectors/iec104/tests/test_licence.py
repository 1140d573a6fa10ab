"""c104 (lib60870) is GPL-3.0: the tests may run it, the agent and the platform never import it,
and it is a dependency of the ``dev`` extra only (docs/adr/0014-iec104-collector.md)."""

# ruff: noqa: S101 - pytest asserts

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RUNTIME = ("qilu", "collectors", "edge-agent", "stream", "storage", "api", "dashboards")
IMPORT = re.compile(r"^\s*(import\s+c104\b|from\s+c104\b)", re.MULTILINE)


def test_no_runtime_module_imports_c104() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for top in RUNTIME
        for p in (ROOT / top).rglob("*.py")
        if "tests" not in p.relative_to(ROOT).parts and IMPORT.search(p.read_text("utf-8"))
    ]
    assert offenders == []


def test_c104_is_a_dev_dependency_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() for d in project["dependencies"]]
    assert "c104" not in names
    extras = project["optional-dependencies"]
    assert [e for e, deps in extras.items() if any(d.startswith("c104") for d in deps)] == ["dev"]
