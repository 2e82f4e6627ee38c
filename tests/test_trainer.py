"""The production trainer: exact resume after SIGKILL/SIGTERM, stopping, schedules, EMA,
precision, accumulation, DDP. Real CLI runs in subprocesses, on a tiny model and the phantom."""
from __future__ import annotations

import functools
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dwiml.errors import DwimlError
from dwiml.models.io import load_model
from dwiml.training.metrics_log import CsvLog
from dwiml.training.trainer import BATCH_COLUMNS, RESUMABLE_EXIT, Trainer, TrainingInterrupted
from helpers import ROOT, metrics, run_training

TINY = ["dataset.nb_subjects=3", "trainer.progress_bar=false", "model.hidden_sizes=[8]", "sampler.batch_size=10",
        "trainer.max_batches_per_epoch_training=4", "trainer.max_batches_per_epoch_validation=2"]
# Everything whose state a resume must restore: dropout (torch RNG), EMA, a schedule, accumulation.
RESUMED = [*TINY, "trainer.max_epochs=3", "model.dropout=0.3", "trainer.ema_decay=0.8", "scheduler=cosine_warmup",
           "scheduler.warmup_epochs=1", "trainer.accumulate_grad_batches=2", "trainer.checkpoint_every_batches=1"]


def state(run: Path) -> dict:
    return torch.load(run / "checkpoint" / "state.pt", weights_only=True)


def batch_rows(run: Path) -> list[dict]:
    return CsvLog(run / "batch_metrics.csv", BATCH_COLUMNS).rows()


def start(run: Path, cache: Path, *overrides: str, launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    """``python train.py`` in its own session (its own process group, as a cluster job's)."""
    env = {**os.environ, "DWIML_CACHE_DIR": str(cache), "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(ROOT)}
    args = [sys.executable, *launcher, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run}"]
    return subprocess.Popen(args, cwd=run.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(process: subprocess.Popen, status: int = 0) -> str:
    out, _ = process.communicate(timeout=600)
    assert process.returncode == status, out[-3000:]
    return out


def run_until(process: subprocess.Popen, run: Path, nb_rows: int, sig: int, group: bool = False) -> None:
    """Send ``sig`` (to the whole process group with ``group``) once the run's per-batch metrics file has
    ``nb_rows`` rows."""
    while len(batch_rows(run)) < nb_rows:
        assert process.poll() is None, process.communicate()[0][-3000:]
        time.sleep(0.01)
    os.killpg(process.pid, sig) if group else process.send_signal(sig)


def assert_same_run(a: Path, b: Path) -> None:
    sa, sb = state(a), state(b)
    for part in ("model", "ema"):
        assert sa[part].keys() == sb[part].keys()
        assert all(torch.equal(sa[part][k], sb[part][k]) for k in sa[part]), part
    assert str(sa["optimizer"]) == str(sb["optimizer"]) and sa["scheduler"] == sb["scheduler"]
    columns = ("epoch", "train_loss", "valid_loss", "learning_rate", "grad_norm")
    assert [[r[c] for c in columns] for r in metrics(a)] == [[r[c] for c in columns] for r in metrics(b)]
    assert [(r["loss"], r["pass"], r["position"]) for r in batch_rows(a)] == \
        [(r["loss"], r["pass"], r["position"]) for r in batch_rows(b)]


@pytest.fixture(scope="module")
def uninterrupted(cache_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    finish(start(run, cache_dir, *RESUMED))
    return run


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_is_bit_identical(cache_dir, uninterrupted, tmp_path):
    run = tmp_path / "run"
    for nb_rows in (3, 7):  # mid-epoch 1 (between two optimizer steps), then early in epoch 2
        process = start(run, cache_dir, *RESUMED, *([f"resume={run}"] if run.exists() else []))
        run_until(process, run, nb_rows, signal.SIGKILL)
        process.wait(timeout=60)
    resumed = state(run)
    assert resumed["epoch"] < 3
    finish(start(run, cache_dir, *RESUMED, f"resume={run}"))
    assert_same_run(run, uninterrupted)


@pytest.mark.slow
def test_sigterm_checkpoints_mid_epoch_and_exits_resumable(cache_dir, uninterrupted, tmp_path):
    run = tmp_path / "run"
    process = start(run, cache_dir, *RESUMED)
    run_until(process, run, 5, signal.SIGTERM)
    out = finish(process, RESUMABLE_EXIT)
    assert "stopping (SIGTERM)" in out
    stopped = state(run)
    # at an optimizer step inside epoch 2, or of epoch 3 when the signal came late (a fast machine)
    assert stopped["epoch"] in (1, 2) and stopped["batch_index"] in (2, 4)
    finish(start(run, cache_dir, *RESUMED, "trainer.auto_resume=true"))  # as a requeued job would
    assert_same_run(run, uninterrupted)


@pytest.mark.slow
def test_signals_to_the_process_group_with_workers_checkpoint_and_resume_bit_identically(cache_dir, tmp_path):
    """As SLURM, ``timeout`` or a terminal send them: to every process of the job, DataLoader workers too."""
    signalled = [*TINY, "trainer.max_epochs=8", "model.dropout=0.3", "trainer.ema_decay=0.8",
                 "trainer.checkpoint_every_batches=1", "num_workers=2"]
    finish(start(tmp_path / "straight", cache_dir, *signalled))
    run, draw = tmp_path / "run", random.Random(11)
    # each signal 1 to 3 batches (seeded draws) after the last stop: at most 7 x (3 + 1 late) of the 32 batches
    for sig in (signal.SIGTERM,) * 5 + (signal.SIGUSR1, signal.SIGINT):
        process = start(run, cache_dir, *signalled, *([f"resume={run}"] if run.exists() else []))
        run_until(process, run, len(batch_rows(run)) + draw.randint(1, 3), sig, group=True)
        assert f"stopping ({sig.name})" in finish(process, RESUMABLE_EXIT)
        stopped = state(run)
        assert len(batch_rows(run)) == 4 * stopped["epoch"] + stopped["batch_index"]  # no row past the checkpoint
    finish(start(run, cache_dir, *signalled, f"resume={run}"))
    assert_same_run(run, tmp_path / "straight")


def test_wall_time_budget_checkpoints_and_raises(cache_dir, tmp_path):
    with pytest.raises(TrainingInterrupted, match="max_minutes"):
        run_training(cache_dir, tmp_path, [*TINY, "trainer.max_minutes=0"])
    assert state(tmp_path)["batch_index"] == 1 and state(tmp_path)["epoch"] == 0


def test_nan_loss_stops_and_keeps_the_last_checkpoint(cache_dir, tmp_path):
    with pytest.raises(DwimlError, match="training loss is .*nan.* at epoch 2"):
        run_training(cache_dir, tmp_path, [*TINY, "trainer.max_epochs=3", "scheduler=epochs_list",
                                           "scheduler.learning_rates=[0.003,1e38]"])
    kept = state(tmp_path)
    assert kept["epoch"] == 1 and all(torch.isfinite(v).all() for v in kept["model"].values())
    assert [r["epoch"] for r in metrics(tmp_path)] == ["1"]


@pytest.mark.slow
@pytest.mark.parametrize("name, overrides, expected", [
    ("constant", [], lambda lr, e: lr),
    ("step", ["scheduler.step_size=1", "scheduler.gamma=0.5"], lambda lr, e: lr * 0.5 ** e),
    ("epochs_list", ["scheduler.learning_rates=[0.003,0.001]"], lambda lr, e: [0.003, 0.001, 0.001][e]),
    ("cosine_warmup", ["scheduler.warmup_epochs=1", "scheduler.start_factor=0.1"],
     lambda lr, e: [0.1 * lr, lr, lr * (1 + math.cos(math.pi / 2)) / 2][e]),
])
def test_learning_rate_schedules(cache_dir, tmp_path, name, overrides, expected):
    run_training(cache_dir, tmp_path, [*TINY, "trainer.max_epochs=3", "trainer.patience=null",
                                       "trainer.max_batches_per_epoch_training=1", f"scheduler={name}", *overrides])
    lrs = [float(r["learning_rate"]) for r in metrics(tmp_path)]
    assert lrs == pytest.approx([expected(0.003, e) for e in range(3)], rel=1e-9)


def test_plateau_schedule_and_monitor_in_max_mode(cache_dir, tmp_path):
    # train_loss falls, so in "max" mode only epoch 1 is a best: the plateau schedule halves the lr
    # after each later epoch, and early stopping ends the run after two bad epochs.
    run_training(cache_dir, tmp_path, [*TINY, "trainer.max_epochs=5", "scheduler=plateau", "scheduler.patience=0",
                                       "trainer.monitor=train_loss", "trainer.monitor_mode=max", "trainer.patience=2"])
    rows = metrics(tmp_path)
    assert len(rows) == 3 and float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert [float(r["learning_rate"]) for r in rows] == pytest.approx([0.003, 0.003, 0.0015])
    with pytest.raises(DwimlError, match="'accuracy' is not a logged metric"):
        run_training(cache_dir, tmp_path / "other", [*TINY, "trainer.monitor=accuracy"])


def test_accumulation_ema_and_precision(cache_dir, tmp_path):
    # a GRU: CPU autocast runs it on every CPU, where an LSTM needs oneDNN's bfloat16 (next test)
    run_training(cache_dir, tmp_path, [*TINY, "model.rnn_type=gru", "trainer.max_epochs=1",
                                       "trainer.accumulate_grad_batches=3", "trainer.ema_decay=0.5",
                                       "trainer.precision=bf16"])
    rows = batch_rows(tmp_path)
    assert [r["grad_norm"] != "nan" for r in rows] == [False, False, True, True]  # steps after 3 and at the end
    saved = state(tmp_path)
    best = load_model(tmp_path / "best_model").model.state_dict()
    ema = {k.removeprefix("module."): v for k, v in saved["ema"].items() if k.startswith("module.")}
    assert all(torch.equal(best[k], ema[k]) for k in best)  # the best model holds the EMA weights
    assert not all(torch.equal(best[k], saved["model"][k]) for k in best)
    assert math.isfinite(float(metrics(tmp_path)[0]["valid_loss"]))


def test_an_lstm_in_bf16_trains_or_is_refused_by_name_before_any_batch(cache_dir, tmp_path):
    probe = torch.nn.LSTM(1, 1)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            probe(torch.zeros(1, 1, 1))
        supported = True
    except RuntimeError:
        supported = False
    overrides = [*TINY, "trainer.max_epochs=1", "trainer.precision=bf16"]
    if supported:
        run_training(cache_dir, tmp_path, overrides)
        assert math.isfinite(float(metrics(tmp_path)[0]["valid_loss"]))
    else:
        with pytest.raises(DwimlError, match="trainer.precision=bf16: this CPU cannot run an LSTM"):
            run_training(cache_dir, tmp_path, overrides)
        assert not (tmp_path / "batch_metrics.csv").exists()


@pytest.mark.slow
def test_compile_wraps_the_model(tmp_path):
    model = torch.nn.Linear(3, 1)
    trainer = Trainer(model, {}, functools.partial(torch.optim.SGD, lr=0.1), step=None, train_loader=None,
                      valid_loader=None, run_dir=tmp_path, compile=True)
    assert trainer.forward_model is not model and trainer.forward_model._orig_mod is model
    torch.testing.assert_close(trainer.forward_model(torch.ones(1, 3)), model(torch.ones(1, 3)))


@pytest.mark.slow
def test_ddp_two_processes_on_the_cpu(cache_dir, tmp_path):
    run = tmp_path / "run"
    torchrun = ("-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone")
    ddp = [*TINY, "trainer.max_batches_per_epoch_training=null", "sampler.batch_size=80", "trainer.strategy=ddp"]
    finish(start(run, cache_dir, *ddp, "trainer.max_epochs=1", launcher=torchrun))
    rows = batch_rows(run)
    per_rank = [{(r["pass"], r["position"]) for r in rows if r["rank"] == str(k)} for k in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) > 0 and not per_rank[0] & per_rank[1]
    saved = state(run)
    first_pass = {p for p in per_rank[0] | per_rank[1] if p[0] == "0"}
    assert first_pass == {("0", str(i)) for i in range(saved["sampler"]["pass_lengths"][0])}  # the whole pass
    assert saved["world_size"] == 2 and len(set(saved["replica_weights_sha256"])) == 1
    assert len(saved["replica_weights_sha256"]) == 2 and len(saved["rng"]) == 2
    assert [p.name for p in run.glob("**/.hydra")] == [".hydra"] and len(list(tmp_path.iterdir())) == 1
    assert len(metrics(run)) == 1
    finish(start(run, cache_dir, *ddp, "trainer.max_epochs=2", f"resume={run}", launcher=torchrun))
    assert [r["epoch"] for r in metrics(run)] == ["1", "2"] and len(set(state(run)["replica_weights_sha256"])) == 1
    second = {(r["pass"], r["position"]) for r in batch_rows(run) if r["epoch"] == "2"}
    assert ("1", "1") in second and ("1", "0") not in second  # continues after the borrowed batch
