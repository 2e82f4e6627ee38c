"""The closing lines of a run: demonstration or recipe, and the commands that track and score the
testing subject with the model just trained, which work as printed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli
from dwiml.run_folder import RunFolder
from dwiml.training.next_steps import RECIPE, next_steps


@pytest.mark.slow
def test_the_printed_commands_track_and_score_the_testing_subject(cache_dir, tmp_path):
    result = cli(tmp_path, cache_dir, "trainer.max_epochs=1", "trainer.max_batches_per_epoch_training=2")
    (run,) = (tmp_path / "outputs").glob("*/*")
    assert "short demonstration run (demo=true" in result.stdout and RECIPE in result.stdout
    commands = [line.strip() for line in result.stdout.splitlines() if line.startswith("  dwiml-")]
    assert [c.split()[0] for c in commands] == ["dwiml-track", "dwiml-score"]
    assert "  " + commands[0] in (run / "train.log").read_text()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    assert RunFolder(run).tracked("sub-02").is_file()
    assert "valid streamlines VC (%)" in done.stdout


def test_a_recipe_run_on_other_data_names_its_testing_subject(hdf5_path, tmp_path):
    RunFolder(tmp_path).write_dataset(hdf5_path)
    lines = next_steps(tmp_path, demo=False, phantom=False)
    assert "track the testing subject s5" in lines[0] and not any("demonstration" in line for line in lines)
    assert lines[1].startswith(f"  dwiml-track {tmp_path} {RunFolder(tmp_path).tracked('s5')} --subject s5 ")
    assert next_steps(tmp_path, demo=True, phantom=False)[0].startswith("this was a short demonstration run")
