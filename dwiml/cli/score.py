"""``dwiml-score CANDIDATE ... --ground-truth BUNDLE ... --labels LABELS``: Tractometer scores."""
from __future__ import annotations

import argparse

from dwiml.cli.common import run_command


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Score tractograms against ground-truth bundles whose ends lie in labelled regions: "
                    "valid/invalid/no-connection streamlines, valid/invalid bundles, overlap, overreach, F1 "
                    "and connectivity. Prints a table, one column per candidate.")
    parser.add_argument("candidates", nargs="+", metavar="CANDIDATE", help="tractograms to score (.trk, .tck, .trx)")
    parser.add_argument("--ground-truth", nargs="+", required=True, metavar="BUNDLE",
                        help="ground-truth bundles, one tractogram each, named by their file name")
    parser.add_argument("--labels", required=True,
                        help="label volume of the endpoint regions (NIfTI; 0 = no region)")
    parser.add_argument("--reference", help="reference image of the tractograms [the label volume]")
    parser.add_argument("--endpoint-tolerance-mm", type=float, default=0.0,
                        help="grow each region by this distance before reading end points [%(default)s]")
    parser.add_argument("--out-json", help="also write the scores to this JSON file")
    args = parser.parse_args(argv)

    def body() -> None:
        from dwiml.evaluation.scoring import format_table, save_json, score_files

        results = score_files(args.candidates, args.ground_truth, args.labels, args.reference,
                              args.endpoint_tolerance_mm)
        print(format_table(results))
        if args.out_json:
            save_json(results, args.out_json)

    run_command("dwiml-score", body)


if __name__ == "__main__":
    main()
