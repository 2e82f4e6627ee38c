"""Tests of the synthetic phantom generator, on real files written to disk."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import yaml
from dipy.core.gradients import gradient_table
from dipy.core.sphere import HemiSphere
from dipy.io.gradients import read_bvals_bvecs
from dipy.io.streamline import load_tractogram
from dipy.reconst.shm import sh_to_sf
from dipy.sims.voxel import multi_tensor

from dwiml.data.builtin import phantom_hdf5
from dwiml.data.phantom import (
    BACKGROUND_DIFFUSIVITY,
    CONFIGURATIONS,
    PHANTOM_VERSION,
    S0,
    SHAPE,
    SNR_RANGE,
    fiber_orientations,
    make_bundles,
    make_phantom,
    multi_tensor_signal,
    phantom_gtab,
)

SEED = 7
NB_SUBJECTS = 3
VOLUMES = {
    "dwi.nii.gz": np.float32,
    "sh.nii.gz": np.float32,
    "fodf.nii.gz": np.float32,
    "wm_mask.nii.gz": np.uint8,
    "seeding_mask.nii.gz": np.uint8,
    "endpoints_labels.nii.gz": np.int16,
}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("phantom") / "data"
    assert make_phantom(out_dir, nb_subjects=NB_SUBJECTS, seed=SEED) == ["sub-00", "sub-01", "sub-02"]
    return out_dir


def subject_dirs(phantom: Path) -> list[Path]:
    return [phantom / f"sub-{i:02d}" for i in range(NB_SUBJECTS)]


def bundle_names(phantom: Path) -> list[str]:
    return json.loads((phantom / "phantom.json").read_text())["bundles"]


def load_bundle(sub: Path, name: str):
    trk = sub / "bundles" / f"{name}.trk"
    sft = load_tractogram(str(trk), str(sub / "dwi.nii.gz"), bbox_valid_check=True)
    sft.to_vox()
    sft.to_center()
    return sft


def test_volumes_load_with_shared_grid(phantom):
    for sub in subject_dirs(phantom):
        imgs = {name: nib.load(sub / name) for name in VOLUMES}
        for name, dtype in VOLUMES.items():
            assert imgs[name].get_data_dtype() == dtype, name
            assert imgs[name].shape[:3] == SHAPE, name
            np.testing.assert_array_equal(imgs[name].affine, imgs["dwi.nii.gz"].affine)
        affine = imgs["dwi.nii.gz"].affine
        assert nib.aff2axcodes(affine) == ("R", "A", "S")
        np.testing.assert_allclose(nib.affines.voxel_sizes(affine), 2.0)
        assert np.abs(affine[:3, 3]).min() > 0
        assert imgs["dwi.nii.gz"].shape == (*SHAPE, 65)
        assert imgs["sh.nii.gz"].shape == (*SHAPE, 28)
        assert imgs["fodf.nii.gz"].shape == (*SHAPE, 45)
        fodf = imgs["fodf.nii.gz"].get_fdata()
        wm = imgs["wm_mask.nii.gz"].get_fdata() > 0
        assert (fodf[~wm] == 0).all() and (fodf[wm][:, 0] > 0).all()  # the CSD fit lies in the WM mask
        assert np.isfinite(imgs["sh.nii.gz"].get_fdata()).all()
        assert set(np.unique(imgs["wm_mask.nii.gz"].get_fdata())) == {0, 1}


def test_gradients_read_back_with_dipy(phantom):
    reference = phantom_gtab()
    for sub in subject_dirs(phantom):
        bvals, bvecs = read_bvals_bvecs(str(sub / "dwi.bval"), str(sub / "dwi.bvec"))
        gtab = gradient_table(bvals, bvecs=bvecs)
        assert gtab.b0s_mask.sum() == 1 and len(bvals) == 65
        np.testing.assert_allclose(gtab.bvals, reference.bvals, atol=1e-4)
        np.testing.assert_allclose(gtab.bvecs, reference.bvecs, atol=1e-8)


def test_streamlines_inside_volume_and_wm_mask(phantom):
    for sub in subject_dirs(phantom):
        wm = nib.load(sub / "wm_mask.nii.gz").get_fdata() > 0
        for name in bundle_names(phantom):
            sft = load_bundle(sub, name)
            assert len(sft.streamlines) >= 60
            points = sft.streamlines.get_data()
            voxels = np.rint(points).astype(int)
            assert (voxels >= 0).all() and (voxels < SHAPE).all()
            assert wm[tuple(voxels.T)].all()
            for streamline in sft.streamlines:
                spacing_mm = 2.0 * np.linalg.norm(np.diff(streamline, axis=0), axis=1)
                assert 0.4 < spacing_mm.min() and spacing_mm.max() < 1.1


def test_endpoints_fall_in_their_labels(phantom):
    for sub in subject_dirs(phantom):
        labels = nib.load(sub / "endpoints_labels.nii.gz").get_fdata().astype(int)
        seeding = nib.load(sub / "seeding_mask.nii.gz").get_fdata()
        names = bundle_names(phantom)
        assert set(np.unique(labels)) == set(range(2 * len(names) + 1))
        np.testing.assert_array_equal(seeding > 0, labels > 0)
        for b, name in enumerate(names):
            streamlines = load_bundle(sub, name).streamlines
            heads = np.rint([s[0] for s in streamlines]).astype(int)
            tails = np.rint([s[-1] for s in streamlines]).astype(int)
            assert (labels[tuple(heads.T)] == 2 * b + 1).all()
            assert (labels[tuple(tails.T)] == 2 * b + 2).all()


def test_two_bundles_cross_at_large_angle(phantom):
    """Some voxel is traversed by two bundles whose local directions differ by > 45 degrees."""
    sub = subject_dirs(phantom)[0]
    mean_dirs = []
    for name in bundle_names(phantom):
        dirs = np.zeros((*SHAPE, 3))
        for streamline in load_bundle(sub, name).streamlines:
            segments = np.diff(streamline, axis=0)
            midpoints = np.rint(streamline[:-1] + segments / 2).astype(int)
            unit_segments = segments / np.linalg.norm(segments, axis=1, keepdims=True)
            np.add.at(dirs, tuple(midpoints.T), unit_segments)
        mean_dirs.append(dirs)
    norms = [np.linalg.norm(d, axis=-1) for d in mean_dirs]
    shared = (norms[0] > 0) & (norms[1] > 0)
    dots = (mean_dirs[0][shared] * mean_dirs[1][shared]).sum(-1)
    cosines = np.abs(dots) / (norms[0][shared] * norms[1][shared])
    assert np.degrees(np.arccos(cosines.min())) > 45


def test_vectorized_signal_matches_dipy_multi_tensor():
    rng = np.random.default_rng(0)
    gtab = phantom_gtab()
    bundles, _ = make_bundles(rng)
    directions, present = fiber_orientations(bundles)
    lambda_par = np.array([b.lambda_par for b in bundles])
    lambda_perp = np.array([b.lambda_perp for b in bundles])
    signal = multi_tensor_signal(gtab, directions, present, lambda_par, lambda_perp)
    nb_fibers = present.sum(axis=0)
    voxels = np.concatenate(
        [rng.permutation(np.argwhere(nb_fibers == n))[:4] for n in (0, 1, 2)]
    )
    assert len(voxels) == 12
    for voxel in map(tuple, voxels):
        fibers = present[(slice(None), *voxel)]
        if fibers.any():
            sticks = directions[(slice(None), *voxel)][fibers]
            mevals = np.stack([lambda_par[fibers], lambda_perp[fibers], lambda_perp[fibers]], axis=1)
        else:
            sticks = np.array([[0.0, 0.0, 1.0]])
            mevals = np.full((1, 3), BACKGROUND_DIFFUSIVITY)
        expected, _ = multi_tensor(
            gtab, mevals, S0=S0, angles=sticks, fractions=[100 / len(sticks)] * len(sticks), snr=None
        )
        np.testing.assert_allclose(signal[voxel], expected, rtol=1e-10)


def test_subjects_differ_in_geometry_noise_and_diffusivities(phantom):
    """Each subject draws its own pose, SNR and bundle shapes: the same bundle sits elsewhere."""
    draws = json.loads((phantom / "phantom.json").read_text())["subjects"]
    snrs = [draws[sub.name]["snr"] for sub in subject_dirs(phantom)]
    assert all(SNR_RANGE[0] <= snr <= SNR_RANGE[1] for snr in snrs) and len(set(snrs)) == NB_SUBJECTS
    assert len({tuple(draws[sub.name]["rotation_deg"]) for sub in subject_dirs(phantom)}) == NB_SUBJECTS
    for name in bundle_names(phantom):
        maps = []
        for sub in subject_dirs(phantom):
            volume = np.zeros(SHAPE, dtype=bool)
            volume[tuple(np.rint(load_bundle(sub, name).streamlines.get_data()).astype(int).T)] = True
            maps.append(volume)
        for a in range(NB_SUBJECTS):
            for b in range(a + 1, NB_SUBJECTS):
                dice = 2 * (maps[a] & maps[b]).sum() / (maps[a].sum() + maps[b].sum())
                assert dice < 0.95, (name, a, b)


def test_hard_configurations_are_there():
    """Nine bundles tagged by configuration; a crossing near 90 and one near 45 degrees; the kissing
    and bottleneck pairs share voxels along nearly parallel directions."""
    assert set(CONFIGURATIONS.values()) >= {"crossing 90", "crossing 45", "kissing", "fanning", "U bend",
                                            "bottleneck"}
    bundles, _ = make_bundles(np.random.default_rng(3))
    names = [b.name for b in bundles]
    directions, present = fiber_orientations(bundles)

    def shared_angles(first: str, second: str) -> np.ndarray:
        a, b = names.index(first), names.index(second)
        both = present[a] & present[b]
        cosines = np.abs((directions[a][both] * directions[b][both]).sum(-1))
        return np.degrees(np.arccos(np.clip(cosines, 0, 1)))

    assert 75 < np.median(shared_angles("cross_lr", "cross_ap")) < 105
    assert 30 < np.median(shared_angles("cross_lr", "cross_45")) < 60
    for pair in (("kiss_a", "kiss_b"), ("bottleneck_a", "bottleneck_b")):
        angles = shared_angles(*pair)
        assert len(angles) >= 3 and np.median(angles) < 25, pair
    fan = bundles[names.index("fanning")]
    assert np.ptp(fan.tails, axis=(0, 1))[1] > 2 * np.ptp(fan.heads, axis=(0, 1))[1]  # wider at its end


def test_sh_reproduces_normalized_signal(phantom):
    sub = subject_dirs(phantom)[0]
    dwi = nib.load(sub / "dwi.nii.gz").get_fdata()
    sh = nib.load(sub / "sh.nii.gz").get_fdata()
    wm = nib.load(sub / "wm_mask.nii.gz").get_fdata() > 0
    gtab = phantom_gtab()
    sphere = HemiSphere(xyz=gtab.bvecs[~gtab.b0s_mask])
    fitted = sh_to_sf(sh[wm], sphere, sh_order_max=6, basis_type="descoteaux07", legacy=False)
    measured = dwi[wm][:, ~gtab.b0s_mask] / dwi[wm][:, gtab.b0s_mask]
    assert np.abs(fitted - measured).mean() < 0.05


def test_same_seed_identical_other_seed_different(phantom, tmp_path):
    (tmp_path / "same").mkdir()  # an existing empty folder is accepted
    make_phantom(tmp_path / "same", nb_subjects=NB_SUBJECTS, seed=SEED)
    make_phantom(tmp_path / "other", nb_subjects=NB_SUBJECTS, seed=SEED + 1)
    for i in range(NB_SUBJECTS):
        reference = nib.load(phantom / f"sub-{i:02d}" / "dwi.nii.gz").get_fdata(dtype=np.float32)
        same = nib.load(tmp_path / "same" / f"sub-{i:02d}" / "dwi.nii.gz").get_fdata(dtype=np.float32)
        other = nib.load(tmp_path / "other" / f"sub-{i:02d}" / "dwi.nii.gz").get_fdata(dtype=np.float32)
        assert reference.tobytes() == same.tobytes()
        assert not np.array_equal(reference, other)
    subject_volumes = [nib.load(sub / "dwi.nii.gz").get_fdata() for sub in subject_dirs(phantom)]
    assert not np.array_equal(subject_volumes[0], subject_volumes[1])
    # no temporary folder left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "same"]


def test_subject_splits_and_metadata(phantom):
    def read(split: str) -> list[str]:
        return (phantom / f"{split}_subjects.txt").read_text().split()

    assert read("training") == ["sub-00"]
    assert read("validation") == ["sub-01"]
    assert read("testing") == ["sub-02"]
    params = json.loads((phantom / "phantom.json").read_text())
    assert params["version"] == PHANTOM_VERSION and params["seed"] == SEED and params["nb_subjects"] == NB_SUBJECTS
    assert params["shape"] == list(SHAPE) and params["voxel_size_mm"] == 2.0
    assert len(params["bundles"]) == 9 and set(params["configurations"]) == set(params["bundles"])


def test_groups_config_matches_files(phantom):
    config = yaml.safe_load((phantom / "groups_config.yaml").read_text())
    assert config == {
        "input": {"type": "volume", "files": ["sh.nii.gz"], "standardization": "none", "sh_basis": "descoteaux07",
                  "sh_order": 6},
        "fodf": {"type": "volume", "files": ["fodf.nii.gz"], "standardization": "none",
                 "sh_basis": "descoteaux07_legacy", "sh_order": 8},
        "wm_mask": {"type": "volume", "files": ["wm_mask.nii.gz"]},
        "streamlines": {"type": "streamlines", "files": ["bundles/*.trk"], "connectivity_matrix": "connectivity.npy",
                        "connectivity_labels": "endpoints_labels.nii.gz"},
    }
    for sub in subject_dirs(phantom):
        trk_names = sorted(p.stem for p in sub.glob(config["streamlines"]["files"][0]))
        assert trk_names == sorted(bundle_names(phantom))


def test_connectivity_counts_the_bundles_between_their_endpoint_regions(phantom):
    for sub in subject_dirs(phantom):
        labels_img = nib.load(sub / "endpoints_labels.nii.gz")
        labels = np.asarray(labels_img.dataobj)
        expected = np.zeros((labels.max(),) * 2, dtype=np.int64)
        for trk in sorted((sub / "bundles").glob("*.trk")):
            sft = load_tractogram(str(trk), labels_img)
            sft.to_vox()
            sft.to_center()
            for streamline in sft.streamlines:  # a test: one streamline at a time, independently of dwiml
                a, b = (int(labels[tuple(np.rint(p).astype(int))]) for p in (streamline[0], streamline[-1]))
                if a and b:
                    expected[a - 1, b - 1] += 1
        expected = expected + expected.T - np.diag(np.diag(expected))
        np.testing.assert_array_equal(np.load(sub / "connectivity.npy"), expected)


def test_refuses_non_empty_out_dir(phantom):
    with pytest.raises(FileExistsError, match=str(phantom)):
        make_phantom(phantom, nb_subjects=NB_SUBJECTS)


def test_requires_three_subjects(tmp_path):
    with pytest.raises(ValueError, match="nb_subjects"):
        make_phantom(tmp_path / "too_small", nb_subjects=2)
    assert not (tmp_path / "too_small").exists()


def test_builtin_phantom_is_generated_once_and_reused(cache_dir):
    """The session's cache already holds the 3-subject phantom: asking again returns it untouched."""
    (folder,) = cache_dir.glob(f"phantom-v{PHANTOM_VERSION}-n3-s1234")
    hdf5 = folder / "phantom.hdf5"
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    assert phantom_hdf5(cache_dir, nb_subjects=3, seed=1234) == hdf5
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before
    with h5py.File(hdf5, "r") as f:
        assert {"input", "fodf", "wm_mask", "streamlines"} <= set(f["sub-00"])
