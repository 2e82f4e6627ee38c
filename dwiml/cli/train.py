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

from dwiml import __version__, run_folder
from dwiml.config.schema import register_configs
from dwiml.errors import DwimlError
from dwiml.training import distributed

log = logging.getLogger("dwiml")
register_configs()  # the app's schemas and resolvers, before Hydra composes (also in a sweep's job processes)


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
    """Run the app. Under torchrun, every rank names the run folder from rank 0's clock, and only
    rank 0 writes Hydra's files and the text log (see :mod:`dwiml.run_folder`). ``--version`` prints
    dwiml's version (not Hydra's)."""
    if "--version" in sys.argv[1:]:
        print(f"dwiml-train {__version__}")
        return
    distributed.init_from_environment()
    run_folder.start_run(distributed.shared_time(), writer=distributed.is_main())
    try:
        hydra_main()
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
