"""dwiml: train deep-learning tractography models on diffusion MRI."""

__version__ = "0.1.0"
