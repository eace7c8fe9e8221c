"""JSON on disk: append-only JSONL (whole lines, flushed and synced, one appender at a time; a torn last line is
dropped on read) and whole JSON files read with an error that names the file."""

import fcntl
import json
import logging
import os
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO

from .diskspace import disk_full, is_disk_full
from .errors import CorruptFileError
from .gcpause import cycle_collection_paused

log = logging.getLogger(__name__)


def _cut_torn_tail(f: BinaryIO, path: Path) -> None:
    """Cut a torn last line (no final newline: an interrupted write) off ``f``, open for reading and writing, whose
    lock the caller holds, so appends start clean."""
    if f.seek(0, os.SEEK_END) == 0:
        return
    f.seek(-1, os.SEEK_END)
    if f.read(1) == b"\n":
        return
    f.seek(0)
    data = f.read()
    log.warning("%s: dropped a torn last line (an interrupted write); it will be redone", path)
    f.truncate(data.rfind(b"\n") + 1)


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Append ``rows`` as JSON lines and sync them to disk before returning.

    Appenders in other processes (another explainer, scorer or process of the same run) take turns on an OS lock
    of the file, so their lines never interleave and none cuts another's line as torn. A write that fails (a full
    disk: ``DiskFullError``) is cut off again: no partial line stays.
    """
    path = Path(path)
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    if not data:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab+", buffering=0) as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            _cut_torn_tail(f, path)
            _append_whole(f, data)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full(path) from e
        raise


def _append_whole(f: BinaryIO, data: bytes) -> None:
    """Write ``data`` at the end of ``f`` (unbuffered, locked) and sync it, or leave ``f`` as it was."""
    size = f.seek(0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            view = view[f.write(view) :]
        os.fsync(f.fileno())
    except OSError:
        f.truncate(size)
        raise


def read_jsonl(path: str | Path) -> list[dict]:
    """Every complete line of ``path`` that holds a JSON object (none if the file does not exist).

    A torn final line is skipped with a warning; so is any other line that is not a JSON object
    (a hand edit gone wrong), naming its line number. The file is read line by line, so a large one
    is never held whole beside its rows.
    """
    path = Path(path)
    if not path.is_file():
        return []
    with cycle_collection_paused():
        return list(iter_jsonl(path))


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    """The JSON-object lines of ``path`` one at a time, skipping what ``read_jsonl`` skips: for reading a large file
    without holding it."""
    path = Path(path)
    if not path.is_file():
        return
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            line = raw.decode("utf-8", errors="replace")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
                if not raw.endswith(b"\n"):  # only the last line can lack its newline: a write cut short
                    log.warning("%s: dropped a torn last line (an interrupted write); it will be redone", path)
                    continue
            if isinstance(row, dict):
                yield row
            else:
                log.warning("%s:%d: skipped a line that is not a JSON object", path, number)


def latest_rows(rows: Iterable[dict], key: tuple[str, ...]) -> list[dict]:
    """The last row for each ``key`` (in first-seen order): a redone result replaces the one it redid.

    Rows lacking a key field (hand-edited) are skipped with a warning.
    """
    fields = itemgetter(*key) if len(key) > 1 else (lambda r: (r[key[0]],))
    out: dict[tuple, dict] = {}
    with cycle_collection_paused():  # a new key tuple per row would set off collector passes over every row read
        for r in rows:
            try:
                out[fields(r)] = r
            except (KeyError, TypeError):
                log.warning("skipped a result line without the fields %s: %.80s", ", ".join(key), json.dumps(r))
    return list(out.values())


def read_json(path: str | Path, hint: str = "delete it to have it rebuilt, or restore it") -> Any:
    """The JSON value in ``path``; a ``CorruptFileError`` naming the file (and what to do: ``hint``)
    if it cannot be read.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(f"{path} cannot be read ({type(e).__name__}: {e}); {hint}.") from e
