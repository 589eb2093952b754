"""Hydra CLI over the same stage functions: `catdog stage=scratch scratch.lr=3e-4`, or a sweep:
`catdog -m stage=finetune finetune.lr=1e-5,2e-5`.

A job WRITES only its own stage's outputs, into its Hydra job folder (outputs/... or multirun/...),
in the project's layout (<job>/models/finetune.pt, <job>/metrics/finetune.json, ...), never over the
DVC-tracked workspace. It READS what earlier stages made (data cache, conv-base features, models,
metrics, figures) from the workspace, i.e. `paths.*` relative to where `catdog` runs, or from an
earlier run's folder given as `upstream=<dir>` (a `catdog stage=split` job folder, say). The stages
find those folders in `read_paths.*` (see `config.read_path`).

Every job adds its test accuracy to the workspace's seed ledger (`paths.seeds`, shared by all jobs), so
`catdog -m stage=scratch seed=1,2,3` gives `compare` its error bars.

The value returned to Hydra (what a sweeper such as Optuna optimises) is `val/acc` for a training stage:
validation accuracy of the epoch whose model is kept and tested (`<stage>.select`). Never `test/acc`:
choosing hyperparameters on the test split would make its accuracy an optimistic estimate.
`visualize` and `compare` return nothing (None): there is nothing to tune on in them.
"""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from catdog_lab.config import CONF_DIR, LAYOUT
from catdog_lab.entry import exit_on_user_error, stage_function
from catdog_lab.registry import TRAINING_STAGES

OBJECTIVE = "val/acc"
CLI_KEYS = ("stage", "upstream")          # CLI-only keys, not in conf/ (nor in params.yaml)
SHARED = ("seeds",)                       # read and written by every job in the workspace, not per job


def job_config(cfg: DictConfig, job_dir: Path, cwd: Path) -> tuple[str, DictConfig]:
    """(stage, config whose `paths.*` point into job_dir and `read_paths.*` at the upstream outputs)."""
    from catdog_lab.errors import ConfigError

    stage, upstream = cfg.get("stage"), cfg.get("upstream")
    if not stage:
        raise ConfigError("stage: say which stage to run, e.g. `catdog stage=scratch`")
    root = (cwd / str(upstream)).resolve() if upstream else cwd
    if not root.is_dir():
        raise ConfigError(f"upstream: {upstream} is not a folder (give the workspace or an earlier run's job folder)")
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(cfg):
        for key in CLI_KEYS:
            cfg.pop(key, None)
        # paths.* given on the command line say where to read (relative to the upstream root);
        # writes always go to the job folder, so no sweep job can overwrite another's inputs
        cfg.read_paths = {k: str(root / cfg.paths[k]) for k in LAYOUT}
        shared = {k: str(cwd / cfg.paths[k]) for k in SHARED}
        cfg.paths = {k: str(job_dir / v) for k, v in LAYOUT.items()} | shared
    return str(stage), cfg


def objective(stage: str, result) -> float | None:
    """What the job returns to Hydra: a validation metric for a training stage, None otherwise."""
    if stage not in TRAINING_STAGES or not isinstance(result, dict):
        return None
    return result.get(OBJECTIVE)


def run(cfg: DictConfig, job_dir: Path, cwd: Path | None = None) -> float | None:
    stage, cfg = job_config(cfg, job_dir, (cwd or Path.cwd()).resolve())
    value = objective(stage, stage_function(stage)(cfg))
    if value is not None:
        print(f"[{stage}] returned to Hydra: {OBJECTIVE} = {value}")
    return value


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    job_dir = Path(HydraConfig.get().runtime.output_dir)
    return exit_on_user_error(_checked_run, cfg, job_dir, Path(get_original_cwd()))


def _checked_run(cfg: DictConfig, job_dir: Path, cwd: Path) -> float | None:
    import os

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from catdog_lab.errors import ConfigError
    from catdog_lab.schema import Trainer, check

    # Lightning's DDP launcher starts ranks 1..N-1 by re-running this command line, which in a multirun
    # is the whole sweep again. Under SLURM (hydra/launcher=slurm) the ranks come from SLURM instead.
    trainer = check(cfg, "trainer", Trainer)          # before the count is read: `devices=two` is one line too
    several = trainer.devices * trainer.num_nodes > 1
    if several and HydraConfig.get().mode == RunMode.MULTIRUN and "SLURM_NTASKS" not in os.environ:
        raise ConfigError("trainer.devices: several devices per job need hydra/launcher=slurm in a multirun; "
                          "locally, run one multi-device job per command")
    return run(cfg, job_dir, cwd)


def main() -> None:
    import sys

    # `stage` and `upstream` are CLI-only keys (not in conf/, so not in params.yaml): no `+` needed
    sys.argv = ["+" + a if a.split("=", 1)[0] in CLI_KEYS and "=" in a else a for a in sys.argv]
    args = sys.argv[1:]
    if "-m" not in args and "--multirun" not in args:
        # compose once up front so that a bad group option or key is one line, not Hydra's traceback
        from catdog_lab.config import compose
        overrides = [a for a in args if "=" in a and not a.lstrip("+~").startswith("hydra.")]
        exit_on_user_error(compose, overrides)
    _main()


if __name__ == "__main__":
    main()
