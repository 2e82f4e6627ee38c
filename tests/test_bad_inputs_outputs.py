"""Bad inputs, table-driven (tests/helpers/bad_inputs.py): every output of every command (an existing one is
refused without -f; a folder where a file goes, or the reverse, and a missing or unwritable parent folder even
with -f; all before any work, so the inputs of these rows need not exist), usage errors, and hostile model and
run folders (nothing they name is imported or called: the ``side_effects`` fixture). Then: with -f each command
replaces its outputs; every command prints dwiml's version; and a few rows through a real process."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dwiml import __version__
from helpers import AFFINE, SHAPE, SUBJECTS, run_training, write_dwi_ml_hdf5
from helpers.bad_inputs import COMMANDS, BadInput, left_behind, run_bad_input, snapshot
from helpers.hostile import MODEL_CASES, RUN_CASES, TINY, hostile_model, hostile_run

OUT = "{out}"  # where an output's path goes in its command's arguments


@dataclass(frozen=True)
class Output:
    """One output of a command: the arguments naming it (at ``OUT``, or by default when they have no ``OUT``),
    its name, and whether it is a folder. The inputs named do not exist: the output is checked first."""
    command: str
    args: tuple[str, ...]
    name: str
    folder: bool = False


TRACK = ("--input", "fodf.nii.gz", "--seeding-mask", "wm.nii.gz")
OUTPUTS = {
    "create-hdf5": Output("dwiml-create-hdf5", ("subjects", "groups.yaml", OUT), "data.hdf5"),
    "create-hdf5 --save-intermediate": Output(
        "dwiml-create-hdf5", ("subjects", "groups.yaml", "data.hdf5", "--save-intermediate", OUT), "inter", True),
    "convert-dwiml-hdf5": Output("dwiml-convert-dwiml-hdf5", ("dwi_ml.hdf5", OUT), "dwiml.hdf5"),
    "make-phantom": Output("dwiml-make-phantom", (OUT,), "phantom", True),
    "hdf5-extract": Output("dwiml-hdf5-extract", ("data.hdf5", "s1", "mask", OUT), "mask.nii.gz"),
    "hdf5-extract --connectivity": Output(
        "dwiml-hdf5-extract", ("data.hdf5", "s1", "streamlines", OUT, "--connectivity"), "matrix.npy"),
    "score --out-json": Output("dwiml-score", ("candidate.trk", "--ground-truth", "a.trk", "--labels", "labels.nii.gz",
                                               "--out-json", OUT), "scores.json"),
    "track": Output("dwiml-track", ("model", OUT, *TRACK), "tracked.trk"),
    "track-merge": Output("dwiml-track-merge", (OUT, "shard-1.trk", "shard-2.trk"), "merged.trk"),
    "connectivity": Output("dwiml-connectivity", ("tracked.trk", OUT, "--labels", "labels.nii.gz"), "matrix.npy"),
    "plot-logs --out": Output("dwiml-plot-logs", ("run", "--out", OUT), "curves.png"),
    "plot-logs (default --out)": Output("dwiml-plot-logs", ("run",), "runs.png"),
    "visualize-loss": Output("dwiml-visualize-loss", ("model", OUT, "--subject", "s1"), "loss.trk"),
    "visualize-loss --histogram": Output(
        "dwiml-visualize-loss", ("model", "loss.trk", "--subject", "s1", "--histogram", OUT), "histogram.png"),
    "visualize-loss (default histogram)": Output("dwiml-visualize-loss", ("model", "loss.trk", "--subject", "s1"),
                                                 "loss.png"),
    "visualize-loss --select-pct (best)": Output(
        "dwiml-visualize-loss", ("model", "loss.trk", "--subject", "s1", "--select-pct", "10"), "loss_best.trk"),
    "visualize-loss --select-pct (worst)": Output(
        "dwiml-visualize-loss", ("model", "loss.trk", "--subject", "s1", "--select-pct", "10"), "loss_worst.trk"),
    "visualize-attention": Output("dwiml-visualize-attention", ("model", OUT, "--subject", "s1"), "attention.trk"),
    "visualize-attention --images": Output(
        "dwiml-visualize-attention", ("model", "attention.trk", "--subject", "s1", "--images", OUT), "images", True),
    "visualize-attention (default images)": Output(
        "dwiml-visualize-attention", ("model", "attention.trk", "--subject", "s1"), "attention", True),
    "evaluate": Output("dwiml-evaluate", ("--experiment", "phantom_tracking", "--out-dir", OUT), "eval", True),
}


def write_old(path: Path, folder: bool) -> None:
    """A previous output at ``path``: a file, or a folder holding one."""
    if folder:
        path.mkdir()
        (path / "kept.txt").write_text("a previous output")
    else:
        path.write_text("a previous output")


def output_args(output: Output, folder: Path, path: str, before=None, extra: tuple[str, ...] = ()) -> list[str]:
    """``output``'s arguments with ``path`` for it, after ``before(folder)`` prepared the row's folder."""
    if before is not None:
        before(folder)
    return [path if a == OUT else a for a in output.args] + list(extra)


def locked(folder: Path) -> None:
    """``folder/locked``: read-only (the row is skipped for a user who writes there anyway: root)."""
    (folder / "locked").mkdir()
    (folder / "locked").chmod(0o555)
    if os.access(folder / "locked", os.W_OK):
        pytest.skip("this user writes into read-only folders (root)")


def output_rows(label: str, o: Output) -> dict[str, BadInput]:
    """The rows of one output: it exists (no -f); something else is in its place (-f); and when the arguments
    name it, its folder is missing, a file, or read-only (-f)."""
    other = "a file" if o.folder else "a folder"
    rows = {
        f"{label}: exists": BadInput(o.command, partial(
            output_args, o, path=o.name, before=lambda f: write_old(f / o.name, o.folder)),
            f"{o.name} exists (-f to replace it)"),
        f"{label}: {other} in its place, -f": BadInput(o.command, partial(
            output_args, o, path=o.name, extra=("-f",), before=lambda f: write_old(f / o.name, not o.folder)),
            f"{o.name} is {other}, not a {'folder' if o.folder else 'file'}"),
    }
    if OUT in o.args:
        rows |= {
            f"{label}: in a missing folder": BadInput(o.command, partial(
                output_args, o, path=f"missing/{o.name}"), "missing does not exist"),
            f"{label}: in a file's place, -f": BadInput(o.command, partial(
                output_args, o, path=f"notes.txt/{o.name}", extra=("-f",),
                before=lambda f: (f / "notes.txt").write_text("notes")), "notes.txt is not a folder"),
            f"{label}: in a read-only folder, -f": BadInput(o.command, partial(
                output_args, o, path=f"locked/{o.name}", extra=("-f",), before=locked), "locked is not writable"),
        }
    return rows


def usage(command: str, *args: str, culprit: str) -> BadInput:
    return BadInput(command, lambda folder: list(args), culprit)


SEEDED = ("model", "tracked.trk", "--seeding-mask", "wm.nii.gz")
LOSS = ("model", "loss.trk", "--subject", "s1")
EVALUATE = ("--experiment", "phantom_tracking", "--out-dir", "eval")
USAGE = {  # argparse's errors: one line, exit 1
    "track: --max-angle-deg not a number": usage("dwiml-track", *SEEDED, "--max-angle-deg", "wide",
                                                 culprit="--max-angle-deg"),
    "track: --batch-size neither a number nor auto": usage("dwiml-track", *SEEDED, "--batch-size", "many",
                                                           culprit="--batch-size"),
    "track: --nb-seeds not an integer": usage("dwiml-track", *SEEDED, "--nb-seeds", "1.5", culprit="--nb-seeds"),
    "track: --algo not a choice": usage("dwiml-track", *SEEDED, "--algo", "fast", culprit="--algo"),
    "track: --act with one map": usage("dwiml-track", *SEEDED, "--act", "include.nii.gz", culprit="--act"),
    "track: no seeding": usage("dwiml-track", "model", "tracked.trk", culprit="--seeding-mask"),
    "track: no output": usage("dwiml-track", "model", culprit="out"),
    "track: an unknown option": usage("dwiml-track", *SEEDED, "--step-mm", "1", culprit="--step-mm"),
    "create-hdf5: --processes not a number": usage("dwiml-create-hdf5", "subjects", "groups.yaml", "data.hdf5",
                                                   "--processes", "two", culprit="--processes"),
    "create-hdf5: --compression not a choice": usage("dwiml-create-hdf5", "subjects", "groups.yaml", "data.hdf5",
                                                     "--compression", "zip", culprit="--compression"),
    "create-hdf5: no output": usage("dwiml-create-hdf5", "subjects", "groups.yaml", culprit="out"),
    "convert-dwiml-hdf5: --compression not a choice": usage("dwiml-convert-dwiml-hdf5", "dwi_ml.hdf5", "dwiml.hdf5",
                                                            "--compression", "bz2", culprit="--compression"),
    "make-phantom: --subjects not a number": usage("dwiml-make-phantom", "phantom", "--subjects", "three",
                                                   culprit="--subjects"),
    "make-phantom: --seed not an integer": usage("dwiml-make-phantom", "phantom", "--seed", "1e3", culprit="--seed"),
    "hdf5-extract: no output": usage("dwiml-hdf5-extract", "data.hdf5", "s1", "mask", culprit="out"),
    "hdf5-info: no file": usage("dwiml-hdf5-info", culprit="hdf5"),
    "hdf5-info: an unknown option": usage("dwiml-hdf5-info", "data.hdf5", "--verbose", culprit="--verbose"),
    "score: --endpoint-tolerance-mm not a number": usage(
        "dwiml-score", "candidate.trk", "--ground-truth", "a.trk", "--labels", "labels.nii.gz",
        "--endpoint-tolerance-mm", "far", culprit="--endpoint-tolerance-mm"),
    "score: --dilate-endpoints not an integer": usage("dwiml-score", "candidate.trk", "--bundle-config", "b.json",
                                                      "--dilate-endpoints", "1.5", culprit="--dilate-endpoints"),
    "score: no candidate": usage("dwiml-score", culprit="CANDIDATE"),
    "connectivity: --labels and --nb-blocs": usage("dwiml-connectivity", "tracked.trk", "matrix.npy", "--labels",
                                                   "labels.nii.gz", "--nb-blocs", "2", culprit="--nb-blocs"),
    "connectivity: --nb-blocs not a number": usage("dwiml-connectivity", "tracked.trk", "matrix.npy", "--nb-blocs",
                                                   "two", culprit="--nb-blocs"),
    "connectivity: no regions": usage("dwiml-connectivity", "tracked.trk", "matrix.npy", culprit="--labels"),
    "plot-logs: no run folder": usage("dwiml-plot-logs", "--out", "runs.png", culprit="RUN_DIR"),
    "track-merge: no shard": usage("dwiml-track-merge", "merged.trk", culprit="shards"),
    "visualize-loss: --range not numbers": usage("dwiml-visualize-loss", *LOSS, "--range", "0", "high",
                                                 culprit="--range"),
    "visualize-loss: --batch-size not a number": usage("dwiml-visualize-loss", *LOSS, "--batch-size", "lots",
                                                       culprit="--batch-size"),
    "visualize-loss: --select-pct not a number": usage("dwiml-visualize-loss", *LOSS, "--select-pct", "ten",
                                                       culprit="--select-pct"),
    "visualize-loss: no --subject": usage("dwiml-visualize-loss", "model", "loss.trk", culprit="--subject"),
    "visualize-attention: --nb-streamlines not a number": usage(
        "dwiml-visualize-attention", "model", "attention.trk", "--subject", "s1", "--nb-streamlines", "few",
        culprit="--nb-streamlines"),
    "evaluate: --phantom-seeds not numbers": usage("dwiml-evaluate", *EVALUATE, "--phantom-seeds", "one",
                                                   culprit="--phantom-seeds"),
    "evaluate: --seeding not a choice": usage("dwiml-evaluate", *EVALUATE, "--seeding", "everywhere",
                                              culprit="--seeding"),
    "evaluate: no --experiment": usage("dwiml-evaluate", "--out-dir", "eval", culprit="--experiment"),
}

ROWS = {
    "train on an HDF5 dataset without its path": BadInput(
        "dwiml-train", lambda folder: ["dataset=hdf5"], "dataset.hdf5_path"),
    **{name: row for label, o in OUTPUTS.items() for name, row in output_rows(label, o).items()},
    **USAGE,
}


@pytest.mark.parametrize("name", ROWS)
def test_bad_input(name, tmp_path, capfd, monkeypatch):
    run_bad_input(ROWS[name], tmp_path / "row", capfd, monkeypatch)


# ---- hostile model and run folders: refused, naming the file and key, with no side effect -----------------

def hostile_model_args(command: str, key: str, effects: Path, folder: Path) -> list[str]:
    model = hostile_model(folder / "best_model", key, effects)
    if command == "dwiml-track":
        return [str(model), "tracked.trk", *TRACK]
    return [str(model), "out.trk", "--subject", "s1", "--hdf5", "data.hdf5"]


HOSTILE_MODELS = {**{f"track a model folder: {key}": ("dwiml-track", key) for key in MODEL_CASES},
                  **{f"{command} a model folder: {key}": (f"dwiml-{command}", key)
                     for command in ("visualize-loss", "visualize-attention") for key in ("_target_", "dropout")}}


@pytest.mark.parametrize("name", HOSTILE_MODELS)
def test_hostile_model_folder(name, tmp_path, side_effects, capfd, monkeypatch):
    command, key = HOSTILE_MODELS[name]
    row = BadInput(command, partial(hostile_model_args, command, key, side_effects),
                   f"model_config.json: {key.split('.')[0]}")
    run_bad_input(row, tmp_path / "row", capfd, monkeypatch)


def hostile_run_args(trusted_run: Path, cache_dir: Path, key: str, effects: Path, continued: str,
                     folder: Path) -> list[str]:
    run = hostile_run(trusted_run, cache_dir, folder / "run", key, effects)
    how = [f"resume={run}"] if continued == "resume" else ["trainer.auto_resume=true", f"hydra.run.dir={run}"]
    return [*TINY, f"dataset.cache_dir={cache_dir}", "dataset.nb_subjects=3", "trainer.progress_bar=false", *how,
            "trainer.max_epochs=2"]


@pytest.mark.parametrize("continued", ["resume", "auto_resume"])
@pytest.mark.parametrize("key", RUN_CASES)
def test_hostile_run_folder(key, continued, cache_dir, trusted_run, tmp_path, side_effects, capfd, monkeypatch):
    row = BadInput("dwiml-train", partial(hostile_run_args, trusted_run, cache_dir, key, side_effects, continued),
                   f"config.yaml: {key.split('.')[0]}")
    run_bad_input(row, tmp_path / "row", capfd, monkeypatch)


# ---- with -f, every output is replaced (atomically: no temporary left), and --version ---------------------

class Fixtures:
    """The session fixtures a command's arguments name, built when first asked for."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request

    def __getattr__(self, name: str):
        return self._request.getfixturevalue(name)


@pytest.fixture(scope="session")
def hdf5_run(hdf5_path, tmp_path_factory) -> Path:
    """An LSTM trained for two batches on the HDF5 of tests/conftest.py."""
    run = tmp_path_factory.mktemp("hdf5_run") / "run"
    run_training(run, run, ["dataset=hdf5", f"dataset.hdf5_path={hdf5_path}", *TINY])
    return run


@pytest.fixture(scope="session")
def transformer_run(hdf5_path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("transformer_run") / "run"
    run_training(run, run, ["dataset=hdf5", f"dataset.hdf5_path={hdf5_path}", "model=transformer", "model.d_model=8",
                            "model.nheads=2", "model.nb_layers=1", *TINY[1:]])
    return run


@pytest.fixture(scope="session")
def shard(hdf5_run, hdf5_path, tmp_path_factory) -> Path:
    """A tractogram written by dwiml-track --seed-shard: its streamlines keep their seed ids."""
    out = tmp_path_factory.mktemp("shard") / "shard-1.trk"
    COMMANDS["dwiml-track"].load()([str(hdf5_run), str(out), *TRACKED, "--seed-shard", "1/2", "--batch-size", "4"])
    return out


def labels(folder: Path) -> str:
    """Two regions, the halves of the first axis, on the grid of the HDF5's subjects."""
    volume = np.ones(SHAPE, np.int16)
    volume[SHAPE[0] // 2:] = 2
    nib.save(nib.Nifti1Image(volume, AFFINE), folder / "labels.nii.gz")
    return str(folder / "labels.nii.gz")


def dwi_ml_file(folder: Path) -> str:
    write_dwi_ml_hdf5(folder / "dwi_ml.hdf5", np.random.default_rng(0))
    return str(folder / "dwi_ml.hdf5")


def subject_lists(subjects_dir: Path) -> list[str]:
    return [f"--{subset}-subjects={subjects_dir / f'{subset}.txt'}" for subset in SUBJECTS]


TRACKED = ["--subject", "s5", "--seeding-mask", "mask", "--nb-seeds", "8", "--min-length-mm", "0", "--no-progress"]
REPLACED = {  # command -> (its arguments, from the row's folder and the fixtures; its outputs, "/" for a folder)
    "dwiml-create-hdf5": (lambda f, fx: [str(fx.subjects_dir), str(fx.subjects_dir / "groups.yaml"), "data.hdf5",
                                         *subject_lists(fx.subjects_dir), "--save-intermediate", "inter"],
                          ("data.hdf5", "inter/")),
    "dwiml-convert-dwiml-hdf5": (lambda f, fx: [dwi_ml_file(f), "dwiml.hdf5"], ("dwiml.hdf5",)),
    "dwiml-hdf5-extract": (lambda f, fx: [str(fx.hdf5_path), "s1", "mask", "mask.nii.gz"], ("mask.nii.gz",)),
    "dwiml-score": (lambda f, fx: [str(fx.subjects_dir / "s1" / "bundles" / "a.trk"), "--ground-truth",
                                   str(fx.subjects_dir / "s1" / "bundles" / "b.trk"), "--labels", labels(f),
                                   "--out-json", "scores.json"], ("scores.json",)),
    "dwiml-connectivity": (lambda f, fx: [str(fx.subjects_dir / "s1" / "bundles" / "a.trk"), "matrix.npy",
                                          "--labels", labels(f)], ("matrix.npy",)),
    "dwiml-plot-logs": (lambda f, fx: [str(fx.trusted_run), "--out", "runs.png"], ("runs.png",)),
    "dwiml-make-phantom": (lambda f, fx: ["phantom", "--subjects", "3"], ("phantom/",)),
    "dwiml-track": (lambda f, fx: [str(fx.hdf5_run), "tracked.trk", *TRACKED], ("tracked.trk",)),
    "dwiml-track-merge": (lambda f, fx: ["merged.trk", str(fx.shard)], ("merged.trk",)),
    "dwiml-visualize-loss": (lambda f, fx: [str(fx.hdf5_run), "loss.trk", "--subject", "s1", "--select-pct", "50"],
                             ("loss.trk", "loss_best.trk", "loss_worst.trk", "loss.png")),
    "dwiml-visualize-attention": (lambda f, fx: [str(fx.transformer_run), "attention.trk", "--subject", "s1",
                                                 "--nb-streamlines", "1"], ("attention.trk", "attention/")),
}
SLOW = ("dwiml-make-phantom", "dwiml-track", "dwiml-track-merge", "dwiml-visualize-loss", "dwiml-visualize-attention")


@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in REPLACED])
def test_overwrite_replaces_every_output(command, request, tmp_path, monkeypatch):
    arguments, outputs = REPLACED[command]
    monkeypatch.chdir(tmp_path)
    arguments = arguments(tmp_path, Fixtures(request))
    for name in outputs:
        write_old(tmp_path / name.rstrip("/"), name.endswith("/"))
    COMMANDS[command].load()([*arguments, "-f"])
    for name in outputs:
        path = tmp_path / name.rstrip("/")
        if name.endswith("/"):
            assert path.is_dir() and not (path / "kept.txt").exists() and any(path.iterdir()), name
        else:
            assert path.is_file() and path.stat().st_size > 0 and path.read_bytes() != b"a previous output", name
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name or p.name.endswith(".old")]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_prints_dwiml_version(command, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [command, "--version"])
    try:
        COMMANDS[command].load()()
    except SystemExit as stop:
        assert stop.code in (0, None)
    assert capsys.readouterr().out == f"{command} {__version__}\n"


# ---- a few rows through a real process: exit 1, one line, no traceback, nothing left --------------------------

def process_row(command: str, arguments: list[str], folder: Path, culprit: str, cache_dir: Path) -> None:
    before = snapshot(folder)
    env = {**os.environ, "DWIML_CACHE_DIR": str(cache_dir), "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run([str(Path(sys.executable).parent / command), *arguments], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=300)
    text = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in text, text[-3000:]
    # argparse commands write their error on stderr; dwiml-train logs it (Hydra's console log, on stdout)
    lines = (result.stdout if command == "dwiml-train" else result.stderr).strip().splitlines()
    assert len(lines) == 1 and culprit in lines[0], text[-3000:]
    assert not left_behind(before, snapshot(folder))


@pytest.mark.slow
def test_processes_exit_1_with_one_line(cache_dir, trusted_run, tmp_path, side_effects):
    (tmp_path / "tracked.trk").write_text("a previous output")
    process_row("dwiml-track", ["model", "tracked.trk", *TRACK], tmp_path, "tracked.trk exists", cache_dir)
    process_row("dwiml-create-hdf5", ["subjects", "groups.yaml", "missing/data.hdf5"], tmp_path,
                "missing does not exist", cache_dir)
    run = hostile_run(trusted_run, cache_dir, tmp_path / "run", "logger", side_effects)
    process_row("dwiml-train", [f"resume={run}", "trainer.max_epochs=2"], tmp_path,
                f"{run / '.hydra' / 'config.yaml'}: logger._target_ 'os.makedirs' is not a dwiml component", cache_dir)
