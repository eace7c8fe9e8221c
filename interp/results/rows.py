"""Explanation and score lines in and out of the results database's rows (``results.db``).

A line is the dict a stage writes (``ExplanationResult.to_dict``, ``ScoreResult.to_dict``); a batch of lines is
inserted in one transaction, the last line of each key becoming its current row and every earlier one history. A score
line's examples go to ``score_examples`` as one compact blob (``results.examples``), and its main metric to a column of
its own, so a reader of metrics reads neither JSON nor examples.
"""

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from ..scoring.results import main_metric, metric_value
from .examples import decode_examples, encode_examples
from .schema import EXPLANATION_COLUMNS, INSERT_REPLY, SCORE_COLUMNS

log = logging.getLogger(__name__)

EXPLANATION_KEY = ("coder", "latent", "explainer")
"""What identifies an explanation line; a later line with the same key replaces an earlier one."""

SCORE_KEY = ("scorer", "coder", "latent", "explainer", "baseline")
"""What identifies a score line; a later line with the same key replaces an earlier one."""

SCORE_FIELDS = ("scorer", "coder", "latent", "explainer", "baseline", "explanation", "metrics", "examples")
"""The fields of a score line (``scoring.base.ScoreResult``); any other a line has is kept in ``extra``."""

WRITE_CHUNK = 2000
"""Lines per ``executemany`` inside one transaction: a large import never holds its rows whole."""


def chunks(rows: Iterable) -> Iterator[list]:
    """``rows`` in lists of ``WRITE_CHUNK``."""
    it = iter(rows)
    while chunk := list(islice(it, WRITE_CHUNK)):
        yield chunk


def _latest_of_batch(rows: list[dict], key: tuple[str, ...]) -> list[tuple[tuple, dict, bool]]:
    """(key, row, is it the last of its key in ``rows``) for each row that has every ``key`` field; those that do
    not (a hand-edited legacy line) are skipped with a warning."""
    keyed = []
    for r in rows:
        try:
            keyed.append((tuple(r[k] for k in key), r))
        except (KeyError, TypeError):
            log.warning("skipped a result line without the fields %s: %.80s", ", ".join(key), json.dumps(r))
    last = {k: i for i, (k, _) in enumerate(keyed)}
    return [(k, r, last[k] == i) for i, (k, r) in enumerate(keyed)]


def insert_replies(db: sqlite3.Connection, rows: list[tuple[str, str, Any]]) -> None:
    db.executemany(INSERT_REPLY, ((k, m, json.dumps(v)) for k, m, v in rows))


def lines_version(db: sqlite3.Connection) -> int:
    """How many transactions have written lines into ``db``: what a result derived from the lines is valid for."""
    row = db.execute("SELECT value FROM meta WHERE key = 'lines'").fetchone()
    return int(row[0]) if row else 0


def lines_written(db: sqlite3.Connection) -> None:
    """Count one more transaction of lines (inside it): every result derived from the earlier lines is now old."""
    db.execute(
        "INSERT INTO meta VALUES ('lines', '1') ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
    )


def insert_explanations(db: sqlite3.Connection, rows: list[dict]) -> None:
    """Insert explanation lines; the last of each key becomes current, its earlier rows history."""
    lines_written(db)
    keyed = _latest_of_batch(rows, EXPLANATION_KEY)
    db.executemany(
        "UPDATE explanations SET current = 0 WHERE current AND explainer = ? AND coder = ? AND latent = ?",
        ((k[2], k[0], k[1]) for k, _, last in keyed if last),
    )
    db.executemany(
        f"INSERT INTO explanations ({EXPLANATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            (
                r["coder"],
                r["latent"],
                r["explainer"],
                r.get("status"),
                _text(r.get("explanation")),
                last,
                json.dumps(r, ensure_ascii=False),
            )
            for _, r, last in keyed
        ),
    )


def insert_scores(db: sqlite3.Connection, rows: list[dict]) -> None:
    """Insert score lines and their examples; the last of each key becomes current, its earlier rows history."""
    lines_written(db)
    keyed = _latest_of_batch(rows, SCORE_KEY)
    db.executemany(
        "UPDATE scores SET current = 0 WHERE current AND explainer = ? AND coder = ? AND latent = ? AND scorer = ? "
        "AND baseline = ?",
        ((k[3], k[1], k[2], k[0], bool(k[4])) for k, _, last in keyed if last),
    )
    (first,) = db.execute("SELECT coalesce(max(id), 0) + 1 FROM scores").fetchone()
    lines, blobs = [], []
    for i, (_, r, last) in enumerate(keyed):
        examples = r.get("examples") or []
        extra = {k: v for k, v in r.items() if k not in SCORE_FIELDS}
        lines.append(
            (
                first + i,
                r["scorer"],
                r["coder"],
                r["latent"],
                r["explainer"],
                bool(r["baseline"]),
                _text(r.get("explanation")),
                json.dumps(r.get("metrics")),
                metric_value(r, main_metric(r["scorer"])),
                len(examples),
                json.dumps(extra, ensure_ascii=False) if extra else None,
                last,
            )
        )
        blobs.append((first + i, encode_examples(examples)))
    db.executemany(f"INSERT INTO scores ({SCORE_COLUMNS}) VALUES ({', '.join('?' * 12)})", lines)
    db.executemany("INSERT INTO score_examples (score, data) VALUES (?, ?)", blobs)


def merge_lines(db: sqlite3.Connection) -> None:
    """Take the explanation and score lines of the attached database ``other`` in, after this one's: its current
    lines replace this one's of the same key (the caller counts the transaction: ``lines_written``)."""
    db.execute(
        "UPDATE explanations SET current = 0 WHERE current AND EXISTS (SELECT 1 FROM other.explanations o WHERE "
        "o.current AND o.explainer = explanations.explainer AND o.coder = explanations.coder AND o.latent = "
        "explanations.latent)"
    )
    db.execute(
        f"INSERT INTO explanations ({EXPLANATION_COLUMNS}) SELECT {EXPLANATION_COLUMNS} FROM other.explanations "
        "ORDER BY id"
    )
    (offset,) = db.execute("SELECT coalesce(max(id), 0) FROM scores").fetchone()
    db.execute(
        "UPDATE scores SET current = 0 WHERE current AND EXISTS (SELECT 1 FROM other.scores o WHERE o.current AND "
        "o.explainer = scores.explainer AND o.coder = scores.coder AND o.latent = scores.latent AND o.scorer = "
        "scores.scorer AND o.baseline = scores.baseline)"
    )
    shifted = SCORE_COLUMNS.replace("id,", "id + ?,", 1)
    db.execute(f"INSERT INTO scores ({SCORE_COLUMNS}) SELECT {shifted} FROM other.scores ORDER BY id", (offset,))
    db.execute("INSERT INTO score_examples SELECT score + ?, data FROM other.score_examples", (offset,))


def explanation_line(row: tuple) -> dict:
    line, current = row
    return {**json.loads(line), "current": bool(current)}


def score_line(row: tuple, examples: bool) -> dict:
    """A score line as ``ScoreResult.to_dict`` wrote it, from a row of ``scores`` (and its blob)."""
    scorer, coder, latent, explainer, baseline, text, metrics, n, extra, blob = row
    line = {
        "scorer": scorer,
        "coder": coder,
        "latent": latent,
        "explainer": explainer,
        "baseline": bool(baseline),
        "explanation": text,
        "metrics": json.loads(metrics),
    }
    if examples:
        line["examples"] = decode_examples(blob) if blob is not None else []
    else:
        line["n_examples"] = n
    if extra:
        line.update(json.loads(extra))
    return line


def _text(value: Any) -> str | None:
    """An explanation's text column: the text, or None where a line holds none (failed) or not a string."""
    return value if isinstance(value, str) else None
