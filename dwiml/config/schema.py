"""Dataclass schemas of every config group: the keys and their types, with no values (``MISSING``):
the values live in the YAML presets of ``dwiml/conf/``, their one home. Each preset names its schema
in its defaults list, so a misspelled key or a wrong type fails at start-up, naming the key. The
``_target_`` that a schema builds is part of it; an optional group (``gv``) is None until selected."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from dwiml import run_folder


@dataclass
class PhantomDatasetConfig:
    _target_: str = "dwiml.data.builtin.phantom_dataset"
    cache_dir: str = MISSING
    nb_subjects: int = MISSING
    seed: int = MISSING
    lazy: bool = MISSING
    cache_bytes: int = MISSING


@dataclass
class HDF5DatasetConfig:
    _target_: str = "dwiml.data.dataset.MultiSubjectDataset"
    hdf5_path: str = MISSING
    lazy: bool = MISSING
    cache_bytes: int = MISSING


@dataclass
class SamplerConfig:
    _target_: str = "dwiml.data.sampler.BatchSampler"
    batch_size: float = MISSING
    validation_batch_size: Optional[float] = MISSING
    unit: str = MISSING
    nb_subjects_per_batch: int = MISSING
    cycles: int = MISSING
    seed: int = MISSING


@dataclass
class LoaderConfig:
    _target_: str = "dwiml.data.loader.BatchLoader"
    streamline_group: str = MISSING
    step_size_mm: Optional[float] = MISSING
    nb_points: Optional[int] = MISSING
    compress_mm: Optional[float] = MISSING
    reverse_ratio: float = MISSING
    split_ratio: float = MISSING
    min_points_after_split: int = MISSING
    noise_gaussian_size_forward: float = MISSING
    noise_gaussian_size_loss: float = MISSING


@dataclass
class HeadConfig:
    """A direction head, built as a partial: the model gives it its input size."""

    _target_: str = MISSING
    _partial_: bool = True
    hidden_sizes: list[int] = MISSING
    eos_weight: float = MISSING  # > 0 adds an end-of-streamline output, its loss weighted by this


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
    smoothing_width_deg: float = MISSING


@dataclass
class GaussianConfig(HeadConfig):
    _target_: str = "dwiml.models.heads.Gaussian"


@dataclass
class GaussianMixtureConfig(HeadConfig):
    _target_: str = "dwiml.models.heads.GaussianMixture"
    nb_components: int = MISSING


@dataclass
class FisherVonMisesConfig(HeadConfig):
    _target_: str = "dwiml.models.heads.FisherVonMises"


@dataclass
class FisherVonMisesMixtureConfig(HeadConfig):
    _target_: str = "dwiml.models.heads.FisherVonMisesMixture"
    nb_components: int = MISSING


@dataclass
class IdentityEmbeddingConfig:
    _target_: str = "dwiml.models.embeddings.IdentityEmbedding"
    _partial_: bool = True


@dataclass
class LinearEmbeddingConfig:
    _target_: str = "dwiml.models.embeddings.LinearEmbedding"
    _partial_: bool = True
    out_size: int = MISSING
    activation: Optional[str] = MISSING


@dataclass
class CNNEmbeddingConfig:
    _target_: str = "dwiml.models.embeddings.CNNEmbedding"
    _partial_: bool = True
    width: int = MISSING
    channels: list[int] = MISSING
    kernel_size: int = MISSING


@dataclass
class Learn2TrackConfig:
    _target_: str = "dwiml.models.learn2track.Learn2Track"
    rnn_type: str = MISSING
    hidden_sizes: list[int] = MISSING
    nb_previous_dirs: int = MISSING
    prev_dirs_embedding_size: Optional[int] = MISSING
    input_embedding: Any = MISSING
    dropout: float = MISSING
    layer_norm: bool = MISSING
    skip_connections: bool = MISSING
    head: Any = MISSING  # a head schema, from the model/head config group


@dataclass
class TransformerConfig:
    _target_: str = "dwiml.models.transformer.Transformer"
    variant: str = MISSING
    d_model: int = MISSING
    nheads: int = MISSING
    nb_layers: int = MISSING
    nb_decoder_layers: Optional[int] = MISSING
    ff_size: int = MISSING
    dropout: float = MISSING
    direction_embedding_size: int = MISSING
    input_embedding: Any = MISSING
    head: Any = MISSING  # a head schema, from the model/head config group


@dataclass
class AutoencoderConfig:
    _target_: str = "dwiml.models.autoencoder.StreamlineAutoencoder"
    nb_points: int = MISSING
    latent_size: int = MISSING
    channels: list[int] = MISSING
    kernel_size: int = MISSING


@dataclass
class OptimConfig:
    _target_: str = MISSING  # torch.optim.Adam, AdamW, RAdam: chosen by the preset
    _partial_: bool = True
    lr: float = MISSING
    weight_decay: float = MISSING


@dataclass
class SGDConfig(OptimConfig):
    _target_: str = "torch.optim.SGD"
    momentum: float = MISSING
    nesterov: bool = MISSING


@dataclass
class OneInputStepConfig:
    _target_: str = "dwiml.training.steps.OneInputStep"
    input_group: str = MISSING
    volume_cache_size: int = MISSING
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
    every_n_epochs: int = MISSING
    streamline_group: str = MISSING
    step_size_mm: Optional[float] = MISSING
    nb_init_points: int = MISSING
    max_streamlines_per_subject: Optional[int] = MISSING
    tracking_mask: Optional[str] = MISSING
    algo: str = MISSING
    max_angle_deg: float = MISSING
    max_length_mm: float = MISSING
    eos_threshold: Any = MISSING  # a probability, "max" or null (checked by TrackingOptions)
    end_radius_mm: float = MISSING
    endpoint_tolerance_mm: float = MISSING
    max_scored_bundles: int = MISSING
    batch_size: int = MISSING
    seed: int = MISSING


@dataclass
class TrainerConfig:
    _target_: str = "dwiml.training.trainer.Trainer"
    max_epochs: int = MISSING
    max_batches_per_epoch_training: Optional[int] = MISSING
    max_batches_per_epoch_validation: Optional[int] = MISSING
    patience: Optional[int] = MISSING
    patience_delta: float = MISSING
    monitor: str = MISSING
    monitor_mode: str = MISSING
    clip_grad_norm: Optional[float] = MISSING
    accumulate_grad_batches: int = MISSING
    ema_decay: Optional[float] = MISSING
    precision: str = MISSING
    compile: bool = MISSING
    strategy: str = MISSING
    checkpoint_every_minutes: Optional[float] = MISSING
    checkpoint_every_batches: Optional[int] = MISSING
    max_minutes: Optional[float] = MISSING
    auto_resume: bool = MISSING
    progress_bar: bool = MISSING
    plot_every_epochs: Optional[int] = MISSING  # plots/metrics.png every N epochs and at the end; null: never


@dataclass
class ConstantLRConfig:
    _target_: str = "torch.optim.lr_scheduler.ConstantLR"
    _partial_: bool = True
    factor: float = MISSING
    total_iters: int = MISSING


@dataclass
class EpochsListLRConfig:
    _target_: str = "dwiml.training.schedulers.epochs_list"
    _partial_: bool = True
    learning_rates: list[float] = MISSING


@dataclass
class StepLRConfig:
    _target_: str = "torch.optim.lr_scheduler.StepLR"
    _partial_: bool = True
    step_size: int = MISSING
    gamma: float = MISSING


@dataclass
class CosineWarmupLRConfig:
    _target_: str = "dwiml.training.schedulers.cosine_warmup"
    _partial_: bool = True
    warmup_epochs: int = MISSING
    total_epochs: int = MISSING
    start_factor: float = MISSING
    min_lr: float = MISSING


@dataclass
class PlateauLRConfig:
    _target_: str = "torch.optim.lr_scheduler.ReduceLROnPlateau"
    _partial_: bool = True
    mode: str = MISSING
    factor: float = MISSING
    patience: int = MISSING
    threshold: float = MISSING
    min_lr: float = MISSING


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
    seed: int = MISSING
    device: str = MISSING
    num_workers: int = MISSING
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
