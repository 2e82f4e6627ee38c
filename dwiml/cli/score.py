"""``dwiml-score CANDIDATE ... (--ground-truth BUNDLE ... --labels LABELS | --bundle-config JSON)``: Tractometer scores."""
from __future__ import annotations

from dwiml.cli.common import Parser, add_overwrite, check_output, run_command


def main(argv: list[str] | None = None) -> None:
    parser = Parser(
        "dwiml-score",
        description="Score tractograms against ground-truth bundles whose ends lie in labelled regions: "
                    "valid/invalid/no-connection streamlines, valid/invalid bundles, overlap, overreach, F1 "
                    "and connectivity; or, with --bundle-config, by the ROI-based reference protocol of the "
                    "ISMRM 2015 challenge (VS/WPC/IC/NC, VB/IB, OL/OR/F1). Prints a table, one column per candidate.")
    parser.add_argument("candidates", nargs="+", metavar="CANDIDATE", help="tractograms to score (.trk, .tck, .trx)")
    regions = parser.add_argument_group("endpoint regions (dwiml's scoring)")
    regions.add_argument("--ground-truth", nargs="+", metavar="BUNDLE",
                         help="ground-truth bundles, one tractogram each, named by their file name")
    regions.add_argument("--labels", help="label volume of the endpoint regions (NIfTI; 0 = no region)")
    regions.add_argument("--endpoint-tolerance-mm", type=float, default=0.0,
                         help="grow each region by this distance before reading end points [%(default)s]")
    rois = parser.add_argument_group("ROI-based reference protocol (ISMRM 2015 challenge scoring, as scilpy's "
                                     "scil_tractogram_segment_with_ROI_and_score)")
    rois.add_argument("--bundle-config", metavar="JSON",
                      help="per bundle: head, tail, and optionally gt_mask, all_mask, any_mask, length [min, max] "
                           "(mm), angle (degrees); paths relative to the file")
    rois.add_argument("--dilate-endpoints", type=int, default=0, metavar="N",
                      help="grow the head and tail ROIs by N voxel passes [%(default)s]")
    parser.add_argument("--reference", help="reference image of the tractograms [the label volume, or the first ROI]")
    parser.add_argument("--out-json", help="also write the scores to this JSON file")
    add_overwrite(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        from dwiml.errors import DwimlError
        from dwiml.evaluation.roi_scoring import score_files_rois
        from dwiml.evaluation.scoring import format_table, save_json, score_files
        from dwiml.ranges import NON_NEGATIVE, check_arguments

        check_arguments(args, {"endpoint_tolerance_mm": NON_NEGATIVE, "dilate_endpoints": NON_NEGATIVE})
        endpoint_regions = (args.ground_truth is not None, args.labels is not None)
        if (args.bundle_config is not None) == any(endpoint_regions) or (not args.bundle_config
                                                                         and not all(endpoint_regions)):
            raise DwimlError("give either --ground-truth and --labels (endpoint regions), or --bundle-config "
                             "(the ROI-based protocol)")
        if args.out_json:
            check_output(args.out_json, args.overwrite)
        if args.bundle_config:
            results = score_files_rois(args.candidates, args.bundle_config, args.reference, args.dilate_endpoints)
        else:
            results = score_files(args.candidates, args.ground_truth, args.labels, args.reference,
                                  args.endpoint_tolerance_mm)
        print(format_table(results))
        if args.out_json:
            save_json(results, args.out_json)

    run_command("dwiml-score", body)


if __name__ == "__main__":
    main()
