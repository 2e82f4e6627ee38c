"""Training through the real configs: Hydra's compose API, and the real command line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch
from hydra.errors import ConfigCompositionException

from helpers import ROOT, cli, compose_run, metrics, run_training
from dwiml.errors import DwimlError
from dwiml.models.io import load_model


def test_two_epochs_write_a_complete_run_folder(cache_dir, tmp_path):
    run_training(cache_dir, tmp_path, ["trainer.max_epochs=2"])
    rows = metrics(tmp_path)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert matplotlib.image.imread(tmp_path / "plots" / "metrics.png").ndim == 3  # redrawn every epoch
    assert list(rows[0]) == ["epoch", "train_loss", "valid_loss", "learning_rate", "grad_norm", "epoch_seconds",
                             "grad_norm_clipped", "data_seconds", "compute_seconds", "peak_memory_mb"]
    assert float(rows[1]["valid_loss"]) < float(rows[0]["valid_loss"])
    state = torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=True)
    assert state["epoch"] == 2 and {"model", "optimizer", "rng", "sampler"} <= set(state)
    model = load_model(tmp_path / "best_model").model
    assert model.rnns[0].input_size == 28 + 3  # SH order 6 + one previous direction




@pytest.mark.slow
def test_cli_run_folder_then_resume_equals_an_uninterrupted_run(cache_dir, tmp_path):
    small = ("model.hidden_sizes=[16]", "trainer.max_batches_per_epoch_training=3")
    cli(tmp_path, cache_dir, "trainer.max_epochs=2", *small)
    (run,) = (tmp_path / "outputs").glob("*/*")
    assert {".hydra", "train.log", "metrics.csv", "checkpoint", "best_model"} <= {p.name for p in run.iterdir()}
    assert "epoch 2:" in (run / "train.log").read_text()
    cli(tmp_path, cache_dir, f"resume={run}", "trainer.max_epochs=3")
    cli(tmp_path, cache_dir, "trainer.max_epochs=3", *small, f"hydra.run.dir={tmp_path / 'straight'}")
    resumed, straight = metrics(run), metrics(tmp_path / "straight")
    assert [r["epoch"] for r in resumed] == ["1", "2", "3"]
    assert [r["valid_loss"] for r in resumed] == [r["valid_loss"] for r in straight]
    a = torch.load(run / "checkpoint" / "state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "straight" / "checkpoint" / "state.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(list((tmp_path / "outputs").glob("*/*"))) == 1  # resuming made no new folder

    refused = cli(tmp_path, cache_dir, f"resume={run}", "model.rnn_type=gru", check=False)
    assert refused.returncode == 1 and "changes model.rnn_type (saved 'lstm', now 'gru')" in refused.stdout


@pytest.mark.slow
def test_cli_multirun_makes_one_folder_per_job(cache_dir, tmp_path):
    cli(tmp_path, cache_dir, "-m", "optim=adam,radam", "trainer.max_epochs=1")
    jobs = sorted((tmp_path / "multirun").glob("*/*/*/metrics.csv"))
    assert len(jobs) == 2 and all(len(metrics(j.parent)) == 1 for j in jobs)
    assert all((j.parent / "best_model" / "model.pt").is_file() for j in jobs)


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_cli_resume_needs_a_run_folder_with_a_checkpoint(cache_dir, tmp_path, folder):
    (tmp_path / "empty").mkdir()
    result = cli(tmp_path, cache_dir, f"resume={tmp_path / folder}", check=False)
    assert result.returncode != 0 and str(tmp_path / folder) in result.stderr
    assert not (tmp_path / "missing").exists() and list((tmp_path / "empty").iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("model", ["lstm", "gru"])
@pytest.mark.parametrize("optim", ["adam", "adamw", "radam", "sgd"])
def test_every_model_and_optimizer_preset_trains(cache_dir, tmp_path, model, optim):
    run_training(cache_dir, tmp_path, [f"model={model}", f"optim={optim}", "trainer.max_epochs=1",
                                       "trainer.max_batches_per_epoch_training=2"])
    assert len(metrics(tmp_path)) == 1


def test_bad_keys_and_types_fail_at_composition(cache_dir, tmp_path):
    with pytest.raises(ConfigCompositionException, match="max_epoch"):
        compose_run(cache_dir, tmp_path, ["trainer.max_epoch=2"])
    with pytest.raises(ConfigCompositionException, match="trainer.max_epochs"):
        compose_run(cache_dir, tmp_path, ["trainer.max_epochs=many"])
    with pytest.raises(ConfigCompositionException, match="hidden_size"):
        compose_run(cache_dir, tmp_path, ["model.hidden_size=[3]"])


def test_hdf5_dataset_errors_name_the_file(cache_dir, tmp_path):
    (tmp_path / "not.hdf5").write_text("nope")
    with pytest.raises(DwimlError, match="not.hdf5"):
        run_training(cache_dir, tmp_path, ["dataset=hdf5", f"dataset.hdf5_path={tmp_path / 'not.hdf5'}"])
    with pytest.raises(DwimlError, match="no volume group 'dwi'"):
        run_training(cache_dir, tmp_path, ["step.input_group=dwi"])


def test_comet_logger(cache_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("COMET_API_KEY", raising=False)
    with pytest.raises(DwimlError, match="COMET_API_KEY"):
        run_training(cache_dir, tmp_path / "online", ["logger=comet", "trainer.max_epochs=1"])
    run_training(cache_dir, tmp_path / "offline", ["logger=comet_offline", "trainer.max_epochs=1"])
    archives = list((tmp_path / "offline" / "comet").glob("*.zip"))
    assert len(archives) == 1
    key = torch.load(tmp_path / "offline" / "checkpoint" / "state.pt", weights_only=True)["logger_key"]
    assert archives[0].stem == key


def test_lazy_training_with_workers_equals_in_memory_training(hdf5_path, tmp_path):
    data = ["dataset=hdf5", f"dataset.hdf5_path={hdf5_path}", "trainer.max_epochs=1", "sampler.batch_size=20",
            "trainer.max_batches_per_epoch_training=3", "trainer.max_batches_per_epoch_validation=2"]
    run_training(tmp_path, tmp_path / "memory", data)  # no phantom: the cache folder is unused
    run_training(tmp_path, tmp_path / "lazy", data + ["dataset.lazy=true", "dataset.cache_bytes=4000", "num_workers=2"])
    keys = ("train_loss", "valid_loss", "grad_norm")
    assert [[r[k] for k in keys] for r in metrics(tmp_path / "memory")] == \
        [[r[k] for k in keys] for r in metrics(tmp_path / "lazy")]
