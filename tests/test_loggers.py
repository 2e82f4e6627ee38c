"""Loggers beside the local files: TensorBoard event files read back with TensorBoard's own reader,
comet.ml offline archives continued by a resumed run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest
import torch
from helpers import ROOT, cli, metrics, run_training

from dwiml.training.loggers import TensorBoardLogger

TINY = ["trainer.max_epochs=1", "trainer.max_batches_per_epoch_training=2",
        "trainer.max_batches_per_epoch_validation=1"]
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    events = event_accumulator.EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_logger_writes_scalars_and_a_resume_replaces_redone_epochs(tmp_path):
    first = TensorBoardLogger()
    assert first.start(tmp_path, {"optim": {"lr": 0.01}}, None) is None
    for epoch in (1, 2, 3):
        first.log_metrics({"epoch": epoch, "train_loss": 1.0 / epoch}, epoch)
    first.end()
    # Resumed from a checkpoint of epoch 2: epoch 3 is run again, its first values are dropped.
    resumed = TensorBoardLogger()
    resumed.start(tmp_path, {"optim": {"lr": 0.01}}, None)
    for epoch in (3, 4):
        resumed.log_metrics({"epoch": epoch, "train_loss": 10.0 * epoch}, epoch)
    resumed.end()
    assert scalars(tmp_path / "tensorboard") == {"train_loss": [(1, 1.0), (2, 0.5), (3, 30.0), (4, 40.0)]}


def test_training_with_tensorboard_logs_every_metric(cache_dir, tmp_path):  # noqa: F811
    run_training(cache_dir, tmp_path, ["logger=tensorboard", *TINY, "trainer.max_epochs=2"])
    logged = scalars(tmp_path / "tensorboard")
    rows = metrics(tmp_path)
    assert set(logged) == set(rows[0]) - {"epoch"}
    for name, values in logged.items():
        assert [step for step, _ in values] == [1, 2]
        assert [v for _, v in values] == pytest.approx([float(r[name]) for r in rows], rel=1e-6)


@pytest.mark.slow
def test_a_resumed_offline_run_continues_the_same_comet_experiment(cache_dir, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    cli(tmp_path, cache_dir, "logger=comet_offline", *TINY, f"hydra.run.dir={run}")
    key = torch.load(run / "checkpoint" / "state.pt", weights_only=True)["logger_key"]
    cli(tmp_path, cache_dir, f"resume={run}", "trainer.max_epochs=2")
    assert torch.load(run / "checkpoint" / "state.pt", weights_only=True)["logger_key"] == key
    archives = {}  # resume strategy -> epochs of the valid_loss values in that archive
    for path in (run / "comet").glob("*.zip"):
        with zipfile.ZipFile(path) as archive:
            experiment = json.loads(archive.read("experiment.json"))
            messages = [json.loads(line) for line in archive.read("messages.json").splitlines()]
        assert experiment["offline_id"] == key
        archives[experiment["resume_strategy"]] = [m["payload"]["metric"]["epoch"] for m in messages
                                                   if m["type"] == "metric_msg"
                                                   and m["payload"]["metric"]["metricName"] == "valid_loss"]
    assert archives == {"create": [1], "get": [2]}  # `comet upload` adds the second to the same experiment


@pytest.mark.slow
def test_several_loggers_at_once(cache_dir, tmp_path):  # noqa: F811
    run_training(cache_dir, tmp_path, ["logger=comet_offline_tensorboard", *TINY])
    key = torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=True)["logger_key"]
    assert [p.stem for p in (tmp_path / "comet").glob("*.zip")] == [key]
    valid_loss = float(metrics(tmp_path)[0]["valid_loss"])
    assert scalars(tmp_path / "tensorboard")["valid_loss"] == [(1, pytest.approx(valid_loss))]


# python train.py ARGS with every socket connection and name lookup refused and recorded in LOG
NO_NETWORK = """
import runpy, socket, sys
def refuse(*args, **kwargs):
    with open({log!r}, "a") as f:
        f.write(repr(args) + "\\n")
    raise OSError("network blocked by the test")
socket.socket.connect = socket.socket.connect_ex = socket.getaddrinfo = refuse
sys.argv = ["train.py", *{args!r}]
try:
    runpy.run_path({train!r}, run_name="__main__")
finally:
    import comet_ml
    with open({log!r} + ".tracking", "w") as f:
        f.write(str(comet_ml.get_config().get_bool(None, "comet.error_tracking.enable", default=True)))
"""


@pytest.mark.slow
def test_comet_offline_makes_no_connection(cache_dir, tmp_path):
    log, run = tmp_path / "connections.log", tmp_path / "run"
    args = ["logger=comet_offline", *TINY, "dataset.nb_subjects=3", "trainer.progress_bar=false", f"hydra.run.dir={run}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMET_")}
    script = NO_NETWORK.format(log=str(log), args=args, train=str(ROOT / "train.py"))
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**env, "DWIML_CACHE_DIR": str(cache_dir), "HYDRA_FULL_ERROR": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((run / "comet").glob("*.zip"))) == 1
    assert not log.exists(), log.read_text()  # no connection attempted, no name looked up
    assert (tmp_path / "connections.log.tracking").read_text() == "False"  # comet's error reports off
