"""The dwiml HDF5 format: build one from per-subject NIfTI volumes and tractograms, and open one.

Layout::

    /                     attrs: format="dwiml", format_version, training_subjects,
                                 validation_subjects, testing_subjects (JSON lists),
                                 groups_config (JSON), space="vox", origin="nifti",
                                 creation (JSON: compression, enforce_files_presence, skipped_subjects,
                                 and {subject: {group: count}} of removed_invalid, empty_files,
                                 non_finite_replaced)
    /<subject>/<volume group>       attrs: type="volume", affine, voxel_sizes, nb_features (equal in every
                                           subject), standardization, files, non_finite_replaced (with
                                           nan_to: voxels replaced), and as declared in the groups
                                           config: sh_basis, sh_order, channel_names (JSON)
        data        (X, Y, Z, F) float32, chunked in blocks of 16^3 voxels x F channels
    /<subject>/<streamline group>   attrs: type="streamlines", affine, dimensions, voxel_sizes,
                                           voxel_order, files, empty_files (tractograms with 0 streamlines),
                                           resampling (JSON, e.g. {"step_size_mm": 1.0}),
                                           removed_invalid (with remove_invalid: streamlines dropped)
        points      (N, 3) float32, dwiml voxel space (see dwiml.data.coords)
        offsets     (B,) int64, lengths (B,) int64, lengths_mm (B,) float32
        data_per_streamline/<key>   (B, ...)   kept dps_keys
        data_per_point/<key>        (N, ...)   kept dpp_keys, packed like points
        connectivity_matrix         (M, M)     optional, with attr connectivity_type="labels" and
        connectivity_labels         (X, Y, Z) int32, or connectivity_type="blocs" and attr
                                               connectivity_nb_blocs (3 ints, M = their product)
                                   (how points map to rows: dwiml.data.connectivity)

Per-subject reading lives in :mod:`dwiml.data.hdf5_subject`; inspection in :mod:`dwiml.data.hdf5_tools`.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import signal
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import yaml
from tqdm import tqdm

from dwiml.atomic import atomic_folder, atomic_path
from dwiml.data.hdf5_subject import RESAMPLING_KEYS, GroupArrays, MissingFileError, read_subject, save_group
from dwiml.data.input_spec import DECLARATION_KEYS, check_declaration
from dwiml.errors import DwimlError

log = logging.getLogger(__name__)

FORMAT = "dwiml"
FORMAT_VERSION = 1
SUBSETS = ("training", "validation", "testing")
EMPTY_SET_CONSEQUENCES = {"training": "this file cannot train a model",
                          "validation": "training on it monitors train_loss (no validation loss, no "
                                        "generation validation)"}
STANDARDIZATIONS = ("none", "all", "independent", "per_file")
COMPRESSIONS = ("gzip", "lzf")
CHUNK_VOXELS = 16
# Group attributes counted at creation (logged, and kept per subject and group in the root's creation attribute).
COUNTED = {"removed_invalid": "removed %d streamline(s) leaving the volume",
           "empty_files": "%d empty tractogram(s), contributing no streamlines",
           "non_finite_replaced": "%d voxel(s) with NaN or Inf replaced by nan_to"}
GROUP_KEYS = {
    "volume": {"type", "files", "standardization", "std_mask", "nan_to", *DECLARATION_KEYS},
    "streamlines": {"type", "files", "dps_keys", "dpp_keys", "remove_invalid", *RESAMPLING_KEYS,
                    "connectivity_matrix", "connectivity_labels", "connectivity_nb_blocs"},
}

NAME_LIST_KEYS = ("std_mask", "dps_keys", "dpp_keys")  # besides files: a name or a list of names


def load_groups_config(path: str | Path) -> dict:
    """Read and check a groups config (YAML or JSON): ``{group: {type, files, ...}}``."""
    path = Path(path)
    if not path.is_file():
        raise DwimlError(f"groups config {path} does not exist")
    where = f"groups config {path}"
    try:
        text = path.read_text()
        config = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except UnicodeDecodeError:
        raise DwimlError(f"{where} is not a text file") from None
    except json.JSONDecodeError as e:
        raise DwimlError(f"{where}, line {e.lineno}: invalid JSON ({e.msg})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise DwimlError(f"{where}{line}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    check_groups_config(config, where)
    return config


def check_groups_config(config: dict, where: str = "groups config") -> None:
    """Check group types, keys and values; the error names the group and the key."""
    if not isinstance(config, dict) or not config:
        raise DwimlError(f"{where}: expected a mapping of group names to groups")
    for name, group in config.items():
        here = f"{where}, group '{name}'"
        if not isinstance(name, str) or not name or "/" in name or name == ".":
            raise DwimlError(f"{here}: a group name is a non-empty string without '/'")
        if not isinstance(group, dict) or group.get("type") not in GROUP_KEYS:
            raise DwimlError(f"{here}: 'type' must be 'volume' or 'streamlines'")
        for key in ("files", *(k for k in NAME_LIST_KEYS if group.get(k) not in (None, []))):
            if not _is_name_list(group.get(key)):
                what = "a key" if key.endswith("_keys") else "a file name (or glob pattern)"
                raise DwimlError(f"{here}: '{key}' must be {what} or a non-empty list of them, "
                                 f"got {group.get(key)!r}")
        for key in ("connectivity_matrix", "connectivity_labels"):
            if group.get(key) is not None and not (isinstance(group[key], str) and group[key]):
                raise DwimlError(f"{here}: '{key}' must be a file name, got {group[key]!r}")
        unknown = set(group) - GROUP_KEYS[group["type"]]
        if unknown:
            raise DwimlError(f"{here}: unknown key(s) {sorted(unknown)}; allowed: {sorted(GROUP_KEYS[group['type']])}")
        if group.get("standardization", "none") not in STANDARDIZATIONS:
            raise DwimlError(f"{here}: standardization must be one of {STANDARDIZATIONS}")
        resampling = [k for k in RESAMPLING_KEYS if group.get(k) is not None]
        if len(resampling) > 1:
            raise DwimlError(f"{here}: give at most one of {resampling}")
        if resampling and not (isinstance(group[resampling[0]], (int, float)) and group[resampling[0]] > 0):
            raise DwimlError(f"{here}: {resampling[0]} must be a positive number")
        if resampling and group.get("dpp_keys"):
            raise DwimlError(f"{here}: dpp_keys cannot be kept when resampling ({resampling[0]})")
        if group["type"] == "streamlines":
            if not isinstance(group.get("remove_invalid", False), bool):
                raise DwimlError(f"{here}: remove_invalid must be true or false")
            _check_connectivity(group, here)
        else:
            nan_to = group.get("nan_to")
            if nan_to is not None and not (isinstance(nan_to, (int, float)) and not isinstance(nan_to, bool)
                                           and np.isfinite(nan_to)):
                raise DwimlError(f"{here}: nan_to must be a finite number (the value replacing NaN and Inf), "
                                 f"got {nan_to!r}")
            check_declaration(group, here)
    if not any(g["type"] == "volume" for g in config.values()):
        raise DwimlError(f"{where}: needs at least one volume group (the reference space)")


def _is_name_list(value) -> bool:
    """A non-empty string, or a non-empty list of them."""
    names = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    return bool(names) and all(isinstance(n, str) and n for n in names)


def _check_connectivity(group: dict, where: str) -> None:
    given = [k for k in ("connectivity_labels", "connectivity_nb_blocs") if group.get(k) is not None]
    if bool(group.get("connectivity_matrix")) != (len(given) == 1):
        raise DwimlError(f"{where}: connectivity_matrix goes with exactly one of connectivity_labels or "
                         f"connectivity_nb_blocs (got matrix: {bool(group.get('connectivity_matrix'))}, {given})")
    blocs = group.get("connectivity_nb_blocs")
    if blocs is not None and not (np.size(blocs) in (1, 3) and np.all(np.asarray(blocs) > 0)):
        raise DwimlError(f"{where}: connectivity_nb_blocs must be a positive int or 3 positive ints")


def read_subject_list(path: str | Path) -> list[str]:
    """Subject names, one per line (blank lines and ``#`` comments ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DwimlError(f"subject list {path} does not exist")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DwimlError(f"subject list {path} is not a text file") from None
    lines = (line.split("#")[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def create_hdf5(subjects_dir: str | Path, groups_config: dict, out_path: str | Path,
                training: list[str], validation: list[str], testing: list[str], *,
                enforce_files_presence: bool = True, compression: str | None = None, processes: int = 1,
                save_intermediate: str | Path | None = None) -> Path:
    """Build a dwiml HDF5 (layout in the module docstring); return its path.

    Subjects are read by ``processes`` worker processes (spawned: a calling script needs the
    ``if __name__ == "__main__"`` guard) and written by this one, as h5py writes from one process.
    The file is written under a temporary name and renamed only when complete.
    With ``enforce_files_presence=False``, a subject missing a file of a group is skipped with a
    warning and left out of its subject list (listed in the ``creation`` attribute). An empty training or
    validation set is reported with a warning. Every subject of a volume group must have the same feature
    count; empty tractograms and replaced NaN/Inf (``nan_to``) are counted (see :data:`COUNTED`). Compression:
    ``"gzip"``, ``"lzf"`` or None. ``save_intermediate``: a folder receiving each subject's groups
    as ``<subject>/<group>.nii.gz`` / ``.trk``, written under a temporary name too.
    """
    check_groups_config(groups_config)
    if compression not in (*COMPRESSIONS, None):
        raise DwimlError(f"compression must be one of {COMPRESSIONS} or none, got '{compression}'")
    subjects_dir, out_path = Path(subjects_dir), Path(out_path)
    subsets = dict(zip(SUBSETS, (training, validation, testing)))
    _check_subjects(subjects_dir, subsets)
    names = [name for subset in subsets.values() for name in subset]
    read = partial(_read_or_skip, groups_config=groups_config, enforce_files_presence=enforce_files_presence)
    skipped: dict[str, str] = {}
    counts: dict[str, dict[str, dict[str, int]]] = {key: {} for key in COUNTED}
    features: dict[str, tuple[str, int]] = {}
    intermediate = nullcontext(None) if save_intermediate is None else atomic_folder(save_intermediate)
    with intermediate as intermediate_dir, atomic_path(out_path) as tmp_path:
        with _mapped(read, [subjects_dir / n for n in names], processes) as results, \
                h5py.File(tmp_path, "w") as h5:
            for name, result in zip(names, tqdm(results, total=len(names), desc="subjects", disable=None)):
                if isinstance(result, str):
                    log.warning("skipping subject '%s': %s", name, result)
                    skipped[name] = result
                    continue
                for group_name, group in result.items():
                    _check_features(name, group_name, group, features)
                    _report(name, group_name, group, counts)
                    write_group(h5.require_group(name), group_name, group, compression)
                    if intermediate_dir is not None:
                        _save_intermediate(intermediate_dir / name, group_name, group)
            if len(skipped) == len(names):
                raise DwimlError(f"every subject was skipped for missing files: {skipped}")
            stored = {subset: [s for s in subjects if s not in skipped] for subset, subjects in subsets.items()}
            write_root_attrs(h5, groups_config, stored, {"compression": compression, "skipped_subjects": skipped,
                                                         "enforce_files_presence": enforce_files_presence,
                                                         **counts})
    for subset, consequence in EMPTY_SET_CONSEQUENCES.items():
        if not stored[subset]:
            log.warning("%s: no %s subjects%s: %s", out_path, subset, " left" if subsets[subset] else "", consequence)
    return out_path


def _check_features(subject: str, name: str, group: GroupArrays, seen: dict[str, tuple[str, int]]) -> None:
    """Every subject's volume group ``name`` has the feature count of the first subject's."""
    if group.attrs["type"] != "volume":
        return
    first, nb = seen.setdefault(name, (subject, int(group.attrs["nb_features"])))
    if int(group.attrs["nb_features"]) != nb:
        raise DwimlError(f"group '{name}': subject '{subject}' has {group.attrs['nb_features']} features but "
                         f"subject '{first}' has {nb}: every subject of a group needs the same channels")


def _report(subject: str, name: str, group: GroupArrays, counts: dict[str, dict[str, dict[str, int]]]) -> None:
    """Log and record what creation changed or found in a group (:data:`COUNTED`), and a group without
    streamlines."""
    for key, message in COUNTED.items():
        if group.attrs.get(key):
            log.warning("subject '%s', group '%s': %s", subject, name, message % group.attrs[key])
            counts[key].setdefault(subject, {})[name] = int(group.attrs[key])
    if group.attrs["type"] == "streamlines" and not len(group.datasets["lengths"]):
        log.warning("subject '%s', group '%s' has no streamlines: it gives training or validation no batches",
                    subject, name)


def _read_or_skip(subject_dir: Path, groups_config: dict, enforce_files_presence: bool) -> dict | str:
    """A subject's groups, or the reason it is skipped (a missing file, when presence is not enforced)."""
    try:
        return read_subject(subject_dir, groups_config)
    except MissingFileError as e:
        if enforce_files_presence:
            raise
        return str(e)


@contextmanager
def _mapped(function: Callable, items: list, processes: int) -> Iterator[Iterator]:
    """``function`` over ``items`` in order, in ``processes`` worker processes (in this one if 1)."""
    if processes <= 1 or len(items) <= 1:
        yield map(function, items)
        return
    processes = min(processes, len(items))
    with multiprocessing.get_context("spawn").Pool(processes, initializer=_ignore_interrupts) as pool:
        yield _in_order(pool, function, items, window=processes + 1)


def _ignore_interrupts() -> None:
    """A reading worker leaves Ctrl-C (SIGINT to the process group) to the main process, which ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _in_order(pool, function: Callable, items: list, window: int) -> Iterator:
    """Results in order, with at most ``window`` subjects in flight (bounded memory, unlike ``imap``)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.apply_async(function, (item,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def write_root_attrs(h5: h5py.File, groups_config: dict, subsets: dict[str, list[str]], creation: dict) -> None:
    """The root attributes of a dwiml HDF5 (layout in the module docstring)."""
    h5.attrs.update(format=FORMAT, format_version=FORMAT_VERSION, space="vox", origin="nifti",
                    groups_config=json.dumps(groups_config), creation=json.dumps(creation))
    for subset, subjects in subsets.items():
        h5.attrs[f"{subset}_subjects"] = json.dumps(subjects)


def write_group(parent: h5py.Group, name: str, group: GroupArrays, compression: str | None) -> None:
    """One subject's group, volumes chunked in blocks for lazy reads."""
    out = parent.create_group(name)
    out.attrs.update(group.attrs)
    for key, array in group.datasets.items():
        chunks = None
        if key == "data":  # a volume: blocks suited to reading the bounding box of a batch's points
            chunks = (*(min(CHUNK_VOXELS, n) for n in array.shape[:3]), array.shape[3])
        out.create_dataset(key, data=array, chunks=chunks, compression=compression if array.size else None)


def _save_intermediate(folder: Path, name: str, group: GroupArrays) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_group(group, folder / f"{name}{'.nii.gz' if group.attrs['type'] == 'volume' else '.trk'}")


def open_any_hdf5(path: str | Path) -> h5py.File:
    """Open an HDF5 file for reading; a clear error when it is missing or not HDF5."""
    path = Path(path)
    if not path.is_file():
        raise DwimlError(f"HDF5 file {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DwimlError(f"{path} is not an HDF5 file ({e})") from None


def open_hdf5(path: str | Path) -> h5py.File:
    """Open a dwiml HDF5 for reading; a clear error when it is missing, not a dwiml file, or lacks an attribute,
    subject, group or dataset of the layout (see :func:`check_layout`; once per version of the file)."""
    h5 = open_any_hdf5(path)
    try:
        if h5.attrs.get("format") != FORMAT:
            raise DwimlError(f"{path} is not a dwiml HDF5 file (no format='{FORMAT}' attribute)")
        stat = Path(path).stat()
        version = (str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)
        if version not in _CHECKED:
            check_layout(h5, path)
            _CHECKED.add(version)
    except BaseException:
        h5.close()
        raise
    return h5


_CHECKED: set[tuple[str, int, int]] = set()  # the files (path, modification time, size) whose layout passed
ROOT_ATTRS = ("format_version", "groups_config", *(f"{subset}_subjects" for subset in SUBSETS))
GROUP_LAYOUT = {  # per group type: attributes, and datasets with their number of dimensions
    "volume": (("affine", "voxel_sizes", "nb_features"), {"data": 4}),
    "streamlines": (("affine", "dimensions", "voxel_sizes", "voxel_order"),
                    {"points": 2, "offsets": 1, "lengths": 1, "lengths_mm": 1}),
}


def check_layout(h5: h5py.File, path: str | Path) -> None:
    """The root attributes, and in every listed subject the same groups, each with the attributes and datasets
    of its type, volume groups with the same feature count: the error names the file and what is missing."""
    missing = [key for key in ROOT_ATTRS if key not in h5.attrs]
    if missing:
        raise DwimlError(f"{path}: the dwiml HDF5 lacks root attribute(s) {missing}")
    try:
        version = int(h5.attrs["format_version"])
    except (TypeError, ValueError):
        raise DwimlError(f"{path}: root attribute 'format_version' is not a number") from None
    if version > FORMAT_VERSION:
        raise DwimlError(f"{path} has format version {version}, newer than this dwiml")
    for key in ROOT_ATTRS[1:]:
        try:
            value = json.loads(h5.attrs[key])
        except (TypeError, ValueError):
            value = None
        listed = isinstance(value, list) and all(isinstance(name, str) and name for name in value)
        if not (isinstance(value, dict) if key == "groups_config" else listed):
            raise DwimlError(f"{path}: root attribute '{key}' is not a JSON "
                             f"{'mapping' if key == 'groups_config' else 'list of subject names'}")
    subjects = [name for subset in SUBSETS for name in subject_lists(h5)[subset]]
    groups: dict[str, str] = {}
    features: dict[str, tuple[str, int]] = {}
    for subject in subjects:
        node = h5.get(subject)
        if not isinstance(node, h5py.Group):
            raise DwimlError(f"{path}: subject '{subject}' is listed but has no group in the file")
        members = {name: node[name] for name in node}
        if not groups:
            groups = {name: str(member.attrs.get("type")) for name, member in members.items()}
        if members.keys() != groups.keys():
            raise DwimlError(f"{path}: subject '{subject}' has groups {sorted(members)}, subject '{subjects[0]}' "
                             f"has {sorted(groups)}")
        for name, kind in groups.items():
            nb = _check_group_layout(members[name], kind, f"{path}: subject '{subject}', group '{name}'")
            first, first_nb = features.setdefault(name, (subject, nb))
            if nb != first_nb:
                raise DwimlError(f"{path}: group '{name}' has {nb} features in subject '{subject}' but "
                                 f"{first_nb} in subject '{first}'")


def _check_group_layout(node: h5py.Group | h5py.Dataset, kind: str, where: str) -> int | None:
    """Check one group (each attribute and dataset looked up once); return a volume's feature count."""
    attrs = set(node.attrs) if isinstance(node, h5py.Group) else set()  # names: reading values costs more
    kind_found = node.attrs["type"] if "type" in attrs else None
    if kind_found != kind or kind not in GROUP_LAYOUT:
        expected = f"{kind!r} as in the first subject" if kind in GROUP_LAYOUT else "'volume' or 'streamlines'"
        raise DwimlError(f"{where}: type attribute {kind_found!r}, expected {expected}")
    names, datasets = GROUP_LAYOUT[kind]
    if "connectivity_type" in attrs:  # see dwiml.data.connectivity
        connectivity = node.attrs["connectivity_type"]
        datasets = {**datasets, "connectivity_matrix": 2}
        if connectivity == "blocs":
            names = (*names, "connectivity_nb_blocs")
        else:
            datasets["connectivity_labels"] = 3
    shapes = {key: dataset.shape for key in datasets if isinstance(dataset := node.get(key), h5py.Dataset)}
    missing = [key for key in names if key not in attrs]
    missing += [key for key, ndim in datasets.items() if len(shapes.get(key, ())) != ndim]
    if missing:
        raise DwimlError(f"{where}: missing or malformed attribute(s) or dataset(s) {missing}")
    if kind == "streamlines":
        if len({shapes[key][0] for key in ("offsets", "lengths", "lengths_mm")}) != 1 or shapes["points"][1] != 3:
            raise DwimlError(f"{where}: points is not (N, 3), or offsets, lengths and lengths_mm differ in length")
        return None
    nb_features = int(node.attrs["nb_features"])
    if shapes["data"][-1] != nb_features:
        raise DwimlError(f"{where}: data has {shapes['data'][-1]} features, attribute nb_features says {nb_features}")
    return nb_features


def subject_lists(h5: h5py.File) -> dict[str, list[str]]:
    """The training/validation/testing subject names stored in a dwiml HDF5."""
    return {subset: json.loads(h5.attrs[f"{subset}_subjects"]) for subset in SUBSETS}


def _check_subjects(subjects_dir: Path, subsets: dict[str, list[str]]) -> None:
    seen: dict[str, str] = {}
    for subset, names in subsets.items():
        for name in names:
            if not name or "/" in name or name in (".", ".."):
                raise DwimlError(f"subject '{name}' ({subset}): a subject name is a folder name, without '/'")
            if name in seen:
                raise DwimlError(f"subject '{name}' is listed twice ({seen[name]} and {subset})")
            seen[name] = subset
            if not (subjects_dir / name).is_dir():
                raise DwimlError(f"subject '{name}' ({subset}) has no folder {subjects_dir / name}")
    if not seen:
        raise DwimlError("no subjects: the three subject lists are empty")
