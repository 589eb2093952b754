"""Loading, composing and validating the config. Every check names the key it rejects."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from catdog_lab.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"
# where each `paths.*` key points by default (conf/config.yaml): the project's layout of outputs, which a
# Hydra CLI job and the tests reproduce inside their own folders
LAYOUT: dict[str, str] = dict(OmegaConf.load(CONF_DIR / "config.yaml").paths)


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
def get_key(cfg: DictConfig, key: str):
    value = OmegaConf.select(cfg, key, default="__missing__")
    if value == "__missing__":
        raise ConfigError(f"{key}: missing from the config")
    return value


def positive_int(cfg, key, allow_zero=False):
    value = get_key(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise ConfigError(f"{key}: must be a {'non-negative' if allow_zero else 'positive'} integer, got {value!r}")
    return value


def positive_float(cfg, key):
    value = get_key(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{key}: must be a number > 0, got {value!r}")
    return value


def choice(cfg, key, choices):
    value = get_key(cfg, key)
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def optional_positive_int(cfg, key):
    return None if get_key(cfg, key) is None else positive_int(cfg, key)


def fraction(cfg, key, upper_inclusive=False):
    value = get_key(cfg, key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value and (
        value <= 1 if upper_inclusive else value < 1)
    if not ok:
        raise ConfigError(f"{key}: must be in [0, 1{']' if upper_inclusive else ')'}, got {value!r}")
    return value


def validate_data(cfg: DictConfig) -> None:
    values = {split: get_key(cfg, f"data.split.{split}") for split in ("train", "validation", "test")}
    if all(isinstance(v, float) for v in values.values()):       # fractions of each class's usable photos
        for split in values:
            fraction(cfg, f"data.split.{split}")
            if not values[split] > 0:
                raise ConfigError(f"data.split.{split}: a fraction must be > 0, got {values[split]!r}")
        if sum(values.values()) > 1 + 1e-9:
            raise ConfigError(f"data.split: fractions add up to {sum(values.values()):g} > 1")
    else:                                                        # images per class
        for split in values:
            if isinstance(values[split], float):
                raise ConfigError(f"data.split.{split}: give all three as counts (1000) or all as fractions "
                                  f"(0.8), got {values[split]!r} beside counts")
            positive_int(cfg, f"data.split.{split}")
    workers = get_key(cfg, "data.workers")
    if workers != "auto":
        positive_int(cfg, "data.workers")
    positive_int(cfg, "data.image_size")
    if cfg.data.image_size < 48:
        raise ConfigError("data.image_size: must be at least 48 pixels (four conv/pool blocks), "
                          f"got {cfg.data.image_size}")
    positive_int(cfg, "data.max_image_pixels")
    get_key(cfg, "data.split.seed")
    path = get_key(cfg, "data.source.path")
    from catdog_lab.data.sources import local_source
    local_source(cfg.data.source)
    if path is None and not get_key(cfg, "data.source.url"):
        raise ConfigError("data.source.url: empty, and data.source.path is null: nowhere to get images from")


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
