"""Loading and composing the config (its schema, and the checks, are in schema.py)."""
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
        raise ConfigError(hydra_message(exc, config_dir)) from None


def load_params(path: str | Path = "params.yaml") -> DictConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found: run from the project root (where dvc.yaml is)")
    return OmegaConf.load(path)


def read_path(cfg: DictConfig | dict, key: str) -> Path:
    """Where a stage reads `paths.<key>` that an earlier stage wrote (data cache, features, models, metrics).

    Under DVC every stage runs in one workspace, so reads and writes share `paths.*`. A Hydra CLI job
    (`catdog ...`) writes only into its own folder and reads upstream outputs from the workspace or an
    earlier run (`upstream=<dir>`): the CLI puts those folders in `read_paths.<key>`, a key that only it
    sets (not in conf/, so not in params.yaml).
    """
    found = (cfg.get("read_paths") or {}).get(key)
    return Path(found if found is not None else cfg["paths"][key])


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True, sort_keys=False)


def params_hash(cfg: DictConfig | dict, keys: list[str] | None = None) -> str:
    """Short stable hash of the resolved config (or of some top-level keys of it); a plain dict hashes as the
    DictConfig it was resolved from."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
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


def hydra_message(error: Exception | str, config_dir: Path | str = CONF_DIR) -> str:
    """Hydra's composition error as one line that keeps what a user needs: a group's valid options (Hydra
    lists them on later lines), the nearest existing key for an override of one that does not exist, or
    the override that does not parse."""
    import difflib
    import re

    text = str(error)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if getattr(error, "override", None):      # OverrideParseException: which of the overrides, then why
        return f"{error.override}: {lines[0]} (Hydra's override syntax: key=value, key=a,b for a sweep)"
    if not lines:
        return text
    missing = re.match(r"In '[^']*': Could not find '([^'/]+)/([^']+)'", lines[0])
    if missing and f"Available options in '{missing.group(1)}':" in lines:
        start = lines.index(f"Available options in '{missing.group(1)}':") + 1
        options = [line for line in lines[start:] if not line.startswith("Config search path")]
        options = options[:next((i for i, line in enumerate(options) if line.endswith(":") or "=" in line),
                                len(options))]
        return f"{missing.group(1)}: no option {missing.group(2)!r}; choose from {', '.join(options)}"
    unknown = re.match(r"Could not override '([^']+)'", lines[0])
    if unknown:
        key = unknown.group(1)
        try:                          # the composed defaults: every group's keys (scratch.*, backbone.*)
            known = flatten(compose(config_dir=config_dir))
        except ConfigError:
            known = {}
        close = difflib.get_close_matches(key, list(known), n=1)
        return (f"{key}: no such key in the config" + (f"; did you mean {close[0]}?" if close else "")
                + f" (to add a new key: +{key}=...)")
    return lines[0]


def write_params(path: str | Path = PROJECT_ROOT / "params.yaml", overrides: list[str] | None = None) -> None:
    """Regenerate params.yaml from conf/ (what DVC does on `dvc exp run`)."""
    from catdog_lab.io import write_text

    header = "# Generated from conf/ by `python -m catdog_lab.config` (DVC rewrites it on `dvc exp run`).\n" \
             "# Edit conf/, not this file: tests/test_config.py checks that the two agree.\n"
    write_text(path, header + to_yaml(compose(overrides)))


USAGE = """usage: python -m catdog_lab.config [KEY=VALUE ...]

Compose conf/ with Hydra (optionally with overrides such as profile=quick) and write params.yaml,
the file DVC reads. Edit conf/, then run this; `dvc exp run -S KEY=VALUE` does the same for one run."""


def main(argv: list[str] | None = None) -> None:
    import sys

    from catdog_lab.errors import exit_on_user_error

    args = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in args):
        print(USAGE)
        return
    bad = [arg for arg in args if "=" not in arg]
    if bad:
        print(USAGE, file=sys.stderr)
        print(f"error: {bad[0]}: not a KEY=VALUE override", file=sys.stderr)
        sys.exit(2)
    exit_on_user_error(write_params, overrides=args)
    print("wrote params.yaml")


if __name__ == "__main__":
    main()
