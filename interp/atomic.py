"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The file is written into a temporary folder beside the target, named after the target, the
writing process and the host (``.NAME.PID@HOST.XXXXXXXX.tmp/``), so what a killed process leaves
behind can be told from what a process still writing holds, and removed (``remove_stale_temps``).
A folder rather than a file, because some writers make temporary files of their own beside the
path they are given (safetensors 0.8 writes ``.tmpXXXXXX`` and renames it): inside our folder,
those are ours to remove too.
"""

import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from .diskspace import disk_full, is_disk_full

log = logging.getLogger(__name__)

SUFFIX = ".tmp"


def _file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file (0o666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()
"""Read once at import: mkstemp makes files private (0600), which would hide results from the rest
of a shared machine.
"""


def _prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}@{socket.gethostname()}."


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path``.

    ``tmp_path`` has the target's name, inside a temporary folder beside the target (so the
    rename stays on one filesystem); the folder goes once the file has moved, or on failure.
    A write that fails for lack of space (whichever writer raised it) is a ``DiskFullError`` naming ``path``;
    the old file, if any, is left as it was.
    """
    path = Path(path)
    try:
        _replace(path, write)
    except Exception as e:
        if is_disk_full(e):
            raise disk_full(path) from e
        raise


def _replace(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=_prefix(path), suffix=SUFFIX))
    tmp = folder / path.name
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (it lives in the directory), where the OS allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    write_atomic(path, lambda p: p.write_text(text))


def _writer(name: str) -> tuple[int, str] | None:
    """(pid, host) of the process that made temporary file ``name``, or None if ``write_atomic`` did not make it."""
    if not (name.startswith(".") and name.endswith(SUFFIX)):
        return None
    stem = name[: -len(SUFFIX)].rpartition(".")[0]  # drop mkstemp's random part
    owner, _, host = stem.rpartition("@")
    pid = owner.rpartition(".")[2]
    return (int(pid), host) if pid.isdigit() and host else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temps(root: str | Path) -> int:
    """Delete the temporary files under ``root`` that ``write_atomic`` left in processes that died (SIGKILL, OOM).

    Files of processes still running, and of other hosts (a shared filesystem), are kept.
    Returns how many were removed.
    """
    root = Path(root)
    if not root.is_dir():
        return 0
    host, removed = socket.gethostname(), 0
    for path in list(root.rglob(f".*{SUFFIX}")):
        writer = _writer(path.name)
        if writer is None or writer[1] != host or writer[0] == os.getpid() or _alive(writer[0]):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:  # a temporary file of an older version, which wrote beside the target
            path.unlink(missing_ok=True)
        removed += 1
    if removed:
        log.info("%s: removed %d temporary file(s) left by an interrupted run", root, removed)
    return removed


def save_figure_atomic(fig, path: str | Path, **savefig_kwargs) -> None:
    """``fig.savefig(path)`` (a matplotlib figure), atomically; the format comes from ``path``'s suffix."""
    path = Path(path)
    write_atomic(path, lambda p: fig.savefig(p, format=path.suffix.lstrip(".") or None, **savefig_kwargs))
