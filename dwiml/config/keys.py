"""The composed config against its schemas, before anything is built: every key has a value, and no
key is one its schema does not declare (``+trainer.max_epoch=2`` adds a key Hydra does not check)."""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterator

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dwiml.errors import DwimlError


def check_keys(cfg: DictConfig) -> None:
    """A one-line error naming the keys left without a value (``???``), whose value cannot be resolved
    (``${...}``), or unknown to their schema."""
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise DwimlError(f"{e.full_key}: {str(e).splitlines()[0]}") from None  # without the object type
    if missing:
        raise DwimlError(f"{', '.join(missing)}: no value given (set it on the command line: {missing[0]}=...)")
    for key, declared in _unknown_keys(cfg, ""):
        parent, _, leaf = key.rpartition(".")
        close = difflib.get_close_matches(leaf, declared, n=1)
        hint = f"; did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
        raise DwimlError(f"{key}: no such key in this config{hint}")


def _unknown_keys(node: DictConfig, prefix: str) -> Iterator[tuple[str, list[str]]]:
    """(full key, the keys its schema declares) for each key of ``node`` and below outside its schema."""
    if node._is_none():
        return
    kind = OmegaConf.get_type(node)
    declared = [f.name for f in dataclasses.fields(kind)] if dataclasses.is_dataclass(kind) else None
    for key in node.keys():
        if declared is not None and key not in declared:
            yield f"{prefix}{key}", declared
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            yield from _unknown_keys(child, f"{prefix}{key}.")
