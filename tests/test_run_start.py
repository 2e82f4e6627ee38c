"""A run that cannot start ends with one line, on the terminal and in its train.log, and no traceback."""
from __future__ import annotations

import pytest
import torch

from helpers import cli

BAD_STARTS = {
    "dataset=hdf5": "dataset.hdf5_path: no value given",
    "+trainer.max_epoch=2": "trainer.max_epoch: no such key in this config; did you mean trainer.max_epochs?",
    "optim.lr=${nope}": "optim.lr: Interpolation key 'nope' not found",
    "model.head._target_=???": "model.head._target_: no value given",
    "device=cuda": "device=cuda: CUDA is not available on this machine",
    "trainer.max_epochs=-1": "trainer.max_epochs: -1 must be >= 1",
}


@pytest.mark.parametrize("override", BAD_STARTS)
def test_a_failing_start_is_one_line_in_the_terminal_and_in_train_log(cache_dir, tmp_path, override):
    if override == "device=cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = cli(tmp_path, cache_dir, override, check=False)
    terminal = (result.stdout + result.stderr).splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(terminal) == 1 and BAD_STARTS[override] in terminal[0], terminal
    runs = list((tmp_path / "outputs").glob("*/*"))
    if runs:  # a run folder, if one was made, says why the run stopped
        (run,) = runs
        assert (run / "train.log").read_text().splitlines() == [terminal[0]]
        assert not (run / "metrics.csv").exists()
