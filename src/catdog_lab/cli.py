"""Hydra CLI over the same stage functions: `catdog stage=scratch scratch.lr=3e-4`, or a sweep:
`catdog -m stage=scratch scratch.lr=1e-4,3e-4 scratch.batch_size=20,32`.

Outputs go to Hydra's job folder (outputs/... or multirun/...), never over the DVC-tracked
workspace outputs; the decoded data cache of the workspace is reused read-only.
"""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from catdog_lab.config import CONF_DIR
from catdog_lab.entry import exit_on_user_error, stage_function

WRITTEN = ("features", "models", "metrics", "plots", "reports", "checkpoints")


def run(cfg: DictConfig, job_dir: Path) -> dict:
    stage = cfg.get("stage")
    if not stage:
        from catdog_lab.errors import ConfigError
        raise ConfigError("stage: say which stage to run, e.g. `catdog stage=scratch`")
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(cfg):
        cfg.pop("stage")
        for key in WRITTEN:
            cfg.paths[key] = str(job_dir / cfg.paths[key])
        if stage == "split":
            cfg.paths.split, cfg.paths.cache = str(job_dir / cfg.paths.split), str(job_dir / cfg.paths.cache)
    return stage_function(stage)(cfg)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    job_dir = Path(HydraConfig.get().runtime.output_dir)
    result = exit_on_user_error(run, cfg, job_dir)
    return (result or {}).get("test/acc") if isinstance(result, dict) else None


def main() -> None:
    import sys

    # `stage` is a CLI-only key (not in conf/, so not in params.yaml): `+stage=` is not needed
    sys.argv = [a if not a.startswith("stage=") else "+" + a for a in sys.argv]
    args = sys.argv[1:]
    if "-m" not in args and "--multirun" not in args:
        # compose once up front so that a bad group option or key is one line, not Hydra's traceback
        from catdog_lab.config import compose
        overrides = [a for a in args if "=" in a and not a.lstrip("+~").startswith("hydra.")]
        exit_on_user_error(compose, overrides)
    _main()


if __name__ == "__main__":
    main()
