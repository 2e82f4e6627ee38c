#!/usr/bin/env bash
# Quick start: train the default Learn2Track model on the built-in phantom (sets up .venv first).
# Any Hydra override can follow, e.g.  bash scripts/train.sh model=gru optim=radam
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python train.py "$@"
