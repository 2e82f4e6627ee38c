"""One owner of the run folder's layout (dwiml/run_folder.py) and of atomic writes (dwiml/atomic.py):
no other module of dwiml spells a run-folder name or renames files into place; the layout the
trainer writes is the one the module describes."""
from __future__ import annotations

import ast
import itertools
import os
import shutil
from pathlib import Path

import pytest
import yaml

import dwiml
from helpers import cli, metrics, run_training
from dwiml import run_folder
from dwiml.atomic import atomic_folder
from dwiml.config.schema import SCHEMAS
from dwiml.data.input_spec import Resampling, VolumeDescription
from dwiml.data.neighborhood import Neighborhood
from dwiml.errors import DwimlError
from dwiml.models.io import load_model
from dwiml.run_folder import RunFolder
from dwiml.training.checkpoint import load_checkpoint, save_checkpoint
from dwiml.data.builtin import phantom_hdf5

PACKAGE = Path(dwiml.__file__).parent
NAMES = {value for key, value in vars(run_folder).items() if key.isupper() and isinstance(value, str)}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_only_run_folder_spells_its_names():
    assert {"metrics.csv", "checkpoint", "best_model", ".hydra", "train.log", "plots"} <= NAMES
    spelled = {}
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in NAMES:
                spelled.setdefault(path.relative_to(PACKAGE).as_posix(), set()).add(node.value)
    assert spelled.pop("config/schema.py", set()) <= set(SCHEMAS["logger"])  # the logger presets comet, tensorboard
    assert spelled == {"run_folder.py": NAMES}


def test_only_atomic_renames_into_place():
    renaming = set()
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("replace", "rename") and \
                    isinstance(node.value, ast.Name) and node.value.id == "os":
                renaming.add(path.relative_to(PACKAGE).as_posix())
    assert renaming == {"atomic.py"}


def test_a_trained_run_has_the_layout(cache_dir, tmp_path):
    run_training(cache_dir, tmp_path, ["trainer.max_epochs=1", "trainer.max_batches_per_epoch_training=2"])
    run = RunFolder(tmp_path)
    assert run.is_run() and run.batch_metrics.is_file() and run.metrics_plot.is_file()
    assert run.checkpoint_state() == run.checkpoint / "state.pt"
    assert {p.name for p in run.best_model.iterdir()} == {"model.pt", "model_config.json", "input_spec.json",
                                                           ".complete"}  # written last: the folder is whole
    assert {"model.pt", "model_config.json", "input_spec.json"} < {p.name for p in run.checkpoint.iterdir()}
    assert run.hdf5_path() == phantom_hdf5(cache_dir, nb_subjects=3)
    # the input specification, the same beside both weights, read back from JSON as the step made it
    spec = load_model(run.best_model).spec
    assert spec == load_model(run.checkpoint).spec
    assert (spec.input_group, spec.streamline_group, spec.add_eos_target, spec.dwiml_version) == \
        ("input", "streamlines", False, dwiml.__version__)
    assert spec.volume == VolumeDescription(28, "descoteaux07", 6) and spec.neighborhood == Neighborhood()
    assert (spec.resampling, spec.stored_resampling) == (Resampling(step_size_mm=1.0), Resampling())
    assert spec.voxel_sizes_mm == ((2.0, 2.0, 2.0),) and spec.input_size == 28
    for text, message in (("{", "not JSON"), ('{"format": "other"}', "not a dwiml input specification"),
                          ('{"format": "dwiml-input-spec", "input_group": "input"}', "a malformed input specification")):
        (run.best_model / "input_spec.json").write_text(text)
        with pytest.raises(DwimlError, match=f"{run.best_model / 'input_spec.json'}: {message}"):
            load_model(run.best_model)


@pytest.mark.parametrize("replace", [True, False])
def test_an_atomic_folder_is_complete_or_absent(tmp_path, replace):
    target = tmp_path / "folder"
    with pytest.raises(RuntimeError):
        with atomic_folder(target, replace) as tmp:
            (tmp / "half").write_text("written")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    for content in ("first", "second"):
        with atomic_folder(target, replace) as tmp:
            (tmp / "file").write_text(content)
    # replaced, or kept as the first process made it (another writer's version wins)
    assert (target / "file").read_text() == ("second" if replace else "first")
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]


def dies_at(operation: int, body) -> None:
    """Run ``body`` in a child process that dies at its ``operation``-th rename or folder removal, as a
    SIGKILL would (no cleanup runs); past its last operation it completes."""
    pid = os.fork()
    if pid == 0:
        count = itertools.count()

        def dying(real):
            def call(*args, **kwargs):
                if next(count) == operation:
                    os._exit(137)
                return real(*args, **kwargs)
            return call

        os.replace, shutil.rmtree = dying(os.replace), dying(shutil.rmtree)
        try:
            body()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def test_two_kills_anywhere_in_checkpoint_swaps_leave_a_resumable_run(tmp_path):
    resumed = set()
    for first, second in itertools.product(range(8), repeat=2):  # 7: past the last operation of a save
        run = tmp_path / f"{first}-{second}"
        save_checkpoint(run, {"version": 1})
        dies_at(first, lambda: save_checkpoint(run, {"version": 2}))
        after_first = load_checkpoint(run)["version"]
        dies_at(second, lambda: save_checkpoint(run, {"version": 3}))  # the resumed run's next save
        after_second = load_checkpoint(run)["version"]
        assert after_first in (1, 2) and after_first <= after_second <= 3
        resumed.add((after_first, after_second))
        save_checkpoint(run, {"version": 4})
        assert load_checkpoint(run)["version"] == 4 and [p.name for p in run.iterdir()] == ["checkpoint"]
    assert resumed == {(1, 1), (1, 3), (2, 2), (2, 3)}  # kills before and after each swap's commit


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a folder but the text log (which records the refusals)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "train.log"}


@pytest.mark.slow
def test_a_run_folder_continues_only_by_resume_and_never_changes_its_saved_config(cache_dir, tmp_path):
    run = tmp_path / "run"
    tiny = ["model.hidden_sizes=[8]", "trainer.max_epochs=1", "trainer.max_batches_per_epoch_training=2",
            "trainer.max_batches_per_epoch_validation=1", f"hydra.run.dir={run}"]
    cli(tmp_path, cache_dir, *tiny)
    first = snapshot(run)
    for changed, refused in (([], f"{run} already holds a run: continue it with resume={run} or "
                                  "trainer.auto_resume=true"),
                             (["trainer.auto_resume=true", "optim.lr=0.01"], "changes optim.lr (saved 0.003, now 0.01)"),
                             (["trainer.auto_resume=true", "model=gru"], "changes model.rnn_type (saved 'lstm', now 'gru')")):
        result = cli(tmp_path, cache_dir, *tiny, *changed, check=False)
        out = result.stdout + result.stderr
        assert result.returncode == 1 and refused in out and "Traceback" not in out, out[-2000:]
        assert snapshot(run) == first  # nothing written, nothing rewritten
    cli(tmp_path, cache_dir, *tiny, "trainer.auto_resume=true", "trainer.max_epochs=2")  # a requeued job, extended
    assert (run / ".hydra" / "config.yaml").read_bytes() == first[".hydra/config.yaml"]
    (continuation,) = (run / ".hydra").glob("resumed-*/config.yaml")
    assert yaml.safe_load(continuation.read_text())["trainer"]["max_epochs"] == 2
    assert [r["epoch"] for r in metrics(run)] == ["1", "2"]
    # killed before its first checkpoint: the rerun starts over, and none of the killed attempt's rows stay
    shutil.rmtree(run / "checkpoint")
    cli(tmp_path, cache_dir, *tiny, "trainer.auto_resume=true")
    assert (run / "metrics.csv").read_bytes().splitlines()[1].split(b",")[:3] == \
        first["metrics.csv"].splitlines()[1].split(b",")[:3]  # epoch, train_loss, valid_loss
    assert len(metrics(run)) == 1 and len((run / "batch_metrics.csv").read_text().splitlines()) == 1 + 2
