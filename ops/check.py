"""``qilu check``: lint and type-check the whole project, the one command CI and humans run."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

from qilu.settings import REPO_ROOT, Settings


def register(sub: Any) -> None:
    p = sub.add_parser("check", help="run ruff (lint + format check) and mypy --strict")
    p.add_argument("--fix", action="store_true", help="let ruff fix and format what it can")
    p.set_defaults(handler=_check)


def _check(args: argparse.Namespace, settings: Settings) -> int:
    del settings
    py = sys.executable
    steps = (
        [[py, "-m", "ruff", "check", "--fix", "."], [py, "-m", "ruff", "format", "."]]
        if args.fix
        else [[py, "-m", "ruff", "check", "."], [py, "-m", "ruff", "format", "--check", "."]]
    )
    steps.append([py, "-m", "mypy"])
    failed = 0
    for cmd in steps:
        sys.stderr.write(f"$ {' '.join(cmd[2:])}\n")
        failed |= subprocess.run(cmd, cwd=REPO_ROOT, check=False).returncode
    return 1 if failed else 0
