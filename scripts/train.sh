#!/usr/bin/env bash
# Quick start: train the default Learn2Track model on the built-in phantom (sets up .venv first).
# Any Hydra override can follow, e.g.  bash scripts/train.sh model=gru optim=radam
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  cat <<'HELP'
Usage: bash scripts/train.sh [HYDRA OVERRIDES...]   (then: python train.py --help for the app's options)
Trains the default settings on the built-in phantom: a short demonstration (demo=true), 10 epochs,
about 10 s on 2 CPU cores once the phantom is cached (measured: 10.2 s wall, OMP_NUM_THREADS=2).
Its model tracks poorly; its last lines print the dwiml-track and dwiml-score commands for the
testing subject. The recipe of a model that tracks: bash scripts/train.sh experiment=phantom_tracking
(8 subjects, at most 16 epochs: measured 31.8 s wall on 2 CPU cores, of which about 11 s generate its
phantom the first time and 17 s train; see README, Phantom result).
HELP
  exit 0
fi
root="$(cd -P "$(dirname "$0")/.." && pwd)"   # the run folder goes under the current folder's outputs/
bash "$root/scripts/setup.sh"
"$root/.venv/bin/python" "$root/train.py" "$@"
