"""Hydra config presets of dwiml (also reachable as conf/ at the repository root)."""
