"""``dwiml-convert-dwiml-hdf5 SOURCE OUT``: turn an HDF5 made by dwi_ml into a dwiml HDF5 (no raw files needed)."""
from __future__ import annotations

from dwiml.cli.common import Parser, add_overwrite, check_output, run_command


def main(argv: list[str] | None = None) -> None:
    parser = Parser(
        "dwiml-convert-dwiml-hdf5",
        description="Convert an HDF5 file written by dwi_ml (dwiml_create_hdf5_dataset) into a dwiml HDF5 file: "
                    "subject lists, volumes, streamlines (moved to dwiml's voxel convention), lengths, "
                    "data_per_streamline, resampling rule and connectivity references.")
    parser.add_argument("source", help="dwi_ml HDF5 file")
    parser.add_argument("out", help="dwiml HDF5 file to write")
    parser.add_argument("--compression", choices=("gzip", "lzf", "none"), default="none",
                        help="dataset compression [%(default)s]")
    add_overwrite(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        check_output(args.out, args.overwrite)
        from dwiml.data.convert_dwi_ml import convert_dwi_ml_hdf5

        out = convert_dwi_ml_hdf5(args.source, args.out, None if args.compression == "none" else args.compression)
        print(f"wrote {out}")

    run_command("dwiml-convert-dwiml-hdf5", body)


if __name__ == "__main__":
    main()
