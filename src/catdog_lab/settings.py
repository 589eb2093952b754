"""A stage's config, validated once and typed: what the stage layer hands down.

`stage_settings(cfg, stage)` checks every key a training stage reads (one-line errors naming the key)
and returns frozen dataclasses; `stages/train.py` passes their fields on as keyword arguments, so the
data, model and tracking code never see the config object. Kept apart from config.py so that the split
stage, which validates only `data.*`, does not depend on the model and augmentation code named here.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from catdog_lab.config import choice, fraction, get_key, optional_positive_int, positive_float, positive_int
from catdog_lab.errors import ConfigError
from catdog_lab.registry import TRAINING_STAGES

MODELS = ("convnet", "head", "transfer")   # builders in catdog_lab.models.factory
INITS = ("keras", "torch")
SELECT = ("last", "best")                  # which epoch a training stage keeps and tests (`<stage>.select`)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
# Lightning strategies that train on one device or data-parallel over several (the rank guards in
# stages/train.py assume data parallelism: every rank holds the whole model)
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "ddp_notebook", "single_device")


@dataclass(frozen=True)
class StageSettings:
    """`<stage>.*`: see conf/config.yaml for what each key means."""
    name: str
    model: str
    init: str
    epochs: int
    lr: float
    batch_size: int
    dropout: float
    augment: bool
    select: str
    steps_per_epoch: int | None
    validation_steps: int | None
    hidden: int | None = None            # head and transfer models
    activation: str | None = None
    trainable: tuple[str, ...] = ()
    init_from: str | None = None
    init_from_weights: str = "selected"


@dataclass(frozen=True)
class TrainerSettings:
    """`trainer.*` (conf/trainer/default.yaml) and `compute.*`: how to run, the same for every stage."""
    accelerator: str
    devices: int
    num_nodes: int
    strategy: str
    precision: str
    deterministic: bool | str
    progress_bar: bool
    progress_refresh_rate: int
    log_every_n_steps: int
    num_sanity_val_steps: int
    checkpoint_every_n_epochs: int
    channels_last: bool
    loader_workers: int

    def resolved_precision(self, cuda_available: bool) -> str:
        """`auto`: bf16-mixed on a GPU, 32-true on the CPU."""
        if self.precision != "auto":
            return self.precision
        return "bf16-mixed" if cuda_available and self.accelerator != "cpu" else "32-true"


def _typed(cls, section: dict, **extra):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in section.items() if k in names}, **extra)


def stage_settings(cfg: DictConfig, stage: str) -> StageSettings:
    validate_stage(cfg, stage)
    section = OmegaConf.to_container(cfg[stage], resolve=True)
    section["trainable"] = tuple(section.get("trainable") or ())
    return _typed(StageSettings, section, name=stage)


def trainer_settings(cfg: DictConfig) -> TrainerSettings:
    validate_trainer(cfg)
    return _typed(TrainerSettings, {**OmegaConf.to_container(cfg.trainer, resolve=True),
                                    **OmegaConf.to_container(cfg.compute, resolve=True)})


def validate_stage(cfg: DictConfig, stage: str) -> None:
    if stage not in TRAINING_STAGES:
        raise ConfigError(f"stage: unknown stage {stage!r}; choose one of {', '.join(TRAINING_STAGES)}")
    positive_int(cfg, f"{stage}.epochs")
    positive_float(cfg, f"{stage}.lr")
    positive_int(cfg, f"{stage}.batch_size")
    fraction(cfg, f"{stage}.dropout")
    model = get_key(cfg, f"{stage}.model")
    if model not in MODELS:
        raise ConfigError(f"{stage}.model: unknown model {model!r}; choose {', '.join(MODELS[:-1])} or {MODELS[-1]}")
    choice(cfg, f"{stage}.init", INITS)
    choice(cfg, f"{stage}.select", SELECT)
    optional_positive_int(cfg, f"{stage}.steps_per_epoch")
    optional_positive_int(cfg, f"{stage}.validation_steps")
    if model == "convnet":
        filters = get_key(cfg, "convnet.filters")
        if not filters or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in filters):
            raise ConfigError(f"convnet.filters: must be a list of positive integers, got {filters!r}")
        positive_int(cfg, "convnet.hidden", allow_zero=True)
    if model in ("head", "transfer"):
        positive_int(cfg, f"{stage}.hidden")
        from catdog_lab.models.components.heads import ACTIVATIONS
        choice(cfg, f"{stage}.activation", tuple(ACTIVATIONS))
        validate_backbone(cfg, stage)
    if get_key(cfg, f"{stage}.augment"):
        validate_augmentation(cfg)
    init_from = OmegaConf.select(cfg, f"{stage}.init_from")
    if init_from is not None and init_from not in TRAINING_STAGES:
        raise ConfigError(f"{stage}.init_from: unknown stage {init_from!r}")
    if init_from is not None:
        choice(cfg, f"{stage}.init_from_weights", ("last", "selected"))
    validate_trainer(cfg)


def validate_trainer(cfg: DictConfig) -> None:
    positive_int(cfg, "trainer.checkpoint_every_n_epochs")
    if get_key(cfg, "trainer.deterministic") not in (True, False, "warn"):
        raise ConfigError(f"trainer.deterministic: must be true, false or warn, got {cfg.trainer.deterministic!r}")
    if get_key(cfg, "trainer.accelerator") not in ACCELERATORS:
        raise ConfigError(f"trainer.accelerator: unknown accelerator {cfg.trainer.accelerator!r}")
    positive_int(cfg, "trainer.devices")
    positive_int(cfg, "trainer.num_nodes")
    choice(cfg, "trainer.strategy", STRATEGIES)
    positive_int(cfg, "trainer.progress_refresh_rate")
    positive_int(cfg, "trainer.log_every_n_steps")
    positive_int(cfg, "trainer.num_sanity_val_steps", allow_zero=True)
    positive_int(cfg, "compute.loader_workers", allow_zero=True)
    choice(cfg, "compute.channels_last", (True, False))


def validate_augmentation(cfg: DictConfig) -> None:
    value = get_key(cfg, "augmentation.rotation_degrees")
    if not isinstance(value, (int, float)) or not 0 <= value <= 180:
        raise ConfigError(f"augmentation.rotation_degrees: must be in [0, 180], got {value!r}")
    for key in ("width_shift", "height_shift", "zoom"):
        fraction(cfg, f"augmentation.{key}")
    value = get_key(cfg, "augmentation.shear_radians")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1.5708:
        raise ConfigError(f"augmentation.shear_radians: must be in [0, pi/2) radians, got {value!r}")
    from catdog_lab.data.augment import FILLS, INTERPOLATIONS
    choice(cfg, "augmentation.fill", tuple(FILLS))
    choice(cfg, "augmentation.interpolation", INTERPOLATIONS)


def backbone_spec(cfg: DictConfig):
    """conf/backbone/<name>.yaml, checked and typed (models/components/backbones.py: BackboneSpec)."""
    from catdog_lab.models.components.backbones import BackboneSpec

    return BackboneSpec.from_config(get_key(cfg, "backbone"))


def validate_backbone(cfg: DictConfig, stage: str | None = None) -> None:
    spec = backbone_spec(cfg)
    weights = spec.weights
    if weights not in ("imagenet", "none") and not Path(weights).expanduser().is_file():
        raise ConfigError(f"backbone.weights: file {weights} not found (use imagenet, none or an existing file)")
    positive_int(cfg, "backbone.feature_batch_size")
    if stage is not None:
        spec.check_layers(f"{stage}.trainable", OmegaConf.select(cfg, f"{stage}.trainable") or [], trainable=True)


def model_arch(cfg: DictConfig, stage: str) -> dict:
    """The architecture a model file records (models/<stage>.pt `arch`), from the stage's config."""
    section = cfg[stage]
    arch = {"kind": section.model, "image_size": int(cfg.data.image_size), "dropout": float(section.dropout)}
    if section.model == "convnet":
        arch |= {"filters": [int(n) for n in cfg.convnet.filters], "pool_last": bool(cfg.convnet.pool_last),
                 "hidden": int(cfg.convnet.hidden)}
    if section.model in ("head", "transfer"):
        arch |= {"backbone": str(cfg.backbone.name), "backbone_spec": backbone_spec(cfg).record(),
                 "weights": str(cfg.backbone.weights), "hidden": int(section.hidden),
                 "activation": str(section.activation), "trainable": list(section.get("trainable", []) or [])}
    return arch


# ----------------------------------------------------------------------------------------------- visualize
@dataclass(frozen=True)
class FilterSettings:
    """visualize.filters: which layers, how many filters, and the gradient ascent's settings."""
    layers: tuple[str, ...]
    finetuned_layers: tuple[str, ...]
    count: int
    size: int
    iterations: int
    step: float
    jitter: int
    blur_every: int
    blur_sigma: float
    l2: float
    octaves: int
    octave_scale: float

    def ascent(self) -> dict:
        """The keyword arguments of `filter_patterns`: every setting but the layer lists and the count."""
        return {field.name: getattr(self, field.name) for field in fields(self)
                if field.name not in ("layers", "finetuned_layers", "count")}


@dataclass(frozen=True)
class OcclusionSettings:
    window: int
    stride: int


@dataclass(frozen=True)
class VisualizeSettings:
    """cfg.visualize (conf/visualize/default.yaml), each value converted to its type once, here."""
    seed: int
    scratch_model: str
    transfer_model: str
    images_per_class: int
    gradcam_layer: str
    gradcam_alpha: float
    ig_steps: int
    occlusion: OcclusionSettings
    sanity_images: int
    gallery_max: int
    filters: FilterSettings


_KINDS = {int: "an integer", float: "a number", str: "a string"}


def _converted(cls, node, prefix: str):
    """cls from the config node `prefix`, each field converted to its annotated type (nested settings too);
    a missing or unconvertible value is a ConfigError naming its key."""
    hints = typing.get_type_hints(cls)
    values = {}
    for field in fields(cls):
        kind, key = hints[field.name], f"{prefix}.{field.name}"
        if field.name not in node:
            raise ConfigError(f"{key}: missing from the config")
        value = node[field.name]
        if is_dataclass(kind):
            values[field.name] = _converted(kind, value, key)
            continue
        try:
            values[field.name] = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: must be {_KINDS.get(kind, 'a list')}, got {value!r}") from None
    return cls(**values)


def visualize_settings(cfg) -> VisualizeSettings:
    return _converted(VisualizeSettings, cfg.visualize, "visualize")
