"""An HDF5 without validation subjects: said at creation and at training start; training monitors
train_loss under its own name and leaves valid_loss empty."""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys

from helpers import ROOT, SUBJECTS, metrics, run_training


def test_a_dropped_validation_subject_is_reported_then_training_monitors_train_loss(subjects_dir, tmp_path, caplog):
    shutil.copytree(subjects_dir, tmp_path / "in")
    (validation,) = SUBJECTS["validation"]
    (tmp_path / "in" / validation / "extra.nii.gz").unlink()
    out = tmp_path / "data.hdf5"
    lists = [f"--{subset}-subjects={tmp_path / 'in' / f'{subset}.txt'}" for subset in SUBJECTS]
    created = subprocess.run([sys.executable, "-m", "dwiml.cli.create_hdf5", str(tmp_path / "in"),
                              str(tmp_path / "in" / "groups.yaml"), str(out), *lists, "--no-enforce-files-presence"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert created.returncode == 0, created.stderr
    assert f"{out}: no validation subjects left: training on it monitors train_loss" in created.stderr
    assert created.stdout.strip() == f"wrote {out}: 3 training, 0 validation, 1 testing subjects"

    with caplog.at_level(logging.WARNING, logger="dwiml"):
        best = run_training(tmp_path, tmp_path / "run", ["dataset=hdf5", f"dataset.hdf5_path={out}",
                                                         "step.input_group=input", "trainer.max_epochs=2"])
    assert "no validation subjects: no valid_loss; the best model and early stopping follow train_loss" in caplog.text
    rows = metrics(tmp_path / "run")
    assert [r["valid_loss"] for r in rows] == ["", ""]
    assert best == min(float(r["train_loss"]) for r in rows)
    assert (tmp_path / "run" / "best_model" / "model.pt").is_file()
