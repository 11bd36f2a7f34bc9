"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class SFTError(Exception):
    """A problem the user can fix (bad input, bad config, missing file)."""


class ConfigError(SFTError):
    """An invalid configuration key or value."""


class DataError(SFTError):
    """An unreadable or malformed data file."""
