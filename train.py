"""Train a tractography model: ``python train.py model=lstm optim=radam`` (see README)."""
from dwiml.cli.train import main

if __name__ == "__main__":
    main()
