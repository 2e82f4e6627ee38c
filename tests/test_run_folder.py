"""One owner of the run folder's layout (dwiml/run_folder.py) and of atomic writes (dwiml/atomic.py):
no other module of dwiml spells a run-folder name or renames files into place; the layout the
trainer writes is the one the module describes."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dwiml
from helpers import run_training
from dwiml import run_folder
from dwiml.atomic import atomic_folder
from dwiml.config.schema import SCHEMAS
from dwiml.data.input_spec import Resampling, VolumeDescription
from dwiml.data.neighborhood import Neighborhood
from dwiml.errors import DwimlError
from dwiml.models.io import load_model
from dwiml.run_folder import RunFolder

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
    assert run.hdf5_path() == next(cache_dir.glob("phantom-*")) / "phantom.hdf5"
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
