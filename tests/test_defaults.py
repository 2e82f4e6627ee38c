"""Defaults have one home, the YAML presets of dwiml/conf: a schema gives keys and types with no
values, every preset sets every key of its schema, a dwiml constructor's default (where it has
one) equals the value of every preset that builds it, and an experiment preset pins every setting
of a run. Importing dwiml registers nothing in Hydra's ConfigStore."""
from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.utils import get_object
from omegaconf import MISSING, OmegaConf

import dwiml.conf
from dwiml.config.schema import SCHEMAS, TrainConfig, schema_name

CONF = Path(dwiml.conf.__file__).parent
WHOLE_RUN_GROUPS = ("experiment", "hparams_search", "hydra")  # presets of whole runs, and Hydra's own
# Settings of how a run is executed and reported, which do not change its results (the keys that
# may change on resume, and the places of files): an experiment need not pin them.
OPERATIONAL = ("device", "num_workers", "resume", "logger", "gv", "dataset.cache_dir", "dataset.lazy",
               "dataset.cache_bytes", "step.volume_cache_size", "trainer.progress_bar", "trainer.auto_resume",
               "trainer.max_minutes", "trainer.checkpoint_every_minutes", "trainer.checkpoint_every_batches",
               "trainer.plot_every_epochs")


def group_presets() -> list[tuple[str, str]]:
    """(group, option) of every preset of a config group that names a schema."""
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        group = path.parent.relative_to(CONF).as_posix()
        if group != "." and not group.startswith(WHOLE_RUN_GROUPS) and schema_of(group, path.stem) is not None:
            found.append((group, path.stem))
    return found


def schema_of(group: str, option: str):
    """The schema a preset names in its defaults list (None for a preset without one, e.g. model=custom)."""
    defaults = yaml.safe_load((CONF / group / f"{option}.yaml").read_text()).get("defaults", [])
    by_name = {f"/{schema_name(group, name)}@_here_": schema for name, schema in SCHEMAS.get(group, {}).items()}
    named = [by_name[d] for d in defaults if isinstance(d, str) and d in by_name]
    return named[0] if named else None


def composed(overrides: list[str]):
    with initialize_config_module("dwiml.conf", version_base="1.3"):
        return compose("train", overrides=overrides)


def leaves(node: dict, prefix: str = "") -> set[str]:
    """Dotted keys of the values of a nested dict (``_target_``/``_partial_`` left out)."""
    keys = set()
    for key, value in node.items():
        if isinstance(value, dict) and value:
            keys |= leaves(value, f"{prefix}{key}.")
        elif not key.startswith("_"):
            keys.add(f"{prefix}{key}")
    return keys


def test_schemas_give_keys_and_types_but_no_values():
    unset = [(group, name) for group, schemas in SCHEMAS.items() for name in schemas]
    for schema in [TrainConfig, *(SCHEMAS[g][n] for g, n in unset)]:
        for f in dataclasses.fields(schema):
            if f.name in ("_target_", "_partial_") or (schema, f.name) == (TrainConfig, "gv"):
                continue  # what the schema builds; an optional group, None until selected
            assert f.default == MISSING and f.default_factory is dataclasses.MISSING, f"{schema.__name__}.{f.name}"


def test_every_schema_is_named_by_a_preset():
    named = {id(schema_of(group, option)) for group, option in group_presets()}
    assert [s.__name__ for schemas in SCHEMAS.values() for s in schemas.values() if id(s) not in named] == []


@pytest.mark.parametrize("group,option", group_presets())
def test_presets_set_every_key_and_constructors_agree(group, option):
    node = OmegaConf.select(composed([f"{group}={option}"]), group.replace("/", "."))
    assert set(OmegaConf.missing_keys(node)) <= {"dataset.hdf5_path"}, "the preset leaves keys of its schema unset"
    values = OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
    target = get_object(values["_target_"])
    if not target.__module__.startswith("dwiml."):
        return  # torch's optimizers and schedulers: their defaults are torch's, the presets say ours
    for name, parameter in inspect.signature(target).parameters.items():
        if name in values and not isinstance(values[name], dict) and parameter.default is not parameter.empty:
            default = list(parameter.default) if isinstance(parameter.default, tuple) else parameter.default
            assert default == values[name], (f"{target.__qualname__}({name}={parameter.default!r}) but "
                                             f"{group}/{option}.yaml says {values[name]!r}")


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_experiment_presets_pin_every_setting(experiment):
    """Every key of the composed config that can change a run's result is set in the experiment
    file itself, and every config group is selected there: changing a group preset leaves it as it is."""
    cfg = OmegaConf.to_container(composed([f"experiment={experiment}"]), resolve=False)
    text = yaml.safe_load((CONF / "experiment" / f"{experiment}.yaml").read_text())
    selected = {next(iter(d)).removeprefix("override /") for d in text.pop("defaults") if isinstance(d, dict)}
    groups = {"dataset", "sampler", "loader", "model", "model/head", "model/input_embedding", "optim", "scheduler",
              "step", "trainer"}
    assert groups <= selected
    wanted = {key for key in leaves(cfg) if not key.startswith(OPERATIONAL)}
    assert sorted(wanted - leaves(text)) == []


@pytest.mark.slow
def test_importing_dwiml_registers_nothing_in_hydra():
    code = ("import dwiml.models, dwiml.models.io, dwiml.training.run, dwiml.tracking.subject, dwiml.config\n"
            "from hydra.core.config_store import ConfigStore\n"
            "from omegaconf import OmegaConf\n"
            "repo = ConfigStore.instance().repo\n"
            "assert not {'train_schema.yaml', 'dataset', 'model', 'trainer'} & set(repo), sorted(repo)\n"
            "assert not OmegaConf.has_resolver('dwiml_run_dir')\n")
    subprocess.run([sys.executable, "-c", code], check=True)
