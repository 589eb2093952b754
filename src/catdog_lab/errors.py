"""Errors a user can fix. Entry points print them as one line and exit 2, with no traceback."""


class UserError(Exception):
    """Base: something in the config or the data that the user must change."""


class ConfigError(UserError):
    """A config value is wrong; the message names the key."""


class DataError(UserError):
    """The data (images, archive, download, cache) is missing or unusable."""


class WeightsError(UserError):
    """A weights file is missing, corrupt or of an unknown format."""
