"""Every stage of the chapter, once: its name, titles, book section, code and what it writes.

Everything that lists stages reads this: the DVC entry scripts (`pipelines/<name>.py`), `entry`
(name -> function), the Hydra CLI, MLflow run names, `compare`'s table, the model cards,
`scripts/run_all_stages.py` and the tests. dvc.yaml names the same stages in the same order
(tests/test_registry.py checks it). Adding a stage: a row here, its function, a `pipelines/<name>.py`
like the others and a dvc.yaml entry.

Standard library only: config.py and every entry point import it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import import_module
from typing import Callable


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str               # the MLflow run name, after the stage's number and name (split: its counts, once made;
                               # {backbone}, {top}: see `for_config`)
    listing: str | None        # the book's section (1st edition), where the stage has one
    module: str                # the module holding `function`
    function: str              # fn(cfg) -> dict, or fn(cfg, stage) -> dict for a training stage
    writes: tuple[str, ...]    # the `paths.*` keys it writes into
    trains: bool = False       # a training stage: fn(cfg, stage), a model file, a row in compare's table
    title: str | None = None   # a training stage's row in compare's table (the accuracy ladder); {backbone}, {top}
    description: str | None = None   # a training stage's one-line description in its model card ({backbone}:
                                     # the backbone's title, {trainable}: its unfrozen blocks)

    def __post_init__(self):
        if self.trains and not (self.title and self.description):
            raise ValueError(f"registry: training stage {self.name!r} needs a title and a description")

    @property
    def index(self) -> int:
        return STAGES.index(self.name)

    @property
    def run_name(self) -> str:
        return f"{self.index} {self.name}: {self.summary}" + (f" ({self.listing})" if self.listing else "")

    def for_config(self, config) -> Stage:
        """The row with {backbone} (the backbone's title, e.g. VGG16) and {top} (the blocks `finetune` unfreezes,
        e.g. block5) filled in from a resolved config (a DictConfig or plain mapping)."""
        backbone = config.get("backbone") or {}
        trainable = (config.get("finetune") or {}).get("trainable") or backbone.get("trainable") or []
        names = {"backbone": backbone.get("title") or backbone.get("name") or "the backbone",
                 "top": "+".join(dict.fromkeys(str(name).split("_")[0] for name in trainable)) or "top"}
        return replace(self, summary=self.summary.format(**names),
                       title=self.title.format(**names) if self.title else self.title)

    def load(self) -> Callable[[object], dict | None]:
        """The stage as fn(cfg)."""
        fn = getattr(import_module(self.module), self.function)
        return (lambda cfg: fn(cfg, self.name)) if self.trains else fn


TRAINED = ("models", "metrics", "plots", "reports", "checkpoints", "seeds")   # what a training stage writes
_TRAIN = "catdog_lab.stages.train"

REGISTRY: dict[str, Stage] = {s.name: s for s in (
    Stage("split", "photos split per class", None, "catdog_lab.stages.split", "split", ("split", "cache")),
    Stage("scratch", "small convnet from scratch", "5.2", _TRAIN, "train", TRAINED, trains=True,
          title="Small convnet from scratch",
          description="The book's small convnet trained from scratch"),
    Stage("augmented", "+ data augmentation and dropout", "5.2.5", _TRAIN, "train", TRAINED, trains=True,
          title="+ data augmentation, dropout",
          description="The book's small convnet with data augmentation and dropout"),
    Stage("features", "{backbone} feature extraction", "5.3.1", _TRAIN, "train", ("features", *TRAINED),
          trains=True, title="{backbone} fast feature extraction",
          description="{backbone} conv base (frozen) + dense head trained on its cached features"),
    Stage("features_augmented", "frozen {backbone} + augmentation", "5.3.1", _TRAIN, "train", TRAINED, trains=True,
          title="Frozen {backbone} + augmentation",
          description="{backbone} conv base (frozen) + dense head trained end to end on augmented images"),
    Stage("finetune", "{backbone} {top} fine-tuned", "5.3.2", _TRAIN, "train", TRAINED, trains=True,
          title="Fine-tuned {backbone} {top}",
          description="{backbone} with its top blocks ({trainable}) fine-tuned, started from features_augmented"),
    Stage("publish", "model cards, MLflow registry, champion", None, "catdog_lab.stages.publish", "publish",
          ("models",)),
    Stage("visualize", "what convnets learn", "5.4", "catdog_lab.stages.visualize", "visualize",
          ("reports", "metrics")),
    Stage("compare", "the accuracy ladder", None, "catdog_lab.stages.compare", "compare", ("reports", "metrics")),
)}

STAGES = tuple(REGISTRY)                                       # pipeline order
TRAINING_STAGES = tuple(name for name, s in REGISTRY.items() if s.trains)
WRITTEN = tuple(dict.fromkeys(key for s in REGISTRY.values() for key in s.writes))   # every paths.* key


def stage(name: str) -> Stage:
    """The registry's row for `name`; a one-line error naming the valid stages otherwise."""
    if name not in REGISTRY:
        from catdog_lab.errors import ConfigError
        raise ConfigError(f"stage: unknown stage {name!r}; choose one of {', '.join(STAGES)}")
    return REGISTRY[name]
