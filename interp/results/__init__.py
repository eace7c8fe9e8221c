"""A run's results: explanation lines, score lines and LLM replies in the run's SQLite database.

* ``db`` — ``ResultsDB``: the connection, its transactions, merges and imports, and every query a reader makes;
* ``schema`` — the tables, indexes and the SQL the readers share (a score line's standing);
* ``rows`` — lines in and out of rows (the current one per key, the rest history);
* ``examples`` — a score line's examples as one compact blob;
* ``export`` — ``interp export RUN --jsonl DIR``: the lines as flat JSONL files.
"""
