"""``dwiml-evaluate --experiment NAME --phantom-seeds 1 2 3 --out-dir DIR``: a preset against dipy, over phantom draws."""
from __future__ import annotations

import logging
from pathlib import Path

from dwiml.cli.common import Parser, add_overwrite, check_output, run_command

SCORE_SUBSETS = ("testing", "validation")  # dwiml.evaluation.draws.SCORE_SUBSETS (not imported: --help stays fast)


def main(argv: list[str] | None = None) -> None:
    parser = Parser(
        "dwiml-evaluate",
        description="For each phantom draw: train the experiment preset on the draw's training and validation "
                    "subjects (the epoch chosen by its trainer.monitor), then track its testing subjects once (or, "
                    "for tuning, its validation subjects: --score-subset validation) with the model and with dipy's deterministic and probabilistic CSD tracking (same seeds, mask, "
                    "angle and lengths) and score them. Prints per-draw tables, mean +- sd and a per-bundle table.")
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="training overrides on top of the preset")
    parser.add_argument("--experiment", required=True, help="an experiment preset (conf/experiment/NAME.yaml)")
    parser.add_argument("--phantom-seeds", type=int, nargs="+", default=[1, 2, 3],
                        help="one phantom draw per seed [%(default)s]")
    parser.add_argument("--out-dir", required=True, help="folder to create for runs, tractograms and results")
    parser.add_argument("--cache-dir", default=None,
                        help="where the draws are generated once [$DWIML_CACHE_DIR or ~/.cache/dwiml]")
    parser.add_argument("--score-subset", choices=SCORE_SUBSETS, default="testing",
                        help="the subjects tracked and scored: testing (the final score, once) or validation "
                             "(tune on these: no testing data is read) [%(default)s]")
    parser.add_argument("--seeding", choices=("wm_mask", "endpoints"), default="wm_mask",
                        help="seed in the whole WM mask or in the endpoint regions [%(default)s]")
    parser.add_argument("--seeds-per-voxel", type=int, default=2, help="[%(default)s]")
    parser.add_argument("--max-angle-deg", type=float, default=30.0, help="[%(default)s]")
    parser.add_argument("--min-length-mm", type=float, default=10.0, help="[%(default)s]")
    parser.add_argument("--max-length-mm", type=float, default=200.0, help="[%(default)s]")
    parser.add_argument("--rng-seed", type=int, default=1234, help="of the seeds and of sampling [%(default)s]")
    parser.add_argument("--algo", choices=("det", "prob"), default="det", help="dwiml's tracking [%(default)s]")
    parser.add_argument("--eos-threshold", type=float, default=None,
                        help="dwiml's tracking stops where the model's end-of-streamline probability exceeds it")
    parser.add_argument("--min-end-eos", type=float, default=None,
                        help="dwiml's tracking keeps the streamlines whose two ends both have at least this "
                             "end-of-streamline probability (dwiml.tracking.filtering)")
    parser.add_argument("--device", default="cpu", help="[%(default)s]")
    add_overwrite(parser)
    parser.add_argument("--jobs", type=int, default=1,
                        help="draws evaluated at a time, each in its own process with one torch thread [%(default)s]")
    args = parser.parse_args(argv)

    def body() -> None:
        import os

        from dwiml.atomic import atomic_folder
        from dwiml.device import check_device
        from dwiml.evaluation.draws import LOG_FORMAT, Evaluation, Protocol, evaluate, save_results, summary
        from dwiml.ranges import AT_LEAST_ONE, PROBABILITY, SEED, check_arguments, check_order, rules_of
        from dwiml.tracking.tracker import TrackingOptions

        check_arguments(args, {**rules_of(TrackingOptions), "seeds_per_voxel": AT_LEAST_ONE, "min_end_eos": PROBABILITY,
                               "phantom_seeds": SEED, "jobs": AT_LEAST_ONE})
        check_order("--min-length-mm", args.min_length_mm, "--max-length-mm", args.max_length_mm)
        check_device(args.device, "--device")
        out_dir = check_output(args.out_dir, args.overwrite, folder=True)
        protocol = Protocol(seeding=args.seeding, seeds_per_voxel=args.seeds_per_voxel,
                            max_angle_deg=args.max_angle_deg, min_length_mm=args.min_length_mm,
                            max_length_mm=args.max_length_mm, rng_seed=args.rng_seed, algo=args.algo,
                            eos_threshold=args.eos_threshold, min_end_eos=args.min_end_eos)
        cache_dir = args.cache_dir or os.environ.get("DWIML_CACHE_DIR", "~/.cache/dwiml")
        evaluation = Evaluation(args.experiment, args.phantom_seeds, args.overrides, protocol,
                                str(Path(cache_dir).expanduser()), args.device, args.score_subset)
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        with atomic_folder(out_dir) as tmp:
            results = evaluate(evaluation, tmp, jobs=args.jobs)
            save_results(results, tmp)
        print(summary(results), end="")
        print(f"results -> {out_dir / 'results.json'}, {out_dir / 'summary.md'}")

    run_command("dwiml-evaluate", body)


if __name__ == "__main__":
    main()
