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


class BusyError(InterpError, RuntimeError):
    """Work that another process is doing right now (it holds the lock on it): the message names that process."""


def size_text(n: int) -> str:
    """A byte count as people read it: ``812 KiB``, ``3.4 GiB``."""
    size, unit = float(n), "bytes"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"


class DiskFullError(InterpError):
    """A write that failed for lack of space; the message names the path, the free space and what the stage still
    needs (``needed``, in bytes, when the stage can tell), and says that the same command resumes."""

    def __init__(self, path: str, free: int | None, needed: int | None = None, what: str = "this stage"):
        super().__init__(path)
        self.path, self.free, self.needed, self.what = path, free, needed, what

    def __str__(self) -> str:
        free = "unknown" if self.free is None else size_text(self.free)
        needs = "" if self.needed is None else f"; {self.what} still needs about {size_text(self.needed)}"
        return (
            f"No space left on the device writing {self.path} ({free} free there{needs}): nothing written is lost "
            "(no partial file or line is left); free some space and run the same command: it resumes where it stopped."
        )


class ReadOnlyRunError(InterpError):
    """A stage that must write into a run directory that cannot be written (a read-only mount, no permission)."""
