"""``dwiml-hdf5-info FILE``: print the sets, subjects, groups, datasets and attributes of a dwiml HDF5."""
from __future__ import annotations

from dwiml.cli.common import Parser, run_command


def main(argv: list[str] | None = None) -> None:
    parser = Parser("dwiml-hdf5-info", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("hdf5", help="dwiml HDF5 file")
    args = parser.parse_args(argv)

    def body() -> None:
        from dwiml.data.hdf5_tools import describe

        print(describe(args.hdf5))

    run_command("dwiml-hdf5-info", body)


if __name__ == "__main__":
    main()
