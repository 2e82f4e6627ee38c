"""Structured configs: dataclass schemas registered in Hydra's ConfigStore, and resolvers.

Importing this package registers them; ``dwiml/conf/`` holds the YAML presets that select
and fill the schemas.
"""
from dwiml.config.schema import register_configs

register_configs()
