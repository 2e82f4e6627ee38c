"""Dataclass schemas of every config group: the keys and their types, with no values (``MISSING``):
the values live in the YAML presets of ``dwiml/conf/``, their one home. Each preset names its schema
in its defaults list, so a misspelled key or a wrong type fails at start-up, naming the key. The
``_target_`` that a schema builds is part of it; an optional group (``gv``) is None until selected. A key's
allowed values are part of its schema too (``ruled``, see :mod:`dwiml.ranges`), checked at start-up by
:func:`dwiml.config.validate.check_config` and by the component that the key configures."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from dwiml import run_folder
from dwiml.ranges import (ANGLE_DEG, AT_LEAST_ONE, BELOW_ONE, EOS_THRESHOLD, FRACTION, NON_NEGATIVE, POSITIVE,
                          PROBABILITY, SEED, Choice, Range, ruled)

SAMPLER_UNITS = ("nb_streamlines", "length_mm")  # streamlines per batch, or their total length (mm)
ALGOS = ("det", "prob")
MONITOR_MODES = ("min", "max")
PRECISIONS = ("32", "bf16", "fp16")
STRATEGIES = ("single", "ddp")


@dataclass
class PhantomDatasetConfig:
    _target_: str = "dwiml.data.builtin.phantom_dataset"
    cache_dir: str = MISSING
    nb_subjects: int = ruled(Range(3))
    seed: int = MISSING
    lazy: bool = MISSING
    cache_bytes: int = ruled(NON_NEGATIVE)


@dataclass
class HDF5DatasetConfig:
    _target_: str = "dwiml.data.dataset.MultiSubjectDataset"
    hdf5_path: str = MISSING
    lazy: bool = MISSING
    cache_bytes: int = ruled(NON_NEGATIVE)


@dataclass
class SamplerConfig:
    _target_: str = "dwiml.data.sampler.BatchSampler"
    batch_size: float = ruled(POSITIVE)
    validation_batch_size: Optional[float] = ruled(POSITIVE)
    unit: str = ruled(Choice(SAMPLER_UNITS))
    nb_subjects_per_batch: int = ruled(AT_LEAST_ONE)
    cycles: int = ruled(AT_LEAST_ONE)
    seed: int = ruled(SEED)


@dataclass
class LoaderConfig:
    _target_: str = "dwiml.data.loader.BatchLoader"
    streamline_group: str = MISSING
    step_size_mm: Optional[float] = ruled(POSITIVE)
    nb_points: Optional[int] = ruled(Range(2))
    compress_mm: Optional[float] = ruled(POSITIVE)
    reverse_ratio: float = ruled(FRACTION)
    split_ratio: float = ruled(FRACTION)
    min_points_after_split: int = ruled(Range(2))
    noise_gaussian_size_forward: float = ruled(NON_NEGATIVE)
    noise_gaussian_size_loss: float = ruled(NON_NEGATIVE)


@dataclass
class HeadConfig:
    """A direction head, built as a partial: the model gives it its input size."""

    _target_: str = MISSING
    _partial_: bool = True
    hidden_sizes: list[int] = ruled(AT_LEAST_ONE)
    eos_weight: float = ruled(NON_NEGATIVE)  # > 0 adds an end-of-streamline output, its loss weighted by this


@dataclass
class CosineRegressionConfig(HeadConfig):
    _target_: str = "dwiml.models.heads.CosineRegression"


@dataclass
class L2RegressionConfig(HeadConfig):
    _target_: str = "dwiml.models.heads.L2Regression"


@dataclass
class CosinePlusL2RegressionConfig(HeadConfig):
    _target_: str = "dwiml.models.heads.CosinePlusL2Regression"


@dataclass
class SphereClassificationConfig(HeadConfig):
    _target_: str = "dwiml.models.heads.SphereClassification"
    sphere: str = MISSING  # a dipy sphere: symmetric362, symmetric724, repulsion100, repulsion724, ...


@dataclass
class SmoothSphereClassificationConfig(SphereClassificationConfig):
    _target_: str = "dwiml.models.heads.SmoothSphereClassification"
    smoothing_width_deg: float = ruled(POSITIVE)


@dataclass
class GaussianConfig(HeadConfig):
    _target_: str = "dwiml.models.heads.Gaussian"


@dataclass
class GaussianMixtureConfig(HeadConfig):
    _target_: str = "dwiml.models.heads.GaussianMixture"
    nb_components: int = ruled(AT_LEAST_ONE)


@dataclass
class FisherVonMisesConfig(HeadConfig):
    _target_: str = "dwiml.models.heads.FisherVonMises"


@dataclass
class FisherVonMisesMixtureConfig(HeadConfig):
    _target_: str = "dwiml.models.heads.FisherVonMisesMixture"
    nb_components: int = ruled(AT_LEAST_ONE)


@dataclass
class IdentityEmbeddingConfig:
    _target_: str = "dwiml.models.embeddings.IdentityEmbedding"
    _partial_: bool = True


@dataclass
class LinearEmbeddingConfig:
    _target_: str = "dwiml.models.embeddings.LinearEmbedding"
    _partial_: bool = True
    out_size: int = ruled(AT_LEAST_ONE)
    activation: Optional[str] = MISSING


@dataclass
class CNNEmbeddingConfig:
    _target_: str = "dwiml.models.embeddings.CNNEmbedding"
    _partial_: bool = True
    width: int = ruled(AT_LEAST_ONE)
    channels: list[int] = ruled(AT_LEAST_ONE)
    kernel_size: int = ruled(AT_LEAST_ONE)


@dataclass
class Learn2TrackConfig:
    _target_: str = "dwiml.models.learn2track.Learn2Track"
    rnn_type: str = MISSING
    hidden_sizes: list[int] = ruled(AT_LEAST_ONE)
    nb_previous_dirs: int = ruled(NON_NEGATIVE)
    prev_dirs_embedding_size: Optional[int] = ruled(AT_LEAST_ONE)
    input_embedding: Any = MISSING
    dropout: float = ruled(BELOW_ONE)
    layer_norm: bool = MISSING
    skip_connections: bool = MISSING
    head: Any = MISSING  # a head schema, from the model/head config group


@dataclass
class TransformerConfig:
    _target_: str = "dwiml.models.transformer.Transformer"
    variant: str = MISSING
    d_model: int = ruled(AT_LEAST_ONE)
    nheads: int = ruled(AT_LEAST_ONE)
    nb_layers: int = ruled(AT_LEAST_ONE)
    nb_decoder_layers: Optional[int] = ruled(AT_LEAST_ONE)
    ff_size: int = ruled(AT_LEAST_ONE)
    dropout: float = ruled(BELOW_ONE)
    direction_embedding_size: int = ruled(AT_LEAST_ONE)
    input_embedding: Any = MISSING
    head: Any = MISSING  # a head schema, from the model/head config group


@dataclass
class AutoencoderConfig:
    _target_: str = "dwiml.models.autoencoder.StreamlineAutoencoder"
    nb_points: int = ruled(Range(2))
    latent_size: int = ruled(AT_LEAST_ONE)
    channels: list[int] = ruled(AT_LEAST_ONE)
    kernel_size: int = ruled(AT_LEAST_ONE)


@dataclass
class OptimConfig:
    _target_: str = MISSING  # torch.optim.Adam, AdamW, RAdam: chosen by the preset
    _partial_: bool = True
    lr: float = ruled(POSITIVE)
    weight_decay: float = ruled(NON_NEGATIVE)


@dataclass
class SGDConfig(OptimConfig):
    _target_: str = "torch.optim.SGD"
    momentum: float = ruled(NON_NEGATIVE)
    nesterov: bool = MISSING


@dataclass
class OneInputStepConfig:
    _target_: str = "dwiml.training.steps.OneInputStep"
    input_group: str = MISSING
    volume_cache_size: int = ruled(NON_NEGATIVE)
    neighborhood_type: str = MISSING
    neighborhood_radius_mm: Optional[float] = MISSING
    neighborhood_nb_rings: int = MISSING
    add_eos_target: bool = MISSING


@dataclass
class StreamlinesStepConfig:
    _target_: str = "dwiml.training.steps.StreamlinesStep"


@dataclass
class GenerationValidationConfig:
    _target_: str = "dwiml.evaluation.generation.GenerationValidation"
    subsets: list[str] = MISSING
    every_n_epochs: int = ruled(AT_LEAST_ONE)
    streamline_group: str = MISSING
    step_size_mm: Optional[float] = ruled(POSITIVE)
    nb_init_points: int = ruled(AT_LEAST_ONE)
    max_streamlines_per_subject: Optional[int] = ruled(AT_LEAST_ONE)
    tracking_mask: Optional[str] = MISSING
    algo: str = ruled(Choice(ALGOS))
    max_angle_deg: float = ruled(ANGLE_DEG)
    max_length_mm: float = ruled(POSITIVE)
    eos_threshold: Any = ruled(EOS_THRESHOLD)  # a probability, "max" or null (checked by TrackingOptions)
    end_radius_mm: float = ruled(NON_NEGATIVE)
    endpoint_tolerance_mm: float = ruled(NON_NEGATIVE)
    max_scored_bundles: int = ruled(AT_LEAST_ONE)
    batch_size: int = ruled(AT_LEAST_ONE)
    seed: int = ruled(SEED)


@dataclass
class TrainerConfig:
    _target_: str = "dwiml.training.trainer.Trainer"
    max_epochs: int = ruled(AT_LEAST_ONE)
    max_batches_per_epoch_training: Optional[int] = ruled(AT_LEAST_ONE)
    max_batches_per_epoch_validation: Optional[int] = ruled(AT_LEAST_ONE)
    patience: Optional[int] = ruled(NON_NEGATIVE)
    patience_delta: float = ruled(NON_NEGATIVE)
    monitor: str = MISSING
    monitor_mode: str = ruled(Choice(MONITOR_MODES))
    clip_grad_norm: Optional[float] = ruled(POSITIVE)
    accumulate_grad_batches: int = ruled(AT_LEAST_ONE)
    ema_decay: Optional[float] = ruled(BELOW_ONE)
    precision: str = ruled(Choice(PRECISIONS))
    compile: bool = MISSING
    strategy: str = ruled(Choice(STRATEGIES))
    checkpoint_every_minutes: Optional[float] = ruled(NON_NEGATIVE)
    checkpoint_every_batches: Optional[int] = ruled(AT_LEAST_ONE)
    max_minutes: Optional[float] = ruled(NON_NEGATIVE)
    auto_resume: bool = MISSING
    progress_bar: bool = MISSING
    plot_every_epochs: Optional[int] = ruled(AT_LEAST_ONE)  # plots/metrics.png every N epochs and at the end; null: never


@dataclass
class ConstantLRConfig:
    _target_: str = "torch.optim.lr_scheduler.ConstantLR"
    _partial_: bool = True
    factor: float = ruled(FRACTION)
    total_iters: int = ruled(NON_NEGATIVE)


@dataclass
class EpochsListLRConfig:
    _target_: str = "dwiml.training.schedulers.epochs_list"
    _partial_: bool = True
    learning_rates: list[float] = ruled(POSITIVE)


@dataclass
class StepLRConfig:
    _target_: str = "torch.optim.lr_scheduler.StepLR"
    _partial_: bool = True
    step_size: int = ruled(AT_LEAST_ONE)
    gamma: float = ruled(POSITIVE)


@dataclass
class CosineWarmupLRConfig:
    _target_: str = "dwiml.training.schedulers.cosine_warmup"
    _partial_: bool = True
    warmup_epochs: int = ruled(NON_NEGATIVE)
    total_epochs: int = ruled(AT_LEAST_ONE)
    start_factor: float = ruled(Range(0, 1, low_open=True))
    min_lr: float = ruled(NON_NEGATIVE)


@dataclass
class PlateauLRConfig:
    _target_: str = "torch.optim.lr_scheduler.ReduceLROnPlateau"
    _partial_: bool = True
    mode: str = ruled(Choice(MONITOR_MODES))
    factor: float = ruled(PROBABILITY)
    patience: int = ruled(NON_NEGATIVE)
    threshold: float = ruled(NON_NEGATIVE)
    min_lr: float = ruled(NON_NEGATIVE)


@dataclass
class NoLoggerConfig:
    _target_: str = "dwiml.training.loggers.NoLogger"


@dataclass
class CometLoggerConfig:
    _target_: str = "dwiml.training.loggers.CometLogger"
    project_name: str = MISSING
    workspace: Optional[str] = MISSING
    offline: bool = MISSING


@dataclass
class TensorBoardLoggerConfig:
    _target_: str = "dwiml.training.loggers.TensorBoardLogger"


@dataclass
class LoggersConfig:
    _target_: str = "dwiml.training.loggers.Loggers"
    loggers: dict[str, Any] = MISSING


@dataclass
class TrainConfig:
    """The root: one entry per config group, plus run-wide settings."""

    dataset: Any = MISSING
    sampler: SamplerConfig = MISSING
    loader: LoaderConfig = MISSING
    model: Any = MISSING
    optim: Any = MISSING
    scheduler: Any = MISSING
    step: Any = MISSING
    trainer: TrainerConfig = MISSING
    logger: Any = MISSING
    gv: Optional[GenerationValidationConfig] = None
    seed: int = ruled(SEED)
    device: str = MISSING
    num_workers: int = ruled(NON_NEGATIVE)
    resume: Optional[str] = MISSING
    demo: bool = MISSING  # a short demonstration (the default settings), not a recipe: said at the end of the run


SCHEMAS = {
    "dataset": {"phantom": PhantomDatasetConfig, "hdf5": HDF5DatasetConfig},
    "sampler": {"sampler": SamplerConfig},
    "loader": {"loader": LoaderConfig},
    "model": {"learn2track": Learn2TrackConfig, "transformer": TransformerConfig, "autoencoder": AutoencoderConfig},
    "model/input_embedding": {"identity": IdentityEmbeddingConfig, "linear": LinearEmbeddingConfig,
                              "cnn": CNNEmbeddingConfig},
    "model/head": {"cosine": CosineRegressionConfig, "l2": L2RegressionConfig,
                   "cosine_l2": CosinePlusL2RegressionConfig, "sphere_classification": SphereClassificationConfig,
                   "smooth_sphere_classification": SmoothSphereClassificationConfig, "gaussian": GaussianConfig,
                   "gaussian_mixture": GaussianMixtureConfig, "fisher_von_mises": FisherVonMisesConfig,
                   "fisher_von_mises_mixture": FisherVonMisesMixtureConfig},
    "optim": {"optim": OptimConfig, "sgd": SGDConfig},
    "scheduler": {"constant": ConstantLRConfig, "epochs_list": EpochsListLRConfig, "step": StepLRConfig,
                  "cosine_warmup": CosineWarmupLRConfig, "plateau": PlateauLRConfig},
    "step": {"one_input": OneInputStepConfig, "streamlines": StreamlinesStepConfig},
    "trainer": {"trainer": TrainerConfig},
    "gv": {"gv": GenerationValidationConfig},
    "logger": {"none": NoLoggerConfig, "comet": CometLoggerConfig, "tensorboard": TensorBoardLoggerConfig,
               "loggers": LoggersConfig},
}


def schema_name(group: str, name: str) -> str:
    """The ConfigStore name of a group's schema, e.g. ``model_head_cosine_schema``. Schemas are stored
    at the root, outside their group, so that they are no choice of it: a preset names its schema in
    its defaults list as ``/<schema_name>@_here_``, and neither the help page nor shell completion
    (which list group options only) shows them."""
    return f"{group.replace('/', '_')}_{name}_schema"


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore and register the run folder's resolvers (the app does
    this once, before Hydra composes its config; importing dwiml registers nothing)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(name=schema_name(group, name), node=node)
    run_folder.register_resolvers()
