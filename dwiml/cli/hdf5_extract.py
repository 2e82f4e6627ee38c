"""``dwiml-hdf5-extract FILE SUBJECT GROUP OUT``: write a group of a dwiml HDF5 to NIfTI or a tractogram (or .npy)."""
from __future__ import annotations

from dwiml.cli.common import Parser, add_overwrite, check_output, run_command


def main(argv: list[str] | None = None) -> None:
    parser = Parser("dwiml-hdf5-extract", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("hdf5", help="dwiml HDF5 file")
    parser.add_argument("subject", help="subject name")
    parser.add_argument("group", help="group name")
    parser.add_argument("out", help="volume group: .nii or .nii.gz; streamline group: .trk, .tck or .trx "
                                    "(.trk and .trx keep data_per_streamline and data_per_point); "
                                    "with --connectivity: .npy")
    parser.add_argument("--connectivity", action="store_true",
                        help="write the streamline group's stored connectivity matrix instead")
    add_overwrite(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        check_output(args.out, args.overwrite)
        from dwiml.data.hdf5_tools import extract, extract_connectivity

        write = extract_connectivity if args.connectivity else extract
        print(f"wrote {write(args.hdf5, args.subject, args.group, args.out)}")

    run_command("dwiml-hdf5-extract", body)


if __name__ == "__main__":
    main()
