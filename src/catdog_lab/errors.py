"""Errors a user can fix. Entry points print them as one line and exit 2, with no traceback."""
from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """Base: something in the config or the data that the user must change."""


class ConfigError(UserError):
    """A config value is wrong; the message names the key."""


class DataError(UserError):
    """The data (images, archive, download, cache) is missing or unusable."""


class WeightsError(UserError):
    """A weights file is missing, corrupt or of an unknown format."""


def exit_on_user_error(fn: Callable, *args, **kwargs):
    """Run `fn`; a UserError becomes one line on stderr and exit status 2. Here, beside the errors, so that
    every entry point (config, cli, predict, export, the DVC stages) can use it without importing another."""
    try:
        return fn(*args, **kwargs)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
