"""The closing lines of a run: what the run was (a short demonstration, or a recipe) and the commands
that track its testing subject with the model just trained and score the result, paths filled in."""
from __future__ import annotations

import shlex
from pathlib import Path

from dwiml.data.builtin import phantom_subjects_dir
from dwiml.data.hdf5 import open_hdf5, subject_lists
from dwiml.data.phantom import SCORING_TOLERANCE_MM
from dwiml.run_folder import RunFolder

RECIPE = "python train.py experiment=phantom_tracking"
DEMO = ("this was a short demonstration run (demo=true, the default settings): its model is not expected to "
        f"track well. A model that tracks the phantom: {RECIPE} (see README, Phantom result)")


def next_steps(run_dir: str | Path, demo: bool, phantom: bool) -> list[str]:
    """The lines to print at the end of a run in ``run_dir``; ``phantom``: it trained on the built-in phantom,
    whose testing subject has seeding mask, labels and bundles as files beside its HDF5."""
    run = RunFolder(run_dir)
    lines = [DEMO] if demo else []
    hdf5 = run.hdf5_path()
    with open_hdf5(hdf5) as h5:
        testing = subject_lists(h5)["testing"]
    if not testing:
        return lines
    subject, out = testing[0], run.tracked(testing[0])
    out.parent.mkdir(exist_ok=True)  # the printed command writes there, and commands create no folders
    q = shlex.quote
    if not phantom:
        return [*lines, f"track the testing subject {subject} with this model (masks: NIfTI files or volume groups):",
                f"  dwiml-track {q(str(run.root))} {q(str(out))} --subject {subject} --seeding-mask SEEDING_MASK "
                f"--tracking-mask TRACKING_MASK",
                f"  then score it: dwiml-score {q(str(out))} --ground-truth BUNDLE.trk ... --labels LABELS.nii.gz"]
    folder = phantom_subjects_dir(hdf5) / subject
    return [*lines, f"track the testing subject {subject} with this model, then score it:",
            f"  dwiml-track {q(str(run.root))} {q(str(out))} --subject {subject} "
            f"--seeding-mask {q(str(folder / 'seeding_mask.nii.gz'))} --tracking-mask wm_mask --seeds-per-voxel 2",
            f"  dwiml-score {q(str(out))} --ground-truth {q(str(folder / 'bundles'))}/*.trk "
            f"--labels {q(str(folder / 'endpoints_labels.nii.gz'))} --endpoint-tolerance-mm {SCORING_TOLERANCE_MM:g}"]
