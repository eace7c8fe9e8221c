"""One writer per piece of work: a stage holds an OS lock (``filelock``) on each piece it writes, so a second
process on the same work stops at once, naming the holder, or waits for it.

The lock is the operating system's (``flock``): it dies with its process, so a killed job leaves nothing that
blocks the next one. Since the lock itself holds no data, the holder writes who it is (pid, host, since when,
its command) into a small JSON file beside the lock once it has it; the file of a killed holder is simply
overwritten by the next. Under ``accelerate launch`` the main process holds the locks for the whole launch.
"""

import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from filelock import FileLock, Timeout

from .atomic import write_json_atomic
from .errors import BusyError, InterpError
from .jsonl import read_json
from .processes import main_decides

log = logging.getLogger(__name__)


class Work(NamedTuple):
    """One piece of work a stage writes: its lock file, and what doing it is called (``explaining X with Y``)."""

    lock: Path
    what: str


def holder_file(lock: Path) -> Path:
    """The JSON beside ``lock`` that names its holder."""
    return lock.with_name(lock.name + ".json")


def holder_text(lock: Path) -> str:
    """Who holds ``lock``, as its holder wrote it: ``pid 123 on host since 2025-01-02 10:00:00 (interp ...)``."""
    path = holder_file(lock)
    try:
        h = read_json(path) if path.is_file() else None
    except InterpError:  # being replaced right now, or damaged
        h = None
    if not isinstance(h, dict):
        return "a process that has just started"
    return f"pid {h.get('pid')} on {h.get('host')} since {h.get('since')} ({h.get('command')})"


def _acquire(work: Work, wait: bool) -> FileLock:
    work.lock.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(work.lock))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = holder_text(work.lock)
        if not wait:
            raise BusyError(
                f"Another process is already {work.what}: {holder}. Doing it twice would pay every request twice; "
                "wait for it to finish, or add --wait to start when it does (only what it left is then done)."
            ) from None
        log.info("waiting for %s, which is %s", holder, work.what)
        lock.acquire()
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": _command(),
        "what": work.what,
    }
    try:
        write_json_atomic(holder_file(work.lock), holder)
    except InterpError:  # a full disk: the lock is not kept for a holder that cannot say who it is
        lock.release()
        raise
    return lock


def _command() -> str:
    """This process's command line as typed: ``interp explain RUN ...`` (also under ``python -m interp``)."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program in ("interp", "__main__.py"):
        program = "interp"
    return " ".join([program, *sys.argv[1:]])


def _release(lock: FileLock) -> None:
    holder_file(Path(lock.lock_file)).unlink(missing_ok=True)  # before the lock goes: never the next holder's
    lock.release()


@contextmanager
def hold(work: list[Work], *, wait: bool = False) -> Iterator[None]:
    """Hold the locks of ``work`` (in a fixed order, so two waiting processes cannot deadlock) while inside.

    A piece another process holds raises ``BusyError`` naming it, or with ``wait`` is waited for. Under
    ``accelerate launch`` only the main process takes the locks and every process gets its answer.
    """
    held: list[FileLock] = []

    def take() -> str | None:
        try:
            for w in sorted(work):
                held.append(_acquire(w, wait))
        except InterpError as e:
            for lock in reversed(held):
                _release(lock)
            held.clear()
            return str(e)
        return None

    refused = main_decides(take)
    if refused is not None:
        raise BusyError(refused)
    try:
        yield
    finally:
        for lock in reversed(held):
            _release(lock)
