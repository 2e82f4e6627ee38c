"""``dwiml-visualize-loss RUN --hdf5 FILE --subject NAME OUT``: the loss along reference streamlines."""
from __future__ import annotations

import argparse
from pathlib import Path

from dwiml.cli.common import run_command


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write a subject's reference streamlines with the trained model's loss at each point "
                    "(data_per_point 'loss'; NaN where no loss is defined) and a histogram PNG of the losses.")
    parser.add_argument("run", help="a run folder (best_model/ and .hydra/config.yaml)")
    parser.add_argument("out", help="output tractogram (.trk or .trx: formats with data per point)")
    parser.add_argument("--hdf5", required=True, help="a dwiml HDF5 holding the subject")
    parser.add_argument("--subject", required=True, help="the subject's name")
    parser.add_argument("--histogram", help="histogram PNG [OUT with .png]")
    parser.add_argument("--batch-size", type=int, default=1000, help="streamlines per model call [%(default)s]")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    def body() -> None:
        import nibabel as nib
        import numpy as np

        from dwiml.data.dataset import MultiSubjectDataset
        from dwiml.errors import DwimlError
        from dwiml.evaluation.point_loss import find_subject, point_losses, save_histogram, save_loss_tractogram
        from dwiml.tracking.subject import load_tracking_model

        if Path(args.out).suffix not in (".trk", ".trx"):
            raise DwimlError(f"{args.out}: the output must end in .trk or .trx (formats with data per point)")
        model, run_config = load_tracking_model(args.run, args.device)
        if run_config is None:
            raise DwimlError(f"{args.run}: not a run folder (needs .hydra/config.yaml)")
        dataset = MultiSubjectDataset(args.hdf5, lazy=True)
        streamlines, losses = point_losses(model, run_config, dataset, args.subject, args.batch_size)
        subset, index = find_subject(dataset, args.subject)
        group = run_config.step.input_group
        shape = dataset.subset(subset).volume(index, group).shape[:3]
        reference = nib.Nifti1Image(np.zeros(shape, np.uint8), dataset.subset(subset).affine(index, group))
        out = save_loss_tractogram(streamlines, losses, reference, args.out)
        png = save_histogram(losses, args.histogram or Path(args.out).with_suffix(".png"), args.subject)
        print(f"{len(streamlines)} streamlines -> {out}; histogram -> {png}")

    run_command("dwiml-visualize-loss", body)


if __name__ == "__main__":
    main()
