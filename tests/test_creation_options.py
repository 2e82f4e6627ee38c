"""Creation options met in dwi_ml configs and runs: ``files`` as one string, ``remove_invalid``,
a validation batch size of its own, and the conversion of a dwi_ml HDF5 file (written here with
h5py in dwi_ml's layout) into a dwiml one that trains."""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import h5py
import nibabel as nib
import numpy as np
import pytest
from dipy.io.stateful_tractogram import Origin, Space, StatefulTractogram
from dipy.io.streamline import save_tractogram

from dwiml.data.convert_dwi_ml import convert_dwi_ml_hdf5
from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.hdf5 import create_hdf5, open_hdf5
from dwiml.errors import DwimlError
from dwiml.training.run import build_trainer
from helpers import (AFFINE, GROUPS, SHAPE, compose_run, metrics, random_streamlines,
                     run_training, write_dwi_ml_hdf5)


def test_files_given_as_one_string_equal_a_list_of_one(subjects_dir, tmp_path):
    as_strings = {name: {**group, "files": group["files"][0]} for name, group in GROUPS.items()}
    as_lists = {name: {**group, "files": group["files"][:1]} for name, group in GROUPS.items()}
    paths = [create_hdf5(subjects_dir, config, tmp_path / f"{kind}.hdf5", ["s1"], ["s4"], [])
             for kind, config in (("strings", as_strings), ("lists", as_lists))]
    with h5py.File(paths[0]) as a, h5py.File(paths[1]) as b:
        assert a["s1/input"].attrs["files"] == b["s1/input"].attrs["files"] == '["input.nii.gz"]'
        np.testing.assert_array_equal(a["s1/input/data"][:], b["s1/input/data"][:])
        assert len(a["s1/streamlines/lengths"]) == len(b["s1/streamlines/lengths"]) == 40
    with pytest.raises(DwimlError, match="group 'mask': 'files' must be a file name"):
        create_hdf5(subjects_dir, {**GROUPS, "mask": {"type": "volume", "files": ""}}, tmp_path / "x.hdf5",
                    ["s1"], [], [])


@pytest.fixture
def leaving_subject(tmp_path):
    """A subject whose tractogram holds 6 streamlines inside the volume and 3 that leave it."""
    folder = tmp_path / "subjects" / "sub"
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.ones(SHAPE + (2,), np.float32), AFFINE), folder / "input.nii.gz")
    inside = random_streamlines(np.random.default_rng(0), 6)
    outside = [np.array([[1, 1, 1], [5, 5, 5], [5, 5, SHAPE[2] + 3]], np.float32),  # the last point
               np.array([[-4, 2, 2], [2, 2, 2]], np.float32),                        # the first point
               np.array([[3, 3, 3], [3, SHAPE[1] + 0.6, 3], [3, 4, 3]], np.float32)]  # beyond the edge
    lines = [inside[0], outside[0], *inside[1:4], outside[1], *inside[4:], outside[2]]
    sft = StatefulTractogram(lines, nib.load(folder / "input.nii.gz"), Space.VOX, origin=Origin.NIFTI)
    save_tractogram(sft, str(folder / "lines.trk"), bbox_valid_check=False)
    return folder.parent, inside


def test_remove_invalid_drops_and_counts_streamlines_leaving_the_volume(leaving_subject, tmp_path, caplog):
    subjects, inside = leaving_subject
    config = {"input": {"type": "volume", "files": "input.nii.gz"},
              "streamlines": {"type": "streamlines", "files": "lines.trk"}}
    refused = r"subject 'sub', group 'streamlines': 3 streamline\(s\) of .*lines.trk.* leave the volume .*remove_invalid"
    with pytest.raises(DwimlError, match=refused):
        create_hdf5(subjects, config, tmp_path / "refused.hdf5", ["sub"], [], [])
    assert not (tmp_path / "refused.hdf5").exists()
    config["streamlines"]["remove_invalid"] = True
    with caplog.at_level(logging.WARNING):
        path = create_hdf5(subjects, config, tmp_path / "kept.hdf5", ["sub"], [], [])
    assert "subject 'sub', group 'streamlines': removed 3 streamline(s)" in caplog.text
    with h5py.File(path) as h5:
        group = h5["sub/streamlines"]
        assert group.attrs["removed_invalid"] == 3
        assert json.loads(h5.attrs["creation"])["removed_invalid"] == {"sub": {"streamlines": 3}}
        points = np.split(group["points"][:], np.cumsum(group["lengths"][:])[:-1])
    assert len(points) == 6
    for stored, line in zip(points, inside):
        np.testing.assert_allclose(stored, line, atol=1e-4)


def test_validation_batches_have_their_own_size(hdf5_path, tmp_path):
    data = ["dataset=hdf5", f"dataset.hdf5_path={hdf5_path}", "sampler.batch_size=20"]
    for extra, expected in (([], 20), (["sampler.validation_batch_size=7"], 7)):
        trainer = build_trainer(compose_run(tmp_path, tmp_path / "run", data + extra), tmp_path / "run")
        assert trainer.train_loader.sampler.batch_size == 20
        assert trainer.valid_loader.sampler.batch_size == expected
        assert {len(batch) for batch in trainer.valid_loader.sampler} <= {expected, 40 % expected}


# ---- a dwi_ml HDF5 (helpers.write_dwi_ml_hdf5), converted ------------------------------------------

def test_convert_dwi_ml_hdf5_keeps_subjects_points_and_references(tmp_path):
    truth = write_dwi_ml_hdf5(tmp_path / "dwi_ml.hdf5", np.random.default_rng(5))
    out = convert_dwi_ml_hdf5(tmp_path / "dwi_ml.hdf5", tmp_path / "dwiml.hdf5")
    with open_hdf5(out) as h5:
        assert json.loads(h5.attrs["training_subjects"]) == ["subA", "subB"]
        assert json.loads(h5.attrs["testing_subjects"]) == []
        assert json.loads(h5.attrs["groups_config"])["streamlines"]["step_size_mm"] == 1.0
        group = h5["subB/streamlines"]
        stored = np.split(group["points"][:], np.cumsum(group["lengths"][:])[:-1])
        assert json.loads(group.attrs["resampling"]) == {"step_size_mm": 1.0}
        assert group["data_per_streamline/weight"].shape == (30, 1)
        assert h5["subA/input"].attrs["standardization"] == "all"
        assert h5["subA/input/data"].chunks is not None
    for a, b in zip(stored, truth["subB"]):
        np.testing.assert_allclose(a, b, atol=1e-6)
    connectivity = MultiSubjectDataset(out).training.connectivity(0, "streamlines")
    assert connectivity.nb_blocs == (2, 1, 1) and connectivity.matrix.tolist() == [[0, 1], [1, 0]]


@pytest.mark.slow
def test_converted_dwi_ml_hdf5_trains(tmp_path):
    write_dwi_ml_hdf5(tmp_path / "dwi_ml.hdf5", np.random.default_rng(6))
    out = convert_dwi_ml_hdf5(tmp_path / "dwi_ml.hdf5", tmp_path / "dwiml.hdf5")
    run_training(tmp_path, tmp_path / "run", ["dataset=hdf5", f"dataset.hdf5_path={out}", "trainer.max_epochs=1",
                                              "sampler.batch_size=10", "trainer.max_batches_per_epoch_training=2"])
    row = metrics(tmp_path / "run")[-1]
    assert np.isfinite(float(row["train_loss"])) and np.isfinite(float(row["valid_loss"]))


def test_convert_command_refuses_a_dwiml_file_in_one_line(hdf5_path, tmp_path):
    result = subprocess.run([sys.executable, "-m", "dwiml.cli.convert_dwi_ml_hdf5", str(hdf5_path),
                             str(tmp_path / "out.hdf5")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"dwiml-convert-dwiml-hdf5: error: {hdf5_path} is already a "
                                                  f"dwiml HDF5 file"]
    assert not list(tmp_path.iterdir())
