#!/usr/bin/env bash
# Idempotent set-up: the system tools the tests use (Mosquitto, nats-server, openssl, shellcheck,
# systemd-analyze), then a virtualenv in .venv with every extra.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> the Debian packages that provide it
declare -A NEEDED=(
    [mosquitto]=mosquitto
    [mosquitto_sub]=mosquitto-clients
    [openssl]=openssl
    [shellcheck]=shellcheck
    [systemd-analyze]=systemd
    [gcc]=gcc
    [nats-server]=nats-server  # the 3-node cluster of the broker conformance tests
    [arm-none-eabi-gcc]="gcc-arm-none-eabi libnewlib-arm-none-eabi"  # bench/export.py's Cortex-M sizes
)
missing=()
for tool in "${!NEEDED[@]}"; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        read -ra packages <<<"${NEEDED[$tool]}"
        missing+=("${packages[@]}")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing ${missing[*]} with apt-get" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv || {
        echo "setup: python3 -m venv failed: install python3-venv (apt-get install -y python3-venv)" >&2
        exit 1
    }
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[dev]"
    touch "$stamp"
fi
