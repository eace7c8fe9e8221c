"""Exceptions for expected mistakes: each message says what went wrong and what to do next.

The CLI prints these as one line and exits with status 2; anything else is a bug and keeps
its traceback.
"""


class InterpError(Exception):
    """Base class for every error a user can cause and fix."""


class UnknownHookpointError(InterpError, KeyError):
    """A hookpoint name that is not a module of the model."""

    def __str__(self) -> str:
        return str(self.args[0])


class CoderShapeError(InterpError, ValueError):
    """A sparse coder whose width does not match the model at its hookpoint."""


class CoderFormatError(InterpError, ValueError):
    """A sparse coder folder or file that no loader understands."""


class ModelLoadError(InterpError, OSError):
    """A model id, folder or GGUF file that cannot be found or loaded."""


class CorpusError(InterpError, ValueError):
    """A corpus that cannot be read or yields no tokens."""


class CacheCorruptError(InterpError, OSError):
    """A cache shard that is truncated or does not match its checksum."""


class RunConfigMismatchError(InterpError, ValueError):
    """A run directory that was made with a different configuration."""


class StageFailedError(InterpError, RuntimeError):
    """A stage whose every item failed (each recorded as failed, to be retried by the same command)."""


class NotARunDirError(InterpError, ValueError):
    """A folder given as a run directory that holds no run."""


class CorruptFileError(InterpError, ValueError):
    """A file of a run directory that cannot be read or does not hold what it should."""


class ConfigError(InterpError, ValueError):
    """A configuration value of the wrong type or out of range (a config.json edited by hand, a bad flag)."""
