"""``dwiml-track-merge OUT SHARD...``: join the tractograms of ``dwiml-track --seed-shard`` jobs."""
from __future__ import annotations

from dwiml.cli.common import Parser, add_overwrite, check_output, run_command


def main(argv: list[str] | None = None) -> None:
    parser = Parser(
        "dwiml-track-merge",
        description="Merge the shard tractograms of one subject (dwiml-track --seed-shard I/N, .trk or .trx) into "
                    "one, ordered by seed: the output of a single dwiml-track job with the same options.")
    parser.add_argument("out", help="output tractogram (.trk, .tck or .trx)")
    parser.add_argument("shards", nargs="+", help="the shards' tractograms, in any order")
    add_overwrite(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        check_output(args.out, args.overwrite)
        from dwiml.tracking.shards import merge_shards

        print(f"{merge_shards(args.shards, args.out)} streamlines -> {args.out}")

    run_command("dwiml-track-merge", body)


if __name__ == "__main__":
    main()
