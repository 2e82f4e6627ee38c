"""The trust boundary: what a loaded model folder or run folder may make dwiml build.

Folders are data. A loaded ``model_config.json`` or ``.hydra/config.yaml`` may name, as a
``_target_``, only dwiml's registered components (the ``_target_`` of every config schema and preset
of dwiml) and what the user trusts: the targets of this command's own config (e.g.
``model._target_=...`` on the command line) and the modules listed, comma-separated, in the
environment variable ``DWIML_TRUSTED_MODULES``. Names are checked before anything is imported. An
interpolation (``${...}``) is refused unless it is one that dwiml's own presets write (``${seed}``,
...), so no resolver named by a loaded file is ever evaluated.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from dwiml import conf
from dwiml.config.schema import SCHEMAS
from dwiml.errors import DwimlError

TRUSTED_MODULES = "DWIML_TRUSTED_MODULES"
TARGET = "_target_"


def check_loaded(config: Any, source: str | Path, named: Iterable[str] = (), own_interpolations: bool = True) -> None:
    """Refuse ``config`` (plain data read from ``source``, nothing resolved) when it names a ``_target_``
    that is not trusted or holds an interpolation: any, or with ``own_interpolations`` any that is not
    one of dwiml's presets. ``named``: the targets this command's own config names."""
    targets, interpolations = registry()
    trusted = targets | set(named)
    allowed = interpolations if own_interpolations else frozenset()
    for key, value in leaves(config):
        if "${" in key or isinstance(value, str) and "${" in value and value not in allowed:
            raise DwimlError(f"{source}: {key}: the interpolation {value!r} is refused in a loaded file"
                             + (" (only those of dwiml's own presets are evaluated)" if own_interpolations else ""))
        if key.rsplit(".", 1)[-1] == TARGET and not _is_trusted(value, trusted):
            raise DwimlError(f"{source}: {key} {value!r} is not a dwiml component; if you trust its code, "
                             f"name it on the command line or set {TRUSTED_MODULES}=<its module>")


def targets_of(config: Any) -> set[str]:
    """Every ``_target_`` of a plain config."""
    return {value for key, value in leaves(config) if key.rsplit(".", 1)[-1] == TARGET and isinstance(value, str)}


def leaves(config: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every leaf of nested dicts and lists."""
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else None
    if items is None:
        yield prefix, config
        return
    for key, value in items:
        yield from leaves(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}")


@functools.cache
def registry() -> tuple[frozenset[str], frozenset[str]]:
    """dwiml's registered ``_target_`` names and the interpolations its presets write (Hydra's own
    settings, ``hydra:`` and ``conf/hydra/``, excluded)."""
    targets = {field.default for schemas in SCHEMAS.values() for schema in schemas.values()
               for field in dataclasses.fields(schema) if field.name == TARGET and isinstance(field.default, str)}
    interpolations = set()
    root = Path(conf.__file__).parent
    for path in root.rglob("*.yaml"):
        if path.relative_to(root).parts[0] == "hydra":
            continue
        preset = yaml.safe_load(path.read_text()) or {}
        for key, value in leaves({k: v for k, v in preset.items() if k != "hydra"}):
            if key.rsplit(".", 1)[-1] == TARGET:
                targets.add(value)
            elif isinstance(value, str) and "${" in value:
                interpolations.add(value)
    return frozenset(targets - {"???"}), frozenset(interpolations)


def _is_trusted(target: Any, trusted: set[str]) -> bool:
    modules = [m.strip() for m in os.environ.get(TRUSTED_MODULES, "").split(",") if m.strip()]
    return isinstance(target, str) and (target in trusted or any(target.startswith(f"{m}.") for m in modules))
