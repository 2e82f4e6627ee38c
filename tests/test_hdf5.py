"""HDF5 creation: round trip against dipy, attributes, and bad input."""
import json
import shutil

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from dipy.io.streamline import load_tractogram
from dipy.tracking.streamlinespeed import length

from dwiml.data import coords
from dwiml.data.hdf5 import create_hdf5, load_groups_config, open_hdf5
from dwiml.errors import DwimlError
from tests.conftest import AFFINE, GROUPS, SUBJECTS, write_subject


def test_streamlines_round_trip_in_dwiml_space(subjects_dir, hdf5_path):
    ref = str(subjects_dir / "s2" / "input.nii.gz")
    sfts = [coords.to_dwiml_space(load_tractogram(str(subjects_dir / "s2" / "bundles" / f), ref))
            for f in ("a.trk", "b.trk")]
    expected = [s for sft in sfts for s in sft.streamlines]
    with h5py.File(hdf5_path) as h5:
        group = h5["s2"]["streamlines"]
        points, offsets, lengths = group["points"][:], group["offsets"][:], group["lengths"][:]
        stored = [points[o:o + n] for o, n in zip(offsets, lengths)]
        assert len(stored) == len(expected)
        for a, b in zip(stored, expected):
            np.testing.assert_allclose(a, b, atol=1e-5)
        in_mm = [coords.vox_to_mm(s, AFFINE) for s in expected]
        np.testing.assert_allclose(group["lengths_mm"][:], [length(s) for s in in_mm], rtol=1e-4)
        np.testing.assert_allclose(group.attrs["affine"], AFFINE)


def test_volumes_concatenated_and_root_attributes(subjects_dir, hdf5_path):
    with open_hdf5(hdf5_path) as h5:
        data = h5["s1"]["input"]["data"][:]
        assert data.shape == (12, 10, 8, 5) and data.dtype == np.float32
        np.testing.assert_array_equal(data[..., :4], nib.load(subjects_dir / "s1" / "input.nii.gz").get_fdata())
        np.testing.assert_array_equal(data[..., 4], nib.load(subjects_dir / "s1" / "extra.nii.gz").get_fdata())
        assert json.loads(h5.attrs["training_subjects"]) == SUBJECTS["training"]
        assert json.loads(h5.attrs["groups_config"]) == GROUPS
        assert h5.attrs["format_version"] == 1


@pytest.mark.parametrize("mode", ["all", "independent", "per_file"])
def test_standardization_inside_mask(subjects_dir, tmp_path, mode):
    groups = {"input": {**GROUPS["input"], "standardization": mode, "std_mask": ["mask.nii.gz"]}}
    out = create_hdf5(subjects_dir, groups, tmp_path / "std.hdf5", ["s1"], [], [])
    mask = nib.load(subjects_dir / "s1" / "mask.nii.gz").get_fdata() > 0
    with h5py.File(out) as h5:
        inside = h5["s1"]["input"]["data"][:][mask]
        assert (h5["s1"]["input"]["data"][:][~mask] == 0).all()
    if mode == "all":
        assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-4
    elif mode == "independent":
        np.testing.assert_allclose(inside.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(inside.std(axis=0), 1, atol=1e-4)
    else:
        assert abs(inside[:, :4].mean()) < 1e-5 and abs(inside[:, 4].std() - 1) < 1e-4


def _create(subjects_dir, tmp_path, groups=GROUPS, training=("s1",), validation=()):
    return create_hdf5(subjects_dir, groups, tmp_path / "out.hdf5", list(training), list(validation), [])


def test_missing_subject_file_is_named_and_nothing_is_left(subjects_dir, tmp_path):
    groups = {**GROUPS, "input": {**GROUPS["input"], "files": ["nope.nii.gz"]}}
    with pytest.raises(DwimlError, match="nope.nii.gz"):
        _create(subjects_dir, tmp_path, groups)
    assert list(tmp_path.iterdir()) == []


def test_tractogram_not_matching_reference(subjects_dir, tmp_path):
    other = tmp_path / "subjects"
    shutil.copytree(subjects_dir / "s1", other / "s1")
    write_subject(tmp_path / "shifted", np.random.default_rng(5), affine=AFFINE + np.diag([0, 0, 0.5, 0]))
    shutil.copy(tmp_path / "shifted" / "bundles" / "a.trk", other / "s1" / "bundles" / "a.trk")
    with pytest.raises(DwimlError, match="a.trk"):
        create_hdf5(other, GROUPS, tmp_path / "out.hdf5", ["s1"], [], [])
    assert not (tmp_path / "out.hdf5").exists()


def test_subject_errors(subjects_dir, tmp_path):
    with pytest.raises(DwimlError, match="'s1' is listed twice"):
        _create(subjects_dir, tmp_path, training=("s1",), validation=("s1",))
    with pytest.raises(DwimlError, match="'ghost'"):
        _create(subjects_dir, tmp_path, training=("ghost",))


def test_groups_config_errors(tmp_path):
    path = tmp_path / "groups.json"
    path.write_text(json.dumps({"input": {"type": "volume", "files": ["a.nii"], "standardisation": "all"}}))
    with pytest.raises(DwimlError, match="group 'input'.*standardisation"):
        load_groups_config(path)
    path.write_text(json.dumps({"x": {"type": "surface", "files": ["a"]}}))
    with pytest.raises(DwimlError, match="group 'x'"):
        load_groups_config(path)


def test_not_a_dwiml_file(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = np.zeros(3)
    with pytest.raises(DwimlError, match="not a dwiml HDF5"):
        open_hdf5(tmp_path / "other.h5")
    (tmp_path / "text.hdf5").write_text("hello")
    with pytest.raises(DwimlError, match="not an HDF5 file"):
        open_hdf5(tmp_path / "text.hdf5")
