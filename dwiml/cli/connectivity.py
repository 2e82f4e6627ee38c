"""``dwiml-connectivity TRACTOGRAM OUT.npy --labels LABELS | --nb-blocs N``: a connectivity matrix of streamline counts."""
from __future__ import annotations

from dwiml.cli.common import Parser, add_overwrite, check_output, run_command


def main(argv: list[str] | None = None) -> None:
    parser = Parser(
        "dwiml-connectivity",
        description="Count the streamlines of a tractogram between regions, as dwiml defines them for its "
                    "connectivity references (dwiml/data/connectivity.py): the region of each end point is the "
                    "label of the voxel holding it (label l is row l-1, label 0 no region), or its bloc when "
                    "the volume is cut into N blocs per axis (C order). The symmetric matrix goes to a .npy "
                    "file, ready for connectivity_matrix in a groups config.")
    parser.add_argument("tractogram", help="tractogram (.trk, .tck, .trx)")
    parser.add_argument("out", help="matrix to write (.npy)")
    regions = parser.add_mutually_exclusive_group(required=True)
    regions.add_argument("--labels", help="label volume (NIfTI, integer labels >= 0)")
    regions.add_argument("--nb-blocs", type=int, nargs="+", metavar="N", help="blocs per axis: one number or three")
    parser.add_argument("--reference", help="image of the tractogram's grid [the label volume; needed with --nb-blocs]")
    parser.add_argument("--binary", action="store_true", help="write 1 where two regions are connected, else 0")
    add_overwrite(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        import numpy as np

        from dwiml.atomic import atomic_path
        from dwiml.data.connectivity import count_matrix, load_regions
        from dwiml.errors import DwimlError
        from dwiml.evaluation.scoring import load_streamlines

        if not args.out.endswith(".npy"):
            raise DwimlError(f"{args.out}: the matrix is written to a .npy file")
        check_output(args.out, args.overwrite)
        shape, labels, nb_blocs, reference = load_regions(args.labels, args.nb_blocs, args.reference)
        streamlines = load_streamlines(args.tractogram, reference)
        first = streamlines.offsets
        matrix = count_matrix(streamlines.points[first], streamlines.points[first + streamlines.lengths - 1],
                              shape, labels, nb_blocs)
        if args.binary:
            matrix = (matrix > 0).astype(np.int64)
        with atomic_path(args.out) as tmp:
            np.save(tmp, matrix)
        print(f"wrote {args.out}: {len(matrix)} x {len(matrix)} regions, {int(np.triu(matrix).sum())} "
              f"{'connected pairs' if args.binary else 'streamlines'} of {len(streamlines.lengths)} counted")

    run_command("dwiml-connectivity", body)


if __name__ == "__main__":
    main()
