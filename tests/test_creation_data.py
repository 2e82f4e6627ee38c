"""What creation allows in the data (NaN/Inf replaced on request, empty tractograms), and creation stopped by a
signal or killed: nothing of it is left, and what a kill leaves is removed by the next creation."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from dipy.io.stateful_tractogram import Origin, Space, StatefulTractogram
from dipy.io.streamline import load_tractogram, save_tractogram

from dwiml.cli.create_hdf5 import main as create_main
from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.hdf5 import create_hdf5
from dwiml.data.hdf5_tools import extract
from dwiml.data.sampler import BatchSampler
from helpers import AFFINE, GROUPS, ROOT, SHAPE, write_subject


def set_non_finite(path: Path, values: list[float]) -> None:
    """Voxels (i, 0, 0) of ``path`` set to ``values`` (all channels)."""
    data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    data[:len(values), 0, 0] = np.asarray(values, np.float32).reshape(-1, *([1] * (data.ndim - 3)))
    nib.save(nib.Nifti1Image(data, AFFINE), path)


def test_nan_to_replaces_non_finite_values_and_standardization_stays_finite(tmp_path, caplog):
    write_subject(tmp_path / "s1", np.random.default_rng(0))
    set_non_finite(tmp_path / "s1" / "input.nii.gz", [np.nan, np.inf])
    set_non_finite(tmp_path / "s1" / "extra.nii.gz", [-np.inf])
    set_non_finite(tmp_path / "s1" / "mask.nii.gz", [np.nan, np.nan, np.nan])
    groups = {**GROUPS, "input": {**GROUPS["input"], "standardization": "independent", "nan_to": 0},
              "mask": {**GROUPS["mask"], "nan_to": -1.5}}
    with caplog.at_level(logging.WARNING):
        out = create_hdf5(tmp_path, groups, tmp_path / "x.hdf5", ["s1"], [], [])
    with h5py.File(out) as h5:
        standardized, mask = h5["s1/input/data"][:], h5["s1/mask/data"][:]
        assert h5["s1/input"].attrs["non_finite_replaced"] == 2  # voxels, whichever file held them
        assert json.loads(h5.attrs["creation"])["non_finite_replaced"] == {"s1": {"input": 2, "mask": 3}}
    assert np.isfinite(standardized).all()
    raw = np.concatenate([nib.load(tmp_path / "s1" / f).get_fdata()[..., None] if f == "extra.nii.gz" else
                          nib.load(tmp_path / "s1" / f).get_fdata() for f in ("input.nii.gz", "extra.nii.gz")], -1)
    raw[~np.isfinite(raw)] = 0
    inside = raw[np.any(raw != 0, axis=-1)]
    np.testing.assert_array_equal(standardized[0, 0, 0], 0)  # NaN or Inf in every channel: background
    np.testing.assert_allclose(standardized[1, 0, 0], (raw[1, 0, 0] - inside.mean(0)) / inside.std(0), rtol=1e-4)
    np.testing.assert_array_equal(mask[:3, 0, 0, 0], -1.5)
    assert "subject 's1', group 'mask': 3 voxel(s) with NaN or Inf replaced by nan_to" in caplog.text


def save(path: Path, lines: list[np.ndarray], **dps) -> None:
    reference = nib.load(path.parent.parent / "input.nii.gz")
    save_tractogram(StatefulTractogram(lines, reference, Space.VOX, origin=Origin.NIFTI, data_per_streamline=dps),
                    str(path), bbox_valid_check=False)


def test_empty_tractograms_contribute_nothing_and_are_counted(tmp_path, capsys, caplog):
    """Empty .trk/.tck/.trx add no streamlines; a subject left without any is kept (with a warning), and
    training batches come from the others."""
    rng = np.random.default_rng(0)
    lines = [np.array([[1, 1, 1], [2, 3, 2], [4, 4, 4]], np.float32) + i * 0.1 for i in range(20)]
    for name in ("s1", "s2", "s3"):
        write_subject(tmp_path / name, rng)
        bundles = tmp_path / name / "bundles"
        save(bundles / "a.trk", [], weight=np.zeros((0, 1), np.float32))
        save(bundles / "b.trk", [] if name == "s2" else lines, weight=np.arange(0 if name == "s2" else 20,
                                                                                 dtype=np.float32)[:, None])
        save(bundles / "c.tck", [])
        save(bundles / "c.trx", [])
    groups = {**GROUPS, "streamlines": {"type": "streamlines", "files": ["bundles/*.trk", "bundles/*.tck",
                                                                         "bundles/*.trx"],
                                        "dps_keys": ["weight"], "step_size_mm": 1.0}}
    (tmp_path / "groups.json").write_text(json.dumps(groups))
    (tmp_path / "training.txt").write_text("s1\ns2\ns3\n")
    with caplog.at_level(logging.WARNING):
        create_main([str(tmp_path), str(tmp_path / "groups.json"), str(tmp_path / "x.hdf5"),
                     "--training-subjects", str(tmp_path / "training.txt"), "--save-intermediate",
                     str(tmp_path / "inter")])
    assert capsys.readouterr().out.strip().endswith("3 training, 0 validation, 0 testing subjects; "
                                                    "10 empty tractogram(s) skipped")
    assert "subject 's2', group 'streamlines' has no streamlines" in caplog.text
    assert "subject 's1', group 'streamlines': 3 empty tractogram(s)" in caplog.text
    with h5py.File(tmp_path / "x.hdf5") as h5:
        assert [h5[f"{s}/streamlines"].attrs["empty_files"] for s in ("s1", "s2", "s3")] == [3, 4, 3]
        assert [len(h5[f"{s}/streamlines/lengths"]) for s in ("s1", "s2", "s3")] == [20, 0, 20]
        assert h5["s2/streamlines/points"].shape == (0, 3)
        np.testing.assert_array_equal(h5["s1/streamlines/data_per_streamline/weight"][:, 0], np.arange(20))
    for subject, count in (("s1", 20), ("s2", 0)):
        assert len(load_tractogram(str(tmp_path / "inter" / subject / "streamlines.trk"), "same")) == count
        extract(tmp_path / "x.hdf5", subject, "streamlines", tmp_path / f"{subject}.trx")
        assert len(load_tractogram(str(tmp_path / f"{subject}.trx"), str(tmp_path / "s1" / "input.nii.gz"))) == count
    training = MultiSubjectDataset(tmp_path / "x.hdf5").training
    assert training.subjects == ["s1", "s2", "s3"]
    batches = list(BatchSampler(training, "streamlines", batch_size=8, nb_subjects_per_batch=2))
    assert sum(len(b) for b in batches) == 40 and all(1 not in b.subjects for b in batches)


# ---- interrupted creation ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def many_subjects(tmp_path_factory) -> Path:
    """Enough subjects that a creation runs for a while."""
    root = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    names = [f"s{i}" for i in range(60)]
    for name in names:
        write_subject(root / name, rng, nb_streamlines=200)
    (root / "groups.json").write_text(json.dumps(GROUPS))
    (root / "training.txt").write_text("\n".join(names) + "\n")
    return root


def start_creation(subjects: Path, out: Path, *extra: str) -> subprocess.Popen:
    """A real ``dwiml-create-hdf5`` process (its own process group), once it has opened its temporary HDF5."""
    process = subprocess.Popen([sys.executable, "-m", "dwiml.cli.create_hdf5", str(subjects),
                                str(subjects / "groups.json"), str(out / "data.hdf5"), "--training-subjects",
                                str(subjects / "training.txt"), "--compression", "gzip", *extra], cwd=ROOT,
                               start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob(".tmp-*")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    return process


@pytest.mark.slow
@pytest.mark.parametrize("signum, processes, group", [(signal.SIGTERM, 1, False), (signal.SIGINT, 1, False),
                                                      (signal.SIGTERM, 2, True)])
def test_a_signal_during_creation_leaves_nothing(many_subjects, tmp_path, signum, processes, group):
    """SIGTERM/SIGINT, to the process or its whole group (workers included): exit 128 + signal, the temporary
    HDF5 and the intermediate folder removed."""
    process = start_creation(many_subjects, tmp_path, "--processes", str(processes),
                             "--save-intermediate", str(tmp_path / "inter"))
    assert process.poll() is None, "the creation ended before the signal"
    if group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, err[-2000:]
    assert f"stopped by {signal.Signals(signum).name}: nothing written" in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_what_a_kill_leaves_is_removed_by_the_next_creation(many_subjects, tmp_path):
    process = start_creation(many_subjects, tmp_path, "--save-intermediate", str(tmp_path / "inter"))
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [f".tmp-{process.pid}-{socket.gethostname()}-data.hdf5", "inter.tmp"]
    alive = tmp_path / f".tmp-{os.getppid()}-{socket.gethostname()}-data.hdf5"  # a creation still running
    elsewhere = tmp_path / f".tmp-{process.pid}-another-host-data.hdf5"          # on a shared file system
    for path in (alive, elsewhere):
        path.write_text("in progress")
    create_hdf5(many_subjects, GROUPS, tmp_path / "data.hdf5", ["s0"], [], [], save_intermediate=tmp_path / "inter")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, elsewhere.name, "data.hdf5", "inter"])
    assert sorted(p.name for p in (tmp_path / "inter").iterdir()) == [".complete", "s0"]
