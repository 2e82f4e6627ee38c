"""``dwiml-plot-logs RUN_DIR... [--metrics ...] [--out FILE]``: overlay the curves of several runs."""
from __future__ import annotations

from dwiml.cli.common import Parser, add_overwrite, check_output, run_command


def main(argv: list[str] | None = None) -> None:
    parser = Parser("dwiml-plot-logs", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run folders; a folder without metrics.csv (a multirun sweep) adds every run below it")
    parser.add_argument("--metrics", nargs="+", default=None,
                        help="columns of metrics.csv, or a name X for train_X and valid_X [loss learning_rate]")
    parser.add_argument("--out", default="runs.png", help="PNG file to write [%(default)s]")
    add_overwrite(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        check_output(args.out, args.overwrite)
        from dwiml.viz.plots import find_runs, plot_runs

        runs = find_runs(args.run_dirs)
        print(f"wrote {plot_runs(runs, args.out, args.metrics)} ({len(runs)} runs)")

    run_command("dwiml-plot-logs", body)


if __name__ == "__main__":
    main()
