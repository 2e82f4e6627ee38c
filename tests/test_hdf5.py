"""HDF5 creation and inspection on tiny real files: options, round trips through dipy, bad input, CLIs."""
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import yaml
from dipy.io.stateful_tractogram import Origin, Space, StatefulTractogram
from dipy.io.streamline import load_tractogram, save_tractogram
from dipy.tracking.streamline import length
from dipy.tracking.streamlinespeed import compress_streamlines, set_number_of_points

from dwiml.data import coords
from dwiml.data.hdf5 import create_hdf5, load_groups_config, open_hdf5
from dwiml.data.hdf5_tools import describe, extract
from dwiml.errors import DwimlError
from helpers import AFFINE, GROUPS, SHAPE, SUBJECTS, random_streamlines

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ("CST_R", "AF_L", "CC")  # written in this order; stored in sorted order
DWI_GROUPS = {
    "input": {"type": "volume", "files": ["dwi.nii.gz", "t1.nii.gz"], "standardization": "independent",
              "std_mask": ["wm_mask.nii.gz"]},
    "brain_mask": {"type": "volume", "files": ["brain_mask.nii.gz"]},
    "bundles": {"type": "streamlines", "files": ["bundles/*.trk"], "dps_keys": ["weight", "color"],
                "dpp_keys": ["fa"], "connectivity_matrix": "connectivity.npy",
                "connectivity_labels": "labels.nii.gz"},
}
DWI_SUBJECTS = (["sub-01", "sub-02"], ["sub-03"], [])


def write_dwi_subject(folder: Path, rng: np.random.Generator) -> None:
    """A subject as a user brings it: DWI with bval/bvec, T1, masks, labels, a matrix, bundles with dps/dpp."""
    (folder / "bundles").mkdir(parents=True)
    brain = np.zeros(SHAPE, bool)
    brain[1:-1, 1:-1, 1:-1] = True
    wm = brain & (rng.random(SHAPE) > 0.5)
    dwi = rng.uniform(100, 1000, SHAPE + (7,)).astype(np.float32) * brain[..., None]
    nib.save(nib.Nifti1Image(dwi, AFFINE), folder / "dwi.nii.gz")
    np.savetxt(folder / "dwi.bval", [[0, 1000, 1000, 1000, 2000, 2000, 2000]], fmt="%d")
    bvecs = rng.normal(size=(3, 7))
    np.savetxt(folder / "dwi.bvec", bvecs / np.linalg.norm(bvecs, axis=0))
    nib.save(nib.Nifti1Image(rng.normal(50, 10, SHAPE).astype(np.float32) * brain, AFFINE), folder / "t1.nii.gz")
    for name, mask in (("brain_mask", brain), ("wm_mask", wm)):
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), AFFINE), folder / f"{name}.nii.gz")
    labels = (np.indices(SHAPE)[0] * 4 // SHAPE[0] + 1).astype(np.int16)  # four slabs, labels 1..4
    nib.save(nib.Nifti1Image(labels, AFFINE), folder / "labels.nii.gz")
    np.save(folder / "connectivity.npy", rng.random((4, 4)).astype(np.float32))
    ref = nib.load(folder / "dwi.nii.gz")
    for bundle in BUNDLES:
        lines = random_streamlines(rng, int(rng.integers(4, 9)))
        dps = {"weight": rng.random((len(lines), 1)).astype(np.float32),
               "color": rng.random((len(lines), 3)).astype(np.float32)}
        dpp = {"fa": [rng.random((len(s), 1)).astype(np.float32) for s in lines]}
        sft = StatefulTractogram(lines, ref, Space.VOX, origin=Origin.NIFTI, data_per_streamline=dps,
                                 data_per_point=dpp)
        save_tractogram(sft, str(folder / "bundles" / f"{bundle}.trk"))


@pytest.fixture(scope="module")
def dwi_subjects(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dwi_subjects")
    rng = np.random.default_rng(3)
    for name in sum(DWI_SUBJECTS, []):
        write_dwi_subject(root / name, rng)
    return root


@pytest.fixture(scope="module")
def dwi_hdf5(dwi_subjects, tmp_path_factory) -> Path:
    return create_hdf5(dwi_subjects, DWI_GROUPS, tmp_path_factory.mktemp("dwi_hdf5") / "dwi.hdf5", *DWI_SUBJECTS)


def original_bundles(subject_dir: Path) -> list[StatefulTractogram]:
    """The subject's bundles loaded by dipy, in sorted file order."""
    ref = str(subject_dir / "dwi.nii.gz")
    return [load_tractogram(str(subject_dir / "bundles" / f"{b}.trk"), ref) for b in sorted(BUNDLES)]


def stored_streamlines(group: h5py.Group) -> list[np.ndarray]:
    points = group["points"][:]
    return [points[o:o + n] for o, n in zip(group["offsets"][:], group["lengths"][:])]


def assert_same_streamlines(a, b, atol=1e-4):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=atol)


def assert_same_hdf5(path_a: Path, path_b: Path) -> None:
    def items(path):
        found = {}
        with h5py.File(path) as h5:
            h5.visititems(lambda k, o: found.__setitem__(k, o[()] if isinstance(o, h5py.Dataset) else dict(o.attrs)))
            found["/"] = dict(h5.attrs)
        return found

    a, b = items(path_a), items(path_b)
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert a[key].keys() == b[key].keys()
            for k in a[key]:
                np.testing.assert_array_equal(a[key][k], b[key][k])
        else:
            np.testing.assert_array_equal(a[key], b[key])


# ---- creation -----------------------------------------------------------------------------------

def test_streamlines_round_trip_in_dwiml_space(subjects_dir, hdf5_path):
    ref = str(subjects_dir / "s2" / "input.nii.gz")
    sfts = [coords.to_dwiml_space(load_tractogram(str(subjects_dir / "s2" / "bundles" / f), ref))
            for f in ("a.trk", "b.trk")]
    expected = [s for sft in sfts for s in sft.streamlines]
    with h5py.File(hdf5_path) as h5:
        group = h5["s2"]["streamlines"]
        assert_same_streamlines(stored_streamlines(group), expected, atol=1e-5)
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
        assert json.loads(h5.attrs["creation"]) == {"compression": None, "skipped_subjects": {},
                                                    "enforce_files_presence": True, "removed_invalid": {},
                                                        "empty_files": {}, "non_finite_replaced": {}}


def test_dps_dpp_connectivity_and_sorted_globs(dwi_subjects, dwi_hdf5):
    sfts = original_bundles(dwi_subjects / "sub-02")
    with open_hdf5(dwi_hdf5) as h5:
        group = h5["sub-02"]["bundles"]
        assert json.loads(group.attrs["files"]) == [f"bundles/{b}.trk" for b in sorted(BUNDLES)]
        expected = [s for sft in sfts for s in coords.to_dwiml_space(sft).streamlines]
        assert_same_streamlines(stored_streamlines(group), expected)
        for key in ("weight", "color"):
            np.testing.assert_array_equal(group["data_per_streamline"][key][:],
                                          np.concatenate([sft.data_per_streamline[key] for sft in sfts]))
        np.testing.assert_array_equal(group["data_per_point/fa"][:],
                                      np.concatenate([sft.data_per_point["fa"].get_data() for sft in sfts]))
        np.testing.assert_array_equal(group["connectivity_matrix"][:],
                                      np.load(dwi_subjects / "sub-02" / "connectivity.npy"))
        np.testing.assert_array_equal(group["connectivity_labels"][:],
                                      nib.load(dwi_subjects / "sub-02" / "labels.nii.gz").get_fdata())
        assert group.attrs["connectivity_type"] == "labels" and json.loads(group.attrs["resampling"]) == {}


def test_connectivity_from_blocs(dwi_subjects, tmp_path):
    groups = {"input": DWI_GROUPS["input"], "bundles": {"type": "streamlines", "files": ["bundles/*.trk"],
                                                       "connectivity_matrix": "connectivity.npy",
                                                       "connectivity_nb_blocs": [1, 2, 2]}}
    with h5py.File(create_hdf5(dwi_subjects, groups, tmp_path / "c.hdf5", ["sub-01"], [], [])) as h5:
        group = h5["sub-01"]["bundles"]
        assert group.attrs["connectivity_type"] == "blocs" and list(group.attrs["connectivity_nb_blocs"]) == [1, 2, 2]
        assert "connectivity_labels" not in group and group["connectivity_matrix"].shape == (4, 4)
    groups["bundles"]["connectivity_nb_blocs"] = 3
    with pytest.raises(DwimlError, match=r"sub-01.*bundles.*connectivity.npy has 4 rows.*27 blocs"):
        create_hdf5(dwi_subjects, groups, tmp_path / "d.hdf5", ["sub-01"], [], [])


@pytest.mark.parametrize("mode", ["all", "independent", "per_file"])
@pytest.mark.parametrize("std_mask", [["wm_mask.nii.gz"], None])
def test_standardization_inside_mask(dwi_subjects, tmp_path, mode, std_mask):
    groups = {"input": {"type": "volume", "files": ["dwi.nii.gz", "t1.nii.gz"], "standardization": mode,
                        **({"std_mask": std_mask} if std_mask else {})}}
    out = create_hdf5(dwi_subjects, groups, tmp_path / "std.hdf5", ["sub-01"], [], [])
    folder = dwi_subjects / "sub-01"
    raw = np.concatenate([nib.load(folder / "dwi.nii.gz").get_fdata(),
                          nib.load(folder / "t1.nii.gz").get_fdata()[..., None]], axis=-1)
    background = ~np.any(raw != 0, axis=-1)
    mask = nib.load(folder / "wm_mask.nii.gz").get_fdata() > 0 if std_mask else ~background
    with h5py.File(out) as h5:
        stored = h5["sub-01"]["input"]["data"][:]
    inside = stored[mask].astype(np.float64)
    channel_sets = {"all": [slice(None)], "per_file": [slice(0, 7), slice(7, 8)]}.get(mode, [])
    for channels in channel_sets:
        assert abs(inside[:, channels].mean()) < 1e-4 and abs(inside[:, channels].std() - 1) < 1e-4
    if mode == "independent":
        np.testing.assert_allclose(inside.mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose(inside.std(axis=0), 1, atol=1e-4)
    # Every non-background voxel (also outside the std_mask) gets the same map; background stays 0.
    ref = raw[mask]
    mean, std = {"all": (ref.mean(), ref.std()), "independent": (ref.mean(0), ref.std(0)),
                 "per_file": (np.r_[[ref[:, :7].mean()] * 7, ref[:, 7].mean()],
                              np.r_[[ref[:, :7].std()] * 7, ref[:, 7].std()])}[mode]
    expected = np.where(background[..., None], 0.0, (raw - mean) / std)
    np.testing.assert_allclose(stored, expected, rtol=1e-4, atol=1e-5)
    assert not (stored[~background] == 0).all(axis=-1).any()


@pytest.mark.parametrize("compression", [None, "gzip", "lzf"])
def test_volumes_chunked_for_lazy_reads(tmp_path, compression):
    data = np.random.default_rng(1).normal(size=(40, 20, 10, 3)).astype(np.float32)
    (tmp_path / "big" / "s").mkdir(parents=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "big" / "s" / "v.nii.gz")
    groups = {"v": {"type": "volume", "files": ["v.nii.gz"]}}
    out = create_hdf5(tmp_path / "big", groups, tmp_path / "big.hdf5", ["s"], [], [], compression=compression)
    with h5py.File(out) as h5:
        stored = h5["s"]["v"]["data"]
        assert stored.chunks == (16, 16, 10, 3) and stored.compression == compression
        np.testing.assert_array_equal(stored[:], data)


@pytest.mark.parametrize("key, value", [("nb_points", 6), ("step_size_mm", 1.3), ("compress_mm", 0.2)])
def test_resampling_in_mm(dwi_subjects, tmp_path, key, value):
    groups = {"input": DWI_GROUPS["input"],
              "bundles": {"type": "streamlines", "files": ["bundles/*.trk"], "dps_keys": ["weight"], key: value}}
    out = create_hdf5(dwi_subjects, groups, tmp_path / "r.hdf5", ["sub-01"], [], [])
    sfts = original_bundles(dwi_subjects / "sub-01")
    lines_mm = [s for sft in sfts for s in (sft.to_rasmm() or sft).streamlines]
    if key == "nb_points":
        expected = [set_number_of_points(s, value) for s in lines_mm]
    elif key == "compress_mm":
        expected = compress_streamlines(lines_mm, tol_error=value)
    else:
        expected = [set_number_of_points(s, max(2, round(length(s) / value) + 1)) for s in lines_mm]
    with h5py.File(out) as h5:
        group = h5["sub-01"]["bundles"]
        assert json.loads(group.attrs["resampling"]) == {key: value}
        stored = [coords.vox_to_mm(s, AFFINE) for s in stored_streamlines(group)]
        assert_same_streamlines(stored, expected, atol=1e-3)
        np.testing.assert_allclose(group["lengths_mm"][:], [length(s) for s in expected], rtol=1e-4)
        np.testing.assert_array_equal(group["data_per_streamline/weight"][:],
                                      np.concatenate([sft.data_per_streamline["weight"] for sft in sfts]))
    if key == "compress_mm":
        assert sum(map(len, stored)) < sum(map(len, lines_mm))


def test_missing_file_stops_or_skips_the_subject(dwi_subjects, tmp_path, caplog):
    for name in ("sub-01", "sub-02"):
        shutil.copytree(dwi_subjects / name, tmp_path / "in" / name)
    (tmp_path / "in" / "sub-02" / "t1.nii.gz").unlink()
    out = tmp_path / "out" / "x.hdf5"
    with pytest.raises(DwimlError, match=r"subject 'sub-02', group 'input': no file .*t1.nii.gz"):
        create_hdf5(tmp_path / "in", DWI_GROUPS, out, ["sub-01"], ["sub-02"], [])
    assert list(out.parent.iterdir()) == []
    with caplog.at_level(logging.WARNING, logger="dwiml.data.hdf5"):
        create_hdf5(tmp_path / "in", DWI_GROUPS, out, ["sub-01"], ["sub-02"], [], enforce_files_presence=False)
    assert "skipping subject 'sub-02'" in caplog.text and "t1.nii.gz" in caplog.text
    with open_hdf5(out) as h5:
        assert json.loads(h5.attrs["validation_subjects"]) == [] and list(h5) == ["sub-01"]
        assert list(json.loads(h5.attrs["creation"])["skipped_subjects"]) == ["sub-02"]
    (tmp_path / "in" / "sub-01" / "t1.nii.gz").unlink()
    with pytest.raises(DwimlError, match="every subject was skipped"):
        create_hdf5(tmp_path / "in", DWI_GROUPS, tmp_path / "y.hdf5", ["sub-01"], ["sub-02"], [],
                    enforce_files_presence=False)
    assert not (tmp_path / "y.hdf5").exists()


def test_save_intermediate(dwi_subjects, dwi_hdf5, tmp_path):
    create_hdf5(dwi_subjects, DWI_GROUPS, tmp_path / "x.hdf5", ["sub-01"], [], [],
                save_intermediate=tmp_path / "inter")
    folder = tmp_path / "inter" / "sub-01"
    assert sorted(p.name for p in folder.iterdir()) == ["brain_mask.nii.gz", "bundles.trk", "input.nii.gz"]
    with h5py.File(dwi_hdf5) as h5:
        volume = nib.load(folder / "input.nii.gz")
        np.testing.assert_array_equal(volume.get_fdata(dtype=np.float32), h5["sub-01"]["input"]["data"][:])
        np.testing.assert_allclose(volume.affine, AFFINE)
        sft = coords.to_dwiml_space(load_tractogram(str(folder / "bundles.trk"), "same"))
        assert_same_streamlines(sft.streamlines, stored_streamlines(h5["sub-01"]["bundles"]))
        np.testing.assert_array_equal(sft.data_per_streamline["color"],
                                      h5["sub-01"]["bundles/data_per_streamline/color"])


# ---- bad input: one clear error naming the thing, nothing written ---------------------------------

def _fails(subjects_dir, groups, match, out_dir, training=("sub-01",), validation=()):
    with pytest.raises(DwimlError, match=match):
        create_hdf5(subjects_dir, groups, out_dir / "out.hdf5", list(training), list(validation), [])
    assert list(out_dir.iterdir()) == []


def test_grid_mismatches_are_named(dwi_subjects, tmp_path):
    shutil.copytree(dwi_subjects / "sub-01", tmp_path / "in" / "sub-01")
    t1 = nib.load(dwi_subjects / "sub-01" / "t1.nii.gz").get_fdata()
    shifted = AFFINE.copy()
    shifted[0, 3] += 1.0
    nib.save(nib.Nifti1Image(t1, shifted), tmp_path / "in" / "sub-01" / "shifted.nii.gz")
    nib.save(nib.Nifti1Image(t1, AFFINE @ np.diag([1, 1, 0.5, 1])), tmp_path / "in" / "sub-01" / "thin.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    inside = {"input": {"type": "volume", "files": ["dwi.nii.gz", "shifted.nii.gz"]}}
    _fails(tmp_path / "in", inside, r"subject 'sub-01', group 'input': .*shifted.nii.gz differs from .*dwi.nii.gz", out)
    across = {"input": {"type": "volume", "files": ["dwi.nii.gz"]}, "t1": {"type": "volume", "files": ["thin.nii.gz"]}}
    _fails(tmp_path / "in", across, r"group 't1' vs group 'input': .*thin.nii.gz has voxel sizes", out)


@pytest.mark.parametrize("suffix", [".trk", ".trx"])
def test_tractogram_not_matching_reference(subjects_dir, tmp_path, suffix):
    other = tmp_path / "subjects"
    shutil.copytree(subjects_dir / "s1", other / "s1")
    shifted = AFFINE + np.diag([0, 0, 0.5, 0])
    ref = nib.Nifti1Image(np.zeros(SHAPE, np.float32), shifted)
    sft = StatefulTractogram(random_streamlines(np.random.default_rng(5), 3), ref, Space.VOX, origin=Origin.NIFTI)
    save_tractogram(sft, str(other / "s1" / "bundles" / f"a{suffix}"))
    groups = {**GROUPS, "streamlines": {"type": "streamlines", "files": [f"bundles/a{suffix}"]}}
    with pytest.raises(DwimlError, match=f"subject 's1', group 'streamlines': the header of .*a{suffix} does not"):
        create_hdf5(other, groups, tmp_path / "out.hdf5", ["s1"], [], [])
    assert not (tmp_path / "out.hdf5").exists()


def test_missing_dps_key_is_named(dwi_subjects, tmp_path):
    groups = {**DWI_GROUPS, "bundles": {"type": "streamlines", "files": ["bundles/*.trk"], "dps_keys": ["nope"]}}
    _fails(dwi_subjects, groups, r"sub-01', group 'bundles': .*AF_L.trk has no dps key\(s\) \['nope'\]", tmp_path)


def test_subject_list_errors(dwi_subjects, tmp_path):
    _fails(dwi_subjects, DWI_GROUPS, r"'sub-01' is listed twice \(training and validation\)", tmp_path,
           validation=("sub-01",))
    _fails(dwi_subjects, DWI_GROUPS, r"'sub-01' is listed twice \(training and training\)", tmp_path,
           training=("sub-01", "sub-01"))
    _fails(dwi_subjects, DWI_GROUPS, r"subject 'ghost' \(training\) has no folder", tmp_path, training=("ghost",))


@pytest.mark.parametrize("group, match", [
    ({"type": "volume", "files": ["a.nii"], "standardisation": "all"}, r"group 'g'.*standardisation"),
    ({"type": "surface", "files": ["a"]}, r"group 'g': 'type'"),
    ({"type": "streamlines", "files": ["a.trk"], "nb_points": 5, "step_size_mm": 1}, "at most one of"),
    ({"type": "streamlines", "files": ["a.trk"], "step_size_mm": -1}, "step_size_mm must be a positive"),
    ({"type": "streamlines", "files": ["a.trk"], "compress_mm": 0.1, "dpp_keys": ["fa"]}, "dpp_keys cannot"),
    ({"type": "streamlines", "files": ["a.trk"], "connectivity_matrix": "m.npy"}, "exactly one of"),
    ({"type": "streamlines", "files": ["a.trk"], "connectivity_nb_blocs": 4}, "exactly one of"),
    ({"type": "volume", "files": ["a.nii"], "sh_basis": "mrtrix"}, r"group 'g': sh_basis must be one of "
                                                                    r"descoteaux07_legacy, descoteaux07, tournier07"),
    ({"type": "volume", "files": ["a.nii"], "sh_order": -2}, r"group 'g': sh_order must be an integer >= 0"),
    ({"type": "volume", "files": ["a.nii"], "channel_names": "fa"}, r"group 'g': channel_names must be a non-empty"),
    ({"type": "volume", "files": ["a.nii"], "sh_order": 4, "channel_names": ["a"]}, "or channel_names, not both"),
    ({"type": "streamlines", "files": ["a.trk"], "sh_basis": "tournier07"}, r"unknown key\(s\) \['sh_basis'\]"),
])
def test_groups_config_errors(tmp_path, group, match):
    path = tmp_path / "groups.yaml"
    path.write_text(yaml.safe_dump({"v": {"type": "volume", "files": ["v.nii"]}, "g": group}))
    with pytest.raises(DwimlError, match=match):
        load_groups_config(path)


def test_not_a_dwiml_file(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = np.zeros(3)
    with pytest.raises(DwimlError, match="not a dwiml HDF5"):
        open_hdf5(tmp_path / "other.h5")
    (tmp_path / "text.hdf5").write_text("hello")
    with pytest.raises(DwimlError, match="not an HDF5 file"):
        open_hdf5(tmp_path / "text.hdf5")


# ---- inspection -----------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".trk", ".trx", ".tck"])
def test_extract_streamlines_loads_back_equal_in_dipy(dwi_subjects, dwi_hdf5, tmp_path, suffix, caplog):
    with caplog.at_level(logging.WARNING, logger="dwiml.data.hdf5_subject"):
        out = extract(dwi_hdf5, "sub-03", "bundles", tmp_path / f"b{suffix}")
    assert (".tck files hold no data_per_streamline" in caplog.text) == (suffix == ".tck")
    sft = coords.to_dwiml_space(load_tractogram(str(out), str(dwi_subjects / "sub-03" / "dwi.nii.gz")))
    with h5py.File(dwi_hdf5) as h5:
        group = h5["sub-03"]["bundles"]
        assert_same_streamlines(sft.streamlines, stored_streamlines(group), atol=1e-5)
        if suffix != ".tck":  # .tck has no room for dps/dpp
            for key in ("weight", "color"):
                np.testing.assert_array_equal(sft.data_per_streamline[key], group["data_per_streamline"][key][:])
            np.testing.assert_array_equal(sft.data_per_point["fa"].get_data(), group["data_per_point/fa"][:])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"b{suffix}"]


def test_extract_volume_and_errors(dwi_hdf5, tmp_path):
    img = nib.load(extract(dwi_hdf5, "sub-01", "input", tmp_path / "input.nii.gz"))
    with h5py.File(dwi_hdf5) as h5:
        np.testing.assert_array_equal(img.get_fdata(dtype=np.float32), h5["sub-01"]["input"]["data"][:])
    np.testing.assert_allclose(img.affine, AFFINE)
    with pytest.raises(DwimlError, match="no subject 'sub-09'"):
        extract(dwi_hdf5, "sub-09", "input", tmp_path / "x.nii.gz")
    with pytest.raises(DwimlError, match="subject 'sub-01' has no group 'dwi'"):
        extract(dwi_hdf5, "sub-01", "dwi", tmp_path / "x.nii.gz")
    with pytest.raises(DwimlError, match=r"/b.nii.gz: a streamlines group is written to .trk"):
        extract(dwi_hdf5, "sub-01", "bundles", tmp_path / "b.nii.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["input.nii.gz"]


def test_volume_groups_declare_what_they_hold(dwi_subjects, tmp_path):
    """SH basis and order, or channel names, stored as the group's attributes and shown by describe;
    a declaration that does not fit the volume stops creation, naming the subject and group."""
    names = [f"dwi{i}" for i in range(7)] + ["t1"]
    groups = {**DWI_GROUPS, "input": {**DWI_GROUPS["input"], "channel_names": names},
              "brain_mask": {**DWI_GROUPS["brain_mask"], "sh_basis": "tournier07", "sh_order": 0}}
    path = create_hdf5(dwi_subjects, groups, tmp_path / "declared.hdf5", *DWI_SUBJECTS)
    with h5py.File(path) as h5:
        assert json.loads(h5["sub-01/input"].attrs["channel_names"]) == names
        mask = h5["sub-02/brain_mask"].attrs
        assert (mask["sh_basis"], mask["sh_order"]) == ("tournier07", 0)
        assert "sh_basis" not in h5["sub-01/input"].attrs and "channel_names" not in h5["sub-01/brain_mask"].attrs
    text = describe(path)
    assert "sh_basis=tournier07, sh_order=0" in text and 'channel_names=["dwi0", ' in text
    (tmp_path / "out").mkdir()
    for declaration, match in (({"sh_order": 2}, "sh_order 2 means 6 or 9 coefficients .* the volume has 8 features"),
                               ({"channel_names": ["a", "b"]}, "2 channel_names for a volume of 8 features")):
        _fails(dwi_subjects, {**DWI_GROUPS, "input": {**DWI_GROUPS["input"], **declaration}},
               f"subject 'sub-01', group 'input': {match}", tmp_path / "out")


def test_describe_lists_sets_groups_and_counts(dwi_hdf5):
    text = describe(dwi_hdf5)
    with h5py.File(dwi_hdf5) as h5:
        count = len(h5["sub-02"]["bundles"]["lengths"])
    assert "training (2): sub-01, sub-02" in text and "validation (1): sub-03" in text and "testing (0): " in text
    assert f"group bundles (streamlines, {count} streamlines)" in text
    assert "data: (12, 10, 8, 8) float32, chunks (12, 10, 8, 8)" in text
    assert "data_per_streamline/color: (" in text and "standardization=independent" in text


def run_cli(module: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", f"dwiml.cli.{module}", *map(str, args)], env=env,
                            capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_cli_create_with_processes_then_info_and_extract(dwi_subjects, dwi_hdf5, tmp_path):
    (tmp_path / "groups.yaml").write_text(yaml.safe_dump(DWI_GROUPS, sort_keys=False))
    for subset, names in zip(("train", "valid"), DWI_SUBJECTS):
        (tmp_path / f"{subset}.txt").write_text("\n".join(names) + "\n")
    out = tmp_path / "cli.hdf5"
    result = run_cli("create_hdf5", dwi_subjects, tmp_path / "groups.yaml", out, "--training-subjects",
                     tmp_path / "train.txt", "--validation-subjects", tmp_path / "valid.txt", "--processes", 2)
    assert f"wrote {out}" in result.stdout
    assert_same_hdf5(out, dwi_hdf5)  # two worker processes write the same file as one

    info = run_cli("hdf5_info", out).stdout
    assert "training (2): sub-01, sub-02" in info and "group bundles (streamlines," in info

    run_cli("hdf5_extract", out, "sub-02", "bundles", tmp_path / "b.trk")
    sft = coords.to_dwiml_space(load_tractogram(str(tmp_path / "b.trk"), "same"))
    with h5py.File(out) as h5:
        assert_same_streamlines(sft.streamlines, stored_streamlines(h5["sub-02"]["bundles"]), atol=1e-5)
        np.testing.assert_array_equal(sft.data_per_streamline["weight"],
                                      h5["sub-02/bundles/data_per_streamline/weight"])

    bad = run_cli("create_hdf5", dwi_subjects, tmp_path / "nope.yaml", tmp_path / "z.hdf5", check=False)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("dwiml-create-hdf5: error: ")
