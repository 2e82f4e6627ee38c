"""The trust boundary (dwiml/trust.py): hostile model and run folders are refused, naming the file and
key, before anything they name is imported or called; the side effects are looked for on disk."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from dwiml.errors import DwimlError
from dwiml.models.io import build_model, load_model, save_model
from helpers import cli, compose_run, metrics, run_training

TINY = ["model.hidden_sizes=[8]", "sampler.batch_size=10", "trainer.max_epochs=1",
        "trainer.max_batches_per_epoch_training=2", "trainer.max_batches_per_epoch_validation=1"]
HEAD = {"_target_": "dwiml.models.heads.CosineRegression", "_partial_": True, "hidden_sizes": [4]}
MODEL = {"_target_": "dwiml.models.learn2track.Learn2Track", "input_size": 5, "rnn_type": "lstm",
         "hidden_sizes": [8], "nb_previous_dirs": 1, "dropout": 0.0, "head": HEAD}
EVIL = "dwiml_evil_module"  # a module whose import writes a file


def oc_create(path: Path) -> str:
    """An interpolation that, if resolved, builds a node calling os.makedirs(path)."""
    return "${oc.create:{_target_: os.makedirs, name: %s}}" % path


@pytest.fixture
def side_effects(tmp_path, monkeypatch) -> Path:
    """A folder where every hostile payload would write; importable ``dwiml_evil_module`` writes there
    too. Checked empty, and the module unimported, after the test."""
    effects, modules = tmp_path / "effects", tmp_path / "modules"
    effects.mkdir(), modules.mkdir()
    (modules / f"{EVIL}.py").write_text(f"import pathlib\npathlib.Path({str(effects / 'imported')!r}).touch()\n"
                                        "import torch\nclass Model(torch.nn.Module):\n    pass\n")
    monkeypatch.syspath_prepend(str(modules))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(modules), os.environ.get("PYTHONPATH", "")]))
    yield effects
    assert EVIL not in sys.modules and list(effects.iterdir()) == []


def set_key(config: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    for parent in parents:
        config = config[parent]
    config[last] = value


MODEL_CASES = {  # key of model_config.json -> hostile value (a function of the side-effects folder)
    "dropout": lambda e: oc_create(e / "x"),
    "head.hidden_sizes": lambda e: oc_create(e / "x"),
    "head._target_": lambda e: f"{EVIL}.Model",
    "_target_": lambda e: "os.makedirs",
    "head.eos_weight": lambda e: "${oc.env:HOME}",
    "nb_previous_dirs": lambda e: "${input_size}",
    "input_embedding": lambda e: {"_target_": "shutil.copyfile", "src": "/etc/hostname", "dst": str(e / "x")},
}


@pytest.mark.parametrize("key", MODEL_CASES)
def test_a_hostile_model_folder_is_refused_before_any_import(tmp_path, side_effects, key):
    folder = tmp_path / "best_model"
    save_model(build_model(MODEL), MODEL, folder)
    config = json.loads(json.dumps(MODEL))
    set_key(config, key, MODEL_CASES[key](side_effects))
    (folder / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(DwimlError, match=f"{folder / 'model_config.json'}: {key.split('.')[0]}"):
        load_model(folder)


def save_config(run: Path, cache_dir: Path, overrides: list[str], changes: dict | None = None) -> None:
    """Write ``.hydra/config.yaml`` as the app saves it (composed, unresolved), with ``changes``."""
    config = OmegaConf.to_container(compose_run(cache_dir, run, overrides), resolve=False)
    for key, value in (changes or {}).items():
        set_key(config, key, value)
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def trained_run(cache_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trusted") / "run"
    run_training(cache_dir, run, TINY)
    return run


RUN_CASES = {  # key of .hydra/config.yaml -> hostile value
    "logger": lambda e: {"_target_": "os.makedirs", "name": str(e / "x"), "exist_ok": True},
    "model._target_": lambda e: f"{EVIL}.Model",
    "model.dropout": lambda e: oc_create(e / "x"),
    "model.head.hidden_sizes": lambda e: [oc_create(e / "x")],
    "trainer.patience_delta": lambda e: "${oc.env:HOME}",
    "dataset": lambda e: {"_target_": "shutil.copytree", "src": "/etc", "dst": str(e / "x")},
}


def hostile_run(trained_run: Path, cache_dir: Path, folder: Path, key: str, effects: Path) -> Path:
    shutil.copytree(trained_run, folder)
    save_config(folder, cache_dir, TINY, {key: RUN_CASES[key](effects)})
    return folder


@pytest.mark.parametrize("continued", ["resume", "auto_resume"])
@pytest.mark.parametrize("key", RUN_CASES)
def test_a_hostile_run_folder_is_refused_before_any_import(cache_dir, trained_run, tmp_path, side_effects, key,
                                                            continued):
    run = hostile_run(trained_run, cache_dir, tmp_path / "run", key, side_effects)
    how = f"resume={run}" if continued == "resume" else "trainer.auto_resume=true"
    with pytest.raises(DwimlError, match=f"{run / '.hydra' / 'config.yaml'}: {key.split('.')[0]}"):
        run_training(cache_dir, run, [*TINY, how, "trainer.max_epochs=2"])


@pytest.mark.slow
def test_cli_resume_of_a_hostile_run_folder_exits_1_with_one_line(cache_dir, trained_run, tmp_path, side_effects):
    run = hostile_run(trained_run, cache_dir, tmp_path / "run", "logger", side_effects)
    result = cli(tmp_path, cache_dir, f"resume={run}", "trainer.max_epochs=2", check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in out, out[-2000:]
    assert f"{run / '.hydra' / 'config.yaml'}: logger._target_ 'os.makedirs' is not a dwiml component" in out


@pytest.mark.slow
def test_a_run_of_ones_own_model_resumes_when_its_class_is_named(cache_dir, tmp_path, monkeypatch):
    byo = ["model=custom", "model._target_=tests.byo_model.MyModel", "+model.hidden_size=8", *TINY[1:]]
    run_training(cache_dir, tmp_path, byo)
    save_config(tmp_path, cache_dir, byo)
    with pytest.raises(DwimlError, match="model._target_ 'tests.byo_model.MyModel' is not a dwiml component"):
        run_training(cache_dir, tmp_path, [f"resume={tmp_path}", "trainer.max_epochs=2"])
    run_training(cache_dir, tmp_path, [f"resume={tmp_path}", "trainer.max_epochs=2",
                                       "model._target_=tests.byo_model.MyModel"])  # named on the command line
    monkeypatch.setenv("DWIML_TRUSTED_MODULES", "tests.byo_model")
    run_training(cache_dir, tmp_path, [f"resume={tmp_path}", "trainer.max_epochs=3"])
    assert [r["epoch"] for r in metrics(tmp_path)] == ["1", "2", "3"]
