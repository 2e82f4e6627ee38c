# Sourced before each README block that tests/test_readme.py runs, in a temporary folder that stands
# for the repository root (links to train.py and scripts/). Training commands get small overrides
# appended, which win over the README's values: one epoch of one batch instead of minutes, batches of
# 10 streamlines unless the command sets its own (an LSTM step on 100 takes about a second of CPU).
set -euo pipefail  # any failing command fails the block, not only its last one
small=(trainer.max_epochs=1 trainer.max_batches_per_epoch_training=1 trainer.max_batches_per_epoch_validation=1
       trainer.progress_bar=false)

with_small() {  # run a training command with the small overrides (none to print a config; two Optuna trials)
  local extra=()
  if [[ " $* " != *" --cfg "* ]]; then
    extra=("${small[@]}")
    if [[ " $* " != *" sampler.batch_size="* ]]; then extra+=(sampler.batch_size=10); fi
  fi
  if [[ " $* " == *" hparams_search=optuna "* ]]; then extra+=(hydra.sweeper.n_trials=2); fi
  command "$@" "${extra[@]}"
}

python() { if [[ "${1:-}" == train.py ]]; then with_small python "$@"; else command python "$@"; fi; }
bash() { if [[ "${1:-}" == scripts/train.sh ]]; then with_small bash "$@"; else command bash "$@"; fi; }
torchrun() { with_small torchrun "$@"; }

dwiml-track() {  # at most 1000 seeds
  local args=() arg previous=
  for arg in "$@"; do
    if [[ $previous == --nb-seeds ]]; then arg=$((arg < 1000 ? arg : 1000)); fi
    args+=("$arg") && previous=$arg
  done
  command dwiml-track "${args[@]}"
}
