"""Bad inputs, table-driven (tests/helpers/bad_inputs.py): training config values, command options and model
folders, each refused before any work with one line naming the key, option or file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from dwiml.errors import DwimlError
from dwiml.data.builtin import phantom_hdf5
from helpers import run_training
from helpers.bad_inputs import BadInput, run_bad_input

FAST = ["trainer.max_epochs=1", "trainer.max_batches_per_epoch_training=2", "trainer.max_batches_per_epoch_validation=1",
        "model.hidden_sizes=[8]", "trainer.plot_every_epochs=null"]
SHARED: dict[str, Path] = {}  # the session's phantom cache and tiny trained run, for the rows' arguments


@pytest.fixture(scope="module", autouse=True)
def shared(cache_dir, tmp_path_factory):
    SHARED["cache"] = cache_dir
    SHARED["run"] = tmp_path_factory.mktemp("run")
    run_training(cache_dir, SHARED["run"], FAST)
    SHARED["phantom"] = phantom_hdf5(cache_dir, nb_subjects=3)  # the fixture's draw (other tests add draws)


def train(*overrides: str) -> BadInput:
    """dwiml-train on the session's phantom with ``overrides``; the culprit: the first override's key."""
    culprit = overrides[-1].split("=", 1)[0]
    return BadInput("dwiml-train", lambda folder: [*overrides, f"dataset.cache_dir={SHARED['cache']}",
                                                   "dataset.nb_subjects=3", "trainer.progress_bar=false"], culprit)


def track(*options: str, culprit: str | None = None) -> BadInput:
    """dwiml-track of the session's run on a phantom subject, with ``options``."""
    def args(folder: Path) -> list[str]:
        return [str(SHARED["run"]), "out.trk", "--hdf5", str(SHARED["phantom"]), "--subject", "sub-02",
                "--seeding-mask", "wm_mask", "--nb-seeds", "10", *options]
    return BadInput("dwiml-track", args, culprit or options[0])


def nifti(path: Path, data: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), path)
    return str(path)


def track_input(value: float, nb_voxels: int) -> BadInput:
    """dwiml-track on a NIfTI input holding ``value`` in its first ``nb_voxels`` voxels (zeros elsewhere)."""
    def args(folder: Path) -> list[str]:
        data = np.zeros((6, 6, 6, 4))
        data.reshape(-1, 4)[:nb_voxels] = value
        return [str(SHARED["run"]), "out.trk", "--input", nifti(folder / "input.nii.gz", data),
                "--seeding-mask", nifti(folder / "mask.nii.gz", np.ones((6, 6, 6))), "--allow-mismatch"]
    return BadInput("dwiml-track", args, "input.nii.gz")


def model_folder(change, culprit: str) -> BadInput:
    """dwiml-track of a copy of the run's best model changed by ``change(folder)``."""
    def args(folder: Path) -> list[str]:
        shutil.copytree(SHARED["run"] / "best_model", folder / "model")
        change(folder / "model")
        return [str(folder / "model"), "out.trk", "--input", "input.nii.gz", "--seeding-mask", "mask.nii.gz"]
    return BadInput("dwiml-track", args, culprit)


def edit_config(**changes):
    def change(folder: Path) -> None:
        config = json.loads((folder / "model_config.json").read_text())
        (folder / "model_config.json").write_text(json.dumps({**config, **changes}))
    return change


def command(name: str, *options: str, culprit: str | None = None) -> BadInput:
    return BadInput(name, lambda folder: list(options), culprit or next(o for o in options if o.startswith("--")))


def score(*options: str) -> BadInput:
    def args(folder: Path) -> list[str]:
        return ["cand.trk", "--ground-truth", "gt.trk", "--labels", "labels.nii.gz", *options]
    return BadInput("dwiml-score", args, options[0])


def visualize(name: str, *options: str) -> BadInput:
    return BadInput(name, lambda folder: [str(SHARED["run"]), "out.trk", "--subject", "sub-02", *options], options[0])


ROWS = {
    # training config values, refused at start-up
    "clip_grad_norm < 0 (gradient ascent)": train("trainer.clip_grad_norm=-1"),
    "clip_grad_norm = 0": train("trainer.clip_grad_norm=0"),
    "patience < 0": train("trainer.patience=-1"),
    "max_epochs < 1": train("trainer.max_epochs=-1"),
    "max_epochs = 0": train("trainer.max_epochs=0"),
    "max_batches_per_epoch_training = 0": train("trainer.max_batches_per_epoch_training=0"),
    "max_batches_per_epoch_validation < 0": train("trainer.max_batches_per_epoch_validation=-2"),
    "accumulate_grad_batches = 0": train("trainer.accumulate_grad_batches=0"),
    "ema_decay = 2": train("trainer.ema_decay=2"),
    "ema_decay = 1": train("trainer.ema_decay=1"),
    "ema_decay < 0": train("trainer.ema_decay=-0.1"),
    "precision 16": train("trainer.precision=16"),
    "strategy dp": train("trainer.strategy=dp"),
    "monitor_mode": train("trainer.monitor_mode=lowest"),
    "monitor no metric": train("trainer.monitor=valid_los"),
    "patience_delta < 0": train("trainer.patience_delta=-1"),
    "checkpoint_every_batches = 0": train("trainer.checkpoint_every_batches=0"),
    "checkpoint_every_minutes < 0": train("trainer.checkpoint_every_minutes=-5"),
    "max_minutes < 0": train("trainer.max_minutes=-1"),
    "plot_every_epochs = 0": train("trainer.plot_every_epochs=0"),
    "lr < 0": train("optim.lr=-1"),
    "lr = 0": train("optim.lr=0"),
    "weight_decay < 0": train("optim.weight_decay=-0.01"),
    "sgd momentum < 0": train("optim=sgd", "optim.momentum=-0.9"),
    "num_workers < 0": train("num_workers=-1"),
    "seed < 0": train("seed=-1"),
    "batch_size = 0": train("sampler.batch_size=0"),
    "batch_size of half a streamline": train("sampler.batch_size=0.5"),
    "validation_batch_size < 0": train("sampler.validation_batch_size=-10"),
    "nb_subjects_per_batch = 0": train("sampler.nb_subjects_per_batch=0"),
    "cycles = 0": train("sampler.cycles=0"),
    "sampler unit": train("sampler.unit=points"),
    "reverse_ratio > 1": train("loader.reverse_ratio=1.5"),
    "split_ratio < 0": train("loader.split_ratio=-0.2"),
    "loader step_size_mm = 0": train("loader.step_size_mm=0"),
    "forward noise < 0": train("loader.noise_gaussian_size_forward=-0.1"),
    "loss noise < 0": train("loader.noise_gaussian_size_loss=-1"),
    "min_points_after_split = 1": train("loader.min_points_after_split=1"),
    "two resamplings": BadInput("dwiml-train", lambda folder: ["loader.nb_points=20"], "nb_points=20"),
    "dropout = 1": train("model.dropout=1"),
    "dropout < 0": train("model.dropout=-0.5"),
    "hidden size 0": train("model.hidden_sizes=[16,0]"),
    "nb_previous_dirs < 0": train("model.nb_previous_dirs=-1"),
    "rnn_type": train("model.rnn_type=transformer"),
    "transformer variant": train("model=transformer", "model.variant=decoder"),
    "transformer nheads = 0": train("model=transformer", "model.nheads=0"),
    "transformer d_model of 4 heads": train("model=transformer", "model.nheads=4", "model.d_model=30"),
    "head eos_weight < 0": train("model.head.eos_weight=-1"),
    "head hidden size < 1": train("model.head.hidden_sizes=[-4]"),
    "mixture of 0 components": train("model/head=gaussian_mixture", "model.head.nb_components=0"),
    "smoothing width 0": train("model/head=smooth_sphere_classification", "model.head.smoothing_width_deg=0"),
    "neighborhood type": train("step.neighborhood_type=ball"),
    "neighborhood rings 0": train("step.neighborhood_type=axes", "step.neighborhood_radius_mm=1",
                                  "step.neighborhood_nb_rings=0"),
    "plateau factor 1": train("scheduler=plateau", "scheduler.factor=1"),
    "step scheduler gamma 0": train("scheduler=step", "scheduler.gamma=0"),
    "phantom of 2 subjects": BadInput("dwiml-train", lambda folder: ["dataset.nb_subjects=2"], "dataset.nb_subjects"),
    "gv max_angle_deg 0": train("gv=default", "gv.max_angle_deg=0"),
    "gv eos_threshold 1": train("gv=default", "gv.eos_threshold=1"),
    "gv every_n_epochs 0": train("gv=default", "gv.every_n_epochs=0"),
    "gv testing subset": train("gv=default", "gv.subsets=[testing]"),
    "head sphere": train("model/head=sphere_classification", "model.head.sphere=repulsion7"),
    "device gpu": train("device=gpu"),
    "device cuda:99": train("device=cuda:99"),
    # dwiml-track options, refused before the model is loaded
    "--step-size-mm 0": track("--step-size-mm", "0"),
    "--step-size-mm < 0": track("--step-size-mm", "-1"),
    "--max-angle-deg < 0": track("--max-angle-deg", "-10"),
    "--max-angle-deg 0": track("--max-angle-deg", "0"),
    "--max-angle-deg > 180": track("--max-angle-deg", "190"),
    "--compress-mm < 0": track("--compress-mm", "-1"),
    "--compress-mm 0": track("--compress-mm", "0"),
    "--min-length-mm > --max-length-mm": track("--min-length-mm", "50", "--max-length-mm", "20"),
    "--min-length-mm < 0": track("--min-length-mm", "-5"),
    "--max-length-mm 0": track("--max-length-mm", "0", "--min-length-mm", "0"),
    "--nb-seeds 0": BadInput("dwiml-track", lambda folder: [str(SHARED["run"]), "out.trk", "--hdf5",
                             str(SHARED["phantom"]), "--subject", "sub-02", "--seeding-mask", "wm_mask",
                             "--nb-seeds", "0"], "--nb-seeds"),
    "--seeds-per-voxel 0": BadInput("dwiml-track", lambda folder: [str(SHARED["run"]), "out.trk", "--hdf5",
                                    str(SHARED["phantom"]), "--subject", "sub-02", "--seeding-mask", "wm_mask",
                                    "--seeds-per-voxel", "0"], "--seeds-per-voxel"),
    "--batch-size 0": track("--batch-size", "0"),
    "--eos-threshold 1.5": track("--eos-threshold", "1.5"),
    "--eos-threshold 0": track("--eos-threshold", "0"),
    "--device gpu": track("--device", "gpu"),
    "--device cuda:99": track("--device", "cuda:99"),
    "output extension": BadInput("dwiml-track", lambda folder: [str(SHARED["run"]), "out.vtk", "--hdf5",
                                 str(SHARED["phantom"]), "--subject", "sub-02", "--seeding-mask", "wm_mask"],
                                 "out.vtk"),
    "--seed-shard 3/2": track("--seed-shard", "3/2", culprit="seed shard 3/2"),
    "all-NaN input": track_input(np.nan, 6 * 6 * 6),
    "an Inf in the input": track_input(np.inf, 1),
    # model folders
    "truncated model.pt": model_folder(lambda f: (f / "model.pt").write_bytes((f / "model.pt").read_bytes()[:200]),
                                       "model.pt"),
    "garbage model.pt": model_folder(lambda f: (f / "model.pt").write_bytes(b"not weights"), "model.pt"),
    "empty model.pt": model_folder(lambda f: (f / "model.pt").write_bytes(b""), "model.pt"),
    "model.pt holding a tensor": model_folder(lambda f: torch.save(torch.zeros(3), f / "model.pt"), "model.pt"),
    "model.pt holding a list": model_folder(lambda f: torch.save([1, 2], f / "model.pt"), "model.pt"),
    "no model.pt": model_folder(lambda f: (f / "model.pt").unlink(), "model.pt"),
    "no model_config.json": model_folder(lambda f: (f / "model_config.json").unlink(), "model_config.json"),
    "no such model folder": BadInput("dwiml-track", lambda folder: ["nowhere", "out.trk", "--input", "in.nii.gz",
                                                                     "--seeding-mask", "mask.nii.gz"], "nowhere"),
    "a run folder without a model": BadInput("dwiml-track", lambda folder: [str(folder), "out.trk", "--input",
                                             "in.nii.gz", "--seeding-mask", "mask.nii.gz"], "best_model"),
    "model_config.json syntax error": model_folder(
        lambda f: (f / "model_config.json").write_text('{\n  "_target_": "x",\n  "dropout" 0\n}'), "line 3"),
    "model_config.json a list": model_folder(lambda f: (f / "model_config.json").write_text("[1, 2]"),
                                             "model_config.json"),
    "model_config.json not UTF-8": model_folder(lambda f: (f / "model_config.json").write_bytes(b"\xff\xfe\x00"),
                                                "model_config.json"),
    "weights of another size": model_folder(edit_config(hidden_sizes=[16]), "model.pt"),
    "a config value of the wrong kind": model_folder(edit_config(hidden_sizes="eight"), "model_config.json"),
    "a config without its head": model_folder(edit_config(head=None), "model_config.json"),
    "input_spec.json syntax error": model_folder(lambda f: (f / "input_spec.json").write_text("{"), "input_spec.json"),
    # other commands' numeric options
    "score --endpoint-tolerance-mm < 0": score("--endpoint-tolerance-mm", "-1"),
    "score --dilate-endpoints < 0": BadInput("dwiml-score", lambda folder: ["cand.trk", "--bundle-config", "b.json",
                                             "--dilate-endpoints", "-2"], "--dilate-endpoints"),
    "connectivity --nb-blocs 0": command("dwiml-connectivity", "t.trk", "m.npy", "--nb-blocs", "0",
                                         "--reference", "r.nii.gz", culprit="number of blocs"),
    "visualize-loss --batch-size 0": visualize("dwiml-visualize-loss", "--batch-size", "0"),
    "visualize-loss --select-pct 0": visualize("dwiml-visualize-loss", "--select-pct", "0"),
    "visualize-loss --device gpu": visualize("dwiml-visualize-loss", "--device", "gpu"),
    "visualize-attention --nb-streamlines 0": visualize("dwiml-visualize-attention", "--nb-streamlines", "0"),
    "evaluate --max-angle-deg 200": command("dwiml-evaluate", "--experiment", "phantom_tracking", "--out-dir", "e",
                                            "--max-angle-deg", "200", culprit="--max-angle-deg"),
    "evaluate --seeds-per-voxel 0": command("dwiml-evaluate", "--experiment", "phantom_tracking", "--out-dir", "e",
                                            "--seeds-per-voxel", "0", culprit="--seeds-per-voxel"),
    "evaluate --min-end-eos 1": command("dwiml-evaluate", "--experiment", "phantom_tracking", "--out-dir", "e",
                                        "--min-end-eos", "1", culprit="--min-end-eos"),
    "evaluate lengths": command("dwiml-evaluate", "--experiment", "phantom_tracking", "--out-dir", "e",
                                "--min-length-mm", "300", culprit="--min-length-mm"),
    "evaluate --phantom-seeds < 0": command("dwiml-evaluate", "--experiment", "phantom_tracking", "--out-dir", "e",
                                            "--phantom-seeds", "1", "-3", culprit="--phantom-seeds"),
    "make-phantom --subjects 2": command("dwiml-make-phantom", "ph", "--subjects", "2"),
    "make-phantom --seed < 0": command("dwiml-make-phantom", "ph", "--seed", "-1"),
}


@pytest.mark.parametrize("name", ROWS)
def test_bad_input(name, tmp_path, capfd, monkeypatch):
    run_bad_input(ROWS[name], tmp_path / "row", capfd, monkeypatch)


def test_a_nan_validation_subject_stops_training_naming_it(tmp_path):
    """A validation subject whose input is NaN (as in an HDF5 written before creation refused NaN) stops
    training at the first validation, naming the subject, with no best model selected on NaN."""
    hdf5 = tmp_path / "nan.hdf5"
    shutil.copy(SHARED["phantom"], hdf5)
    with h5py.File(hdf5, "r+") as h5:
        (subject,) = json.loads(h5.attrs["validation_subjects"])
        h5[subject]["input"]["data"][...] = np.nan
    with pytest.raises(DwimlError, match=f"validation loss is nan at epoch 1: .* subject\\(s\\) {subject} gives"):
        run_training(SHARED["cache"], tmp_path / "run", [*FAST, "dataset=hdf5", f"dataset.hdf5_path={hdf5}"])
    assert not (tmp_path / "run" / "best_model").exists()
