#!/usr/bin/env bash
# Quick start: run the test suite (sets up .venv first).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
