"""Append-only JSONL survives interrupted writes; a run's JSONL of results, made before the results database, is
imported into it whole lines only, once, in one transaction per file, a kill inside that transaction redoing it, and
the JSONL left as it was."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from interp.jsonl import append_jsonl, read_jsonl
from interp.rundir import RunDir
from tests.helpers.results import explanation_lines, score_lines
from tests.test_crash_resume import ROOT, traced_connect

EXPLANATIONS = [
    {"coder": "c", "latent": i, "explainer": "default", "status": "ok", "explanation": f"fires on {i}"}
    for i in range(3)
]
SCORES = [
    {
        "scorer": "detection",
        "coder": "c",
        "latent": i,
        "explainer": "default",
        "baseline": False,
        "explanation": f"fires on {i}",
        "metrics": {"balanced_accuracy": 0.5 + i / 10},
        "examples": [{"index": 1, "label": True, "prediction": 1, "score": 1.0, "kind": "test", "quantile": 0}],
    }
    for i in range(3)
]


def test_appending_after_a_torn_line_starts_on_a_clean_line(tmp_path, caplog):
    path = tmp_path / "x.jsonl"
    append_jsonl(path, [{"a": 1}])
    with open(path, "a") as f:
        f.write('{"a": 2, "tor')  # a write killed halfway
    assert read_jsonl(path) == [{"a": 1}]
    append_jsonl(path, [{"a": 3}])
    assert read_jsonl(path) == [{"a": 1}, {"a": 3}]
    assert "torn last line" in caplog.text


def test_a_legacy_jsonl_with_a_torn_line_is_imported_whole_lines_only_and_left_as_it_was(tmp_path, caplog):
    run = RunDir(tmp_path / "run")
    path = run.path / "explanations.jsonl"
    append_jsonl(path, EXPLANATIONS)
    with open(path, "a") as f:
        f.write('{"coder": "c", "latent": 3, "explai')  # an append of the version before, killed halfway
    left = path.read_bytes()
    assert explanation_lines(run.path) == EXPLANATIONS
    assert "torn last line" in caplog.text
    redone = {**EXPLANATIONS[0], "latent": 3, "explanation": "fires on 3"}
    run.add_explanations([redone])  # the latent the torn line was, written again: into the database
    assert explanation_lines(run.path) == [*EXPLANATIONS, redone]
    assert path.read_bytes() == left  # nothing appended to the JSONL, nothing cut from it


def _import_and_die_inside_the_commit(run_dir: str, legacy: str) -> None:
    """A child's entry point: open ``run_dir`` to write, which imports its legacy JSONL, and SIGKILL this process at
    the COMMIT of the transaction that imports ``legacy`` (its lines and the note that they were imported written
    into it, nothing committed)."""
    seen = []

    def on_statement(sql: str) -> None:
        sql = sql.lstrip()
        if sql.startswith("BEGIN"):
            seen.clear()
        elif sql.startswith("INSERT OR REPLACE INTO imported") and f"'{legacy}'" in sql:
            seen.append(sql)
        elif sql.startswith("COMMIT") and seen:
            os.kill(os.getpid(), signal.SIGKILL)

    sqlite3.connect = traced_connect(Path(run_dir), on_statement)
    RunDir(run_dir).results_db().imported()
    sys.exit("the import was never committed")


def _committed(run_dir: Path) -> dict[str, object]:
    """What the database holds, read-only (the killed process's files as it left them): the sources imported, and
    the rows of explanations and scores."""
    with closing(sqlite3.connect(f"file:{run_dir / 'results.sqlite'}?mode=ro", uri=True)) as con:
        out: dict[str, object] = {"imported": {s for (s,) in con.execute("SELECT source FROM imported")}}
        for table in ("explanations", "scores"):
            out[table] = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return out


def test_a_kill_inside_the_import_of_a_legacy_jsonl_keeps_it_as_it_was_and_the_import_is_done_again(tmp_path):
    run = RunDir(tmp_path / "run")
    append_jsonl(run.path / "explanations.jsonl", EXPLANATIONS)
    append_jsonl(run.path / "scores.jsonl", SCORES)
    left = {p.name: p.read_bytes() for p in run.path.glob("*.jsonl")}
    code = f"from tests.test_jsonl import _import_and_die_inside_the_commit as f; f({str(run.path)!r}, 'scores.jsonl')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    # the explanations' import committed before the kill is kept; nothing of the scores' is
    assert _committed(run.path) == {"imported": {"explanations.jsonl"}, "explanations": 3, "scores": 0}
    assert {p.name: p.read_bytes() for p in run.path.glob("*.jsonl")} == left
    assert score_lines(run.path) == SCORES  # the next open imports the scores again, in one piece
    for _ in range(2):  # and never again, nor the explanations twice
        assert explanation_lines(run.path) == EXPLANATIONS and score_lines(run.path) == SCORES
    assert _committed(run.path) == {"imported": {"explanations.jsonl", "scores.jsonl"}, "explanations": 3, "scores": 3}
    assert {p.name: p.read_bytes() for p in run.path.glob("*.jsonl")} == left
    assert json.loads(json.dumps(run.scores())) == SCORES  # the current lines, as the JSONL held them
