"""What every entry point shares: user errors become one line on stderr and exit code 2."""
from __future__ import annotations

import sys
from typing import Callable

from catdog_lab.errors import UserError

STAGES = ("split", "scratch", "augmented", "features", "features_augmented", "finetune", "visualize", "compare")


def stage_function(stage: str) -> Callable:
    """The pure function behind a stage name: fn(cfg) -> metrics/report dict."""
    if stage == "split":
        from catdog_lab.stages.split import split
        return split
    if stage == "visualize":
        from catdog_lab.stages.visualize import visualize
        return visualize
    if stage == "compare":
        from catdog_lab.stages.compare import compare
        return compare
    from catdog_lab import TRAINING_STAGES
    if stage in TRAINING_STAGES:
        from catdog_lab.stages.train import train
        return lambda cfg: train(cfg, stage)
    from catdog_lab.errors import ConfigError
    raise ConfigError(f"stage: unknown stage {stage!r}; choose one of {', '.join(STAGES)}")


def exit_on_user_error(fn: Callable, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def run_stage(stage: str, params_path: str = "params.yaml") -> None:
    """DVC entry: read the committed params.yaml (what DVC tracks) and run one stage."""
    from catdog_lab.config import load_params

    def go():
        cfg = load_params(params_path)
        return stage_function(stage)(cfg)

    exit_on_user_error(go)
