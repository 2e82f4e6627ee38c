"""``dwiml-train`` / ``python train.py``: the Hydra training app."""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

import dwiml.config  # noqa: F401  (registers the schemas and resolvers)
from dwiml.errors import DwimlError

log = logging.getLogger("dwiml")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from dwiml.training.run import train

    try:
        return train(cfg)
    except DwimlError as e:
        log.error("error: %s", e)
        sys.exit(1)


if __name__ == "__main__":
    main()
