"""The coordinate convention, held against dipy and nibabel on real files."""
import nibabel as nib
import numpy as np
import torch
from dipy.io.streamline import load_tractogram
from nibabel.affines import apply_affine

from dwiml.data import coords
from dwiml.data.interpolation import trilinear


def test_dwiml_space_is_nibabel_voxel_space(subjects_dir):
    trk = subjects_dir / "s1" / "bundles" / "a.trk"
    ref = subjects_dir / "s1" / "input.nii.gz"
    sft = load_tractogram(str(trk), str(ref))
    sft.to_rasmm()
    rasmm = sft.streamlines.get_data().copy()
    coords.to_dwiml_space(sft)
    affine = nib.load(ref).affine
    expected = apply_affine(np.linalg.inv(affine), rasmm)
    np.testing.assert_allclose(sft.streamlines.get_data(), expected, atol=1e-4)
    np.testing.assert_allclose(coords.mm_to_vox(rasmm, affine), expected, atol=1e-4)
    np.testing.assert_allclose(coords.vox_to_mm(expected, affine), rasmm, atol=1e-4)


def test_voxel_centres_are_integer_points(subjects_dir):
    img = nib.load(subjects_dir / "s1" / "input.nii.gz")
    data = np.asarray(img.dataobj, dtype=np.float32)
    ijk = np.array([[0, 0, 0], [3, 4, 5], [11, 9, 7]])
    values = trilinear(torch.from_numpy(data), torch.from_numpy(ijk).float()).numpy()
    np.testing.assert_allclose(values, data[ijk[:, 0], ijk[:, 1], ijk[:, 2]], atol=1e-6)
    np.testing.assert_allclose(coords.voxel_sizes(img.affine), img.header.get_zooms()[:3])
