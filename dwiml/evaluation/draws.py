"""A trained preset against dipy's CSD tracking, over several draws of the built-in phantom.

For each draw (a phantom seed: its own geometry, noise, training, validation and testing subjects):

1. **selection**: the experiment preset trains on an HDF5 of the draw's training and validation
   subjects only (:func:`dwiml.data.builtin.phantom_selection_hdf5`); the trainer keeps the epoch its
   ``trainer.monitor`` prefers. This step is handed no testing subject.
2. **scoring**: each testing subject (once, at the end) or, for tuning, each validation subject
   (``Evaluation.score_subset="validation"``, read from the selection HDF5: no testing data is
   read at all) is tracked by the selected model and by dipy's
   deterministic and probabilistic CSD tracking (:mod:`dwiml.tracking.baseline`, on the subject's
   ``fodf`` group) from the same seeds, in the same tracking mask (``wm_mask``), with the same step,
   angle and length rules, and each tractogram is scored against the subject's ground-truth bundles
   (:mod:`dwiml.evaluation.scoring`, endpoint regions grown by the phantom's ``SCORING_TOLERANCE_MM``).

:func:`summary` gives the per-draw scores, their mean +- sd over draws and a per-bundle table
tagged by the bundle's configuration (crossing, kissing, fanning, ...).
"""
from __future__ import annotations

import json
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf, open_dict

from dwiml.config.schema import register_configs
from dwiml.data.builtin import phantom_hdf5, phantom_selection_hdf5
from dwiml.data.hdf5 import read_subject_list
from dwiml.data.phantom import CONFIGURATIONS, SCORING_TOLERANCE_MM
from dwiml.errors import DwimlError
from dwiml.evaluation.scoring import Packed, load_ground_truth, score
from dwiml.run_folder import RunFolder
from dwiml.tracking.baseline import fodf_direction_getter, track_dipy
from dwiml.tracking.output import save_tractogram_atomic
from dwiml.tracking.seeds import seeds_in_mask
from dwiml.tracking.subject import load_tracking_model, save_tracked, subject_from_hdf5, track_subject
from dwiml.tracking.filtering import keep_ended
from dwiml.tracking.tracker import TrackingOptions, volume_inputs
from dwiml.training.run import build_trainer

log = logging.getLogger(__name__)
METHODS = ("dipy det", "dipy prob", "dwiml")
SUMMARY = ("valid_pct", "invalid_pct", "no_connection_pct", "valid_bundles", "invalid_bundles", "mean_overlap",
           "mean_overreach", "mean_f1", "streamlines")
LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"
TRACKING_MASK = "wm_mask"
FODF = "fodf"


@dataclass
class Protocol:
    """How the scored subjects are tracked, by every method alike."""

    seeding: str = "wm_mask"  # wm_mask: seeds everywhere in the WM mask; endpoints: in the endpoint regions
    seeds_per_voxel: int = 2
    max_angle_deg: float = 30.0
    min_length_mm: float = 10.0
    max_length_mm: float = 200.0
    rng_seed: int = 1234
    algo: str = "det"  # dwiml's tracking: det | prob
    eos_threshold: float | None = None  # dwiml's tracking
    min_end_eos: float | None = None  # dwiml's tracking: keep streamlines whose both ends have this EOS probability


@dataclass
class Evaluation:
    """What to evaluate: an experiment preset with overrides, on which phantom draws."""

    experiment: str
    phantom_seeds: list[int]
    overrides: list[str] = field(default_factory=list)
    protocol: Protocol = field(default_factory=Protocol)
    cache_dir: str = "~/.cache/dwiml"
    device: str = "cpu"
    score_subset: str = "testing"  # testing: the final score; validation: for tuning, no testing data read


SCORE_SUBSETS = ("testing", "validation")


@dataclass
class Draw:
    """One phantom draw: the config that selects a model (its dataset holds no testing subject), and
    the HDF5 holding the subjects to score with their names (the draw's full HDF5 and its testing
    subjects, or the selection HDF5 and its validation subjects)."""

    seed: int
    selection_config: DictConfig
    hdf5: Path
    scored: list[str]


def prepare_draw(evaluation: Evaluation, phantom_seed: int) -> Draw:
    """The preset's composed config for the draw of ``phantom_seed`` (generated once into the cache),
    with the draw's selection HDF5 (training and validation subjects only) as its dataset, and the
    subjects of ``evaluation.score_subset`` to score."""
    if evaluation.score_subset not in SCORE_SUBSETS:
        raise DwimlError(f"score_subset must be one of {', '.join(SCORE_SUBSETS)}, got {evaluation.score_subset!r}")
    register_configs()
    overrides = [f"experiment={evaluation.experiment}", f"dataset.cache_dir={evaluation.cache_dir}",
                 f"dataset.seed={phantom_seed}", "trainer.progress_bar=false", f"device={evaluation.device}",
                 *evaluation.overrides]
    with initialize_config_module("dwiml.conf", version_base="1.3"):
        try:
            cfg = compose("train", overrides=overrides)
        except Exception as e:  # Hydra raises several types for a bad preset or override
            raise DwimlError(f"experiment={evaluation.experiment} with overrides {evaluation.overrides}: "
                             f"{' '.join(str(e).split())}") from None
    if cfg.dataset.get("_target_") != "dwiml.data.builtin.phantom_dataset":
        raise DwimlError(f"experiment={evaluation.experiment}: its dataset must be the built-in phantom "
                         f"(dataset=phantom), got {cfg.dataset.get('_target_')}")
    nb_subjects = int(cfg.dataset.nb_subjects)
    hdf5 = phantom_hdf5(evaluation.cache_dir, nb_subjects, phantom_seed)
    selection = phantom_selection_hdf5(evaluation.cache_dir, nb_subjects, phantom_seed)
    with open_dict(cfg):
        cfg.dataset = OmegaConf.create({"_target_": "dwiml.data.dataset.MultiSubjectDataset",
                                        "hdf5_path": str(selection), "lazy": False,
                                        "cache_bytes": int(cfg.dataset.cache_bytes)})
    scored_hdf5 = hdf5 if evaluation.score_subset == "testing" else selection
    scored = read_subject_list(hdf5.parent / "subjects" / f"{evaluation.score_subset}_subjects.txt")
    return Draw(phantom_seed, cfg, scored_hdf5, scored)


def select_model(cfg: DictConfig, run_dir: Path) -> Path:
    """Train as ``cfg`` says in ``run_dir``; the model of the epoch that ``trainer.monitor`` selects."""
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(cfg, run_dir)
    trainer.fit(config=OmegaConf.to_container(cfg, resolve=True))
    best = RunFolder(run_dir).best_model
    if not best.is_dir():
        raise DwimlError(f"{run_dir}: training selected no model ({cfg.trainer.monitor} never improved)")
    return best


def score_subject(model_dir: Path, draw: Draw, name: str, protocol: Protocol, out_dir: Path,
                  device: str = "cpu") -> dict[str, dict]:
    """The scores of each method on one scored subject; the tractograms are saved in ``out_dir``."""
    model, spec, _ = load_tracking_model(model_dir, device)
    folder = draw.hdf5.parent / "subjects" / name
    seeding = TRACKING_MASK if protocol.seeding == "wm_mask" else str(folder / "seeding_mask.nii.gz")
    subject = subject_from_hdf5(draw.hdf5, name, spec.input_group, seeding, TRACKING_MASK)
    step = spec.trained_resampling.step_size_mm or 1.0
    options = TrackingOptions(algo=protocol.algo, step_size_mm=step, max_angle_deg=protocol.max_angle_deg,
                              min_length_mm=protocol.min_length_mm, max_length_mm=protocol.max_length_mm,
                              eos_threshold=protocol.eos_threshold, rng_seed=protocol.rng_seed)
    tracked = track_subject(model, spec, subject, options, seeds_per_voxel=protocol.seeds_per_voxel)
    if protocol.min_end_eos is not None:
        offsets_vox = spec.neighborhood.offsets_vox(subject.voxel_sizes).float()
        inputs = volume_inputs(torch.from_numpy(subject.input).to(device), offsets_vox.to(device))
        tracked = keep_ended(model, inputs, tracked, protocol.min_end_eos)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_tracked(tracked, subject, out_dir / "dwiml.trk")
    candidates = {"dwiml": Packed(tracked.points.double().cpu().numpy(), tracked.lengths.cpu().numpy())}

    seeds = seeds_in_mask(torch.from_numpy(subject.seeding_mask), protocol.seeds_per_voxel,
                          rng_seed=protocol.rng_seed).numpy()  # the seeds track_subject drew
    fodf = subject_from_hdf5(draw.hdf5, name, FODF, seeding, TRACKING_MASK).input
    rules = (step, protocol.max_angle_deg, protocol.min_length_mm, protocol.max_length_mm)
    for method in METHODS[:2]:
        sft = track_dipy(fodf_direction_getter(fodf, method.split()[1], protocol.max_angle_deg),
                         subject.tracking_mask, seeds, subject.reference, *rules)
        save_tractogram_atomic(sft, out_dir / f"{method.replace(' ', '_')}.trk")
        candidates[method] = Packed(np.asarray(sft.streamlines.get_data(), dtype=np.float64).reshape(-1, 3),
                                    np.asarray(sft.streamlines._lengths, dtype=np.int64))
    truth = load_ground_truth(sorted((folder / "bundles").glob("*.trk")), folder / "endpoints_labels.nii.gz",
                              SCORING_TOLERANCE_MM)
    return {method: score(candidates[method], truth) for method in METHODS}


def evaluate_draw(evaluation: Evaluation, seed: int, out_dir: Path, model: Path | None = None) -> dict[str, dict]:
    """One draw: select a model on its training and validation subjects (or take ``model``, selected
    so before), then score each method on its ``evaluation.score_subset`` subjects (in ``out_dir/draw-SEED``).
    Returns ``{subject: {method: scores}}``."""
    draw = prepare_draw(evaluation, seed)
    if model is None:
        log.info("draw %d: selecting a model on %s", seed, draw.selection_config.dataset.hdf5_path)
        model = select_model(draw.selection_config, out_dir / f"draw-{seed}" / "run")
    scores = {name: score_subject(model, draw, name, evaluation.protocol, out_dir / f"draw-{seed}" / name,
                                  evaluation.device)
              for name in draw.scored}
    log.info("draw %d:\n%s", seed, draw_table(scores))
    return scores


def _worker_start() -> None:
    """A draw's process: one torch thread (the processes share the cores), the parent's log format."""
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


def evaluate(evaluation: Evaluation, out_dir: Path, models: dict[int, Path] | None = None, jobs: int = 1) -> dict:
    """:func:`evaluate_draw` for every draw (``models[seed]``: its model, selected before), ``jobs``
    draws at a time in their own processes (one torch thread each).
    Returns ``{"evaluation": ..., "draws": {seed: {subject: {method: scores}}}}``."""
    if jobs < 1:
        raise DwimlError(f"jobs must be >= 1, got {jobs}")
    seeds = list(evaluation.phantom_seeds)
    calls = [(evaluation, seed, out_dir, None if models is None else models[seed]) for seed in seeds]
    if jobs == 1 or len(seeds) == 1:
        scores = [evaluate_draw(*call) for call in calls]
    else:
        with ProcessPoolExecutor(min(jobs, len(seeds)), mp_context=get_context("spawn"),
                                 initializer=_worker_start) as pool:
            scores = list(pool.map(evaluate_draw, *zip(*calls)))
    return {"evaluation": asdict(evaluation), "draws": {str(seed): s for seed, s in zip(seeds, scores)}}


def per_draw(results: dict) -> dict[str, dict[str, np.ndarray]]:
    """``{method: {metric: (D,) values}}``: each draw's mean over its scored subjects."""
    draws = list(results["draws"].values())
    return {m: {k: np.array([np.mean([s[m][k] for s in draw.values()]) for draw in draws]) for k in SUMMARY}
            for m in METHODS}


def _bundles(results: dict) -> dict[str, dict[str, dict[str, float]]]:
    """``{bundle: {method: {OL, OR, F1}}}`` averaged over every scored subject of every draw."""
    subjects = [s for draw in results["draws"].values() for s in draw.values()]
    names = list(subjects[0]["dwiml"]["bundles"])
    return {b: {m: {k: float(np.mean([s[m]["bundles"][b][k] for s in subjects])) for k in ("overlap", "overreach", "f1")}
                for m in METHODS} for b in names}


def cell(values: np.ndarray) -> str:
    sd = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.3f} +- {sd:.3f}"


def draw_table(subjects: dict[str, dict]) -> str:
    """One draw's scores (mean over its scored subjects), a Markdown table."""
    lines = ["| metric | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for key in SUMMARY:
        lines.append(f"| {key} | " + " | ".join(f"{np.mean([s[m][key] for s in subjects.values()]):.3f}"
                                               for m in METHODS) + " |")
    return "\n".join(lines)


def summary(results: dict) -> str:
    """Per-draw tables, the mean +- sd over draws, and the per-bundle table (Markdown)."""
    parts = [f"### draw {seed}\n\n{draw_table(subjects)}" for seed, subjects in results["draws"].items()]
    means = per_draw(results)
    subset = results["evaluation"]["score_subset"]
    lines = [f"### mean +- sd over {len(results['draws'])} draws ({subset} subjects)", "", "| metric | " + " | ".join(METHODS) + " |",
             "|---|" + "---|" * len(METHODS)]
    lines += [f"| {k} | " + " | ".join(cell(means[m][k]) for m in METHODS) + " |" for k in SUMMARY]
    parts.append("\n".join(lines))
    lines = ["### per bundle (mean over draws): OL / OR / F1", "",
             "| bundle | configuration | " + " | ".join(METHODS) + " |", "|---|---|" + "---|" * len(METHODS)]
    for name, methods in _bundles(results).items():
        cells = [f"{v['overlap']:.2f} / {v['overreach']:.2f} / {v['f1']:.2f}" for v in methods.values()]
        lines.append(f"| {name} | {CONFIGURATIONS.get(name, '-')} | " + " | ".join(cells) + " |")
    parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def save_results(results: dict, out_dir: Path) -> None:
    """``results.json`` and ``summary.md`` in ``out_dir``."""
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out_dir / "summary.md").write_text(summary(results))
