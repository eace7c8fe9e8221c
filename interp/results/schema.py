"""The results database's tables and the SQL its readers share (``results.db``).

``SCHEMA`` makes every table and index (each ``IF NOT EXISTS``, so a database made before a table existed gains it on
its next writable open); ``STANDING`` is ``scoring.results.current_scores``'s rule in SQL: whether a current score
line counts, was replaced, or is withdrawn.
"""

from ..scoring.results import STANDINGS

STANDING = f"""CASE WHEN e.explanation IS NULL THEN {STANDINGS.index("withdrawn")}
    WHEN NOT s.baseline THEN (CASE WHEN s.explanation = e.explanation THEN 0 ELSE 1 END)
    WHEN EXISTS (SELECT 1 FROM explanations h INDEXED BY explanation_text WHERE h.current
        AND h.explainer = s.explainer AND h.explanation = s.explanation AND h.status = 'ok'
        AND NOT (h.coder = s.coder AND h.latent = s.latent))
    THEN 0 ELSE 1 END"""
"""A current score line's standing (``scoring.results.STANDINGS``: 0 counts, 1 replaced, 2 withdrawn), as
``scoring.results.current_scores`` decides it, over ``scores s`` joined with ``STANDING_JOIN``. Its indexes are
named: left to choose, the planner took the (explainer, status) index for the holders of a text, and went through
every explanation for each random-explanation line."""

STANDING_JOIN = """LEFT JOIN explanations e INDEXED BY explanation_now ON e.current AND e.explainer = s.explainer
    AND e.coder = s.coder AND e.latent = s.latent AND e.status = 'ok'"""

METRIC_COLUMNS_SQL = f"""SELECT s.latent, s.baseline, coalesce(s.value, 9e999), {STANDING}
FROM scores s {STANDING_JOIN}
WHERE s.current AND s.explainer = ? AND s.coder = ? AND s.scorer = ? ORDER BY s.latent, s.baseline"""
"""Each current score line of one (explainer, coder, scorer): latent, baseline, main metric (infinity where it has
none: every main metric is bounded) and standing."""

LINE_COLUMNS = "s.scorer, s.coder, s.latent, s.explainer, s.baseline, s.explanation, s.metrics, s.n_examples, s.extra"
"""The columns ``rows.score_line`` reads, before the examples' blob."""

INSERT_REPLY = "INSERT OR IGNORE INTO replies (key, method, value) VALUES (?, ?, ?)"

EXPLANATION_COLUMNS = "coder, latent, explainer, status, explanation, current, line"

SCORE_COLUMNS = (
    "id, scorer, coder, latent, explainer, baseline, explanation, metrics, value, n_examples, extra, current"
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, method TEXT NOT NULL, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS imported (source TEXT PRIMARY KEY, rows INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS explanations (
    id INTEGER PRIMARY KEY, coder TEXT NOT NULL, latent INTEGER NOT NULL, explainer TEXT NOT NULL, status TEXT,
    explanation TEXT, current INTEGER NOT NULL, line TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS explanation_now ON explanations (explainer, coder, latent) WHERE current;
CREATE INDEX IF NOT EXISTS explanation_text ON explanations (explainer, explanation) WHERE current;
CREATE TABLE IF NOT EXISTS scores (
    id INTEGER PRIMARY KEY, scorer TEXT NOT NULL, coder TEXT NOT NULL, latent INTEGER NOT NULL,
    explainer TEXT NOT NULL, baseline INTEGER NOT NULL, explanation TEXT, metrics TEXT NOT NULL, value REAL,
    n_examples INTEGER NOT NULL, extra TEXT, current INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS score_now ON scores (explainer, coder, latent, scorer, baseline) WHERE current;
CREATE INDEX IF NOT EXISTS score_latent ON scores (coder, latent) WHERE current;
CREATE TABLE IF NOT EXISTS score_examples (score INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS metric_columns (
    explainer TEXT NOT NULL, version INTEGER NOT NULL, coder TEXT, scorer TEXT, data BLOB);
CREATE INDEX IF NOT EXISTS explanation_latent ON explanations (coder, latent) WHERE current;
CREATE INDEX IF NOT EXISTS explanation_status ON explanations (explainer, status) WHERE current;
CREATE VIRTUAL TABLE IF NOT EXISTS explanation_words
    USING fts5(explanation, content='explanations', content_rowid='id');
CREATE TRIGGER IF NOT EXISTS explanation_words_added AFTER INSERT ON explanations WHEN new.explanation IS NOT NULL
    BEGIN INSERT INTO explanation_words (rowid, explanation) VALUES (new.id, new.explanation); END;
"""
