"""``dwiml-train`` / ``python train.py``: the Hydra training app."""
from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from dwiml.config.schema import run_dir
from dwiml.errors import DwimlError

log = logging.getLogger("dwiml")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    from dwiml.training.run import train

    try:
        return train(cfg)
    except DwimlError as e:
        log.error("error: %s", e)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweep records the job as failed (Optuna: a failed trial, within max_failure_rate)
        sys.exit(1)


def main() -> None:
    """Check a ``resume=`` folder before Hydra creates anything, then run the app."""
    for arg in sys.argv[1:]:
        if arg.startswith("resume=") and arg != "resume=null":
            try:
                run_dir(arg.split("=", 1)[1], "")
            except DwimlError as e:
                sys.exit(f"dwiml-train: error: {e}")
    hydra_main()


if __name__ == "__main__":
    main()
