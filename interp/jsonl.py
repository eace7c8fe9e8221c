"""Append-only JSONL: each write is whole lines, flushed and synced; a torn last line is dropped on read."""

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def drop_torn_tail(path: Path) -> None:
    """Cut a torn last line (no final newline: an interrupted write) off ``path``, so appends start clean."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        log.warning("%s: dropped a torn last line (an interrupted write); it will be redone", path)
        f.truncate(data.rfind(b"\n") + 1)


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Append ``rows`` as JSON lines and sync them to disk before returning."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if not text:
        return
    drop_torn_tail(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict]:
    """Every complete line of ``path`` (none if it does not exist); a torn final line is skipped with a warning."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                log.warning("%s: dropped a torn last line (an interrupted write); it will be redone", path)
            else:
                log.warning("%s:%d: skipped an unreadable line", path, i + 1)
    return rows
