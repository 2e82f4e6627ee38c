"""The phantom recipe and each of its choices removed in turn, over the same phantom draws.

Runs :func:`dwiml.evaluation.draws.evaluate` (what ``dwiml-evaluate`` runs) for the recipe
(``experiment=phantom_tracking`` tracked with ``--min-end-eos``), then for each variant below; a
variant that only changes tracking reuses the recipe's selected models; ``--models-from DIR`` reuses
those an earlier run (e.g. ``--score-subset validation``: the selection) wrote in ``DIR``. Writes each variant's
``results.json`` / ``summary.md`` under ``--out-dir`` and prints one table (mean +- sd over draws).
Usage:
    python bench/phantom_ablation.py [--out-dir phantom_ablation] [--phantom-seeds 1 2 3] [-f]
        [--score-subset validation]   (tuning: score the validation subjects, read no testing data)
        [--jobs 3] [--models-from DIR]
Like every bench it prints the machine load and refuses to start on a loaded machine (training times
mean nothing there; the scores do not depend on it).
"""
from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace
from pathlib import Path

from dwiml.atomic import atomic_folder
from dwiml.errors import DwimlError
from dwiml.evaluation.draws import (LOG_FORMAT, SCORE_SUBSETS, Evaluation, Protocol, cell, evaluate, per_draw,
                                   save_results, summary)
from timing import add_machine_options, begin, finish  # bench/, the script's folder, is on sys.path

EXPERIMENT = "phantom_tracking"
RECIPE = Protocol(min_end_eos=0.01)  # chosen on the validation subjects of draws 1, 2, 3
# name: (training overrides, tracking protocol)
VARIANTS = {
    "recipe": ([], RECIPE),
    "no end filter (--min-end-eos)": ([], replace(RECIPE, min_end_eos=None)),
    "split streamlines (loader.split_ratio=0.5)": (["loader.split_ratio=0.5"], RECIPE),
    "less forward noise (0.3 mm)": (["loader.noise_gaussian_size_forward=0.3"], RECIPE),
    "6 training subjects, not 12": (["dataset.nb_subjects=8"], RECIPE),  # other draws: its own dipy columns
}
COLUMNS = ("valid_pct", "invalid_pct", "no_connection_pct", "invalid_bundles", "mean_overlap", "mean_overreach",
           "mean_f1")
DIPY_COLUMNS = ("valid_pct", "invalid_bundles", "mean_overlap")


def folder_name(variant: str) -> str:
    """The folder of a variant under ``--out-dir``."""
    return variant.split(" (")[0].replace(" ", "_").replace(",", "")


def models(variant_dir: Path, seeds: list[int]) -> dict[int, Path]:
    """The model selected for each draw in a variant's folder (a one-line error when one is missing)."""
    found = {s: variant_dir / f"draw-{s}" / "run" / "best_model" for s in seeds}
    missing = [str(p) for p in found.values() if not p.is_dir()]
    if missing:
        raise DwimlError(f"no selected model {', '.join(missing)}")
    return found


def table(results: dict[str, dict]) -> str:
    """One row per variant (dwiml) with dipy's deterministic tracking on the same draws (a variant with
    other subjects has other draws), then dipy's two baselines of the recipe's draws."""
    columns = [*COLUMNS, *(f"dipy det {c}" for c in DIPY_COLUMNS)]
    lines = ["| variant | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, r in results.items():
        means = per_draw(r)
        cells = [cell(means["dwiml"][c]) for c in COLUMNS] + [cell(means["dipy det"][c]) for c in DIPY_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for method in ("dipy det", "dipy prob"):
        means = per_draw(results["recipe"])[method]
        lines.append(f"| {method} | " + " | ".join(cell(means[c]) for c in COLUMNS) + " |" + " |" * len(DIPY_COLUMNS))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out-dir", default="phantom_ablation")
    parser.add_argument("--phantom-seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--cache-dir", default=os.environ.get("DWIML_CACHE_DIR", "~/.cache/dwiml"))
    parser.add_argument("-f", "--overwrite", action="store_true")
    parser.add_argument("--score-subset", choices=SCORE_SUBSETS, default="testing")
    parser.add_argument("--jobs", type=int, default=1, help="draws at a time, one process and torch thread each")
    parser.add_argument("--models-from", default=None,
                        help="an earlier --out-dir of this bench (same variants and draws, e.g. its --score-subset "
                             "validation run): track and score with the models it selected, train nothing")
    add_machine_options(parser)
    args = parser.parse_args()
    threads = begin(args, extra_threads=args.jobs if args.jobs > 1 else 0)
    out = Path(args.out_dir)
    if out.exists() and not args.overwrite:
        raise SystemExit(f"phantom_ablation: error: {out} exists (-f to replace it)")
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    results = {}
    models_dir = Path(args.models_from) if args.models_from else out
    try:
        for name, (overrides, protocol) in VARIANTS.items():
            evaluation = Evaluation(EXPERIMENT, args.phantom_seeds, overrides, protocol,
                                    str(Path(args.cache_dir).expanduser()), score_subset=args.score_subset)
            trained = bool(overrides) or name == "recipe"  # else the recipe's models, tracked otherwise
            reuse = None if trained and not args.models_from else models(models_dir / folder_name(
                name if trained else "recipe"), args.phantom_seeds)
            with atomic_folder(out / folder_name(name)) as tmp:
                results[name] = evaluate(evaluation, tmp, reuse, args.jobs)
                save_results(results[name], tmp)
            print(f"## {name}\n\n{summary(results[name])}", flush=True)
    except DwimlError as e:
        raise SystemExit(f"phantom_ablation: error: {e}") from None
    (out / "ablation.md").write_text(table(results))
    print(table(results), end="")
    finish(args, threads)


if __name__ == "__main__":
    main()
