"""``dwiml-track-merge OUT SHARD...``: join the tractograms of ``dwiml-track --seed-shard`` jobs."""
from __future__ import annotations

import argparse

from dwiml.cli.common import run_command


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Merge the shard tractograms of one subject (dwiml-track --seed-shard I/N, .trk or .trx) into "
                    "one, ordered by seed: the output of a single dwiml-track job with the same options.")
    parser.add_argument("out", help="output tractogram (.trk, .tck or .trx)")
    parser.add_argument("shards", nargs="+", help="the shards' tractograms, in any order")
    args = parser.parse_args(argv)

    def body() -> None:
        from dwiml.tracking.shards import merge_shards

        print(f"{merge_shards(args.shards, args.out)} streamlines -> {args.out}")

    run_command("dwiml-track-merge", body)


if __name__ == "__main__":
    main()
