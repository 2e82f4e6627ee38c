"""``dwiml-track MODEL OUT``: track a subject with a trained model."""
from __future__ import annotations

import argparse

from dwiml.cli.common import run_command


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Track one subject with a trained model. The subject comes from a dwiml HDF5 (--hdf5, "
                    "--subject) or from NIfTI files (--input). Streamlines are saved with their seed "
                    "(data_per_streamline 'seeds', voxel space).")
    parser.add_argument("model", help="a run folder (best_model/ and .hydra/config.yaml) or a model folder")
    parser.add_argument("out", help="output tractogram (.trk, .tck or .trx)")
    source = parser.add_argument_group("subject")
    source.add_argument("--hdf5", help="a dwiml HDF5 holding the subject")
    source.add_argument("--subject", help="the subject's name in --hdf5")
    source.add_argument("--input-group", help="the model's input volume group [the run's step.input_group]")
    source.add_argument("--input", help="instead of --hdf5: the model's input volume (NIfTI)")
    source.add_argument("--seeding-mask", required=True, help="NIfTI file, or a volume group of the HDF5 subject")
    source.add_argument("--tracking-mask", help="NIfTI file or HDF5 volume group; streamlines stop when leaving it "
                                                "[none: they stop when leaving the volume]")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds-per-voxel", type=int, help="seeds in each voxel of the seeding mask [1]")
    seeds.add_argument("--nb-seeds", type=int, help="seeds in total, uniform over the seeding mask")
    rules = parser.add_argument_group("tracking")
    rules.add_argument("--algo", choices=("det", "prob"), default="det",
                       help="the model's most likely direction, or one drawn from its distribution [det]")
    rules.add_argument("--step-size-mm", type=float, help="[the run's loader.step_size_mm, else 1.0]")
    rules.add_argument("--max-angle-deg", type=float, default=30.0, help="maximum angle per step [%(default)s]")
    rules.add_argument("--min-length-mm", type=float, default=10.0, help="[%(default)s]")
    rules.add_argument("--max-length-mm", type=float, default=200.0, help="[%(default)s]")
    rules.add_argument("--eos-threshold", type=float,
                       help="stop where the model's end-of-streamline probability exceeds this [never]")
    rules.add_argument("--forward-only", action="store_true", help="track one direction from each seed")
    rules.add_argument("--keep-last-point", action="store_true",
                       help="end each streamline leaving the mask with its first point outside it (as dipy does "
                            "not) [dropped]")
    rules.add_argument("--rng-seed", type=int, default=1234, help="seeds and probabilistic directions [%(default)s]")
    rules.add_argument("--batch-size", type=int, default=10_000, help="streamlines advancing together [%(default)s]")
    rules.add_argument("--compress-mm", type=float, help="compress the streamlines with this tolerance (mm)")
    rules.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... [%(default)s]")
    args = parser.parse_args(argv)

    def body() -> None:
        from omegaconf import OmegaConf

        from dwiml.errors import DwimlError
        from dwiml.tracking.subject import (load_tracking_model, save_tracked, subject_from_files,
                                            step_neighborhood, subject_from_hdf5, track_subject)
        from dwiml.tracking.tracker import TrackingOptions

        if (args.hdf5 is None) == (args.input is None) or (args.hdf5 is None) != (args.subject is None):
            raise DwimlError("give either --hdf5 FILE --subject NAME, or --input FILE")
        model, run_config = load_tracking_model(args.model, args.device)
        known = (lambda key: None) if run_config is None else (lambda key: OmegaConf.select(run_config, key))
        if args.hdf5 is not None:
            group = args.input_group or known("step.input_group")
            if group is None:
                raise DwimlError(f"{args.model} is no run folder: give --input-group")
            subject = subject_from_hdf5(args.hdf5, args.subject, group, args.seeding_mask, args.tracking_mask)
        else:
            subject = subject_from_files(args.input, args.seeding_mask, args.tracking_mask)
        options = TrackingOptions(
            algo=args.algo, step_size_mm=args.step_size_mm or known("loader.step_size_mm") or 1.0,
            max_angle_deg=args.max_angle_deg, min_length_mm=args.min_length_mm, max_length_mm=args.max_length_mm,
            eos_threshold=args.eos_threshold, bidirectional=not args.forward_only,
            keep_last_point=args.keep_last_point, batch_size=args.batch_size, rng_seed=args.rng_seed)
        tracked = track_subject(model, subject, options, args.seeds_per_voxel, args.nb_seeds, args.compress_mm,
                                step_neighborhood(run_config))
        path = save_tracked(tracked, subject, args.out)
        print(f"{len(tracked.lengths)} streamlines -> {path}")

    run_command("dwiml-track", body)


if __name__ == "__main__":
    main()
