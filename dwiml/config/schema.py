"""Dataclass schemas of every config group. Each YAML preset names its schema in its
defaults list, so a misspelled key or a wrong type fails at start-up, naming the key."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from dwiml import run_folder


@dataclass
class PhantomDatasetConfig:
    _target_: str = "dwiml.data.builtin.phantom_dataset"
    cache_dir: str = MISSING
    nb_subjects: int = 5
    seed: int = 1234
    lazy: bool = False
    cache_bytes: int = 2**30


@dataclass
class HDF5DatasetConfig:
    _target_: str = "dwiml.data.dataset.MultiSubjectDataset"
    hdf5_path: str = MISSING
    lazy: bool = False
    cache_bytes: int = 2**30


@dataclass
class SamplerConfig:
    _target_: str = "dwiml.data.sampler.BatchSampler"
    batch_size: float = 100
    unit: str = "nb_streamlines"
    nb_subjects_per_batch: int = 1
    cycles: int = 1
    seed: int = "${seed}"  # type: ignore[assignment]


@dataclass
class LoaderConfig:
    _target_: str = "dwiml.data.loader.BatchLoader"
    streamline_group: str = "streamlines"
    step_size_mm: Optional[float] = 1.0
    nb_points: Optional[int] = None
    compress_mm: Optional[float] = None
    reverse_ratio: float = 0.5
    split_ratio: float = 0.0
    min_points_after_split: int = 5
    noise_gaussian_size_forward: float = 0.0
    noise_gaussian_size_loss: float = 0.0


@dataclass
class HeadConfig:
    """A direction head, built as a partial: the model gives it its input size."""

    _target_: str = MISSING
    _partial_: bool = True
    hidden_sizes: list[int] = field(default_factory=list)
    eos_weight: float = 0.0  # > 0 adds an end-of-streamline output, its loss weighted by this


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
    sphere: str = "repulsion724"  # a dipy sphere: symmetric362, symmetric724, repulsion100, repulsion724, ...


@dataclass
class SmoothSphereClassificationConfig(SphereClassificationConfig):
    _target_: str = "dwiml.models.heads.SmoothSphereClassification"
    smoothing_width_deg: float = 10.0


@dataclass
class GaussianConfig(HeadConfig):
    _target_: str = "dwiml.models.heads.Gaussian"


@dataclass
class GaussianMixtureConfig(HeadConfig):
    _target_: str = "dwiml.models.heads.GaussianMixture"
    nb_components: int = 3


@dataclass
class FisherVonMisesConfig(HeadConfig):
    _target_: str = "dwiml.models.heads.FisherVonMises"


@dataclass
class FisherVonMisesMixtureConfig(HeadConfig):
    _target_: str = "dwiml.models.heads.FisherVonMisesMixture"
    nb_components: int = 3


@dataclass
class IdentityEmbeddingConfig:
    _target_: str = "dwiml.models.embeddings.IdentityEmbedding"
    _partial_: bool = True


@dataclass
class LinearEmbeddingConfig:
    _target_: str = "dwiml.models.embeddings.LinearEmbedding"
    _partial_: bool = True
    out_size: int = 64
    activation: Optional[str] = "relu"


@dataclass
class CNNEmbeddingConfig:
    _target_: str = "dwiml.models.embeddings.CNNEmbedding"
    _partial_: bool = True
    width: int = 3
    channels: list[int] = field(default_factory=lambda: [16])
    kernel_size: int = 2


@dataclass
class Learn2TrackConfig:
    _target_: str = "dwiml.models.learn2track.Learn2Track"
    rnn_type: str = "lstm"
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    nb_previous_dirs: int = 0
    prev_dirs_embedding_size: Optional[int] = None
    input_embedding: Any = MISSING
    dropout: float = 0.0
    layer_norm: bool = False
    skip_connections: bool = False
    head: Any = MISSING  # a head schema, from the model/head config group


@dataclass
class TransformerConfig:
    _target_: str = "dwiml.models.transformer.Transformer"
    variant: str = "encoder_decoder"
    d_model: int = 64
    nheads: int = 4
    nb_layers: int = 2
    nb_decoder_layers: Optional[int] = None
    ff_size: int = 128
    dropout: float = 0.1
    direction_embedding_size: int = 16
    input_embedding: Any = MISSING
    head: Any = MISSING  # a head schema, from the model/head config group


@dataclass
class AutoencoderConfig:
    _target_: str = "dwiml.models.autoencoder.StreamlineAutoencoder"
    nb_points: int = 32
    latent_size: int = 32
    channels: list[int] = field(default_factory=lambda: [32, 64])
    kernel_size: int = 3


@dataclass
class OptimConfig:
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = 1e-3
    weight_decay: float = 0.0


@dataclass
class SGDConfig(OptimConfig):
    _target_: str = "torch.optim.SGD"
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
class OneInputStepConfig:
    _target_: str = "dwiml.training.steps.OneInputStep"
    input_group: str = "input"
    volume_cache_size: int = 4
    neighborhood_type: str = "none"
    neighborhood_radius_mm: Optional[float] = None
    neighborhood_nb_rings: int = 1
    add_eos_target: bool = False


@dataclass
class StreamlinesStepConfig:
    _target_: str = "dwiml.training.steps.StreamlinesStep"


@dataclass
class GenerationValidationConfig:
    _target_: str = "dwiml.evaluation.generation.GenerationValidation"
    every_n_epochs: int = 1
    streamline_group: str = "${loader.streamline_group}"
    step_size_mm: Optional[float] = "${loader.step_size_mm}"  # type: ignore[assignment]
    nb_init_points: int = 2
    max_streamlines_per_subject: Optional[int] = 500
    tracking_mask: Optional[str] = None
    algo: str = "det"
    max_angle_deg: float = 90.0
    max_length_mm: float = 300.0
    eos_threshold: Optional[float] = None
    end_radius_mm: float = 2.0
    endpoint_tolerance_mm: float = 0.0
    max_scored_bundles: int = 20
    batch_size: int = 10_000
    seed: int = "${seed}"  # type: ignore[assignment]


@dataclass
class TrainerConfig:
    _target_: str = "dwiml.training.trainer.Trainer"
    max_epochs: int = 10
    max_batches_per_epoch_training: Optional[int] = None
    max_batches_per_epoch_validation: Optional[int] = None
    patience: Optional[int] = None
    patience_delta: float = 1e-6
    monitor: str = "valid_loss"
    monitor_mode: str = "min"
    clip_grad_norm: Optional[float] = None
    accumulate_grad_batches: int = 1
    ema_decay: Optional[float] = None
    precision: str = "32"
    compile: bool = False
    strategy: str = "single"
    checkpoint_every_minutes: Optional[float] = None
    checkpoint_every_batches: Optional[int] = None
    max_minutes: Optional[float] = None
    auto_resume: bool = False
    progress_bar: bool = True
    plot_every_epochs: Optional[int] = 1  # plots/metrics.png every N epochs and at the end; null: never


@dataclass
class ConstantLRConfig:
    _target_: str = "torch.optim.lr_scheduler.ConstantLR"
    _partial_: bool = True
    factor: float = 1.0
    total_iters: int = 0


@dataclass
class EpochsListLRConfig:
    _target_: str = "dwiml.training.schedulers.epochs_list"
    _partial_: bool = True
    learning_rates: list[float] = MISSING


@dataclass
class StepLRConfig:
    _target_: str = "torch.optim.lr_scheduler.StepLR"
    _partial_: bool = True
    step_size: int = 10
    gamma: float = 0.5


@dataclass
class CosineWarmupLRConfig:
    _target_: str = "dwiml.training.schedulers.cosine_warmup"
    _partial_: bool = True
    warmup_epochs: int = 2
    total_epochs: int = "${trainer.max_epochs}"  # type: ignore[assignment]
    start_factor: float = 0.1
    min_lr: float = 0.0


@dataclass
class PlateauLRConfig:
    _target_: str = "torch.optim.lr_scheduler.ReduceLROnPlateau"
    _partial_: bool = True
    mode: str = "${trainer.monitor_mode}"
    factor: float = 0.5
    patience: int = 2
    threshold: float = 1e-4
    min_lr: float = 0.0


@dataclass
class NoLoggerConfig:
    _target_: str = "dwiml.training.loggers.NoLogger"


@dataclass
class CometLoggerConfig:
    _target_: str = "dwiml.training.loggers.CometLogger"
    project_name: str = "dwiml"
    workspace: Optional[str] = None
    offline: bool = False


@dataclass
class TensorBoardLoggerConfig:
    _target_: str = "dwiml.training.loggers.TensorBoardLogger"


@dataclass
class LoggersConfig:
    _target_: str = "dwiml.training.loggers.Loggers"
    loggers: dict[str, Any] = field(default_factory=dict)


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
    seed: int = 1234
    device: str = "cpu"
    num_workers: int = 0
    resume: Optional[str] = None


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


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore and register the run folder's resolvers (the app does
    this once, before Hydra composes its config; importing dwiml registers nothing)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=group, name=f"{name}_schema", node=node)
    run_folder.register_resolvers()
