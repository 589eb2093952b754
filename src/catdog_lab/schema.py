"""The config's schema: the type, range and choices of every key in conf/, declared once, as pydantic models.

One model per section of conf/ (the defaults and what each key means stay in the YAML files named below;
Hydra composes them, this module only says what a composed value may be). The stage layer checks the
sections a stage reads with `check(cfg, key, Model)`, once, and hands the typed result down; a bad value
is one `ConfigError` line naming the key: `<dotted.key>: must be <what the schema declares>, got <value>`.

Why pydantic and not Hydra structured configs: a structured config types a key but cannot bound it
(`lr > 0`, `dropout in [0, 1)`) or tie keys together (counts or fractions in `data.split`), which is most of
what the hand-written validators checked. Hydra still composes conf/ as YAML (no ConfigStore), so
params.yaml, `dvc exp run -S` and the CLI are unchanged.

Unknown keys are allowed everywhere (`extra="allow"`), as they were before the schema: a new key in conf/
needs no change here to compose, only to be checked. Missing keys are errors, except the ones only some
sections have (a stage's `hidden`, `trainable`, `init_from`, ...), which default to "not used".

Standard library, pydantic and omegaconf only: every stage imports this module, and a stage's DVC deps are
its import closure (tests/test_dvc_deps.py), so choices that code modules also list (`Fill`,
`Interpolation`, `Activation`) are spelled here and tests/test_schema.py checks that the two agree.
"""
from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

from omegaconf import DictConfig, ListConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from catdog_lab.errors import ConfigError

# ----------------------------------------------------------------------------------------- value kinds
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveNumber = Annotated[float, Field(gt=0)]
NonNegativeNumber = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]                 # [0, 1)
OpenFraction = Annotated[float, Field(gt=0, lt=1)]             # (0, 1)
Names = Annotated[tuple[str, ...], Field(strict=False)]        # a YAML list, kept as a tuple

Model = Literal["convnet", "head", "transfer"]                 # builders in catdog_lab.models.factory
Init = Literal["keras", "torch"]
Select = Literal["last", "best"]                               # which epoch a training stage keeps and tests
Activation = Literal["relu", "linear"]                         # models/components/heads.py ACTIVATIONS
Fill = Literal["nearest", "reflect", "zeros"]                  # data/augment.py FILLS
Interpolation = Literal["nearest", "bilinear"]                 # data/augment.py INTERPOLATIONS
Resampling = Literal["combined", "successive"]                 # data/augment.py RESAMPLINGS
SplitOrder = Literal["shuffle", "index"]                       # data/split.py SPLIT_ORDERS
Accelerator = Literal["auto", "cpu", "gpu", "cuda", "mps"]
# Lightning's precisions (auto: settings.TrainerSettings.resolved_precision); 64-true needs no GPU, the
# 16/bf16 ones want one (bf16 also runs, slowly, on a CPU)
Precision = Literal["auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"]
# Lightning strategies that train on one device or data-parallel over several (the rank guards in
# stages/train.py assume data parallelism: every rank holds the whole model)
Strategy = Literal["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "ddp_notebook", "single_device"]
# the training stages of catdog_lab.registry (a test keeps the two equal: registry.py stays standard library)
TrainingStage = Literal["scratch", "augmented", "features", "features_augmented", "finetune"]


class Section(BaseModel):
    """A section of the composed config: strict types (no "3" for 3, no true for 1), unknown keys kept."""
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class Problem(ValueError):
    """Raised by a validator below: `key` is relative to the section being checked (None: the section)."""

    def __init__(self, reason: str, key: str | None = None):
        super().__init__(reason)
        self.reason, self.key = reason, key


# --------------------------------------------------------------------------- conf/data/dogs_vs_cats.yaml
Layout = Literal["kaggle", "folders"]                          # data/discover.py LAYOUTS


class Source(Section):
    path: str | None
    layout: Layout
    url: str | None
    sha256: str | None
    download_dir: str

    @model_validator(mode="after")
    def _somewhere(self):
        if self.path is None and self.layout == "folders":
            raise Problem("null; set it to the folder (or .zip) holding one folder per class", "path")
        if self.path is None and not self.url:
            raise Problem("empty, and data.source.path is null: nowhere to get images from", "url")
        return self


class Split(Section):
    """Per class: all three counts (1000), or all three fractions of the class's usable photos (0.8)."""
    train: PositiveInt | OpenFraction
    validation: PositiveInt | OpenFraction
    test: PositiveInt | OpenFraction
    # [train, validation, test] fractions of each class instead of the counts (null: the counts)
    fractions: Annotated[tuple[OpenFraction, OpenFraction, OpenFraction], Field(strict=False)] | None = None
    seed: int
    order: SplitOrder

    @model_validator(mode="after")
    def _one_kind(self):
        if self.fractions is not None and sum(self.fractions) > 1 + 1e-9:
            raise Problem(f"must be null or [train, validation, test], each in (0, 1), adding up to at most 1, "
                          f"e.g. [0.7,0.15,0.15]; got {list(self.fractions)}", "fractions")
        values = {name: getattr(self, name) for name in ("train", "validation", "test")}
        fractions = [name for name, value in values.items() if isinstance(value, float)]
        if fractions and len(fractions) < 3:
            name = fractions[0]
            raise Problem(f"give all three as counts (1000) or all as fractions (0.8), got {values[name]!r} "
                          "beside counts", name)
        if fractions and sum(values.values()) > 1 + 1e-9:
            raise Problem(f"fractions add up to {sum(values.values()):g} > 1")
        return self


class Data(Section):
    source: Source
    classes: Names | None = None                               # null: every class found (data/discover.py)
    split: Split
    workers: Literal["auto"] | PositiveInt
    image_size: Annotated[int, Field(ge=48)]                   # four conv/pool blocks need 48 pixels
    max_image_pixels: PositiveInt
    min_image_side: PositiveInt                                # smaller images: skipped by split, refused by predict
    max_aspect_ratio: Annotated[float, Field(ge=1)]            # long side / short side, likewise

    @model_validator(mode="after")
    def _two_classes(self):
        if self.classes is not None and len(self.classes) < 2:
            raise Problem(f"must be null (every class folder) or a list of at least two class names, e.g. "
                          f"[cats,dogs,birds]; got {list(self.classes)}", "classes")
        return self


# ------------------------------------------------------------------------------------ conf/config.yaml
class ConvNet(Section):
    filters: Annotated[list[PositiveInt], Field(min_length=1)]
    pool_last: bool
    hidden: NonNegativeInt                                     # 0 = no Dense(hidden) layer


class Stage(Section):
    """`<stage>.*` of a training stage. `name` is not a key: the stage layer fills it in."""
    name: str = ""
    model: Model
    init: Init
    epochs: PositiveInt
    lr: PositiveNumber
    batch_size: PositiveInt
    dropout: Fraction
    augment: bool
    select: Select
    steps_per_epoch: PositiveInt | None
    validation_steps: PositiveInt | None
    loss_clip: Annotated[float, Field(gt=0, lt=0.5)] | None    # Keras 2.0.8's clipped BCE: 1.0e-7
    shuffle_buffer: PositiveInt | None                         # tf.data's shuffle buffer (data/sampler.py)
    precision: Precision | None = None                         # this stage's trainer.precision (None: trainer's)
    hidden: PositiveInt | None = None                          # head and transfer models
    activation: Activation | None = None
    trainable: Names = ()
    init_from: TrainingStage | None = None
    init_from_weights: Literal["last", "selected"] = "selected"

    @model_validator(mode="after")
    def _head_keys(self):
        if self.model != "convnet":
            for key in ("hidden", "activation"):
                if getattr(self, key) is None:
                    raise Problem("missing from the config", key)
        return self


class Compute(Section):
    channels_last: bool
    loader_workers: NonNegativeInt
    resident_data: bool         # the decoded images held whole on the training device (the same batches)


class Paths(Section):
    split: str
    cache: str
    features: str
    models: str
    metrics: str
    plots: str
    reports: str
    checkpoints: str
    seeds: str


# --------------------------------------------------------------------------- conf/backbone/vgg16.yaml
class Backbone(Section):
    name: str                   # the rest of conf/backbone/<name>.yaml: models.components.backbones.BackboneSpec
    weights: str
    feature_batch_size: PositiveInt

    @field_validator("weights", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> Any:
        if value is None or str(value) == "":
            raise Problem("empty; use imagenet, none or a file path")
        if str(value) not in ("imagenet", "none") and not Path(str(value)).expanduser().is_file():
            raise Problem(f"file {value} not found (use imagenet, none or an existing file)")
        return str(value)


# ---------------------------------------------------------------------------- conf/augmentation/book.yaml
class Augmentation(Section):
    rotation_degrees: Annotated[float, Field(ge=0, le=180)]
    width_shift: Fraction
    height_shift: Fraction
    shear_radians: Annotated[float, Field(ge=0, lt=1.5708)]   # [0, pi/2): Keras 2.0.8 reads radians
    zoom: Fraction
    zoom_independent: bool
    horizontal_flip: bool
    fill: Fill
    interpolation: Interpolation
    resampling: Resampling


# ------------------------------------------------------------------------------ conf/trainer/default.yaml
class Trainer(Section):
    accelerator: Accelerator
    devices: PositiveInt
    num_nodes: PositiveInt
    strategy: Strategy
    precision: Precision
    deterministic: Literal[True, False, "warn"]
    num_sanity_val_steps: NonNegativeInt
    checkpoint_every_n_epochs: PositiveInt
    progress_bar: bool
    progress_refresh_rate: PositiveInt
    log_every_n_steps: PositiveInt


class TrainerSettings(Trainer, Compute):
    """`trainer.*` and `compute.*` together: how every training stage runs (each checked under its own key),
    with a stage's own `<stage>.precision` in place of `trainer.precision` where it sets one."""

    @classmethod
    def for_stage(cls, trainer: dict, compute: dict, precision: str | None = None) -> "TrainerSettings":
        """The settings a stage trains with: `trainer` and `compute` as checked dicts, `precision` the stage's
        own `<stage>.precision` (None: `trainer.precision`)."""
        return cls.model_construct(**(dict(trainer) | ({"precision": precision} if precision else {})),
                                   **dict(compute))

    def resolved_precision(self, cuda_available: bool) -> str:
        """`auto`: bf16-mixed on a GPU, 32-true on the CPU."""
        if self.precision != "auto":
            return self.precision
        return "bf16-mixed" if cuda_available and self.accelerator != "cpu" else "32-true"


# ------------------------------------------------------------------------------- conf/tracking/mlflow.yaml
class TrackingSettings(Section):
    enabled: bool
    uri: str
    artifact_location: str
    experiment: str
    run_note: str = ""                                         # set by the CLI only: a sweep job's overrides


# ----------------------------------------------------------------------------- conf/visualize/default.yaml
class Filters(Section):
    """visualize.filters: which layers, how many filters, and the gradient ascent's settings."""
    layers: Names
    finetuned_layers: Names
    count: PositiveInt
    size: Annotated[int, Field(ge=32)]                          # VGG16's five poolings need 32 pixels
    iterations: PositiveInt
    step: PositiveNumber
    jitter: NonNegativeInt                                     # 0 = off
    blur_every: NonNegativeInt                                 # 0 = off
    blur_sigma: NonNegativeNumber
    l2: NonNegativeNumber
    octaves: PositiveInt
    octave_scale: Annotated[float, Field(ge=1)]

    def ascent(self) -> dict:
        """The keyword arguments of `filter_patterns`: every setting but the layer lists and the count."""
        return {name: getattr(self, name) for name in type(self).model_fields
                if name not in ("layers", "finetuned_layers", "count")}


class Occlusion(Section):
    window: PositiveInt
    stride: PositiveInt


class Visualize(Section):
    seed: int
    scratch_model: TrainingStage
    transfer_model: TrainingStage
    images_per_class: PositiveInt
    gradcam_layer: str                                         # a layer of the backbone: settings.visualize_settings
    gradcam_alpha: Annotated[float, Field(ge=0, le=1)]
    ig_steps: PositiveInt
    occlusion: Occlusion
    sanity_images: PositiveInt
    gallery_max: PositiveInt
    filters: Filters


# ---------------------------------------------------------------------------------------------- checking
S = TypeVar("S", bound=Section)
_ABSENT = object()


def check(cfg: DictConfig | dict, key: str, model: type[S]) -> S:
    """`cfg.<key>` as a `model`, or one ConfigError line naming the first bad key under it."""
    node = OmegaConf.select(cfg, key, default=_ABSENT) if isinstance(cfg, DictConfig) else cfg.get(key, _ABSENT)
    if node is _ABSENT:
        raise ConfigError(f"{key}: missing from the config")
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(one_line(exc.errors()[0], key, model, data)) from None


def one_line(error: dict, key: str, model: type[Section], data: Any) -> str:
    """pydantic's first error as `<dotted.key>: <reason>, got <value>`: the loc walked down the models to
    the key it names, the reason said from that field's declared type, range or choices."""
    names, field, value, loc = [key], None, data, list(error["loc"])
    while loc and model is not None and loc[0] in model.model_fields:
        name = loc.pop(0)
        names.append(name)
        field = model.model_fields[name]
        value = value.get(name, _ABSENT) if isinstance(value, dict) else _ABSENT
        model = _section_in(field.annotation)
    dotted = ".".join(names)
    if error["type"] == "missing" and not loc:                   # (a tuple's missing item leaves its index in loc)
        return f"{dotted}: missing from the config"
    problem = (error.get("ctx") or {}).get("error")
    if isinstance(problem, Problem):
        return f"{dotted}{'.' + problem.key if problem.key else ''}: {problem.reason}"
    got = error.get("input") if value is _ABSENT else value
    if field is None or model is not None:                        # the section itself is not a mapping
        return f"{dotted}: must be a mapping of keys, got {got!r}"
    return f"{dotted}: must be {describe(field.annotation, field.metadata)}, got {got!r}"


def _section_in(annotation: Any) -> type[Section] | None:
    for kind in (annotation, *typing.get_args(annotation)):
        if isinstance(kind, type) and issubclass(kind, Section):
            return kind
    return None


def describe(annotation: Any, metadata: list | tuple = ()) -> str:
    """What a declared type admits, in words: 'a positive integer', 'in [0, 1)', 'one of last, best'."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return describe(args[0], [*metadata, *args[1:]])
    if origin in (Union, types.UnionType):
        options = [describe(arg) for arg in args if arg is not type(None)]
        return " or ".join(options + (["null"] if type(None) in args else []))
    if origin is Literal and len(args) == 1:
        return str(args[0])
    if origin is Literal:
        return "one of " + ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in args)
    bounds: dict[str, Any] = {}
    for item in metadata:
        for meta in getattr(item, "metadata", [item]):           # Field(...) in Annotated carries its own
            bounds |= {k: getattr(meta, k) for k in ("gt", "ge", "lt", "le", "min_length")
                       if getattr(meta, k, None) is not None}
    if origin in (list, tuple):
        item = describe(args[0])
        items = f"numbers {item}" if item.startswith("in ") else item.removeprefix("a ").removeprefix("an ") + "s"
        fixed = f"{len(args)} " if origin is tuple and len(args) > 1 and args[-1] is not Ellipsis else ""
        return f"a {'non-empty ' if bounds.get('min_length') else ''}list of {fixed}{items}"
    if annotation is bool:
        return "true or false"
    if annotation is str:
        return "a string"
    if annotation is int and set(bounds) <= {"gt", "ge"}:
        if bounds.get("gt") == 0:
            return "a positive integer"
        if bounds.get("ge") == 0:
            return "a non-negative integer"
        return "an integer" + (f" >= {bounds['ge']}" if "ge" in bounds else f" > {bounds['gt']}" if bounds else "")
    if not bounds:
        return "a number" if annotation is float else getattr(annotation, "__name__", str(annotation))
    if set(bounds) == {"gt"}:
        return f"a number > {bounds['gt']}"
    low = f"[{bounds['ge']}" if "ge" in bounds else f"({bounds['gt']}"
    high = f"{bounds['le']}]" if "le" in bounds else f"{bounds['lt']})"
    return f"in {low}, {high}"
