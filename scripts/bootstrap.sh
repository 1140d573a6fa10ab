#!/usr/bin/env bash
# Set up the Python environment from nothing: a project-local virtualenv with the pinned
# dependencies. Idempotent: reinstalls only when pyproject.toml changed. Servers (Kafka,
# PostgreSQL, Mosquitto, TimescaleDB engine) are installed by `qilu services up` on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    echo "bootstrap: Python 3.11 or newer is needed (found: $("$PY" --version 2>&1))" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv" >&2
    if ! "$PY" -m venv .venv 2>/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
            "$PY" -m venv .venv
        else
            echo "bootstrap: cannot create a virtualenv; install python3-venv" >&2
            exit 1
        fi
    fi
fi
stamp=.venv/.qilu-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "bootstrap: installing Python dependencies (pinned in pyproject.toml)" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[server,dev]'
    echo "$want" > "$stamp"
fi
