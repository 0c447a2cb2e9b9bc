#!/usr/bin/env bash
# The device side on Raspberry Pi OS bookworm's own versions: a second virtualenv with
# numpy 1.24 (python3-numpy), cryptography 38 (python3-cryptography), paho-mqtt 2 from pip,
# and the project installed with --no-deps (no gymnasium, onnx or onnxruntime), then the
# runtime's tests there. Tests that need gymnasium or onnxruntime skip (pytest.importorskip).
#
# Idempotent: the venv is built once and rebuilt only when the pins or pyproject.toml change,
# so a second run goes straight to the tests.   Usage: scripts/test_bookworm.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-bookworm
python=${PYTHON:-python3}
pins=("numpy==1.24.*" "cryptography==38.*" "paho-mqtt>=2,<3" "pytest>=7.4")
stamp="$venv/.installed-$( (printf '%s\n' "${pins[@]}"; cat pyproject.toml) | sha256sum | cut -c1-16)"

if [ ! -f "$stamp" ]; then
    rm -rf "$venv"
    "$python" -m venv "$venv" || {
        echo "python3 -m venv failed: install python3-venv (apt-get install -y python3-venv)" >&2
        exit 1
    }
    echo '*' >"$venv/.gitignore" # keep git and ruff out of it
    log="$venv/install.log"
    {
        "$venv/bin/python" -m pip install --upgrade pip &&
            # wheels only: numpy 1.24 and cryptography 38 publish them for CPython 3.11 here
            "$venv/bin/python" -m pip install --only-binary=:all: "${pins[@]}" &&
            "$venv/bin/python" -m pip install --no-deps -e .
    } >"$log" 2>&1 || {
        tail -n 30 "$log" >&2
        echo "installing the bookworm venv failed (full log: $log)" >&2
        exit 1
    }
    touch "$stamp"
fi

"$venv/bin/python" - <<'EOF'
import sys

import cryptography
import numpy
import paho.mqtt

print(
    f"bookworm venv: Python {sys.version.split()[0]}, numpy {numpy.__version__},"
    f" cryptography {cryptography.__version__}, paho-mqtt {paho.mqtt.__version__}"
)
assert numpy.__version__.startswith("1.24."), numpy.__version__
assert cryptography.__version__.startswith("38."), cryptography.__version__
for heavy in ("gymnasium", "onnx", "onnxruntime", "matplotlib", "pygame", "tqdm"):
    try:
        __import__(heavy)
    except ImportError:
        continue
    sys.exit(f"{heavy} is importable in the bookworm venv; it must not be")
EOF

"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/runtime "$@"
