"""Convert an HDF5 file made by dwi_ml (``dwiml_create_hdf5_dataset``) into a dwiml HDF5, without the raw files.

What is read of dwi_ml's layout:

- root attributes ``training_subjs``, ``validation_subjs``, ``testing_subjs`` (lists of names),
  ``groups_config`` (a Python literal of the JSON config), ``step_size`` / ``nb_points`` /
  ``compress`` (a number, or ``"Not defined by user"``);
- volume groups (``type="volume"``): ``data`` (X, Y, Z, F) and attribute ``affine``;
- streamline groups (``type="streamlines"``): ``data`` (N, 3) points in voxel space with the
  corner origin (attributes ``space``, ``origin``), ``offsets``, ``lengths``, ``euclidean_lengths``
  (mm), ``data_per_streamline/<key>``, attributes ``affine``, ``dimensions``, ``voxel_sizes``,
  ``voxel_order``, and optionally ``connectivity_matrix`` with ``connectivity_label_volume``
  (``connectivity_matrix_type="from_labels"``) or ``connectivity_nb_blocs`` (``"from_blocs"``).

Points move to dwiml's convention (voxel centres at integers, :mod:`dwiml.data.coords`), volumes
are chunked as dwiml writes them, and the resampling rule and the config's standardization are
kept, so the file trains like one made by ``dwiml-create-hdf5``.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import h5py
import numpy as np

from dwiml.atomic import atomic_path
from dwiml.data import coords
from dwiml.data.hdf5 import FORMAT, SUBSETS, check_layout, open_any_hdf5, write_group, write_root_attrs
from dwiml.data.hdf5_subject import GroupArrays
from dwiml.errors import DwimlError

NOT_DEFINED = "Not defined by user"
RESAMPLING = {"step_size": "step_size_mm", "nb_points": "nb_points", "compress": "compress_mm"}
ORIGIN_SHIFT = {"Origin.TRACKVIS": -0.5, "Origin.NIFTI": 0.0}  # to voxel centres at integers


def convert_dwi_ml_hdf5(source: str | Path, out_path: str | Path, compression: str | None = None) -> Path:
    """Write the dwiml version of the dwi_ml HDF5 ``source`` to ``out_path`` (under a temporary
    name, renamed when complete); return its path."""
    source = Path(source)
    with open_any_hdf5(source) as src:
        if src.attrs.get("format") == FORMAT:
            raise DwimlError(f"{source} is already a dwiml HDF5 file")
        subsets = {subset: _names(src, f"{subset}_subjs") for subset in SUBSETS}
        config, resampling = _groups_config(src), _resampling(src)
        missing = [s for names in subsets.values() for s in names if s not in src]
        if missing:
            raise DwimlError(f"{source}: subject(s) {missing} are listed but have no group")
        with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as h5:
            for subject in (s for names in subsets.values() for s in names):
                for name, node in src[subject].items():
                    where = f"{source}: subject '{subject}', group '{name}'"
                    group = (_volume(node, config.get(name, {}), where) if node.attrs.get("type") == "volume"
                             else _streamlines(node, resampling, where))
                    write_group(h5.require_group(subject), name, group, compression)
            write_root_attrs(h5, _dwiml_config(config, resampling), subsets,
                             {"compression": compression, "converted_from": str(source)})
            check_layout(h5, source)  # e.g. feature counts that differ between subjects
    return Path(out_path)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _names(src: h5py.File, key: str) -> list[str]:
    if key not in src.attrs:
        raise DwimlError(f"{src.filename} is not a dwi_ml HDF5 file (no root attribute '{key}')")
    value = src.attrs[key]
    return [_text(value)] if isinstance(value, (str, bytes)) else [_text(v) for v in np.ravel(value)]


def _groups_config(src: h5py.File) -> dict:
    """dwi_ml's config (``str(dict)``), read as a literal (nothing in it is evaluated)."""
    try:
        config = ast.literal_eval(_text(src.attrs["groups_config"]))
    except (KeyError, ValueError, SyntaxError) as e:
        raise DwimlError(f"{src.filename}: the root attribute 'groups_config' is no readable dict ({e})") from None
    if not isinstance(config, dict):
        raise DwimlError(f"{src.filename}: the root attribute 'groups_config' is no dict")
    return config


def _resampling(src: h5py.File) -> dict:
    """dwiml's resampling rule from dwi_ml's root attributes (at most one is defined)."""
    rule = {}
    for key, name in RESAMPLING.items():
        value = src.attrs.get(key, NOT_DEFINED)
        if _text(value) != NOT_DEFINED:
            rule[name] = int(value) if name == "nb_points" else float(value)
    return rule


def _dwiml_config(config: dict, resampling: dict) -> dict:
    """The groups config stored in the converted file: what dwiml reads of each group."""
    kept = ("type", "files", "standardization", "std_mask", "dps_keys")
    out = {}
    for name, group in config.items():
        out[name] = {k: group[k] for k in kept if k in group}
        if group.get("type") == "streamlines":
            out[name].update(resampling)
    return out


def _volume(node: h5py.Group, group: dict, where: str) -> GroupArrays:
    if "data" not in node or node["data"].ndim != 4 or "affine" not in node.attrs:
        raise DwimlError(f"{where}: a dwi_ml volume group has a 4D 'data' and an 'affine'")
    data = node["data"][:].astype(np.float32)
    nb_bad = int((~np.isfinite(data)).any(axis=-1).sum())
    if nb_bad:
        raise DwimlError(f"{where}: {nb_bad} voxel(s) with NaN or Inf values")
    affine = np.asarray(node.attrs["affine"], dtype=np.float64)
    files = group.get("files", [])
    attrs = dict(type="volume", affine=affine, voxel_sizes=coords.voxel_sizes(affine), nb_features=data.shape[-1],
                 standardization=str(group.get("standardization", "none")),
                 files=json.dumps([files] if isinstance(files, str) else list(files)))
    return GroupArrays(attrs, {"data": data})


def _streamlines(node: h5py.Group, resampling: dict, where: str) -> GroupArrays:
    missing = [k for k in ("data", "offsets", "lengths", "euclidean_lengths") if k not in node]
    missing += [k for k in ("affine", "dimensions", "voxel_sizes", "voxel_order") if k not in node.attrs]
    if missing or node.attrs.get("type") != "streamlines":
        raise DwimlError(f"{where}: not a dwi_ml volume or streamline group (type "
                         f"{node.attrs.get('type')!r}, missing {missing})")
    space, origin = _text(node.attrs.get("space", "Space.VOX")), _text(node.attrs.get("origin", "Origin.TRACKVIS"))
    if space != "Space.VOX" or origin not in ORIGIN_SHIFT:
        raise DwimlError(f"{where}: streamlines in {space}, {origin}; dwi_ml stores Space.VOX with "
                         f"{' or '.join(ORIGIN_SHIFT)}")
    lengths = node["lengths"][:].astype(np.int64)
    datasets = {"points": (node["data"][:] + ORIGIN_SHIFT[origin]).astype(np.float32),
                "offsets": np.cumsum(lengths) - lengths, "lengths": lengths,
                "lengths_mm": node["euclidean_lengths"][:].astype(np.float32)}
    if "data_per_streamline" in node:
        datasets.update({f"data_per_streamline/{k}": v[:] for k, v in node["data_per_streamline"].items()})
    attrs = dict(type="streamlines", affine=node.attrs["affine"], dimensions=node.attrs["dimensions"],
                 voxel_sizes=node.attrs["voxel_sizes"], voxel_order=_text(node.attrs["voxel_order"]),
                 files="[]", resampling=json.dumps(resampling))
    kind = _text(node.attrs.get("connectivity_matrix_type", ""))
    if "connectivity_matrix" in node:
        datasets["connectivity_matrix"] = node["connectivity_matrix"][:].astype(np.int64)
        if kind == "from_labels":
            attrs["connectivity_type"] = "labels"
            datasets["connectivity_labels"] = node["connectivity_label_volume"][:].astype(np.int32)
        elif kind == "from_blocs":
            attrs["connectivity_type"] = "blocs"
            attrs["connectivity_nb_blocs"] = np.asarray(node.attrs["connectivity_nb_blocs"], dtype=np.int64)
        else:
            raise DwimlError(f"{where}: connectivity_matrix_type {kind!r} is neither 'from_labels' nor 'from_blocs'")
    return GroupArrays(attrs, datasets)
