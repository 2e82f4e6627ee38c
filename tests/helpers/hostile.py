"""Hostile model and run folders (tests/test_trust.py, tests/test_bad_inputs_outputs.py): configs whose values
would import or call something if dwiml's trust boundary (dwiml/trust.py) let them through. Every payload writes
into a side-effects folder (the ``side_effects`` fixture of tests/conftest.py), where the tests look for it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from dwiml.models.io import build_model, save_model
from helpers import compose_run

TINY = ["model.hidden_sizes=[8]", "sampler.batch_size=10", "trainer.max_epochs=1",
        "trainer.max_batches_per_epoch_training=2", "trainer.max_batches_per_epoch_validation=1"]
HEAD = {"_target_": "dwiml.models.heads.CosineRegression", "_partial_": True, "hidden_sizes": [4]}
MODEL = {"_target_": "dwiml.models.learn2track.Learn2Track", "input_size": 5, "rnn_type": "lstm",
         "hidden_sizes": [8], "nb_previous_dirs": 1, "dropout": 0.0, "head": HEAD}
EVIL = "dwiml_evil_module"  # a module whose import writes a file


def write_evil_module(modules: Path, effects: Path) -> None:
    """``modules/dwiml_evil_module.py``: its import touches ``effects/imported``; it holds an ``nn.Module``."""
    (modules / f"{EVIL}.py").write_text(f"import pathlib\npathlib.Path({str(effects / 'imported')!r}).touch()\n"
                                        "import torch\nclass Model(torch.nn.Module):\n    pass\n")


def oc_create(path: Path) -> str:
    """An interpolation that, if resolved, builds a node calling os.makedirs(path)."""
    return "${oc.create:{_target_: os.makedirs, name: %s}}" % path


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

RUN_CASES = {  # key of .hydra/config.yaml -> hostile value
    "logger": lambda e: {"_target_": "os.makedirs", "name": str(e / "x"), "exist_ok": True},
    "model._target_": lambda e: f"{EVIL}.Model",
    "model.dropout": lambda e: oc_create(e / "x"),
    "model.head.hidden_sizes": lambda e: [oc_create(e / "x")],
    "trainer.patience_delta": lambda e: "${oc.env:HOME}",
    "dataset": lambda e: {"_target_": "shutil.copytree", "src": "/etc", "dst": str(e / "x")},
}


def hostile_model(folder: Path, key: str, effects: Path) -> Path:
    """A saved model folder whose ``model_config.json`` holds ``MODEL_CASES[key]``."""
    save_model(build_model(MODEL), MODEL, folder)
    config = json.loads(json.dumps(MODEL))
    set_key(config, key, MODEL_CASES[key](effects))
    (folder / "model_config.json").write_text(json.dumps(config))
    return folder


def save_config(run: Path, cache_dir: Path, overrides: list[str], changes: dict | None = None) -> None:
    """Write ``.hydra/config.yaml`` as the app saves it (composed, unresolved), with ``changes``."""
    config = OmegaConf.to_container(compose_run(cache_dir, run, overrides), resolve=False)
    for key, value in (changes or {}).items():
        set_key(config, key, value)
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))


def hostile_run(trained_run: Path, cache_dir: Path, folder: Path, key: str, effects: Path) -> Path:
    """A copy of ``trained_run`` (trained with ``TINY``) whose ``.hydra/config.yaml`` holds ``RUN_CASES[key]``."""
    shutil.copytree(trained_run, folder)
    save_config(folder, cache_dir, TINY, {key: RUN_CASES[key](effects)})
    return folder
