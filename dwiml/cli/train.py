"""``dwiml-train`` / ``python train.py``: the Hydra training app.

Exit status: 0 when training ends, 1 on bad input, 75 (EX_TEMPFAIL) when the run stopped
early with a checkpoint (SIGTERM/SIGUSR1, ``trainer.max_minutes``): run it again with
``resume=<run_dir>`` (or ``trainer.auto_resume=true``).
"""
from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from dwiml.config import schema
from dwiml.errors import DwimlError
from dwiml.training import distributed

log = logging.getLogger("dwiml")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    from dwiml.training.run import train
    from dwiml.training.trainer import RESUMABLE_EXIT, TrainingInterrupted

    try:
        return train(cfg)
    except DwimlError as e:
        log.error("error: %s", e)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweep records the job as failed (Optuna: a failed trial, within max_failure_rate)
        sys.exit(1)
    except TrainingInterrupted:
        sys.exit(RESUMABLE_EXIT)


def main() -> None:
    """Check a ``resume=`` folder before Hydra creates anything, then run the app.

    Under torchrun, every rank names the run folder from rank 0's clock, and only rank 0
    writes Hydra's files and the text log."""
    for arg in sys.argv[1:]:
        if arg.startswith("resume=") and arg != "resume=null":
            try:
                schema.run_dir(arg.split("=", 1)[1], "")
            except DwimlError as e:
                sys.exit(f"dwiml-train: error: {e}")
    distributed.init_from_environment()
    schema.RUN_STARTED[0] = distributed.shared_time()
    if not distributed.is_main():
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    try:
        hydra_main()
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
