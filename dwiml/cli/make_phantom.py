"""``dwiml-make-phantom OUT_DIR --subjects N --seed S``: write the synthetic phantom's files."""
from __future__ import annotations

from dwiml.cli.common import Parser, add_overwrite, check_output, run_command
from dwiml.errors import DwimlError


def main(argv: list[str] | None = None) -> None:
    parser = Parser("dwiml-make-phantom", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("out_dir", help="folder to create (must not exist or be empty, unless -f)")
    parser.add_argument("--subjects", type=int, default=5, help="number of subjects (>= 3) [%(default)s]")
    parser.add_argument("--seed", type=int, default=1234, help="random seed [%(default)s]")
    add_overwrite(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        from dwiml.data.phantom import make_phantom
        from dwiml.ranges import SEED, Range, check_arguments

        check_arguments(args, {"subjects": Range(3), "seed": SEED})
        check_output(args.out_dir, args.overwrite, folder=True)
        try:
            names = make_phantom(args.out_dir, nb_subjects=args.subjects, seed=args.seed, overwrite=args.overwrite)
        except (ValueError, FileExistsError) as e:
            raise DwimlError(str(e)) from None
        print(f"wrote {len(names)} subjects to {args.out_dir}")

    run_command("dwiml-make-phantom", body)


if __name__ == "__main__":
    main()
