"""``dwiml-track MODEL OUT``: track a subject with a trained model."""
from __future__ import annotations

import argparse
from collections.abc import Callable

from dwiml.cli.common import Parser, add_model_weights_arguments, add_overwrite, check_output, run_command


def number_or(word: str, kind: type) -> Callable[[str], float | int | str]:
    """An argparse type: ``word`` or a number of ``kind`` (whose range the tracking options check)."""
    def parse(text: str) -> float | int | str:
        if text == word:
            return text
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"a number or '{word}', got '{text}'") from None

    return parse


def main(argv: list[str] | None = None) -> None:
    parser = Parser(
        "dwiml-track",
        description="Track one subject with a trained model. The subject comes from a dwiml HDF5 (--hdf5, "
                    "--subject) or from NIfTI files (--input). Streamlines are saved with their seed "
                    "(data_per_streamline 'seeds', voxel space).")
    parser.add_argument("model", help="a run folder (its best_model/), or a model folder (e.g. a copied best_model/)")
    parser.add_argument("out", help="output tractogram (.trk, .tck or .trx)")
    add_model_weights_arguments(parser)
    source = parser.add_argument_group("subject")
    source.add_argument("--hdf5", help="a dwiml HDF5 holding the subject [the run's training HDF5]")
    source.add_argument("--subject", help="the subject's name in the HDF5")
    source.add_argument("--input-group", help="the HDF5's input volume group [the model's input group]")
    source.add_argument("--input", help="instead of an HDF5 subject: the model's input volume (NIfTI)")
    source.add_argument("--sh-basis", help="with --input: the SH basis of its coefficients (descoteaux07_legacy, "
                                           "descoteaux07, tournier07_legacy or tournier07), checked against the "
                                           "model's [not declared]")
    source.add_argument("--sh-order", type=int, help="with --input: the SH order of its coefficients [not declared]")
    seeding = source.add_mutually_exclusive_group(required=True)
    seeding.add_argument("--seeding-mask", help="NIfTI file, or a volume group of the HDF5 subject")
    seeding.add_argument("--seed-interface", nargs=2, metavar=("WM", "GM"),
                         help="seed at the white/grey matter interface: WM voxels (partial volume >= 0.5) next to a "
                              "GM voxel (>= 0.5); NIfTI files or HDF5 volume groups")
    source.add_argument("--tracking-mask", help="NIfTI file or HDF5 volume group; streamlines stop when leaving it "
                                                "[none: they stop when leaving the volume]")
    tissues = source.add_mutually_exclusive_group()
    tissues.add_argument("--act", nargs=2, metavar=("INCLUDE", "EXCLUDE"),
                         help="anatomically constrained stopping (dipy's ActStoppingCriterion) from partial volume "
                              "maps: a streamline ends where INCLUDE > 0.5 (e.g. GM: kept) or EXCLUDE > 0.5 (e.g. CSF: "
                              "rejected); only streamlines whose every end is in INCLUDE are kept")
    tissues.add_argument("--cmc", nargs=2, metavar=("INCLUDE", "EXCLUDE"),
                         help="as --act, with the continuous map criterion (dipy's CmcStoppingCriterion)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds-per-voxel", type=int, help="seeds in each voxel of the seeding mask [1]")
    seeds.add_argument("--nb-seeds", type=int, help="seeds in total, uniform over the seeding mask")
    rules = parser.add_argument_group("tracking")
    rules.add_argument("--algo", choices=("det", "prob"), default="det",
                       help="the model's most likely direction, or one drawn from its distribution [det]")
    rules.add_argument("--step-size-mm", type=float, help="[the step of the model's training streamlines]")
    rules.add_argument("--max-angle-deg", type=float, default=30.0, help="maximum angle per step [%(default)s]")
    rules.add_argument("--min-length-mm", type=float, default=10.0, help="[%(default)s]")
    rules.add_argument("--max-length-mm", type=float, default=200.0, help="[%(default)s]")
    rules.add_argument("--eos-threshold", type=number_or("max", float), metavar="P|max",
                       help="stop where the model's end-of-streamline probability exceeds P, or with 'max' where "
                            "ending is more probable than going on along the most probable direction class "
                            "(classification heads) [never]")
    rules.add_argument("--mask-interp", choices=("nearest", "trilinear"), default="nearest",
                       help="how the tracking mask is read at a point (inside where >= 0.5) [%(default)s]")
    rules.add_argument("--forward-only", action="store_true", help="track one direction from each seed")
    rules.add_argument("--keep-last-point", action="store_true",
                       help="end each streamline leaving the mask with its first point outside it (as dipy does "
                            "not) [dropped]")
    rules.add_argument("--rng-seed", type=int, default=1234, help="seeds and probabilistic directions [%(default)s]")
    rules.add_argument("--batch-size", type=number_or("auto", int), default=10_000, metavar="N|auto",
                       help="streamlines advancing together; auto: as many as half the device's free memory holds "
                            "(printed; give that number to every --seed-shard job) [%(default)s]")
    rules.add_argument("--seed-shard", default="1/1", metavar="I/N",
                       help="track only shard I of N of the seeds (whole chunks of --batch-size seeds), for N jobs "
                            "whose outputs dwiml-track-merge joins into the single job's output [%(default)s]")
    rules.add_argument("--compress-mm", type=float, help="compress the streamlines with this tolerance (mm)")
    rules.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... [%(default)s]")
    rules.add_argument("--no-progress", action="store_true",
                       help="no progress bar (seeds done, streamlines kept; never shown when stderr is no terminal)")
    add_overwrite(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        from dataclasses import replace

        from dwiml.errors import DwimlError
        from dwiml.tracking.subject import (auto_batch_size_for, check_track_options, load_tracking_model,
                                            save_tracked, subject_from_files, subject_from_hdf5, track_subject)
        from dwiml.tracking.shards import Shard
        from dwiml.tracking.tracker import TrackingOptions

        check_track_options(vars(args))
        shard = Shard.parse(args.seed_shard)
        if (args.subject is None) == (args.input is None) or args.hdf5 is not None and args.subject is None:
            raise DwimlError("give either --subject NAME (and --hdf5 FILE, unless MODEL is a run folder), "
                             "or --input FILE")
        if args.input is None and (args.sh_basis is not None or args.sh_order is not None):
            raise DwimlError("--sh-basis/--sh-order describe an --input file (an HDF5 group declares its own)")
        check_output(args.out, args.overwrite)
        model, spec, run = load_tracking_model(args.model, args.device, args.use_latest_epoch)
        tissue_rule = "act" if args.act else "cmc" if args.cmc else None
        maps = {**dict(zip(("include", "exclude"), args.act or args.cmc or ())),
                **dict(zip(("wm", "gm"), args.seed_interface or ()))}
        if args.subject is not None:
            hdf5 = args.hdf5 or (run.hdf5_path() if run is not None else None)
            if hdf5 is None:
                raise DwimlError(f"{args.model}: no record of the run's HDF5 file: give --hdf5")
            subject = subject_from_hdf5(hdf5, args.subject, args.input_group or spec.input_group, args.seeding_mask,
                                        args.tracking_mask, maps)
        else:
            subject = subject_from_files(args.input, args.seeding_mask, args.tracking_mask, args.sh_basis,
                                         args.sh_order, maps)
        step_size_mm = spec.trained_resampling.step_size_mm if args.step_size_mm is None else args.step_size_mm
        if step_size_mm is None:
            raise DwimlError(f"the model trained on streamlines with {spec.trained_resampling}, not a step size: "
                             "give --step-size-mm (and --allow-mismatch)")
        options = TrackingOptions(
            algo=args.algo, step_size_mm=step_size_mm,
            max_angle_deg=args.max_angle_deg, min_length_mm=args.min_length_mm, max_length_mm=args.max_length_mm,
            eos_threshold=args.eos_threshold, bidirectional=not args.forward_only,
            keep_last_point=args.keep_last_point, batch_size=1 if args.batch_size == "auto" else args.batch_size,
            rng_seed=args.rng_seed, mask_interpolation=args.mask_interp)
        if args.batch_size == "auto":
            options = replace(options, batch_size=auto_batch_size_for(model, spec, subject, options))
            print(f"batch size: {options.batch_size} streamlines")
        tracked = track_subject(model, spec, subject, options, args.seeds_per_voxel, args.nb_seeds, args.compress_mm,
                                args.allow_mismatch, progress=not args.no_progress, tissue_rule=tissue_rule,
                                shard=shard)
        path = save_tracked(tracked, subject, args.out)
        print(f"{len(tracked.lengths)} streamlines -> {path}")

    run_command("dwiml-track", body)


if __name__ == "__main__":
    main()
