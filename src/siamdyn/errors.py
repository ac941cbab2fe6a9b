"""The one error class users can cause. The CLI prints it on one line and exits 2."""


class SiamdynError(Exception):
    """A problem the user can fix: the message names the problem and the fix."""


class DataError(SiamdynError):
    """Missing, truncated or malformed data files."""


class ConfigError(SiamdynError):
    """Invalid config values, unknown presets or unknown keys."""


class TrainingDiverged(SiamdynError):
    """A non-finite loss or gradient: the run stops and keeps its last good checkpoint."""
