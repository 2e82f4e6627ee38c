"""Bad inputs, table-driven (tests/helpers/bad_inputs.py): existing outputs, output paths, run folders."""
from __future__ import annotations

import pytest

from helpers.bad_inputs import BadInput, run_bad_input


def existing_folder(name: str):
    def args(folder):
        (folder / name).mkdir()
        (folder / name / "kept.txt").write_text("a previous evaluation")
        return ["--experiment", "phantom_tracking", "--out-dir", name]
    return args


ROWS = {
    "evaluate into an existing --out-dir": BadInput("dwiml-evaluate", existing_folder("eval"), "eval exists"),
    "train on an HDF5 dataset without its path": BadInput(
        "dwiml-train", lambda folder: ["dataset=hdf5"], "dataset.hdf5_path"),
}


@pytest.mark.parametrize("name", ROWS)
def test_bad_input(name, tmp_path, capfd, monkeypatch):
    run_bad_input(ROWS[name], tmp_path / "row", capfd, monkeypatch)
