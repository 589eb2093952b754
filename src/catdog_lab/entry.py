"""What every entry point shares: user errors become one line on stderr and exit code 2."""
from __future__ import annotations

from typing import Callable

from catdog_lab.errors import exit_on_user_error
from catdog_lab.registry import stage


def stage_function(name: str) -> Callable:
    """The function behind a stage name (catdog_lab.registry): fn(cfg) -> metrics/report dict."""
    return stage(name).load()


def run_stage(name: str, params_path: str = "params.yaml") -> None:
    """DVC entry: read the committed params.yaml (what DVC tracks) and run one stage."""
    from catdog_lab.config import load_params

    def load_and_run():
        return stage_function(name)(load_params(params_path))

    exit_on_user_error(load_and_run)
