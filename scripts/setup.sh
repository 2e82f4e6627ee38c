#!/usr/bin/env bash
# Create .venv if missing and install dwiml with its test extra into it (again when pyproject.toml changes).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  # torch is pinned to its CPU build (torch==2.13.0) in pyproject.toml.
  .venv/bin/python -m pip install --quiet -e ".[test]"
  touch .venv/.installed
fi
