"""``dwiml-visualize-attention MODEL OUT --subject NAME``: a Transformer's attention on reference streamlines."""
from __future__ import annotations

from pathlib import Path

from dwiml.cli.common import Parser, add_model_weights_arguments, add_overwrite, check_output, run_command


def main(argv: list[str] | None = None) -> None:
    parser = Parser(
        "dwiml-visualize-attention",
        description="Write a Transformer's attention weights on a subject's first reference streamlines (resampled "
                    "as in training): one PNG of weight matrices per streamline (a row per attention, a column per "
                    "head) and a tractogram with the attention each point receives (data_per_point, one key per "
                    "attention: the mean weight on it over the heads and the points that see it).")
    parser.add_argument("model", help="a run folder (its best_model/), or a model folder, of a Transformer")
    parser.add_argument("out", help="output tractogram (.trk, at most 10 attentions, or .trx)")
    parser.add_argument("--subject", required=True, help="the subject's name")
    parser.add_argument("--hdf5", help="a dwiml HDF5 holding the subject [the run's training HDF5]")
    parser.add_argument("--nb-streamlines", type=int, default=3, help="the first N streamlines [%(default)s]")
    parser.add_argument("--images", help="folder of the PNGs [OUT without its extension]")
    add_model_weights_arguments(parser)
    parser.add_argument("--device", default="cpu")
    add_overwrite(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        from dwiml.atomic import atomic_folder
        from dwiml.data.dataset import MultiSubjectDataset
        from dwiml.device import check_device
        from dwiml.errors import DwimlError
        from dwiml.evaluation.attention import save_attention_images, save_attention_tractogram, streamline_attention
        from dwiml.evaluation.point_loss import subject_reference
        from dwiml.ranges import AT_LEAST_ONE, check_arguments
        from dwiml.tracking.subject import load_tracking_model

        check_arguments(args, {"nb_streamlines": AT_LEAST_ONE})
        check_device(args.device, "--device")
        if Path(args.out).suffix not in (".trk", ".trx"):
            raise DwimlError(f"{args.out}: the output must end in .trk or .trx (formats with data per point)")
        out = check_output(args.out, args.overwrite)
        folder = check_output(args.images or out.with_suffix(""), args.overwrite, folder=True)
        model, spec, run = load_tracking_model(args.model, args.device, args.use_latest_epoch)
        hdf5 = args.hdf5 or (run.hdf5_path() if run is not None else None)
        if hdf5 is None:
            raise DwimlError(f"{args.model}: no record of the run's HDF5 file: give --hdf5")
        dataset = MultiSubjectDataset(hdf5, lazy=True)
        attention = streamline_attention(model, spec, dataset, args.subject, args.nb_streamlines, args.allow_mismatch)
        reference = subject_reference(dataset, args.subject, spec.input_group)
        save_attention_tractogram(attention, reference, out)
        with atomic_folder(folder) as tmp:  # a folder replaced (-f) holds only this run's images
            images = save_attention_images(attention, tmp)
        print(f"{len(attention.streamlines)} streamlines, {len(attention.matrices)} attentions -> {out}; "
              f"{len(images)} images -> {folder}")

    run_command("dwiml-visualize-attention", body)


if __name__ == "__main__":
    main()
