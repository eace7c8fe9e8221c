"""The run's results database, ``RUN/results.sqlite``: explanations, scores and LLM replies, read by query.

Tables: ``explanations`` (a row per explanation line: its key columns, status and text, and the whole line as JSON),
``scores`` (a row per score line: key columns, the text scored, its metrics as JSON) with ``score_examples`` apart
(each line's examples as one compact blob, ``example_codec``: a reader of metrics never touches them), ``replies``
(the LLM response cache: the sha256 key of a request -> its method and stored reply as JSON), ``imported`` (the
legacy files and process databases already taken in) and ``meta``. A later line with the key of an earlier one
replaces it: the earlier row stays, as history, with ``current = 0``; one partial unique index per table keeps one
current row per key. Python's ``sqlite3``, a WAL journal, ``synchronous=FULL`` and a busy timeout: a batch of lines
or replies is one transaction, so a kill or a full disk loses at most the batch being committed and never tears a
row, and several processes of one machine (another explainer, ``accelerate launch``) write the same file safely. A
lookup reads the keys asked for, so a command starts as fast with ten million cached replies as with none. The file
opens in the ``sqlite3`` shell, Datasette, pandas and DuckDB.

A run made before the database existed has its lines in ``explanations.jsonl``, ``scores.jsonl`` and
``llm_cache.jsonl``; each file is imported once, in one transaction, on the first open that writes (a kill during the
import leaves the JSONL as it was and the import is done again), and the JSONL is left in place.

The processes of an ``accelerate launch`` (several machines may share the run directory over a network filesystem,
where SQLite's locks cannot be trusted) never write one file together: each writes a database of its own and reads
the run's as it was when the stage began (``base``, opened immutable: nobody writes it during the stage), and the
main process merges theirs into the run's when the stage ends, or when the next one begins after a kill
(``merge_from``: one transaction per file, which is then removed; merging one twice changes nothing).
"""

import json
import logging
import re
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from ..diskspace import disk_full
from ..errors import CorruptFileError, InterpError
from ..scoring.results import COLUMNS, STANDINGS
from .rows import (
    chunks,
    explanation_line,
    insert_explanations,
    insert_replies,
    insert_scores,
    lines_version,
    lines_written,
    merge_lines,
    score_line,
)
from .schema import INSERT_REPLY, LINE_COLUMNS, METRIC_COLUMNS_SQL, SCHEMA, STANDING, STANDING_JOIN

log = logging.getLogger(__name__)

BUSY_SECONDS = 60.0
"""How long a write waits for another process's transaction before it fails."""

LOOKUP_CHUNK = 500
"""Keys per ``IN (...)`` lookup: below SQLite's limit on bound parameters."""

LOW_SPACE = 1 << 20
"""Free bytes below which an I/O error of the database is taken for a full disk."""

PAGE = 1000
"""Lines per page of a read that streams."""


class ResultsDB:
    """One run's results database; opened on first use, one connection per object, shared by its threads.

    ``path=None`` is a database in memory (an old read-only run's lines, browsed in place); ``read_only`` opens the
    file as it is, immutable (a run on a read-only mount: nothing is written, no journal made).
    """

    def __init__(self, path: str | Path | None, base: str | Path | None = None, *, read_only: bool = False):
        self.path = Path(path) if path is not None else None
        self.base = Path(base) if base is not None else None
        """A database this one's lookups also read (the run's, for a process of a launch), never written."""
        self.read_only = read_only
        self._in_use: FileLock | None = None
        """A process's database (one with a ``base``) is held by an OS lock while open, so no merge takes it from
        under a process still writing it (a single-process command beside a live launch)."""
        self._conn: sqlite3.Connection | None = None
        self._based = False
        self._lock = threading.RLock()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.base is not None and self.path is not None and self._in_use is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._in_use = FileLock(_in_use(self.path))
                self._in_use.acquire()
            conn = self._connect()
            try:
                if not self.read_only:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=FULL")
                    conn.executescript(SCHEMA)
                    conn.execute("INSERT OR IGNORE INTO meta VALUES ('id', ?)", (uuid.uuid4().hex,))
                self._based = self.base is not None and self.base.is_file()
                if self._based:
                    conn.execute("ATTACH DATABASE ? AS base", (_uri(self.base, "mode=ro&immutable=1"),))
            except sqlite3.Error as e:
                conn.close()
                raise self._error(e) from e
            self._conn = conn
        return self._conn

    def _connect(self) -> sqlite3.Connection:
        if self.path is None:
            return sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        return sqlite3.connect(
            _uri(self.path, "mode=ro&immutable=1" if self.read_only else ""),
            timeout=BUSY_SECONDS,
            isolation_level=None,
            check_same_thread=False,
            uri=True,
        )

    def _error(self, e: sqlite3.Error) -> InterpError:
        """The one-line error of a failed statement: a full disk says so, a damaged file is named, a lock held too
        long says so."""
        code = getattr(e, "sqlite_errorcode", None) or 0
        if _disk_full(code, self.path):
            return disk_full(self.path)
        if code & 0xFF in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
            return CorruptFileError(
                f"{self.path} is not a readable results database ({e}); it holds the run's explanations, scores and "
                "LLM replies: restore it from a copy, or move it away to start them afresh (a run made before the "
                "database imports its JSONL files again)."
            )
        if code & 0xFF == sqlite3.SQLITE_BUSY:
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

    def tables(self) -> set[str]:
        """The names of the tables the file holds."""
        return {name for (name,) in self._query("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def imported(self) -> set[str]:
        """The sources (legacy files, process databases) already taken in."""
        return {source for (source,) in self._query("SELECT source FROM imported")}

    def import_once(self, source: str, rows: Iterator, kind: str = "replies") -> bool:
        """Store ``rows`` (read from the legacy file named ``source``: replies, or explanation or score lines, as
        ``kind`` says) and a note that they were, in one transaction, unless the note is there already: True when
        they were imported now."""
        if source in self.imported():
            return False
        store = {"replies": insert_replies, "explanations": insert_explanations, "scores": insert_scores}[kind]

        def work(db: sqlite3.Connection) -> None:
            n = 0
            for chunk in chunks(rows):
                store(db, chunk)
                n += len(chunk)
            db.execute("INSERT OR REPLACE INTO imported VALUES (?, ?)", (source, n))

        self._write(work)
        return True

    def merge_from(self, others: list[Path]) -> int:
        """Merge each database of ``others`` (a process's, left by a launch) into this one, one transaction each, and
        remove it; returns the rows added (replies, explanations and scores). A database merged before (a kill came
        between its commit and its removal) is only removed."""
        added = []

        def merge(db: sqlite3.Connection) -> None:
            (name,) = db.execute("SELECT value FROM other.meta WHERE key = 'id'").fetchone() or (None,)
            source = f"merge:{name}"
            if name is not None and db.execute("SELECT 1 FROM imported WHERE source = ?", (source,)).fetchone():
                return
            before = db.total_changes
            db.execute("INSERT OR IGNORE INTO replies SELECT key, method, value FROM other.replies")
            merge_lines(db)
            added.append(db.total_changes - before)
            lines_written(db)
            if name is not None:
                db.execute("INSERT INTO imported VALUES (?, ?)", (source, added[-1]))

        for other in others:
            in_use = FileLock(_in_use(other))
            try:
                in_use.acquire(timeout=0)
            except Timeout:
                log.info("%s is being written by a process of a launch still running: left for its own merge", other)
                continue
            with self._lock:  # re-entrant: the attached file stays this merge's until it is detached
                self._query("ATTACH DATABASE ? AS other", (_uri(other, "mode=ro"),))
                try:
                    self._write(merge)
                finally:
                    self._query("DETACH DATABASE other")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{other}{suffix}").unlink(missing_ok=True)
            in_use.release()
            Path(_in_use(other)).unlink(missing_ok=True)
        return sum(added)

    # --- explanations and scores --------------------------------------------------------------

    def add_explanations(self, rows: list[dict]) -> None:
        """Store explanation lines in one transaction; each replaces the current line of its key (kept as history)."""
        if rows:
            self._write(lambda db: insert_explanations(db, rows))

    def add_scores(self, rows: list[dict]) -> None:
        """Store score lines (their examples apart, compact) in one transaction; each replaces the current line of its
        key (kept as history)."""
        if rows:
            self._write(lambda db: insert_scores(db, rows))

    def explanations(
        self, explainer: str | None = None, *, usable: bool = False, limit: int | None = None
    ) -> list[dict]:
        """The current line per (coder, latent, explainer), of ``explainer`` alone when given, in the order written;
        ``usable``: those that hold an explanation (status ok); ``limit``: the first that many."""
        where, params = _only(explainer)
        where += " AND status = 'ok' AND explanation IS NOT NULL" if usable else ""
        cut = f" LIMIT {int(limit)}" if limit is not None else ""
        rows = self._query(f"SELECT line FROM explanations WHERE current{where} ORDER BY id{cut}", params)
        return [json.loads(line) for (line,) in rows]

    def scores(self, explainer: str | None = None, *, examples: bool = True) -> list[dict]:
        """The current line per (scorer, coder, latent, explainer, baseline), of ``explainer`` alone when given, in
        the order written; without ``examples``, each line's ``examples`` is left out (``n_examples`` says how many
        it has), and the blobs are not read."""
        where, params = _only(explainer, "s.")
        blob = ", e.data" if examples else ", NULL"
        join = " LEFT JOIN score_examples e ON e.score = s.id" if examples else ""
        sql = (
            "SELECT s.scorer, s.coder, s.latent, s.explainer, s.baseline, s.explanation, s.metrics, s.n_examples, "
            f"s.extra{blob} FROM scores s{join} WHERE s.current{where} ORDER BY s.id"
        )
        return [score_line(row, examples) for row in self._query(sql, params)]

    def history(self, table: str, *, examples: bool = False) -> list[dict]:
        """Every line ever stored in ``table`` (explanations or scores), replaced ones too, in the order written,
        each with ``current``; scores with their examples only when asked."""
        return list(self.lines(table, current_only=False, examples=examples))

    def lines(self, table: str, *, current_only: bool = True, examples: bool = True) -> Iterator[dict]:
        """The lines of ``table`` (explanations or scores) one at a time, in the order written: the current ones, or
        (``current_only=False``) every line, each then with ``current``. For a reader that must see them all (an
        export) without holding them: read a page at a time, nothing locked between pages."""
        now = " AND current" if current_only else ""
        if table == "explanations":
            sql = f"SELECT id, line, current FROM explanations WHERE id > ?{now} ORDER BY id LIMIT {PAGE}"
            decode: Callable[[tuple], dict] = explanation_line
        elif table == "scores":
            blob = "(SELECT data FROM score_examples WHERE score = s.id)" if examples else "NULL"
            sql = (
                "SELECT id, scorer, coder, latent, explainer, baseline, explanation, metrics, n_examples, extra, "
                f"{blob}, current FROM scores s WHERE id > ?{now} ORDER BY id LIMIT {PAGE}"
            )
            decode = lambda row: {**score_line(row[:10], examples), "current": bool(row[10])}  # noqa: E731
        else:
            raise InterpError(f"No table {table!r} of lines: explanations or scores.")
        after = 0
        while page := self._query(sql, (after,)):
            for row in page:
                line = decode(row[1:])
                if current_only:
                    del line["current"]
                yield line
            after = page[-1][0]

    def scored_explainers(self) -> list[str]:
        """The explainers whose explanations have current score lines, sorted."""
        return [e for (e,) in self._query("SELECT DISTINCT explainer FROM scores WHERE current ORDER BY explainer")]

    def current_metrics(self, explainer: str) -> list[tuple[str, str, np.ndarray]]:
        """(coder, scorer, lines as ``scoring.results.COLUMNS``) for each coder and scorer with current score lines
        of ``explainer``: each line's latent, baseline, main metric and standing (``current_scores``'s rule, in SQL),
        ordered by latent then baseline. Neither a line's JSON nor its examples is read.

        Deciding each line's standing joins it to the explanations (about a second a million lines), so the answer
        is kept in the database (table ``metric_columns``, with the count of transactions of lines it was read at:
        ``rows.lines_version``) and read back, whole, until a line is written: after ``interp score`` (whose summary
        computes it), ``interp summary`` and the app open a run of a million latents from it. A read-only run
        computes it each time."""
        with self._lock:
            db = self._db()
            try:
                db.execute("BEGIN")  # one snapshot: the version and the lines it describes
                version = lines_version(db) if "meta" in self.tables() else 0
                kept = (
                    self._query(
                        "SELECT coder, scorer, data FROM metric_columns WHERE explainer = ? AND version = ?",
                        (explainer, version),
                    )
                    if not self.read_only
                    else []
                )
                out = [(c, s, np.frombuffer(d, COLUMNS).copy()) for c, s, d in kept if c is not None]
                if not kept:
                    out = self._metric_columns(explainer)
                db.execute("COMMIT")
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise self._error(e) from e
        if not kept and not self.read_only and self.path is not None:
            self._write(lambda db: _keep_metric_columns(db, explainer, version, out))
        return out

    def _metric_columns(self, explainer: str) -> list[tuple[str, str, np.ndarray]]:
        pairs = self._query(
            "SELECT DISTINCT coder, scorer FROM scores WHERE current AND explainer = ? ORDER BY coder, scorer",
            (explainer,),
        )
        out = []
        for coder, scorer in pairs:
            lines = np.array(self._query(METRIC_COLUMNS_SQL, (explainer, coder, scorer)), COLUMNS)
            lines["value"][np.isinf(lines["value"])] = np.nan
            out.append((coder, scorer, lines))
        return out

    def status_counts(self) -> dict[str, dict[str, int]]:
        """Explainer -> status -> current explanation lines."""
        out: dict[str, dict[str, int]] = {}
        sql = "SELECT explainer, status, count(*) FROM explanations WHERE current GROUP BY explainer, status"
        for explainer, status, n in self._query(sql):
            out.setdefault(explainer, {})[str(status)] = n
        return out

    def explained_latents(self, coder: str, words: str = "") -> np.ndarray:
        """The latents of ``coder`` with a current explanation line (of any explainer), sorted; with ``words``, those
        one of whose current explanations holds them (a full-text query: ``words`` as a phrase, its last word a
        prefix, case-insensitive; punctuation alone is found as it is written)."""
        if not words.strip():
            sql = "SELECT DISTINCT latent FROM explanations WHERE current AND coder = ? ORDER BY latent"
            params = [coder]
        elif not re.search(r"\w", words):  # punctuation alone is no word: looked for as it is, line by line
            sql = (
                "SELECT DISTINCT latent FROM explanations WHERE current AND coder = ? "
                "AND instr(lower(explanation), lower(?)) ORDER BY latent"
            )
            params = [coder, words.strip()]
        else:
            sql = (  # the match first, then its rows: joined the other way, the planner matched once per row
                "SELECT DISTINCT latent FROM explanations WHERE current AND coder = ? AND id IN "
                "(SELECT rowid FROM explanation_words WHERE explanation_words MATCH ?) ORDER BY latent"
            )
            params = [coder, _phrase(words)]
        ((listed,),) = self._query(f"SELECT group_concat(latent) FROM ({sql})", params)  # one string, not 1M rows
        return np.fromstring(listed or "", dtype=np.int64, sep=",")

    def explanations_of(self, coder: str, latents: list[int]) -> list[dict]:
        """The current explanation lines (every explainer's) of ``latents`` of ``coder``, in the order written."""
        out = []
        for i in range(0, len(latents), LOOKUP_CHUNK):
            chunk = [int(k) for k in latents[i : i + LOOKUP_CHUNK]]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT id, line FROM explanations WHERE current AND coder = ? AND latent IN ({marks})"
            out += self._query(sql, [coder, *chunk])
        return [json.loads(line) for _, line in sorted(out)]

    def scores_of(self, coder: str, latents: list[int], *, examples: bool = True) -> list[tuple[dict, str]]:
        """Each current score line of ``latents`` of ``coder`` (every explainer's; its examples only when asked) and
        its standing (a name of ``scoring.results.STANDINGS``), in the order written."""
        blob = "x.data" if examples else "NULL"
        join = "LEFT JOIN score_examples x ON x.score = s.id " if examples else ""
        out = []
        for i in range(0, len(latents), LOOKUP_CHUNK):
            chunk = [int(k) for k in latents[i : i + LOOKUP_CHUNK]]
            sql = (
                f"SELECT s.id, {LINE_COLUMNS}, {blob}, {STANDING} FROM scores s {STANDING_JOIN} {join}"
                f"WHERE s.current AND s.coder = ? AND s.latent IN ({','.join('?' * len(chunk))})"
            )
            out += self._query(sql, (coder, *chunk))
        return [(score_line(row[1:11], examples), STANDINGS[row[11]]) for row in sorted(out)]

    def usable_texts(self) -> list[tuple[str, int, str, str]]:
        """(coder, latent, explainer, explanation) of every current usable explanation (status ok, a text)."""
        sql = (
            "SELECT coder, latent, explainer, explanation FROM explanations WHERE current AND status = 'ok' "
            "AND explanation IS NOT NULL ORDER BY id"
        )
        return self._query(sql)

    def latent_counts(self) -> dict[str, int]:
        """Coder -> latents with a current explanation line (of any explainer, whatever its status)."""
        sql = "SELECT coder, count(DISTINCT latent) FROM explanations WHERE current GROUP BY coder"
        return dict(self._query(sql))

    def explainer_models(self) -> dict[str, list[str]]:
        """Explainer -> the LLMs its current explanation lines name, sorted."""
        out: dict[str, list[str]] = {}
        sql = (
            "SELECT DISTINCT explainer, json_extract(line, '$.model') AS m FROM explanations WHERE current "
            "AND m IS NOT NULL AND m != '' ORDER BY explainer, m"
        )
        for explainer, model in self._query(sql):
            out.setdefault(explainer, []).append(str(model))
        return out

    def searches(self) -> dict[tuple[str, str], int]:
        """(explainer, search settings as sorted JSON) -> current explanation lines made by that search."""
        out: dict[tuple[str, str], int] = {}
        sql = (
            "SELECT explainer, json_extract(line, '$.search') AS s, count(*) FROM explanations WHERE current "
            "AND s IS NOT NULL GROUP BY explainer, s"
        )
        for explainer, settings, n in self._query(sql):
            value = json.loads(settings)
            if value:
                key = (explainer, json.dumps(value, sort_keys=True))
                out[key] = out.get(key, 0) + n
        return out

    def count_leaking(self, explainer: str, leaking_before: tuple[str, ...]) -> list[dict]:
        """The current ok explanation lines of ``explainer`` that may have been made from what their scorers score
        (judged by the intervention scorer, or by one of ``leaking_before`` without ``separated``): the candidates
        ``views.made_with_leaking_prompts`` decides on, found without reading every line."""
        marks = ",".join("?" * len(leaking_before))
        rows = self._query(
            "SELECT line FROM explanations WHERE current AND explainer = ? AND status = 'ok' AND ("
            "(instr(line, '\"judge\"') AND json_extract(line, '$.judge.scorer') = 'intervention') OR (explainer IN "
            f"({marks}) AND NOT coalesce(json_extract(line, '$.separated'), 0)))",
            (explainer, *leaking_before),
        )
        return [json.loads(line) for (line,) in rows]

    def close(self) -> None:
        """Close the connection (reopened on next use)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._in_use is not None:
                self._in_use.release()
                self._in_use = None


def _keep_metric_columns(db: sqlite3.Connection, explainer: str, version: int, columns: list) -> None:
    """Store ``columns`` (``current_metrics`` of ``explainer`` at ``version``) in place of any older ones; a row with
    no coder marks an explainer with none."""
    db.execute("DELETE FROM metric_columns WHERE explainer = ?", (explainer,))
    rows = [(explainer, version, c, s, lines.tobytes()) for c, s, lines in columns] or [
        (explainer, version, None, None, None)
    ]
    db.executemany("INSERT INTO metric_columns VALUES (?, ?, ?, ?, ?)", rows)


def _uri(path: Path, query: str = "") -> str:
    """``path`` as the ``file:`` URI SQLite opens (any character of a folder's name escaped), with ``query``."""
    return Path(path).absolute().as_uri() + (f"?{query}" if query else "")


def _in_use(path: Path) -> str:
    """The lock a process holds on its database ``path`` while it has it open."""
    return f"{path}.lock"


def _only(explainer: str | None, prefix: str = "") -> tuple[str, tuple]:
    """The ``AND`` clause and parameters that keep one explainer's rows (none when ``explainer`` is None)."""
    return ("", ()) if explainer is None else (f" AND {prefix}explainer = ?", (explainer,))


def _disk_full(code: int, path: Path | None) -> bool:
    """Whether an SQLite error code says the disk is full: ``SQLITE_FULL``, the shared-memory file that could not be
    sized (``SQLITE_IOERR_SHMSIZE``: the first open on a full disk), or any I/O error with no space left there."""
    if code & 0xFF == sqlite3.SQLITE_FULL or code == sqlite3.SQLITE_IOERR_SHMSIZE:
        return True
    if code & 0xFF != sqlite3.SQLITE_IOERR or path is None:
        return False
    try:
        return shutil.disk_usage(path.parent).free < LOW_SPACE
    except OSError:
        return False


def _phrase(words: str) -> str:
    """``words`` as an FTS5 query: one phrase (quotes doubled, so nothing in it is syntax), its last word a prefix."""
    return '"' + " ".join(words.split()).replace('"', '""') + '"*'
