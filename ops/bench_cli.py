"""``qilu bench``: every benchmark of bench/, a shortened soak, and bench/results/REPORT.md.

The benchmarks live in the repository's bench/ folder (they are not part of the installed
package), so the command works from a checkout; it runs ``bench/report.py`` (see there).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from qilu.errors import ConfigError
from qilu.settings import Settings

_REPORT = Path(__file__).resolve().parents[1] / "bench" / "report.py"


@functools.cache
def _report() -> ModuleType | None:
    if not _REPORT.exists():
        return None
    spec = importlib.util.spec_from_file_location("bench_report", _REPORT)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = module  # its dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


def register(sub: Any) -> None:
    report = _report()
    p = sub.add_parser(
        "bench",
        help="run the benchmarks and a soak; write bench/results/REPORT.md (--quick: short)",
        description=report.__doc__ if report else __doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if report is not None:
        report.add_arguments(p)
    p.set_defaults(handler=_run, bench_parser=p)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    del settings  # each benchmark loads the settings itself (they start their own processes)
    report = _report()
    if report is None:
        raise ConfigError("bench", f"{_REPORT} not found: run `qilu bench` from a checkout")
    return int(report.run(report.checked(args, args.bench_parser)))
