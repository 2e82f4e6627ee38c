#!/usr/bin/env bash
# Create .venv if missing and install dwiml with its test extra into it (again when pyproject.toml or
# constraints.txt changes). constraints.txt pins the exact torch of these machines (the CPU wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ] || [ constraints.txt -nt .venv/.installed ]; then
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
  touch .venv/.installed
fi
