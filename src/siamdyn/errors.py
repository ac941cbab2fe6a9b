"""The one error class users can cause (the CLI prints it on one line and exits 2), and the
one-line warning for what the user should know while the run goes on."""
import sys


def warn(message: str) -> None:
    """A one-line warning on stderr: the run goes on, but the user should know."""
    print(f"siamdyn: warning: {message}", file=sys.stderr, flush=True)


class SiamdynError(Exception):
    """A problem the user can fix: the message names the problem and the fix."""


class DataError(SiamdynError):
    """Missing, truncated or malformed data files."""


class ConfigError(SiamdynError):
    """Invalid config values, unknown presets or unknown keys."""


class TrainingDiverged(SiamdynError):
    """A non-finite loss or gradient: the run stops and keeps its last good checkpoint."""
