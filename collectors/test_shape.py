"""Every collector folder has the same shape, and COLLECTOR_TYPES matches the folders.

A collector folder (one with ``collector.py``, or named by :data:`collectors.COLLECTOR_TYPES`)
holds ``collector.py`` with a registered :class:`collectors.base.Collector` subclass,
``README.md``, ``sample.toml`` (a ``[collectors.<name>]`` table of its type) and ``tests/`` with
at least one test module.
"""

# ruff: noqa: S101 - pytest asserts (pyproject exempts tests/** only, not collectors' tests)

from __future__ import annotations

import importlib
import inspect
import tomllib
from pathlib import Path

import pytest

from collectors import COLLECTOR_TYPES
from collectors.base import Collector

ROOT = Path(__file__).resolve().parent


def _registered_folder(target: str) -> str:
    """Registry entry ``collectors.<folder>.collector:Class`` -> ``<folder>``."""
    module, _, cls = target.partition(":")
    assert cls, f"{target!r}: expected 'module:Class'"
    prefix, folder, leaf = [*module.split("."), "", "", ""][:3]
    assert (prefix, leaf) == ("collectors", "collector"), (
        f"{target!r}: a collector lives in collectors/<folder>/collector.py"
    )
    assert module.count(".") == 2, f"{target!r}: a collector lives in collectors/<folder>/"
    return folder


def collector_folders() -> list[str]:
    on_disk = {
        p.name
        for p in ROOT.iterdir()
        if p.is_dir() and not p.name.startswith((".", "_")) and (p / "collector.py").exists()
    }
    listed = {_registered_folder(t) for t in COLLECTOR_TYPES.values()}
    return sorted(on_disk | listed)


def _load(target: str) -> type:
    module, _, name = target.partition(":")
    cls = getattr(importlib.import_module(module), name)
    assert isinstance(cls, type), f"{target!r} is not a class"
    return cls


def test_there_are_collectors() -> None:
    assert collector_folders()


@pytest.mark.parametrize("type_name", sorted(COLLECTOR_TYPES))
def test_every_registered_type_has_its_folder_and_class(type_name: str) -> None:
    target = COLLECTOR_TYPES[type_name]
    folder = ROOT / _registered_folder(target)
    assert (folder / "collector.py").is_file(), f"{type_name}: no {folder}/collector.py"
    cls = _load(target)
    assert issubclass(cls, Collector), f"{target} does not subclass collectors.base.Collector"
    assert not inspect.isabstract(cls), f"{target} leaves abstract methods unimplemented"
    assert cls.type_name == type_name, f"{target}.type_name is {cls.type_name!r}"


@pytest.mark.parametrize("name", collector_folders())
def test_every_collector_folder_has_the_same_shape(name: str) -> None:
    folder = ROOT / name
    for required in ("collector.py", "README.md", "sample.toml"):
        assert (folder / required).is_file(), f"collectors/{name}/ has no {required}"
    assert (folder / "README.md").read_text().strip(), f"collectors/{name}/README.md is empty"
    assert list((folder / "tests").glob("test_*.py")), f"collectors/{name}/tests/ has no test_*.py"

    # its Collector classes are all registered under their own type name
    module = importlib.import_module(f"collectors.{name}.collector")
    classes = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Collector)
        and obj.__module__ == module.__name__
        and not inspect.isabstract(obj)
    ]
    assert classes, f"collectors/{name}/collector.py defines no Collector subclass"
    for cls in classes:
        assert cls.type_name, f"{cls.__name__} has no type_name"
        assert COLLECTOR_TYPES.get(cls.type_name) == f"{module.__name__}:{cls.__name__}", (
            f"{cls.__name__} is not registered as {cls.type_name!r} in collectors.COLLECTOR_TYPES"
        )

    # the sample configures at least one collector of this folder's type
    sample = tomllib.loads((folder / "sample.toml").read_text())
    types = {t.get("type") for t in sample.get("collectors", {}).values() if isinstance(t, dict)}
    assert types & {c.type_name for c in classes}, (
        f"collectors/{name}/sample.toml has no [collectors.<name>] table of its type"
    )
