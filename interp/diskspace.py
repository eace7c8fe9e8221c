"""Running out of disk space: a failed write becomes one line (the path, the free space, what the stage still
needs), and a cache that clearly cannot fit is refused before an hour of work goes into it.

``write_atomic`` and ``append_jsonl`` (every write of the library goes through one of them) turn a write that
failed for lack of space into a ``DiskFullError``; a stage wraps its body in ``still_needs`` so the error also
says how much more it needs. ``interp.cache_space`` estimates a cache before it starts.
"""

import errno
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import DiskFullError

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_MARKERS = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")
"""How a full disk reads in the message of a writer that does not raise ``OSError`` (safetensors' Rust writer
raises ``SafetensorError('... No space left on device (os error 28)')``)."""


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the filesystem that holds ``path`` (or would: its nearest existing parent); None if unknown."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is a write that failed for lack of space."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in FULL_ERRNOS:
            return True
        if any(marker in str(seen) for marker in FULL_MARKERS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def disk_full(path: str | Path) -> DiskFullError:
    """The error for a write to ``path`` that found no space, with the free space there now."""
    return DiskFullError(str(path), free_bytes(path))


@contextmanager
def still_needs(estimate: Callable[[], int | None], what: str) -> Iterator[None]:
    """A ``DiskFullError`` raised inside gets ``estimate()``: the bytes ``what`` (the stage) still needs."""
    try:
        yield
    except DiskFullError as e:
        if e.needed is None:
            e.needed, e.what = estimate(), what
        raise
