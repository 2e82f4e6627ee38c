"""``dwiml-visualize-loss MODEL OUT --subject NAME [--hdf5 FILE]``: the loss along reference streamlines."""
from __future__ import annotations

import argparse
from pathlib import Path

from dwiml.cli.common import run_command


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write a subject's reference streamlines with the trained model's loss at each point "
                    "(data_per_point 'loss'; NaN where no loss is defined) and a histogram PNG of the losses.")
    parser.add_argument("model", help="a run folder (its best_model/), or a model folder")
    parser.add_argument("out", help="output tractogram (.trk or .trx: formats with data per point)")
    parser.add_argument("--hdf5", help="a dwiml HDF5 holding the subject [the run's training HDF5]")
    parser.add_argument("--subject", required=True, help="the subject's name")
    parser.add_argument("--use-latest-epoch", action="store_true",
                        help="the weights of the run folder's latest checkpoint instead of best_model/")
    parser.add_argument("--allow-mismatch", action="store_true",
                        help="proceed when the input group's declared SH basis/order or channels differ from "
                             "the model's")
    parser.add_argument("--histogram", help="histogram PNG [OUT with .png]")
    parser.add_argument("--batch-size", type=int, default=1000, help="streamlines per model call [%(default)s]")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    def body() -> None:
        from dwiml.data.dataset import MultiSubjectDataset
        from dwiml.errors import DwimlError
        from dwiml.evaluation.point_loss import point_losses, save_histogram, save_loss_tractogram, subject_reference
        from dwiml.tracking.subject import load_tracking_model

        if Path(args.out).suffix not in (".trk", ".trx"):
            raise DwimlError(f"{args.out}: the output must end in .trk or .trx (formats with data per point)")
        model, spec, run = load_tracking_model(args.model, args.device, args.use_latest_epoch)
        hdf5 = args.hdf5 or (run.hdf5_path() if run is not None else None)
        if hdf5 is None:
            raise DwimlError(f"{args.model}: no record of the run's HDF5 file: give --hdf5")
        dataset = MultiSubjectDataset(hdf5, lazy=True)
        streamlines, losses = point_losses(model, spec, dataset, args.subject, args.batch_size, args.allow_mismatch)
        reference = subject_reference(dataset, args.subject, spec.input_group)
        out = save_loss_tractogram(streamlines, losses, reference, args.out)
        png = save_histogram(losses, args.histogram or Path(args.out).with_suffix(".png"), args.subject)
        print(f"{len(streamlines)} streamlines -> {out}; histogram -> {png}")

    run_command("dwiml-visualize-loss", body)


if __name__ == "__main__":
    main()
