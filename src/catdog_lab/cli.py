"""Hydra CLI over the same stage functions: `catdog stage=scratch scratch.lr=3e-4`, or a sweep:
`catdog -m stage=finetune finetune.lr=1e-5,2e-5`.

A job WRITES only its own stage's outputs, into its Hydra job folder (outputs/... or multirun/...),
in the project's layout (<job>/models/finetune.pt, <job>/metrics/finetune.json, ...), never over the
DVC-tracked workspace. It READS what earlier stages made (data cache, conv-base features, models,
metrics, figures) from the workspace, i.e. `paths.*` relative to where `catdog` runs, or from an
earlier run's folder given as `upstream=<dir>` (a `catdog stage=split` job folder, say). The stages
find those folders in `read_paths.*` (see `config.read_path`).
The one shared write: a downloaded archive or a .zip source is extracted once into
`data.source.download_dir` (data/raw/ under the cwd, git-ignored, no DVC output), a cache every job reuses.

Every job adds its test accuracy to a seed ledger among its own outputs, never the workspace's (a sweep
must leave `dvc status` clean): a single job's `<job>/metrics/seeds`, or in a multirun the sweep's
`<sweep dir>/metrics/seeds`, shared by its jobs. So `catdog -m stage=scratch seed=1,2,3` then
`catdog stage=compare upstream=<sweep dir>` gives `compare` its error bars.

In a multirun, each job's MLflow run name ends with the overrides it was swept over (`[finetune.lr=1e-05]`).

The value returned to Hydra (what a sweeper such as Optuna optimises) is `val/acc` for a training stage:
validation accuracy of the epoch whose model is kept and tested (`<stage>.select`). Never `test/acc`:
choosing hyperparameters on the test split would make its accuracy an optimistic estimate.
`publish`, `visualize` and `compare` return nothing (None): there is nothing to tune on in them.
"""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from catdog_lab.config import CONF_DIR, LAYOUT
from catdog_lab.entry import stage_function
from catdog_lab.errors import exit_on_user_error
from catdog_lab.registry import TRAINING_STAGES

OBJECTIVE = "val/acc"
CLI_KEYS = ("stage", "upstream")          # CLI-only keys, not in conf/ (nor in params.yaml)
# a multirun's command-line overrides (separated by \x1f), for its jobs: an environment variable, because
# every launcher (joblib's worker processes, submitit and SLURM included) hands the environment down
SWEEP_ARGS = "CATDOG_SWEEP_ARGS"


def job_config(cfg: DictConfig, job_dir: Path, cwd: Path, ledger_root: Path | None = None,
               run_note: str = "") -> tuple[str, DictConfig]:
    """(stage, config whose `paths.*` point into job_dir and `read_paths.*` at the upstream outputs).
    ledger_root: where the seed ledger goes (`<ledger_root>/metrics/seeds`; a multirun's sweep folder), else
    job_dir. run_note: appended to the MLflow run name (`tracking.run_note`: the swept overrides)."""
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
        cfg.paths = {k: str(job_dir / v) for k, v in LAYOUT.items()}
        cfg.paths.seeds = str((ledger_root or job_dir) / LAYOUT["seeds"])
        if run_note:
            cfg.tracking.run_note = run_note
    return str(stage), cfg


def objective(stage: str, result) -> float | None:
    """What the job returns to Hydra: a validation metric for a training stage, None otherwise."""
    if stage not in TRAINING_STAGES or not isinstance(result, dict):
        return None
    return result.get(OBJECTIVE)


def swept_overrides(task_overrides: list[str], sweep_args: list[str], sweeper_keys: list[str]) -> str:
    """This job's values of the keys a multirun sweeps: those given as a sweep on the command line
    (`a=1,2`, `range(...)`, `choice(...)`, ...) or searched by the sweeper (Optuna's `hydra.sweeper.params`)."""
    swept = set(sweeper_keys)
    for arg in sweep_args:
        key, _, value = arg.partition("=")
        if value and ("," in value or value.split("(")[0] in ("range", "choice", "interval", "glob")):
            swept.add(key.lstrip("+~"))
    return " ".join(o for o in task_overrides if o.split("=", 1)[0].lstrip("+~") in swept)


def run(cfg: DictConfig, job_dir: Path, cwd: Path | None = None, ledger_root: Path | None = None,
        run_note: str = "") -> float | None:
    stage, cfg = job_config(cfg, job_dir, (cwd or Path.cwd()).resolve(), ledger_root, run_note)
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
    ledger_root, note = None, ""
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        hydra_cfg = HydraConfig.get()
        ledger_root = cwd / hydra_cfg.sweep.dir
        params = OmegaConf.select(hydra_cfg, "sweeper.params") or {}
        # the sweep's own syntax (`a=1,2`) is gone from a job's overrides: main() passes it down in SWEEP_ARGS
        sweep_args = [arg for arg in os.environ.get(SWEEP_ARGS, "").split("\x1f") if arg]
        note = swept_overrides(list(hydra_cfg.overrides.task), sweep_args, list(params))
    elif cfg.get("stage") in TRAINING_STAGES:
        # a new run gets a new timestamped folder, and its checkpoints are in the old one: say how to resume
        shown = os.path.relpath(job_dir, cwd) if job_dir.is_relative_to(cwd) else str(job_dir)
        print(f"[{cfg.stage}] job folder {shown}; if this run stops, the same command with "
              f"hydra.run.dir={shown} resumes it from its last epoch", flush=True)
    return run(cfg, job_dir, cwd, ledger_root, note)


def usage() -> str:
    """What `catdog --help` says before Hydra's list of groups and keys (which knows nothing of `stage`)."""
    from catdog_lab.registry import STAGES
    return (f"usage: catdog stage=<stage> [upstream=<job folder>] [key=value ...]      one job\n"
            f"       catdog -m stage=<stage> key=a,b [...]                               a sweep, one job per value\n\n"
            f"  stage     required: {', '.join(STAGES)}\n"
            f"  upstream  an earlier job's folder to read the stages before it from (default: the workspace)\n\n"
            f"Each job writes into its own folder (outputs/<date>/<time>, multirun/...). The groups and keys below\n"
            f"are conf/'s (`reference` holds the book's figures, not a choice to make).\n")


def main() -> None:
    import sys

    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        print(usage())
    # `stage` and `upstream` are CLI-only keys (not in conf/, so not in params.yaml): no `+` needed
    sys.argv = ["+" + a if a.split("=", 1)[0] in CLI_KEYS and "=" in a else a for a in sys.argv]
    args = sys.argv[1:]
    # compose up front so that a bad group option or key is one line, not Hydra's traceback (in a sweep: once
    # per value, before any job starts)
    overrides = [a for a in args if "=" in a and not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    if "-m" in args or "--multirun" in args:
        import os
        os.environ[SWEEP_ARGS] = "\x1f".join(arg for arg in args if "=" in arg)
        exit_on_user_error(check_sweep, overrides)
    else:
        from catdog_lab.config import compose
        exit_on_user_error(compose, overrides)
    _main()


def check_sweep(overrides: list[str]) -> None:
    """Compose the config once per value each sweep takes (`scratch.lr=1e-4,3e-4`, `profile=book,fast`,
    `seed=range(1,4)`; the other sweeps at their first value), so that a bad option or key stops the
    multirun with one line before its first job. Optuna's `interval(...)` ranges are the sweeper's to check."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from catdog_lab.config import compose, hydra_message
    from catdog_lab.errors import ConfigError

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError(hydra_message(exc)) from None
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    sweeps = {o.get_key_element(): list(o.sweep_string_iterator()) for o in parsed
              if o.is_sweep_override() and o.is_discrete_sweep()}
    first = [f"{key}={values[0]}" for key, values in sweeps.items()]
    compose(fixed + first)
    for n, (key, values) in enumerate(sweeps.items()):
        for value in values[1:]:
            compose(fixed + first[:n] + [f"{key}={value}"] + first[n + 1:])


if __name__ == "__main__":
    main()
