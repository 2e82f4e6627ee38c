"""Sweeps through the real command line (joblib launcher, Optuna sweeper), the SLURM launcher preset,
and experiment presets."""
from __future__ import annotations

import math
import subprocess
import sys

import matplotlib.image
import pytest
import yaml
from hydra import compose, initialize_config_module
from helpers import ROOT, cli, metrics, run_training

from dwiml.viz.plots import find_runs, plot_runs

TINY = ("trainer.max_epochs=1", "trainer.max_batches_per_epoch_training=2",
        "trainer.max_batches_per_epoch_validation=1")


def sweep_folder(cwd):
    (folder,) = (cwd / "multirun").glob("*/*")
    return folder


def best_valid_loss(run_dir) -> float:
    return min(float(row["valid_loss"]) for row in metrics(run_dir))


@pytest.mark.slow
def test_joblib_sweep_runs_jobs_in_parallel_processes_and_plots_them(cache_dir, tmp_path):  # noqa: F811
    result = cli(tmp_path, cache_dir, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                 "optim=adam,sgd", *TINY)
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    sweep = sweep_folder(tmp_path)
    runs = find_runs([sweep])
    assert list(runs) == ["optim=adam", "optim=sgd"]
    assert all(len(metrics(run)) == 1 and (run / "best_model" / "model.pt").is_file() for run in runs.values())
    assert yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]["launcher"]["n_jobs"] == 2
    image = matplotlib.image.imread(plot_runs(runs, tmp_path / "sweep.png"))
    assert image.shape[0] == 640 and image.shape[1] > 800  # widened for the legend of the two runs


@pytest.mark.slow
def test_optuna_search_minimizes_the_best_validation_loss(cache_dir, tmp_path):  # noqa: F811
    cli(tmp_path, cache_dir, "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3",
        "model.hidden_sizes=choice([8],[16])", *TINY)
    sweep = sweep_folder(tmp_path)
    trials = sorted(p.parent for p in sweep.glob("*/metrics.csv"))
    assert [t.name for t in trials] == ["0", "1", "2"]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    losses = {t.name: best_valid_loss(t) for t in trials}
    assert math.isclose(results["best_value"], min(losses.values()), rel_tol=1e-12)
    best = yaml.safe_load((trials[0].parent / min(losses, key=losses.get) / ".hydra" / "overrides.yaml").read_text())
    assert f"optim.lr={results['best_params']['optim.lr']}" in best
    for trial in trials:  # the search space: lr in [1e-4, 1e-2], sizes from the command line
        config = yaml.safe_load((trial / ".hydra" / "config.yaml").read_text())
        assert 1e-4 <= config["optim"]["lr"] <= 1e-2 and config["model"]["hidden_sizes"] in ([8], [16])


def in_force(pinned: dict, composed: dict) -> bool:
    """Whether every value of ``pinned`` (nested) is the composed one."""
    return all(in_force(value, composed[key]) if isinstance(value, dict) else composed[key] == value
               for key, value in pinned.items())


def test_experiment_preset_pins_the_run_and_a_tiny_override_trains(cache_dir, tmp_path):  # noqa: F811
    printed = subprocess.run([sys.executable, str(ROOT / "train.py"), "experiment=phantom_lstm", "--cfg", "job"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    composed = yaml.safe_load(printed.stdout)
    preset = yaml.safe_load((ROOT / "conf" / "experiment" / "phantom_lstm.yaml").read_text())
    for group in ("dataset", "sampler", "loader", "model", "optim", "scheduler", "step", "trainer"):
        assert in_force(preset[group], composed[group]), group  # every pinned value is in force
    assert composed["seed"] == preset["seed"] and composed["model"]["rnn_type"] == "lstm"

    run_training(cache_dir, tmp_path / "run", ["experiment=phantom_lstm", *TINY])
    saved = metrics(tmp_path / "run")
    assert len(saved) == 1 and math.isfinite(float(saved[0]["valid_loss"]))


def test_slurm_launcher_preset_composes_with_requeue():
    with initialize_config_module("dwiml.conf", version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.max_num_timeout > 0 and launcher.additional_parameters.requeue is True


@pytest.mark.slow
def test_a_failed_optuna_trial_does_not_end_the_search(cache_dir, tmp_path):  # noqa: F811
    cli(tmp_path, cache_dir, "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3",
        "hydra.sweeper.max_failure_rate=1.0", "step.input_group=choice(nope,input)", "model.hidden_sizes=[8]", *TINY)
    sweep = sweep_folder(tmp_path)
    failed = [p.parent for p in sweep.glob("*/train.log") if "no volume group 'nope'" in p.read_text()]
    trained = [p.parent for p in sweep.glob("*/metrics.csv")]
    assert failed and trained and len(failed) + len(trained) == 3
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_params"]["step.input_group"] == "input"
    assert math.isclose(results["best_value"], min(map(best_valid_loss, trained)), rel_tol=1e-12)
