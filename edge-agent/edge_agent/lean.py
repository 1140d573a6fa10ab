"""Keeping the agent's process small on a Pi: what works around a library's import cost.

:func:`defer_kafka_init` (kafka-python 3.0.12, the version pinned in pyproject.toml): ``import
kafka`` runs ``kafka/__init__.py``, which imports the admin client, the consumer and the group
coordinator with their protocol schemas; an agent only produces. Before kafka-python is first
imported, the ``kafka`` package is registered without running that file: its submodules
import as usual (``kafka.producer``, ``kafka.errors``), and the first access to any other name
of the package (``from kafka import KafkaConsumer``) runs the real ``__init__`` then, so a
process that later needs the rest gets it unchanged. Saves about 1.2 MB of the agent's RSS
(bench/results/edge_footprint.json; docs/adr/0007-edge-delivery-and-identity.md). When
kafka-python changes how its package is laid out, re-check :data:`PRODUCER_NAMES` against its
``__init__``; tests/unit/test_edge_lean.py fails when the deferral stops working.

It changes when kafka-python's modules load, not what the agent does.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

# the names a producer takes from the package itself, and the submodule that defines each
PRODUCER_NAMES = {"KafkaProducer": "kafka.producer"}


def defer_kafka_init() -> bool:
    """Register the ``kafka`` package without running its ``__init__`` (see the module
    docstring). False, doing nothing, when kafka-python is imported already or missing."""
    if "kafka" in sys.modules:
        return False
    spec = importlib.util.find_spec("kafka")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return False
    module = importlib.util.module_from_spec(spec)
    done = False
    lock = threading.RLock()  # one thread runs it; the others wait for it

    def run_init() -> None:
        nonlocal done
        with lock:
            if not done:
                done = True  # set first: the init's own imports must not run it again
                code = spec.loader.get_code("kafka")  # type: ignore[union-attr]
                exec(code, module.__dict__)  # noqa: S102 - the package's own __init__, deferred

    def package_getattr(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name in PRODUCER_NAMES:
            return getattr(importlib.import_module(PRODUCER_NAMES[name]), name)
        if importlib.util.find_spec(f"kafka.{name}") is not None:  # ``from kafka import errors``
            return importlib.import_module(f"kafka.{name}")
        run_init()
        try:
            return module.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'kafka' has no attribute {name!r}") from None

    module.__getattr__ = package_getattr  # type: ignore[method-assign]
    sys.modules["kafka"] = module
    return True


def kafka_init_deferred(module: types.ModuleType | None = None) -> bool:
    """Whether the ``kafka`` package in this process still waits for its ``__init__``."""
    module = module or sys.modules.get("kafka")
    return module is not None and "KafkaConsumer" not in module.__dict__
