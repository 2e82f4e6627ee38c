"""Structured configs: dataclass schemas for Hydra's ConfigStore (:func:`dwiml.config.schema.register_configs`,
called by the training app), and :func:`dwiml.config.build.build`. ``dwiml/conf/`` holds the YAML presets
that select and fill the schemas. Importing this package registers nothing.
"""
