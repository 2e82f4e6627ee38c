"""Bad inputs, table-driven (tests/helpers/bad_inputs.py): the files, groups configs and subject lists of
``dwiml-create-hdf5``, and HDF5 files that are not dwiml's or lack part of its layout, wherever one is read."""
from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import yaml
from dipy.io.stateful_tractogram import Origin, Space, StatefulTractogram
from dipy.io.streamline import load_tractogram, save_tractogram

from helpers import AFFINE, GROUPS, SHAPE, random_streamlines, save_trk, write_dwi_ml_hdf5, write_subject
from helpers.bad_inputs import BadInput, run_bad_input

GARBAGE = b"this is not what the extension says " * 40


def creation(change: Callable[[Path], None] | None = None, groups: dict | str | bytes | None = None,
             names: tuple[str, ...] = ("s1",), lists: dict[str, list[str]] | None = None,
             config: str = "groups.yaml", extra: tuple[str, ...] = ()) -> Callable[[Path], list[str]]:
    """The arguments of ``dwiml-create-hdf5`` on subjects ``names`` (tiny real files, see write_subject) after
    ``change(subjects_dir)``; ``groups``: a groups config (default GROUPS) or the config file's raw content."""
    def args(folder: Path) -> list[str]:
        rng = np.random.default_rng(0)
        for name in names:
            write_subject(folder / "subjects" / name, rng)
        text = groups if isinstance(groups, (str, bytes)) else yaml.safe_dump(copy.deepcopy(groups or GROUPS))
        (folder / config).write_bytes(text if isinstance(text, bytes) else text.encode())
        arguments = ["subjects", config, "out.hdf5", *extra]
        for subset, subjects in (lists or {"training": list(names)}).items():
            (folder / f"{subset}.txt").write_text("".join(f"{s}\n" for s in subjects))
            arguments += [f"--{subset}-subjects", f"{subset}.txt"]
        if change is not None:
            change(folder / "subjects")
        return arguments
    return args


def groups_with(**changes: dict) -> dict:
    """GROUPS with some groups' keys changed (a value None removes the key)."""
    groups = copy.deepcopy(GROUPS)
    for name, keys in changes.items():
        group = groups.setdefault(name, {})
        group.update(keys)
        for key in [k for k, v in keys.items() if v is None]:
            del group[key]
    return groups


def truncate(relative: str, keep: float = 0.5, subject: str = "s1") -> Callable[[Path], None]:
    def change(subjects: Path) -> None:
        path = subjects / subject / relative
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * keep)])
    return change


def garbage(relative: str, content: bytes = GARBAGE, subject: str = "s1") -> Callable[[Path], None]:
    def change(subjects: Path) -> None:
        (subjects / subject / relative).write_bytes(content)
    return change


def rewrite_nifti(relative: str, edit: Callable[[np.ndarray], np.ndarray] = lambda d: d, affine=AFFINE,
                  subject: str = "s1") -> Callable[[Path], None]:
    """Write ``relative`` again with its data edited, or on another affine."""
    def change(subjects: Path) -> None:
        path = subjects / subject / relative
        data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
        nib.save(nib.Nifti1Image(edit(data.copy()), affine), path)
    return change


def set_voxels(value: float, nb: int = 3) -> Callable[[np.ndarray], np.ndarray]:
    """Voxels (i, 0, 0), i < nb, all channels, set to ``value``."""
    def edit(data: np.ndarray) -> np.ndarray:
        data[:nb, 0, 0] = value
        return data
    return edit


def tractograms(suffix: str, change: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    """The subject's bundles converted to ``suffix`` (.tck, .trx), then ``change``."""
    def convert(subjects: Path) -> None:
        for trk in sorted((subjects / "s1" / "bundles").glob("*.trk")):
            sft = load_tractogram(str(trk), "same")
            save_tractogram(sft, str(trk.with_suffix(suffix)))
            trk.unlink()
        if change is not None:
            change(subjects)
    return convert


def tractogram_on(affine: np.ndarray, shape=SHAPE, lines=None, name: str = "bundles/a.trk"):
    """Replace a bundle with one on another grid, or with the given streamlines (voxel coordinates)."""
    def change(subjects: Path) -> None:
        reference = subjects / "s1" / "other.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), affine), reference)
        save_trk(subjects / "s1" / name, random_streamlines(np.random.default_rng(1), 5, shape)
                 if lines is None else lines, reference)
        reference.unlink()
    return change


def connectivity(labels: Callable[[np.ndarray], np.ndarray] = lambda d: d, matrix: bytes | None = None,
                 then: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    """s1 gets a label volume (four slabs, labels 1..4, edited by ``labels``) and a 4x4 matrix (or raw bytes)."""
    def change(subjects: Path) -> None:
        slabs = (np.indices(SHAPE)[0] * 4 // SHAPE[0] + 1).astype(np.float32)
        nib.save(nib.Nifti1Image(labels(slabs), AFFINE), subjects / "s1" / "labels.nii.gz")
        path = subjects / "s1" / "m.npy"
        if matrix is None:
            np.save(path, np.ones((4, 4), np.float32))
        else:
            path.write_bytes(matrix)
        if then is not None:
            then(subjects)
    return change


CONNECTIVITY = groups_with(streamlines={"connectivity_matrix": "m.npy", "connectivity_labels": "labels.nii.gz"})


SHIFTED = AFFINE + np.array([[0, 0, 0, 1.0], [0] * 4, [0] * 4, [0] * 4])
SCALED = np.diag([1.0, 1.0, 1.0, 1.0])
TCK_GROUPS = groups_with(streamlines={"files": ["bundles/*.tck"]})
TRX_GROUPS = groups_with(streamlines={"files": ["bundles/*.trx"]})
UNCOMPRESSED = groups_with(input={"files": ["input.nii.gz", "extra.nii"]})


def uncompressed(change: Callable[[Path], None]) -> Callable[[Path], None]:
    def convert(subjects: Path) -> None:
        image = nib.load(subjects / "s1" / "extra.nii.gz")
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine), subjects / "s1" / "extra.nii")
        change(subjects)
    return convert


CREATION_ROWS = {
    # NIfTI files that cannot be read, or are not 3D/4D
    "truncated reference .nii.gz": (creation(truncate("input.nii.gz")), "input.nii.gz is truncated"),
    "truncated second .nii.gz of a group": (creation(truncate("extra.nii.gz")), "extra.nii.gz is truncated"),
    "garbage .nii.gz": (creation(garbage("input.nii.gz")), "input.nii.gz is not a readable NIfTI"),
    "empty .nii.gz of the mask group": (creation(garbage("mask.nii.gz", b"")), "mask.nii.gz is not a readable"),
    "truncated .nii": (creation(uncompressed(truncate("extra.nii")), UNCOMPRESSED), "extra.nii is truncated"),
    "a .nii holding only part of a header": (creation(uncompressed(truncate("extra.nii", 0.02)), UNCOMPRESSED),
                                             "extra.nii is not a readable NIfTI"),
    "garbage .nii": (creation(uncompressed(garbage("extra.nii")), UNCOMPRESSED), "extra.nii is not a readable"),
    "5D NIfTI in a group": (creation(rewrite_nifti("extra.nii.gz", lambda d: d[..., None, None].repeat(2, 3).repeat(2, 4))),
                            "extra.nii.gz is 5D"),
    "5D NIfTI as the reference": (creation(rewrite_nifti("input.nii.gz", lambda d: d[..., None])),
                                  "input.nii.gz is 5D"),
    "2D NIfTI": (creation(rewrite_nifti("mask.nii.gz", lambda d: d[:, :, 0])), "mask.nii.gz is 2D"),
    "a volume file that is no NIfTI": (creation(groups=groups_with(mask={"files": ["bundles/a.trk"]})),
                                       "a.trk is not a NIfTI file"),
    # NaN and Inf
    "NaN in the input volume": (creation(rewrite_nifti("input.nii.gz", set_voxels(np.nan))),
                                "subject 's1', group 'input': subjects/s1/input.nii.gz has 3 voxel(s) with NaN"),
    "Inf in the second file of a group": (creation(rewrite_nifti("extra.nii.gz", set_voxels(np.inf, 5))),
                                          "extra.nii.gz has 5 voxel(s) with NaN or Inf"),
    "-Inf in the mask group": (creation(rewrite_nifti("mask.nii.gz", set_voxels(-np.inf, 1))),
                               "group 'mask': subjects/s1/mask.nii.gz has 1 voxel(s)"),
    "NaN in a standardization mask": (
        creation(rewrite_nifti("mask.nii.gz", set_voxels(np.nan, 2)),
                 groups_with(input={"standardization": "all", "std_mask": "mask.nii.gz"})),
        "mask.nii.gz has 2 voxel(s) with NaN"),
    "NaN in a later subject": (creation(rewrite_nifti("input.nii.gz", set_voxels(np.nan, 2), subject="s2"),
                                        names=("s1", "s2")), "subjects/s2/input.nii.gz has 2 voxel(s)"),
    "nan_to a string": (creation(groups=groups_with(input={"nan_to": "zero"})), "group 'input': nan_to"),
    "nan_to NaN": (creation(groups=groups_with(input={"nan_to": float("nan")})), "group 'input': nan_to"),
    "nan_to true": (creation(groups=groups_with(mask={"nan_to": True})), "group 'mask': nan_to"),
    "nan_to in a streamline group": (creation(groups=groups_with(streamlines={"nan_to": 0})), "['nan_to']"),
    # feature counts and grids
    "fewer features in a later subject": (
        creation(rewrite_nifti("input.nii.gz", lambda d: d[..., :3], subject="s2"), names=("s1", "s2")),
        "group 'input': subject 's2' has 4 features but subject 's1' has 5"),
    "a 2-channel mask in a later subject": (
        creation(rewrite_nifti("mask.nii.gz", lambda d: np.stack([d, d], -1), subject="s3"), names=("s1", "s2", "s3")),
        "group 'mask': subject 's3' has 2 features but subject 's1' has 1"),
    "concatenated files of different shapes": (creation(rewrite_nifti("extra.nii.gz", lambda d: d[:-1])),
                                               "extra.nii.gz has shape (11, 10, 8)"),
    "concatenated files of different affines": (creation(rewrite_nifti("extra.nii.gz", affine=SHIFTED)),
                                                "the affine of subjects/s1/extra.nii.gz differs"),
    "concatenated files of different voxel sizes": (creation(rewrite_nifti("extra.nii.gz", affine=SCALED)),
                                                    "extra.nii.gz has voxel sizes"),
    "a group on another grid than the reference": (creation(rewrite_nifti("mask.nii.gz", affine=SHIFTED)),
                                                   "vs group 'input': the affine of subjects/s1/mask.nii.gz"),
    # tractograms
    "truncated .trk": (creation(truncate("bundles/a.trk", 0.7)), "a.trk is not a readable tractogram"),
    "garbage .trk": (creation(garbage("bundles/b.trk")), "b.trk is not a readable tractogram"),
    "empty file .trk": (creation(garbage("bundles/a.trk", b"")), "a.trk is not a readable tractogram"),
    "truncated .tck": (creation(tractograms(".tck", truncate("bundles/a.tck", 0.7)), TCK_GROUPS),
                       "a.tck is not a readable tractogram"),
    "garbage .tck": (creation(tractograms(".tck", garbage("bundles/b.tck")), TCK_GROUPS),
                     "b.tck is not a readable tractogram"),
    "truncated .trx": (creation(tractograms(".trx", truncate("bundles/a.trx", 0.7)), TRX_GROUPS),
                       "a.trx is not a readable tractogram"),
    "garbage .trx": (creation(tractograms(".trx", garbage("bundles/b.trx")), TRX_GROUPS),
                     "b.trx is not a readable tractogram"),
    ".trk on another grid": (creation(tractogram_on(SHIFTED)), "the header of subjects/s1/bundles/a.trk does not"),
    ".trk of another shape": (creation(tractogram_on(AFFINE, (12, 10, 9))), "header of subjects/s1/bundles/a.trk"),
    ".trx on another grid": (creation(tractograms(".trx", tractogram_on(SHIFTED, name="bundles/a.trx")), TRX_GROUPS),
                             "the header of subjects/s1/bundles/a.trx does not"),
    "a NaN coordinate in a .trk": (creation(tractogram_on(AFFINE, lines=[np.array([[1, 1, 1], [np.nan, 2, 2]])])),
                                   "a.trk has 1 point(s) with NaN or Inf"),
    "a streamline file that is no tractogram": (
        creation(groups=groups_with(streamlines={"files": ["input.nii.gz"]})), "input.nii.gz is not a tractogram"),
    "a one-point streamline": (creation(tractogram_on(AFFINE, lines=[np.array([[1.0, 1, 1]])])),
                               "1 streamline(s) with fewer than 2 points"),
    "a streamline leaving the volume": (creation(tractogram_on(AFFINE, lines=[np.array([[1.0, 1, 1], [30, 1, 1]])])),
                                        "1 streamline(s) of"),
    "a missing dps key": (creation(groups=groups_with(streamlines={"dps_keys": ["weight"]})), "no dps key(s) ['weight']"),
    "a missing tractogram": (creation(groups=groups_with(streamlines={"files": ["bundles/c.trk"]})),
                             "no file subjects/s1/bundles/c.trk"),
    # connectivity references and standardization masks
    "NaN in connectivity labels": (creation(connectivity(set_voxels(np.nan, 2)), CONNECTIVITY),
                                   "group 'streamlines': subjects/s1/labels.nii.gz has 2 voxel(s) with NaN"),
    "4D connectivity labels": (creation(connectivity(lambda d: np.stack([d, d], -1)), CONNECTIVITY),
                               "connectivity labels subjects/s1/labels.nii.gz must be 3D"),
    "truncated connectivity labels": (creation(connectivity(then=truncate("labels.nii.gz", 0.9)), CONNECTIVITY),
                                      "subjects/s1/labels.nii.gz is"),
    "a label beyond the matrix": (creation(connectivity(lambda d: d + 1), CONNECTIVITY),
                                  "labels.nii.gz has label 5 but the matrix subjects/s1/m.npy has only 4 rows"),
    "a garbage connectivity matrix": (creation(connectivity(matrix=GARBAGE), CONNECTIVITY),
                                      "subjects/s1/m.npy is not a .npy matrix"),
    "a truncated standardization mask": (
        creation(truncate("mask.nii.gz", 0.9), groups_with(input={"standardization": "all",
                                                                  "std_mask": "mask.nii.gz"})),
        "subject 's1', group 'input': subjects/s1/mask.nii.gz is"),
    # groups configs
    "YAML syntax error": (creation(groups="input:\n  type: volume\n  files: [input.nii.gz\nmask: {"),
                          "groups.yaml, line 4: invalid YAML"),
    "JSON syntax error": (creation(groups='{"input": {"type": "volume",\n "files": ["input.nii.gz"],}}',
                                   config="groups.json"), "groups.json, line 2: invalid JSON"),
    "groups config not UTF-8": (creation(groups=b"\xff\xfe: [\x00"), "groups.yaml is not a text file"),
    "groups config a list": (creation(groups="- input\n- mask\n"), "expected a mapping of group names"),
    "empty groups config": (creation(groups=""), "groups.yaml: expected a mapping"),
    "files: [3]": (creation(groups=groups_with(mask={"files": [3]})), "group 'mask': 'files' must be"),
    "files: []": (creation(groups=groups_with(mask={"files": []})), "group 'mask': 'files' must be"),
    "no files key": (creation(groups=groups_with(mask={"files": None})), "group 'mask': 'files' must be"),
    "dps_keys: 3": (creation(groups=groups_with(streamlines={"dps_keys": 3})), "group 'streamlines': 'dps_keys'"),
    "dpp_keys: a mapping": (creation(groups=groups_with(streamlines={"dpp_keys": {"fa": 1}})),
                            "group 'streamlines': 'dpp_keys'"),
    "std_mask: 3": (creation(groups=groups_with(input={"standardization": "all", "std_mask": 3})),
                    "group 'input': 'std_mask' must be"),
    "connectivity_matrix: 3": (creation(groups=groups_with(streamlines={"connectivity_matrix": 3,
                                                                        "connectivity_nb_blocs": 2})),
                               "group 'streamlines': 'connectivity_matrix' must be a file name"),
    "unknown key": (creation(groups=groups_with(mask={"standardisation": "all"})), "unknown key(s) ['standardisation']"),
    "unknown group type": (creation(groups=groups_with(mask={"type": "surface"})), "group 'mask': 'type' must be"),
    "a group that is not a mapping": (creation(groups={**GROUPS, "extra": "extra.nii.gz"}), "group 'extra': 'type'"),
    "a group name with a slash": (creation(groups={**GROUPS, "a/b": GROUPS["mask"]}), "group 'a/b': a group name"),
    "unknown standardization": (creation(groups=groups_with(input={"standardization": "zscore"})),
                                "group 'input': standardization must be"),
    "remove_invalid: yes-string": (creation(groups=groups_with(streamlines={"remove_invalid": "yes"})),
                                   "remove_invalid must be true or false"),
    "no volume group": (creation(groups={"streamlines": GROUPS["streamlines"]}), "needs at least one volume group"),
    # subject lists
    "an unknown subject": (creation(lists={"training": ["s1", "s9"]}), "subject 's9' (training) has no folder"),
    "a subject in two subsets": (creation(names=("s1", "s2"), lists={"training": ["s1", "s2"], "validation": ["s2"]}),
                                 "subject 's2' is listed twice (training and validation)"),
    "a subject twice in one list": (creation(lists={"training": ["s1", "s1"]}), "subject 's1' is listed twice"),
    "a subject name with a slash": (creation(lists={"training": ["s1", "../subjects/s1"]}),
                                    "subject '../subjects/s1'"),
    "three empty subject lists": (creation(lists={"training": []}), "the three subject lists are empty"),
    "a later subject fails with --save-intermediate": (
        creation(rewrite_nifti("input.nii.gz", set_voxels(np.nan, 1), subject="s2"), names=("s1", "s2"),
                 extra=("--save-intermediate", "inter")), "subjects/s2/input.nii.gz has 1 voxel(s)"),
}


def missing_list(folder: Path) -> list[str]:
    return creation()(folder)[:3] + ["--training-subjects", "nothere.txt"]


def binary_list(folder: Path) -> list[str]:
    arguments = creation()(folder)
    (folder / "training.txt").write_bytes(b"\xff\xfe\x00s1")
    return arguments


def missing_config(folder: Path) -> list[str]:
    arguments = creation()(folder)
    return [arguments[0], "nothere.yaml", *arguments[2:]]


ROWS = {name: BadInput("dwiml-create-hdf5", args, culprit) for name, (args, culprit) in CREATION_ROWS.items()}
ROWS.update({
    "a missing subject list": BadInput("dwiml-create-hdf5", missing_list, "subject list nothere.txt"),
    "a subject list not UTF-8": BadInput("dwiml-create-hdf5", binary_list, "subject list training.txt"),
    "a missing groups config": BadInput("dwiml-create-hdf5", missing_config, "groups config nothere.yaml"),
})


# ---- HDF5 files read by every command: not dwiml's, or lacking part of the layout ------------------------------

def hdf5(edit: Callable[[h5py.File], None] | None = None, raw: bytes | None = None):
    """``data.hdf5``: a copy of a valid dwiml HDF5 (the test puts it in the row's folder as ``good.hdf5``) edited
    with h5py, or raw bytes."""
    def write(folder: Path) -> None:
        path = folder / "data.hdf5"
        if raw is not None:
            path.write_bytes(raw if raw else (folder / "good.hdf5").read_bytes()[:4000])
            return
        shutil.copy(folder / "good.hdf5", path)
        if edit is not None:
            with h5py.File(path, "r+") as h5:
                edit(h5)
    return write


def delete(key: str, attribute: str | None = None) -> Callable[[h5py.File], None]:
    def edit(h5: h5py.File) -> None:
        if attribute is None:
            del h5[key]
        else:
            del h5[key].attrs[attribute]
    return edit


def set_attr(key: str, attribute: str, value) -> Callable[[h5py.File], None]:
    def edit(h5: h5py.File) -> None:
        h5[key].attrs[attribute] = value
    return edit


def not_dwiml(h5: h5py.File) -> None:
    del h5.attrs["format"]


def fewer_features(h5: h5py.File) -> None:
    data = h5["s2/input/data"][..., :3]
    del h5["s2/input/data"]
    h5["s2/input/data"] = data
    h5["s2/input"].attrs["nb_features"] = 3


def hdf5_row(command: str, edit=None, raw: bytes | None = None) -> Callable[[Path], list[str]]:
    arguments = {"dwiml-hdf5-info": ["data.hdf5"], "dwiml-hdf5-extract": ["data.hdf5", "s1", "streamlines", "x.trk"],
                 "dwiml-train": ["dataset=hdf5", "dataset.hdf5_path=data.hdf5", "step.input_group=input",
                                 "trainer.max_epochs=1", "hydra.run.dir=run"]}[command]

    def args(folder: Path) -> list[str]:
        hdf5(edit, raw)(folder)
        return arguments
    return args


HDF5_ROWS = {
    "info: a missing HDF5": ("dwiml-hdf5-info", None, None, "HDF5 file nothere.hdf5 does not exist"),
    "info: a text file": ("dwiml-hdf5-info", None, GARBAGE, "data.hdf5 is not an HDF5 file"),
    "info: a truncated HDF5": ("dwiml-hdf5-info", None, b"", "data.hdf5 is not an HDF5 file"),
    "info: an HDF5 that is not dwiml's": ("dwiml-hdf5-info", not_dwiml, None, "data.hdf5 is not a dwiml HDF5"),
    "info: no training_subjects attribute": ("dwiml-hdf5-info", delete("/", "training_subjects"), None,
                                             "data.hdf5: the dwiml HDF5 lacks root attribute(s) ['training_subjects']"),
    "info: subject list not JSON": ("dwiml-hdf5-info", set_attr("/", "testing_subjects", "s5,"), None,
                                    "data.hdf5: root attribute 'testing_subjects' is not a JSON"),
    "info: format_version not a number": ("dwiml-hdf5-info", set_attr("/", "format_version", "one"), None,
                                          "data.hdf5: root attribute 'format_version' is not a number"),
    "info: a newer format version": ("dwiml-hdf5-info", set_attr("/", "format_version", 99), None,
                                     "data.hdf5 has format version 99, newer than this dwiml"),
    "info: a listed subject missing": ("dwiml-hdf5-info", delete("s4"), None,
                                       "data.hdf5: subject 's4' is listed but has no group"),
    "info: a group without type": ("dwiml-hdf5-info", delete("s3/mask", "type"), None,
                                   "subject 's3', group 'mask': type attribute None"),
    "info: subjects with different groups": ("dwiml-hdf5-info", delete("s2/mask"), None,
                                             "data.hdf5: subject 's2' has groups ['input', 'streamlines']"),
    "info: data features differ from nb_features": ("dwiml-hdf5-info", set_attr("s1/input", "nb_features", 7), None,
                                                    "group 'input': data has 5 features, attribute nb_features says 7"),
    "info: features differ across subjects": ("dwiml-hdf5-info", fewer_features, None,
                                              "group 'input' has 3 features in subject 's2' but 5 in subject 's1'"),
    "info: a connectivity reference without its matrix": (
        "dwiml-hdf5-info", set_attr("s1/streamlines", "connectivity_type", "labels"), None,
        "group 'streamlines': missing or malformed attribute(s) or dataset(s) ['connectivity_matrix', "
        "'connectivity_labels']"),
    "extract: no lengths dataset": ("dwiml-hdf5-extract", delete("s1/streamlines/lengths"), None,
                                    "subject 's1', group 'streamlines': missing or malformed attribute(s) or "
                                    "dataset(s) ['lengths']"),
    "extract: no affine": ("dwiml-hdf5-extract", delete("s1/streamlines", "affine"), None, "['affine']"),
    "extract: not dwiml's": ("dwiml-hdf5-extract", not_dwiml, None, "data.hdf5 is not a dwiml HDF5"),
    "train: no groups_config": ("dwiml-train", delete("/", "groups_config"), None,
                                "data.hdf5: the dwiml HDF5 lacks root attribute(s) ['groups_config']"),
    "train: no nb_features": ("dwiml-train", delete("s5/input", "nb_features"), None,
                              "subject 's5', group 'input': missing or malformed attribute(s) or dataset(s) "
                              "['nb_features']"),
    "train: no offsets": ("dwiml-train", delete("s2/streamlines/offsets"), None, "['offsets']"),
    "train: features differ across subjects": ("dwiml-train", fewer_features, None,
                                               "group 'input' has 3 features in subject 's2'"),
}


def hdf5_args(command: str, edit, raw) -> Callable[[Path], list[str]]:
    if edit is None and raw is None:
        return lambda folder: ["nothere.hdf5"]
    return hdf5_row(command, edit, raw)


ROWS.update({name: BadInput(command, hdf5_args(command, edit, raw), culprit)
             for name, (command, edit, raw, culprit) in HDF5_ROWS.items()})


# ---- dwi_ml HDF5 files to convert ------------------------------------------------------------------------------

def dwi_ml(edit: Callable[[h5py.File], None] | None = None) -> Callable[[Path], list[str]]:
    def args(folder: Path) -> list[str]:
        write_dwi_ml_hdf5(folder / "dwi_ml.hdf5", np.random.default_rng(0))
        if edit is not None:
            with h5py.File(folder / "dwi_ml.hdf5", "r+") as h5:
                edit(h5)
        return ["dwi_ml.hdf5", "out.hdf5"]
    return args


def dwi_ml_nan(h5: h5py.File) -> None:
    h5["subB/input/data"][1, 2, 3, 0] = np.nan


def dwi_ml_fewer_features(h5: h5py.File) -> None:
    data = h5["subB/input/data"][..., :3]
    del h5["subB/input/data"]
    h5["subB/input/data"] = data


def text_to_convert(folder: Path) -> list[str]:
    hdf5(raw=GARBAGE)(folder)
    return ["data.hdf5", "out.hdf5"]


ROWS.update({name: BadInput("dwiml-convert-dwiml-hdf5", args, culprit) for name, (args, culprit) in {
    "convert: a missing file": (lambda folder: ["nothere.hdf5", "out.hdf5"], "HDF5 file nothere.hdf5 does not"),
    "convert: a text file": (text_to_convert, "data.hdf5 is not an HDF5 file"),
    "convert: a dwiml file": (lambda folder: ["good.hdf5", "out.hdf5"], "good.hdf5 is already a dwiml HDF5"),
    "convert: no training_subjs": (dwi_ml(delete("/", "training_subjs")), "no root attribute 'training_subjs'"),
    "convert: groups_config no dict": (dwi_ml(set_attr("/", "groups_config", "[1, 2")),
                                       "dwi_ml.hdf5: the root attribute 'groups_config' is no readable dict"),
    "convert: streamlines without affine": (dwi_ml(delete("subA/streamlines", "affine")),
                                            "subject 'subA', group 'streamlines': not a dwi_ml volume or streamline "
                                            "group (type 'streamlines', missing ['affine'])"),
    "convert: streamlines without lengths": (dwi_ml(delete("subC/streamlines/lengths")), "missing ['lengths']"),
    "convert: NaN in a volume": (dwi_ml(dwi_ml_nan), "subject 'subB', group 'input': 1 voxel(s) with NaN"),
    "convert: features differ across subjects": (dwi_ml(dwi_ml_fewer_features),
                                                 "dwi_ml.hdf5: group 'input' has 3 features in subject 'subB' but 4"),
}.items()})


# ---- tractograms and label volumes of dwiml-score and dwiml-connectivity ---------------------------------------

def scoring(command: str, change: Callable[[Path], None] | None = None) -> Callable[[Path], list[str]]:
    """A label volume (regions 1 and 2 at the two ends of the first axis), a ground-truth bundle joining them and
    a candidate (the same), then ``change(folder)``."""
    def args(folder: Path) -> list[str]:
        labels = np.zeros(SHAPE, np.int16)
        labels[:3], labels[-3:] = 1, 2
        nib.save(nib.Nifti1Image(labels, AFFINE), folder / "labels.nii.gz")
        lines = [np.stack([np.linspace(1, SHAPE[0] - 2, 8), np.full(8, y), np.full(8, 3.0)], 1) for y in (2, 4, 6)]
        for name in ("gt.trk", "cand.trk"):
            save_trk(folder / name, lines, folder / "labels.nii.gz")
        if change is not None:
            change(folder)
        if command == "dwiml-connectivity":
            return ["cand.trk", "m.npy", "--labels", "labels.nii.gz"]
        return ["cand.trk", "--ground-truth", "gt.trk", "--labels", "labels.nii.gz", "--out-json", "s.json"]
    return args


def other_grid(name: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), SHIFTED), folder / "other.nii.gz")
        save_trk(folder / name, random_streamlines(np.random.default_rng(1), 3), folder / "other.nii.gz")
        (folder / "other.nii.gz").unlink()
    return change


def float_labels(data: np.ndarray) -> np.ndarray:
    data[5, 5, 5] = 1.5
    return data


SCORING_ROWS = {
    "a garbage candidate": (garbage("cand.trk", subject="."), "cand.trk is not a readable tractogram"),
    "a truncated candidate": (truncate("cand.trk", 0.8, "."), "cand.trk is not a readable tractogram"),
    "a candidate on another grid": (other_grid("cand.trk"), "the header of cand.trk does not match labels.nii.gz"),
    "a missing candidate": (lambda folder: (folder / "cand.trk").unlink(), "cand.trk: no such file"),
    "a truncated label volume": (truncate("labels.nii.gz", 0.6, "."), "labels.nii.gz is not a readable NIfTI"),
    "a garbage label volume": (garbage("labels.nii.gz", subject="."), "labels.nii.gz is not a readable NIfTI"),
    "a 5D label volume": (rewrite_nifti("labels.nii.gz", lambda d: d[..., None, None].repeat(2, 4), subject="."),
                          "labels.nii.gz is 5D"),
    "NaN in the label volume": (rewrite_nifti("labels.nii.gz", set_voxels(np.nan, 1), subject="."),
                                "labels.nii.gz: a label volume is 3D with integer labels >= 0"),
    "a label 1.5": (rewrite_nifti("labels.nii.gz", float_labels, subject="."), "labels.nii.gz: a label volume is 3D"),
}
ROWS.update({f"{command.split('-', 1)[1]}: {name}": BadInput(command, scoring(command, change), culprit)
             for name, (change, culprit) in SCORING_ROWS.items() for command in ("dwiml-score", "dwiml-connectivity")})
ROWS.update({
    "score: a garbage ground-truth bundle": BadInput("dwiml-score", scoring("dwiml-score", garbage("gt.trk", subject=".")),
                                                    "gt.trk is not a readable tractogram"),
    "score: a ground-truth bundle on another grid": BadInput("dwiml-score", scoring("dwiml-score", other_grid("gt.trk")),
                                                            "the header of gt.trk does not match"),
})


@pytest.mark.parametrize("name", ROWS)
def test_bad_input(name, hdf5_path, tmp_path, capfd, monkeypatch):
    folder = tmp_path / "row"
    folder.mkdir()
    shutil.copy(hdf5_path, folder / "good.hdf5")
    run_bad_input(ROWS[name], folder, capfd, monkeypatch)
