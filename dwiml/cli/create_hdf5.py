"""``dwiml-create-hdf5``: build a dwiml HDF5 from per-subject volumes and tractograms."""
from __future__ import annotations

import json

from dwiml.atomic import stopped_by_signals
from dwiml.cli.common import Parser, add_overwrite, check_output, run_command


def main(argv: list[str] | None = None) -> None:
    parser = Parser("dwiml-create-hdf5",
                    description="Build a dwiml HDF5 file from per-subject NIfTI volumes and "
                                "tractograms (.trk, .tck, .trx), as described by a groups config.")
    parser.add_argument("subjects_dir", help="folder holding one sub-folder per subject")
    parser.add_argument("groups_config", help="groups config (YAML or JSON)")
    parser.add_argument("out", help="HDF5 file to write")
    for subset in ("training", "validation", "testing"):
        parser.add_argument(f"--{subset}-subjects", metavar="FILE", help=f"text file: {subset} subjects, one per line")
    parser.add_argument("--no-enforce-files-presence", dest="enforce_files_presence", action="store_false",
                        help="skip (with a warning) a subject missing a file, instead of stopping")
    parser.add_argument("--compression", choices=("gzip", "lzf", "none"), default="none",
                        help="dataset compression [%(default)s]")
    parser.add_argument("--processes", type=int, default=1, help="worker processes reading subjects [%(default)s]")
    parser.add_argument("--save-intermediate", metavar="DIR",
                        help="also write each subject's groups to DIR/<subject>/<group>.nii.gz or .trk")
    add_overwrite(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        check_output(args.out, args.overwrite)
        if args.save_intermediate is not None:
            check_output(args.save_intermediate, args.overwrite, folder=True)
        from dwiml.data.hdf5 import create_hdf5, load_groups_config, open_hdf5, read_subject_list, subject_lists

        lists = [read_subject_list(f) if f else [] for f in
                 (args.training_subjects, args.validation_subjects, args.testing_subjects)]
        with stopped_by_signals("dwiml-create-hdf5"):
            out = create_hdf5(args.subjects_dir, load_groups_config(args.groups_config), args.out, *lists,
                              enforce_files_presence=args.enforce_files_presence, processes=args.processes,
                              compression=None if args.compression == "none" else args.compression,
                              save_intermediate=args.save_intermediate)
        with open_hdf5(out) as h5:
            counts = ", ".join(f"{len(names)} {subset}" for subset, names in subject_lists(h5).items())
            empty = sum(n for groups in json.loads(h5.attrs["creation"])["empty_files"].values()
                        for n in groups.values())
        print(f"wrote {out}: {counts} subjects" + (f"; {empty} empty tractogram(s) skipped" if empty else ""))

    run_command("dwiml-create-hdf5", body)


if __name__ == "__main__":
    main()
