"""The floors of docs/adr/0019-floors.md hold: every top-level folder imports only folders on
lower floors, at module level and inside functions alike, and no two folders import each other.

The checker reads the source (``ast``), it imports nothing: an import inside a function or under
``if TYPE_CHECKING``, a module named to ``importlib.import_module`` or listed in
``ops.cli.COMMAND_MODULES``, and a ``python -m MODULE`` spawn all count as arrows (a relative
import cannot leave its top-level package). Tests inside a folder (``collectors/*/tests``) may
import any floor, like ``tests/`` itself.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import itertools
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# folder -> (floor, where it lives); a folder imports only folders on lower floors
FLOORS: dict[str, tuple[int, str]] = {
    "qilu": (0, "qilu"),
    "collectors": (1, "collectors"),
    "storage": (1, "storage"),
    "stream": (2, "stream"),
    "edge_agent": (3, "edge-agent/edge_agent"),
    "interconnect": (3, "interconnect"),
    "api": (4, "api"),
    "dashboards": (5, "dashboards"),
    "ops": (6, "ops"),
    # outside the product: they may import any floor, no floor may import them
    "bench": (7, "bench"),
    "scripts": (7, "scripts"),
    "tests": (7, "tests"),
}
CHECKED = ("qilu", "collectors", "storage", "stream", "edge_agent", "interconnect", "api")
CHECKED += ("dashboards", "ops")


@dataclass(frozen=True, slots=True)
class Arrow:
    src: str  # importing folder
    dst: str  # imported folder
    where: str  # file:line
    what: str  # the imported module
    in_function: bool


def _module_name(path: Path, base: Path, folder: str) -> str:
    parts = [folder, *path.relative_to(base).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _named_modules(node: ast.AST) -> Iterator[str]:
    """Modules named as text: importlib.import_module("x"), COMMAND_MODULES, -m x."""
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
            yield str(node.args[0].value)
    if isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == "COMMAND_MODULES" for t in node.targets
    ):
        yield from _strings(node.value)
    if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "COMMAND_MODULES":
        yield from _strings(node.value)
    if isinstance(node, (ast.List, ast.Tuple)):
        elts = node.elts
        for a, b in itertools.pairwise(elts):
            if isinstance(a, ast.Constant) and a.value == "-m" and isinstance(b, ast.Constant):
                yield str(b.value)


def _strings(node: ast.AST | None) -> Iterator[str]:
    for n in ast.walk(node) if node is not None else ():
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            yield n.value


def arrows(
    root: Path, floors: Mapping[str, tuple[int, str]], folders: tuple[str, ...]
) -> list[Arrow]:
    """Every import from a module of ``folders`` (tests inside them left out) to another
    folder of ``floors``."""
    out: list[Arrow] = []
    for folder in folders:
        base = root / floors[folder][1]
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base)
            if "tests" in rel.parts or path.name.startswith("test_"):
                continue
            module = _module_name(path, base, folder)
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            out.extend(_arrows_of(tree, folder, module, path.name == "__init__.py", floors, path))
    return out


def _arrows_of(
    tree: ast.Module,
    folder: str,
    module: str,
    is_package: bool,
    floors: Mapping[str, tuple[int, str]],
    path: Path,
) -> Iterator[Arrow]:
    def visit(node: ast.AST, in_function: bool) -> Iterator[Arrow]:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                target = _absolute(child, module, is_package)
                names = [target] if child.module else [f"{target}.{a.name}" for a in child.names]
            names += list(_named_modules(child))
            for name in names:
                top = name.split(".")[0]
                if top in floors and top != folder:
                    yield Arrow(folder, top, f"{path}:{child.lineno}", name, inner)
            yield from visit(child, inner)

    yield from visit(tree, False)


def violations(found: list[Arrow], floors: Mapping[str, tuple[int, str]]) -> list[str]:
    """An arrow to the same or a higher floor, and two folders importing each other."""
    out = []
    for a in found:
        if floors[a.dst][0] >= floors[a.src][0]:
            how = "inside a function" if a.in_function else "at module level"
            out.append(
                f"{a.where}: {a.src} (floor {floors[a.src][0]}) imports {a.what} "
                f"(floor {floors[a.dst][0]}) {how}"
            )
    pairs = {(a.src, a.dst) for a in found}
    out += [f"{s} and {d} import each other" for s, d in sorted(pairs) if s < d and (d, s) in pairs]
    return out


@functools.cache
def _real() -> list[Arrow]:
    return arrows(ROOT, FLOORS, CHECKED)


def test_every_folder_imports_only_lower_floors() -> None:
    found = _real()
    assert found, "the checker found no arrow at all: it is not reading the tree"
    assert violations(found, FLOORS) == []


def test_function_level_imports_and_named_modules_are_read() -> None:
    """The real tree has arrows of each kind the checker claims to see (so a blind spot shows)."""
    found = _real()
    assert any(a.in_function for a in found)
    assert any(a.src == "ops" and a.what == "api.cli" for a in found)  # COMMAND_MODULES


def test_every_module_named_as_text_exists() -> None:
    """A module named as text (a ``python -m`` spawn, ``import_module``, ``COMMAND_MODULES``)
    anywhere in the repository, tests and benchmarks included, is one that exists: a move that
    rewrites imports but misses a string fails here, not in a subprocess."""
    missing = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0].startswith(".") or "node_modules" in rel.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            missing.extend(
                f"{rel}:{getattr(node, 'lineno', '?')}: {name}"
                for name in _named_modules(node)
                if not _exists(name)
            )
    assert missing == []


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def test_a_misspelt_spawn_is_caught() -> None:
    spawn = ast.parse('CMD = [sys.executable, "-m", "provisioning.cli", "agents"]')
    assert [n for node in ast.walk(spawn) for n in _named_modules(node) if not _exists(n)] == [
        "provisioning.cli"
    ]


def test_every_package_has_a_floor() -> None:
    """A new top-level package must be given a floor (here and in the ADR) before it is used."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    packages |= {p.parent.name for p in ROOT.glob("edge-agent/*/__init__.py")}
    assert packages - set(FLOORS) == set()
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = wheel["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert {p.rsplit("/", 1)[-1] for p in shipped} <= set(CHECKED)


def test_the_adr_lists_the_same_floors() -> None:
    text = (ROOT / "docs/adr/0019-floors.md").read_text(encoding="utf-8")
    table: dict[str, int] = {}
    for m in re.finditer(r"^\| (\d+) \| ([^|]+) \|", text, re.M):
        for folder in re.findall(r"`([\w-]+(?:/[\w-]+)*)/`", m.group(2)):
            table[folder.rsplit("/", 1)[-1]] = int(m.group(1))
    assert table == {f: FLOORS[f][0] for f in CHECKED}


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return tmp_path


PLANTED = {
    "qilu/__init__.py": "",
    "storage/__init__.py": "",
    "stream/__init__.py": "",
    "ops/__init__.py": "",
}


@pytest.mark.parametrize(
    ("rel", "source", "expected"),
    [
        # the tool shed's old habit: the ground floor reaching up inside a function
        (
            "qilu/demo.py",
            "def run() -> None:\n    from storage import coverage\n",
            "qilu (floor 0) imports storage (floor 1) inside a function",
        ),
        (
            "storage/writer.py",
            "from stream.validate import Rows\n",
            "storage (floor 1) imports stream.validate (floor 2) at module level",
        ),
        (
            "storage/writer.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ops.cli\n",
            "storage (floor 1) imports ops.cli (floor 6) at module level",
        ),
        (
            "qilu/cli.py",
            "import importlib\nimportlib.import_module('ops.services.cli')\n",
            "qilu (floor 0) imports ops.services.cli (floor 6) at module level",
        ),
        (
            "qilu/cli.py",
            "COMMAND_MODULES = ('stream.cli',)\n",
            "qilu (floor 0) imports stream.cli (floor 2) at module level",
        ),
        (
            "stream/spawn.py",
            "import sys\nCMD = [sys.executable, '-m', 'ops.cli', 'ingest']\n",
            "stream (floor 2) imports ops.cli (floor 6) at module level",
        ),
    ],
)
def test_a_planted_arrow_back_up_is_caught(
    tmp_path: Path, rel: str, source: str, expected: str
) -> None:
    root = _tree(tmp_path, {**PLANTED, rel: source})
    folders = ("qilu", "storage", "stream", "ops")
    found = violations(arrows(root, FLOORS, folders), FLOORS)
    assert [v.split(": ", 1)[1] for v in found] == [expected]


def test_a_planted_sideways_arrow_and_a_two_way_tie_are_caught(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            **PLANTED,
            "collectors/__init__.py": "",
            "collectors/x.py": "from storage import db\n",  # same floor
            "storage/db.py": "def f() -> None:\n    import collectors.x\n",
        },
    )
    found = violations(arrows(root, FLOORS, ("collectors", "storage")), FLOORS)
    assert "collectors and storage import each other" in found
    assert sum("(floor 1) imports" in v for v in found) == 2


def test_downward_arrows_and_tests_inside_folders_pass(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            **PLANTED,
            "stream/ingest.py": "from storage.rows import Rows\nfrom qilu import errors\n",
            "ops/cli.py": "COMMAND_MODULES = ('stream.cli', 'storage.cli')\n",
            "storage/tests/test_x.py": "import ops.cli\n",  # tests may import anything
        },
    )
    found = arrows(root, FLOORS, ("qilu", "storage", "stream", "ops"))
    assert len(found) == 4
    assert violations(found, FLOORS) == []
