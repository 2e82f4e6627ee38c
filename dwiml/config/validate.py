"""Every value of the composed training config within its rules, checked once before anything is built
(no data read, no model made): the ranges and choices of the schemas (:mod:`dwiml.ranges`), the
settings that must agree, and a device this machine has. Each failure is one line naming the key."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dwiml.config.schema import (GenerationValidationConfig, Learn2TrackConfig, SphereClassificationConfig,
                                 TransformerConfig)
from dwiml.data.loader import check_options as check_loader
from dwiml.data.neighborhood import Neighborhood
from dwiml.data.sampler import check_batch_size
from dwiml.device import check_device
from dwiml.errors import DwimlError
from dwiml.evaluation.generation import GV_SUBSETS
from dwiml.models.heads.classification import sphere_vertices
from dwiml.models.learn2track import RNN_TYPES
from dwiml.models.transformer import VARIANTS, check_sizes
from dwiml.ranges import Choice, Rule, check, rules_of
from dwiml.training.trainer import check_monitor

# Choices whose list lives with the component that implements them.
COMPONENT_RULES: dict[type, dict[str, Rule]] = {
    Learn2TrackConfig: {"rnn_type": Choice(tuple(RNN_TYPES))},
    TransformerConfig: {"variant": Choice(VARIANTS)},
    GenerationValidationConfig: {"subsets": Choice(GV_SUBSETS)},
}


def check_config(cfg: DictConfig) -> None:
    """A one-line error naming the first key of ``cfg`` (composed, every key valued: see
    :func:`dwiml.config.keys.check_keys`) whose value is out of its rule or disagrees with another's."""
    for key, value, rule in _ruled_values(cfg, ""):
        check(key, value, rule)
    check_device(cfg.device)
    for key in ("batch_size", "validation_batch_size"):
        check_batch_size(cfg.sampler[key], cfg.sampler.unit, f"sampler.{key}")
    check_loader(**_settings(cfg.loader, "streamline_group"))
    if "neighborhood_type" in cfg.step:
        try:
            Neighborhood(cfg.step.neighborhood_type, cfg.step.neighborhood_radius_mm, cfg.step.neighborhood_nb_rings)
        except DwimlError as e:
            raise DwimlError(f"step.{e}") from None
    if "head" in cfg.model and issubclass(OmegaConf.get_type(cfg.model.head), SphereClassificationConfig):
        sphere_vertices(cfg.model.head.sphere)
    if OmegaConf.get_type(cfg.model) is TransformerConfig:
        check_sizes(cfg.model.d_model, cfg.model.nheads)
    check_monitor(cfg.trainer.monitor, None if cfg.gv is not None else ())


def _ruled_values(node: DictConfig, prefix: str) -> Iterator[tuple[str, Any, Rule]]:
    """``(full key, value, rule)`` of every key of ``node`` and below that its schema gives a rule."""
    if node._is_none():
        return
    kind = OmegaConf.get_type(node)
    rules = {**rules_of(kind), **COMPONENT_RULES.get(kind, {})} if dataclasses.is_dataclass(kind) else {}
    children = [key for key in node.keys() if isinstance(node._get_node(key), DictConfig)]
    for key in node.keys():  # a node's own keys first: ``seed`` before ``sampler.seed`` (${seed})
        if key in rules and key not in children:
            yield f"{prefix}{key}", node[key], rules[key]
    for key in children:
        yield from _ruled_values(node._get_node(key), f"{prefix}{key}.")


def _settings(node: DictConfig, *left_out: str) -> dict[str, Any]:
    """A component's keyword arguments from its config node (without ``_target_``)."""
    values = OmegaConf.to_container(node, resolve=True)
    return {k: v for k, v in values.items() if k != "_target_" and k not in left_out}
