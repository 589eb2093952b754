"""A training or visualize stage's config, checked once against the schema (schema.py) and typed.

`validate_stage(cfg, stage)` checks every key a training stage reads and returns the typed settings;
`stages/train.py` passes their fields on as keyword arguments, so the data, model and tracking code never
see the config object. Kept apart from schema.py because it knows which sections a stage reads and asks the
backbone code about `backbone.*` (BackboneSpec) (the split stage, which reads only `data.*`, must not depend on the
model code: its DVC deps are its import closure).
"""
from __future__ import annotations

from omegaconf import DictConfig

from catdog_lab.errors import ConfigError
from catdog_lab.registry import TRAINING_STAGES
from catdog_lab.schema import (
    Augmentation,
    Backbone,
    Compute,
    ConvNet,
    Filters,
    Stage,
    Trainer,
    TrainerSettings,
    Visualize,
    check,
)

FilterSettings, VisualizeSettings = Filters, Visualize      # the names the visualize stage uses


class StageSettings(Stage):
    """`<stage>.*` with the sections the stage reads: `convnet` for a convnet, `backbone` for a head or
    transfer model, `augmentation` when it augments (None otherwise: not checked, not used)."""
    convnet: ConvNet | None = None
    backbone: Backbone | None = None
    augmentation: Augmentation | None = None


def validate_stage(cfg: DictConfig, stage: str) -> tuple[StageSettings, TrainerSettings]:
    """Every key training `stage` reads, checked once: its section and those it uses, how it runs, the seed."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed: must be an integer, got {seed!r}")
    settings = stage_settings(cfg, stage)
    return settings, _run_settings(cfg, settings.precision)


def stage_settings(cfg: DictConfig, stage: str) -> StageSettings:
    if stage not in TRAINING_STAGES:
        raise ConfigError(f"stage: unknown stage {stage!r}; choose one of {', '.join(TRAINING_STAGES)}")
    section = check(cfg, stage, Stage)
    uses: dict = {}
    if section.model == "convnet":
        uses["convnet"] = check(cfg, "convnet", ConvNet)
    else:
        uses["backbone"] = check(cfg, "backbone", Backbone)
        # conf/backbone/<name>.yaml's builder, blocks and layer names (backbones.BackboneSpec), by their keys
        backbone_spec(cfg).check_layers(f"{stage}.trainable", section.trainable, trainable=True)
    if section.augment:
        uses["augmentation"] = check(cfg, "augmentation", Augmentation)
    return StageSettings.model_construct(**(dict(section) | {"name": stage} | uses))


def trainer_settings(cfg: DictConfig, stage: str | None = None) -> TrainerSettings:
    """How a training stage runs: `trainer.*` and `compute.*`, and `stage`'s own precision if it sets one."""
    return _run_settings(cfg, check(cfg, stage, Stage).precision if stage else None)


def _run_settings(cfg: DictConfig, precision: str | None) -> TrainerSettings:
    return TrainerSettings.for_stage(check(cfg, "trainer", Trainer), check(cfg, "compute", Compute), precision)


def visualize_settings(cfg: DictConfig) -> Visualize:
    """`visualize.*`, checked before any figure is drawn: its two models are of the kinds it shows (a convnet's
    activations, a backbone model's Grad-CAM) and every layer it names is a layer of the backbone."""
    settings = check(cfg, "visualize", Visualize)
    for key, convnet in (("scratch_model", True), ("transfer_model", False)):
        fitting = [stage for stage in TRAINING_STAGES if (cfg[stage].model == "convnet") == convnet]
        stage = getattr(settings, key)
        if stage not in fitting:
            wanted = "the convnet" if convnet else "a backbone-based one"
            raise ConfigError(f"visualize.{key}: {stage} trains a {cfg[stage].model} model, not {wanted}; "
                              f"choose from {', '.join(fitting)}")
    spec = backbone_spec(cfg)
    spec.check_layers("visualize.gradcam_layer", [settings.gradcam_layer])
    spec.check_layers("visualize.filters.layers", settings.filters.layers)
    spec.check_layers("visualize.filters.finetuned_layers", settings.filters.finetuned_layers)
    return settings


def backbone_spec(cfg: DictConfig):
    """conf/backbone/<name>.yaml, checked and typed (models/components/backbones.py: BackboneSpec)."""
    from catdog_lab.models.components.backbones import BackboneSpec

    return BackboneSpec.from_config(cfg.backbone)


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
