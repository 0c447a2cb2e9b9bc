#!/usr/bin/env bash
# Idempotent set-up: a virtualenv in .venv with every extra, and Mosquitto for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update
    $SUDO apt-get install -y mosquitto mosquitto-clients
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv || {
        echo "python3 -m venv failed: install python3-venv (apt-get install -y python3-venv)" >&2
        exit 1
    }
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[dev]"
    touch "$stamp"
fi
