"""The run's results database, ``RUN/results.sqlite``: what is looked up by key, never read whole.

It holds the LLM response cache (table ``replies``: the sha256 key of a request -> its method and stored reply as
JSON). Python's ``sqlite3``, a WAL journal, ``synchronous=FULL`` and a busy timeout: a batch of replies is one
transaction, so a kill or a full disk loses at most the batch being committed and never tears a row, and several
processes of one machine (another explainer, ``accelerate launch``) write the same file safely. A lookup reads the
keys asked for, so a command starts as fast with ten million cached replies as with none. The file opens in the
``sqlite3`` shell, Datasette, pandas and DuckDB.

A run made before the database existed has its replies in ``llm_cache.jsonl``; they are imported once, in one
transaction, on the first open that writes (a kill during the import leaves the JSONL as it was and the import is
done again), and the JSONL is left in place.

The processes of an ``accelerate launch`` (several machines may share the run directory over a network filesystem,
where SQLite's locks cannot be trusted) never write one file together: each writes a database of its own and reads
the run's as it was when the stage began (``base``, opened immutable: nobody writes it during the stage), and the
main process merges theirs into the run's when the stage ends, or when the next one begins after a kill
(``merge_from``: one transaction per file, which is then removed; merging one twice changes nothing).
"""

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .diskspace import disk_full
from .errors import CorruptFileError, InterpError

BUSY_SECONDS = 60.0
"""How long a write waits for another process's transaction before it fails."""
LOOKUP_CHUNK = 500
"""Keys per ``IN (...)`` lookup: below SQLite's limit on bound parameters."""

INSERT_REPLY = "INSERT OR IGNORE INTO replies (key, method, value) VALUES (?, ?, ?)"
SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, method TEXT NOT NULL, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS imported (source TEXT PRIMARY KEY, rows INTEGER NOT NULL);
"""


class ResultsDB:
    """One run's results database; opened on first use, one connection per object, shared by its threads."""

    def __init__(self, path: str | Path, base: str | Path | None = None):
        self.path = Path(path)
        self.base = Path(base) if base is not None else None
        """A database this one's lookups also read (the run's, for a process of a launch), never written."""
        self._conn: sqlite3.Connection | None = None
        self._based = False
        self._lock = threading.RLock()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                _uri(self.path), timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False, uri=True
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(SCHEMA)
                self._based = self.base is not None and self.base.is_file()
                if self._based:
                    conn.execute("ATTACH DATABASE ? AS base", (_uri(self.base, "mode=ro&immutable=1"),))
            except sqlite3.Error as e:
                conn.close()
                raise self._error(e) from e
            self._conn = conn
        return self._conn

    def _error(self, e: sqlite3.Error) -> InterpError:
        """The one-line error of a failed statement: a full disk says so, a damaged file is named, a lock held too
        long says so."""
        code = getattr(e, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_FULL:
            return disk_full(self.path)
        if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
            return CorruptFileError(
                f"{self.path} is not a readable results database ({e}); move it away to start the response cache "
                "afresh (the run's explanations and scores are not in it)."
            )
        if code == sqlite3.SQLITE_BUSY:
            return InterpError(
                f"{self.path} stayed locked by another process for {BUSY_SECONDS:.0f} s ({e}); run the command again "
                "once it has finished."
            )
        return InterpError(f"The results database {self.path} failed: {e}.")

    def _write(self, work: Callable[[sqlite3.Connection], None]) -> None:
        """Run ``work(connection)`` in one transaction: all of it, or none of it."""
        with self._lock:
            db = self._db()
            try:
                db.execute("BEGIN IMMEDIATE")
                work(db)
                db.execute("COMMIT")
            except BaseException as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise self._error(e) from e
                raise

    def _query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        """The rows of one read."""
        with self._lock:
            try:
                return self._db().execute(sql, params).fetchall()
            except sqlite3.Error as e:
                raise self._error(e) from e

    def replies(self, keys: list[str]) -> dict[str, Any]:
        """Key -> stored reply, for the ``keys`` that are stored (here, or in the ``base`` database)."""
        with self._lock:
            self._db()  # opened, with the base attached where there is one
            tables = ["replies", "base.replies"] if self._based else ["replies"]
        out: dict[str, Any] = {}
        for i in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[i : i + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            sql = " UNION ALL ".join(f"SELECT key, value FROM {t} WHERE key IN ({marks})" for t in tables)
            out.update((k, json.loads(v)) for k, v in self._query(sql, chunk * len(tables)))
        return out

    def add_replies(self, rows: list[tuple[str, str, Any]]) -> None:
        """Store ``(key, method, reply)`` rows in one transaction; a key already stored keeps its reply."""
        if rows:
            self._write(lambda db: db.executemany(INSERT_REPLY, ((k, m, json.dumps(v)) for k, m, v in rows)))

    def count_replies(self) -> int:
        """Replies stored (a count over the table: for tests and reports, not for a hot path)."""
        return self._query("SELECT count(*) FROM replies")[0][0]

    def import_once(self, source: str, rows: Iterator[tuple[str, str, Any]]) -> bool:
        """Store ``rows`` (read from the legacy file named ``source``) and a note that they were, in one transaction,
        unless the note is there already: True when they were imported now."""
        if self._query("SELECT 1 FROM imported WHERE source = ?", (source,)):
            return False

        def work(db: sqlite3.Connection) -> None:
            before = db.total_changes
            db.executemany(INSERT_REPLY, ((k, m, json.dumps(v)) for k, m, v in rows))
            db.execute("INSERT OR REPLACE INTO imported VALUES (?, ?)", (source, db.total_changes - before))

        self._write(work)
        return True

    def merge_from(self, others: list[Path]) -> int:
        """Merge each database of ``others`` (a process's, left by a launch) into this one, one transaction each, and
        remove it; returns the replies added."""
        added = []

        def merge(db: sqlite3.Connection) -> None:
            before = db.total_changes
            db.execute("INSERT OR IGNORE INTO replies SELECT key, method, value FROM other.replies")
            added.append(db.total_changes - before)

        for other in others:
            with self._lock:  # re-entrant: the attached file stays this merge's until it is detached
                self._query("ATTACH DATABASE ? AS other", (_uri(other, "mode=ro"),))
                try:
                    self._write(merge)
                finally:
                    self._query("DETACH DATABASE other")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{other}{suffix}").unlink(missing_ok=True)
        return sum(added)

    def close(self) -> None:
        """Close the connection (reopened on next use)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _uri(path: Path, query: str = "") -> str:
    """``path`` as the ``file:`` URI SQLite opens (any character of a folder's name escaped), with ``query``."""
    return Path(path).absolute().as_uri() + (f"?{query}" if query else "")
