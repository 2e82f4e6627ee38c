"""``dwiml-visualize-loss MODEL OUT --subject NAME [--hdf5 FILE] [--tractogram FILE]``: the loss along
streamlines, coloured for viewers, with the best and worst of them and a histogram."""
from __future__ import annotations

from pathlib import Path

from dwiml.cli.common import Parser, add_model_weights_arguments, add_overwrite, check_output, run_command


def main(argv: list[str] | None = None) -> None:
    parser = Parser(
        "dwiml-visualize-loss",
        description="Write a subject's reference streamlines (or --tractogram's) with the trained model's loss at "
                    "each point (data_per_point 'loss'; NaN where no loss is defined) and a colour per point "
                    "(data_per_point 'color', RGB 0-255, grey without a loss), optionally the best and worst of "
                    "them, and a histogram PNG of the losses.")
    parser.add_argument("model", help="a run folder (its best_model/), or a model folder")
    parser.add_argument("out", help="output tractogram (.trk or .trx: formats with data per point)")
    parser.add_argument("--hdf5", help="a dwiml HDF5 holding the subject [the run's training HDF5]")
    parser.add_argument("--subject", required=True, help="the subject's name")
    add_model_weights_arguments(parser)
    parser.add_argument("--tractogram", help="score these streamlines instead of the subject's reference ones "
                                             "(.trk, .tck, .trx on the subject's grid, read by dipy)")
    parser.add_argument("--colormap", default="viridis",
                        help="matplotlib colormap of data_per_point 'color' (RGB 0-255) [%(default)s]")
    parser.add_argument("--range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="losses mapped to the colormap's ends [the 5th and 95th percentiles]")
    parser.add_argument("--select-pct", type=float, metavar="X",
                        help="also write OUT_best and OUT_worst: the X %% of streamlines with the lowest and "
                             "highest mean loss")
    parser.add_argument("--histogram", help="histogram PNG, log scale, percentiles marked [OUT with .png]")
    parser.add_argument("--batch-size", type=int, default=1000, help="streamlines per model call [%(default)s]")
    parser.add_argument("--device", default="cpu")
    add_overwrite(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        from dwiml.data.dataset import MultiSubjectDataset
        from dwiml.device import check_device
        from dwiml.errors import DwimlError
        from dwiml.evaluation.point_loss import (best_and_worst, load_streamlines, loss_colors, point_losses,
                                                 save_histogram, save_loss_tractogram, subject_reference)
        from dwiml.ranges import AT_LEAST_ONE, Range, check_arguments
        from dwiml.tracking.subject import load_tracking_model

        check_arguments(args, {"select_pct": Range(0, 100, low_open=True), "batch_size": AT_LEAST_ONE})
        check_device(args.device, "--device")
        out = Path(args.out)
        if out.suffix not in (".trk", ".trx"):
            raise DwimlError(f"{args.out}: the output must end in .trk or .trx (formats with data per point)")
        selected = {} if args.select_pct is None else {
            name: out.with_name(f"{out.stem}_{name}{out.suffix}") for name in ("best", "worst")}
        histogram = Path(args.histogram or out.with_suffix(".png"))
        for path in (out, *selected.values(), histogram):
            check_output(path, args.overwrite)
        model, spec, run = load_tracking_model(args.model, args.device, args.use_latest_epoch)
        hdf5 = args.hdf5 or (run.hdf5_path() if run is not None else None)
        if hdf5 is None:
            raise DwimlError(f"{args.model}: no record of the run's HDF5 file: give --hdf5")
        dataset = MultiSubjectDataset(hdf5, lazy=True)
        reference = subject_reference(dataset, args.subject, spec.input_group)
        given = load_streamlines(args.tractogram, reference) if args.tractogram else None
        streamlines, losses = point_losses(model, spec, dataset, args.subject, args.batch_size, args.allow_mismatch,
                                           streamlines=given)
        colors, (low, high) = loss_colors(losses, args.colormap, args.range)
        save_loss_tractogram(streamlines, losses, colors, reference, out)
        print(f"{len(streamlines)} streamlines -> {out} (data_per_point 'loss', and 'color': {args.colormap} "
              f"from {low:.4g} to {high:.4g})")
        if args.select_pct is not None:
            for (name, path), chosen in zip(selected.items(), best_and_worst(losses, args.select_pct)):
                save_loss_tractogram(*([items[i] for i in chosen] for items in (streamlines, losses, colors)),
                                     reference, path)
                print(f"{name} {args.select_pct:g} % ({len(chosen)} streamlines by mean loss) -> {path}")
        print(f"histogram -> {save_histogram(losses, histogram, args.subject)}")

    run_command("dwiml-visualize-loss", body)


if __name__ == "__main__":
    main()
