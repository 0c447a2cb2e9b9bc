#!/usr/bin/env bash
# The test command: set up (idempotent), lint, build the docs (broken links and missing pages
# fail), the whole test suite, then the device side's tests again on Raspberry Pi OS bookworm's
# versions (numpy 1.24, cryptography 38).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
site=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$site"
rm -rf "$site"
.venv/bin/python -m pytest -q "$@"
./scripts/test_bookworm.sh
