"""Loading, composing and validating the config. Every check names the key it rejects."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from catdog_lab import TRAINING_STAGES
from catdog_lab.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"
SELECT = ("last", "best")      # which epoch a training stage keeps and tests (`<stage>.select`)


def compose(overrides: list[str] | None = None, config_dir: Path | str = CONF_DIR) -> DictConfig:
    """Compose conf/ with Hydra, as DVC does for `dvc exp run` (no `hydra:` node, no job dirs)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides or []))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_first_line(str(exc))) from None


def load_params(path: str | Path = "params.yaml") -> DictConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found: run from the project root (where dvc.yaml is)")
    return OmegaConf.load(path)


def read_path(cfg: DictConfig, key: str) -> Path:
    """Where a stage reads `paths.<key>` that an earlier stage wrote (data cache, features, models, metrics).

    Under DVC every stage runs in one workspace, so reads and writes share `paths.*`. A Hydra CLI job
    (`catdog ...`) writes only into its own folder and reads upstream outputs from the workspace or an
    earlier run (`upstream=<dir>`): the CLI puts those folders in `read_paths.<key>`, a key that only it
    sets (not in conf/, so not in params.yaml).
    """
    found = OmegaConf.select(cfg, f"read_paths.{key}") if isinstance(cfg, DictConfig) else None
    return Path(found if found is not None else cfg.paths[key])


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True, sort_keys=False)


def params_hash(cfg: DictConfig, keys: list[str] | None = None) -> str:
    """Short stable hash of the resolved config (or of some top-level keys of it)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    if keys is not None:
        data = {k: data.get(k) for k in keys}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict[str, Any]:
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


# ----------------------------------------------------------------------------- validation
def _get(cfg: DictConfig, key: str):
    value = OmegaConf.select(cfg, key, default="__missing__")
    if value == "__missing__":
        raise ConfigError(f"{key}: missing from the config")
    return value


def _positive_int(cfg, key, allow_zero=False):
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise ConfigError(f"{key}: must be a {'non-negative' if allow_zero else 'positive'} integer, got {value!r}")
    return value


def _positive_float(cfg, key):
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{key}: must be a number > 0, got {value!r}")
    return value


def _choice(cfg, key, choices):
    value = _get(cfg, key)
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def _optional_positive_int(cfg, key):
    return None if _get(cfg, key) is None else _positive_int(cfg, key)


def _fraction(cfg, key, upper_inclusive=False):
    value = _get(cfg, key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value and (
        value <= 1 if upper_inclusive else value < 1)
    if not ok:
        raise ConfigError(f"{key}: must be in [0, 1{']' if upper_inclusive else ')'}, got {value!r}")
    return value


def validate_data(cfg: DictConfig) -> None:
    values = {split: _get(cfg, f"data.split.{split}") for split in ("train", "validation", "test")}
    if all(isinstance(v, float) for v in values.values()):       # fractions of each class's usable photos
        for split in values:
            _fraction(cfg, f"data.split.{split}")
            if not values[split] > 0:
                raise ConfigError(f"data.split.{split}: a fraction must be > 0, got {values[split]!r}")
        if sum(values.values()) > 1 + 1e-9:
            raise ConfigError(f"data.split: fractions add up to {sum(values.values()):g} > 1")
    else:                                                        # images per class
        for split in values:
            if isinstance(values[split], float):
                raise ConfigError(f"data.split.{split}: give all three as counts (1000) or all as fractions "
                                  f"(0.8), got {values[split]!r} beside counts")
            _positive_int(cfg, f"data.split.{split}")
    workers = _get(cfg, "data.workers")
    if workers != "auto":
        _positive_int(cfg, "data.workers")
    _positive_int(cfg, "data.image_size")
    if cfg.data.image_size < 48:
        raise ConfigError(f"data.image_size: must be at least 48 pixels (four conv/pool blocks), got {cfg.data.image_size}")
    _positive_int(cfg, "data.max_image_pixels")
    _get(cfg, "data.split.seed")
    path = _get(cfg, "data.source.path")
    from catdog_lab.data.sources import local_source
    local_source(cfg.data.source)
    if path is None and not _get(cfg, "data.source.url"):
        raise ConfigError("data.source.url: empty, and data.source.path is null: nowhere to get images from")


def validate_stage(cfg: DictConfig, stage: str) -> None:
    if stage not in TRAINING_STAGES:
        raise ConfigError(f"stage: unknown stage {stage!r}; choose one of {', '.join(TRAINING_STAGES)}")
    _positive_int(cfg, f"{stage}.epochs")
    _positive_float(cfg, f"{stage}.lr")
    _positive_int(cfg, f"{stage}.batch_size")
    _fraction(cfg, f"{stage}.dropout")
    model = _get(cfg, f"{stage}.model")
    if model not in ("convnet", "head", "transfer"):
        raise ConfigError(f"{stage}.model: unknown model {model!r}; choose convnet, head or transfer")
    _choice(cfg, f"{stage}.init", ("keras", "torch"))
    _choice(cfg, f"{stage}.select", SELECT)
    _optional_positive_int(cfg, f"{stage}.steps_per_epoch")
    _optional_positive_int(cfg, f"{stage}.validation_steps")
    if model == "convnet":
        filters = _get(cfg, "convnet.filters")
        if not filters or not all(isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in filters):
            raise ConfigError(f"convnet.filters: must be a list of positive integers, got {filters!r}")
        _positive_int(cfg, "convnet.hidden", allow_zero=True)
    if model in ("head", "transfer"):
        _positive_int(cfg, f"{stage}.hidden")
        from catdog_lab.models.components.heads import ACTIVATIONS
        _choice(cfg, f"{stage}.activation", tuple(ACTIVATIONS))
        validate_backbone(cfg)
    if _get(cfg, f"{stage}.augment"):
        validate_augmentation(cfg)
    init_from = OmegaConf.select(cfg, f"{stage}.init_from")
    if init_from is not None and init_from not in TRAINING_STAGES:
        raise ConfigError(f"{stage}.init_from: unknown stage {init_from!r}")
    if init_from is not None:
        _choice(cfg, f"{stage}.init_from_weights", ("last", "selected"))
    _positive_int(cfg, "trainer.checkpoint_every_n_epochs")
    if _get(cfg, "trainer.deterministic") not in (True, False, "warn"):
        raise ConfigError(f"trainer.deterministic: must be true, false or warn, got {cfg.trainer.deterministic!r}")
    if _get(cfg, "trainer.accelerator") not in ("auto", "cpu", "gpu", "cuda", "mps"):
        raise ConfigError(f"trainer.accelerator: unknown accelerator {cfg.trainer.accelerator!r}")
    _positive_int(cfg, "trainer.devices")
    _positive_int(cfg, "trainer.num_nodes")
    _choice(cfg, "trainer.strategy", STRATEGIES)


# Lightning strategies that train on one device or data-parallel over several (the rank guards in
# stages/train.py assume data parallelism: every rank holds the whole model)
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "ddp_notebook", "single_device")


def validate_augmentation(cfg: DictConfig) -> None:
    value = _get(cfg, "augmentation.rotation_degrees")
    if not isinstance(value, (int, float)) or not 0 <= value <= 180:
        raise ConfigError(f"augmentation.rotation_degrees: must be in [0, 180], got {value!r}")
    for key in ("width_shift", "height_shift", "zoom"):
        _fraction(cfg, f"augmentation.{key}")
    value = _get(cfg, "augmentation.shear_radians")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1.5708:
        raise ConfigError(f"augmentation.shear_radians: must be in [0, pi/2) radians, got {value!r}")
    from catdog_lab.data.augment import FILLS, INTERPOLATIONS
    _choice(cfg, "augmentation.fill", tuple(FILLS))
    _choice(cfg, "augmentation.interpolation", INTERPOLATIONS)


def validate_backbone(cfg: DictConfig) -> None:
    from catdog_lab.models.components.backbones import BACKBONES

    name = _get(cfg, "backbone.name")
    if name not in BACKBONES:
        raise ConfigError(f"backbone.name: unknown backbone {name!r}; choose one of {', '.join(sorted(BACKBONES))}")
    weights = _get(cfg, "backbone.weights")
    if weights is None or str(weights) == "":
        raise ConfigError("backbone.weights: empty; use imagenet, none or a file path")
    if str(weights) not in ("imagenet", "none") and not Path(str(weights)).expanduser().is_file():
        raise ConfigError(f"backbone.weights: file {weights} not found (use imagenet, none or an existing file)")
    _positive_int(cfg, "backbone.feature_batch_size")


def write_params(path: str | Path = PROJECT_ROOT / "params.yaml", overrides: list[str] | None = None) -> None:
    """Regenerate params.yaml from conf/ (what DVC does on `dvc exp run`)."""
    from catdog_lab.io import write_text

    header = "# Generated from conf/ by `python -m catdog_lab.config` (DVC rewrites it on `dvc exp run`).\n" \
             "# Edit conf/, not this file: tests/test_config.py checks that the two agree.\n"
    write_text(path, header + to_yaml(compose(overrides)))


if __name__ == "__main__":
    import sys

    write_params(overrides=sys.argv[1:])
    print("wrote params.yaml")
