"""``dwiml-connectivity`` on streamlines drawn between known regions (counts known by construction),
the same definitions as the HDF5's connectivity references, and ``dwiml-hdf5-extract --connectivity``."""
from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest

from dwiml.cli.connectivity import main as connectivity_main
from dwiml.cli.hdf5_extract import main as extract_main
from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.hdf5 import create_hdf5
from helpers import AFFINE, SHAPE, save_trk


def line(start, end, nb: int = 6) -> np.ndarray:
    return np.linspace(start, end, nb)


@pytest.fixture
def subject(tmp_path):
    """Labels 1, 2, 3 in slabs along x (x < 4, < 8, < 12), 0 where y >= 8; streamlines: 4 from
    region 1 to 3, 3 from 3 to 1, 2 within region 2, 1 from region 1 to no region."""
    folder = tmp_path / "sub"
    folder.mkdir()
    labels = np.indices(SHAPE)[0] // 4 + 1
    labels[:, 8:] = 0
    nib.save(nib.Nifti1Image(labels.astype(np.int16), AFFINE), folder / "labels.nii.gz")
    nib.save(nib.Nifti1Image(np.ones(SHAPE + (2,), np.float32), AFFINE), folder / "input.nii.gz")
    lines = ([line((1, 2, z), (10, 2, z)) for z in (1, 2, 3, 4)] + [line((10, 4, z), (1, 4, z)) for z in (2, 3, 5)]
             + [line((5, 3, 3), (6, 5, 3)), line((4, 1, 6), (7, 6, 6))] + [line((2, 2, 2), (2, 9, 2))])
    save_trk(folder / "lines.trk", lines, folder / "labels.nii.gz")
    return folder


def connectivity(*args) -> None:
    """The command, in this process."""
    connectivity_main([str(a) for a in args])


def test_counts_between_labelled_regions(subject, tmp_path):
    connectivity(subject / "lines.trk", tmp_path / "m.npy", "--labels", subject / "labels.nii.gz")
    expected = np.zeros((3, 3), np.int64)
    expected[0, 2] = expected[2, 0] = 7  # both directions together
    expected[1, 1] = 2                   # within one region: once, on the diagonal
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), expected)
    connectivity(subject / "lines.trk", tmp_path / "b.npy", "--labels", subject / "labels.nii.gz", "--binary")
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), (expected > 0).astype(np.int64))


def test_counts_between_blocs(subject, tmp_path):
    """Two blocs along x (x < 6, x >= 6): the two lines of region 2 cross from bloc 0 to bloc 1."""
    connectivity(subject / "lines.trk", tmp_path / "m.npy", "--nb-blocs", 2, 1, 1,
                 "--reference", subject / "input.nii.gz")
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), [[1, 9], [9, 0]])


def test_a_matrix_made_by_the_command_is_the_reference_training_reads(subject, tmp_path):
    connectivity(subject / "lines.trk", subject / "connectivity.npy", "--labels", subject / "labels.nii.gz")
    config = {"input": {"type": "volume", "files": "input.nii.gz"},
              "streamlines": {"type": "streamlines", "files": "lines.trk", "connectivity_matrix": "connectivity.npy",
                              "connectivity_labels": "labels.nii.gz"}}
    path = create_hdf5(tmp_path, config, tmp_path / "data.hdf5", ["sub"], [], [])
    reference = MultiSubjectDataset(path).training.connectivity(0, "streamlines")
    with h5py.File(path) as h5:
        group = h5["sub/streamlines"]
        points, offsets, lengths = group["points"][:], group["offsets"][:], group["lengths"][:]
    # The streamlines the matrix was made from join no pair the reference lacks.
    assert reference.false_positive_rate(points[offsets], points[offsets + lengths - 1]) == 0
    extract_main([str(path), "sub", "streamlines", str(tmp_path / "out.npy"), "--connectivity"])
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), np.load(subject / "connectivity.npy"))
    with pytest.raises(SystemExit, match="group 'input' has no connectivity matrix"):
        extract_main([str(path), "sub", "input", str(tmp_path / "none.npy"), "--connectivity"])
    assert not (tmp_path / "none.npy").exists()


@pytest.mark.parametrize("args,message", [
    (["OUT.txt", "--labels", "LABELS"], "m.txt: the matrix is written to a .npy file"),
    (["OUT.npy", "--nb-blocs", "2"], "give --reference"),
    (["OUT.npy", "--nb-blocs", "2", "0", "1", "--reference", "INPUT"], "one positive number or three"),
    (["OUT.npy", "--labels", "INPUT"], "a label volume is 3D with integer labels >= 0"),
])
def test_bad_input_is_one_line_and_writes_nothing(subject, tmp_path, args, message):
    names = {"OUT.txt": tmp_path / "m.txt", "OUT.npy": tmp_path / "m.npy", "LABELS": subject / "labels.nii.gz",
             "INPUT": subject / "input.nii.gz"}
    with pytest.raises(SystemExit) as exit_:
        connectivity(subject / "lines.trk", *(names.get(a, a) for a in args))
    assert str(exit_.value).startswith("dwiml-connectivity: error: ") and message in str(exit_.value)
    assert len(str(exit_.value).splitlines()) == 1
    assert not list(tmp_path.glob("m.*"))
