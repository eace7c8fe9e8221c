"""The run's results database: explanations and scores as rows (history kept, examples compact), a run made before it
migrated once with the same numbers (or browsed in place when read-only), merges that count once, word search, and
the JSONL export."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from interp.cli import main
from interp.results.db import ResultsDB
from interp.results.examples import decode_examples, encode_examples
from interp.rundir import RunDir
from interp.stages import summarize_run
from tests.helpers.models import save_tiny_model
from tests.helpers.pipeline import scripted_reply, tiny_run_args
from tests.helpers.results import explanation_lines, score_lines

CODER = "model.layers.1.mlp.topk-neurons"


def example(i: int, kind: str = "test", **changed) -> dict:
    """A scored example as ``ScoredExample.to_dict`` writes it."""
    row = {"index": i, "label": kind == "test", "prediction": None, "score": 0.25 * i, "kind": kind, "quantile": None}
    return {**row, "quantile": i % 5 if kind == "test" else None, "values": None, **changed}


def score_line(latent: int, text: str, baseline: bool = False, auroc: float = 0.5, n: int = 31) -> dict:
    examples = [example(i, "test" if i < n // 2 else "negative") for i in range(n)]
    return {
        "scorer": "embedding",
        "coder": "c",
        "latent": latent,
        "explainer": "default",
        "baseline": baseline,
        "explanation": text,
        "metrics": {"auroc": auroc, "n": n},
        "examples": examples,
    }


def explanation(latent: int, text: str | None, status: str = "ok", coder: str = "c") -> dict:
    return {"coder": coder, "latent": latent, "explainer": "default", "status": status, "explanation": text}


@pytest.fixture
def made_run(tmp_path, smollm_tokenizer, server) -> Path:
    """A whole tiny run (cached, explained by the scripted LLM, scored), one explanation since replaced."""
    server.reply = scripted_reply
    model = save_tiny_model(tmp_path / "model", smollm_tokenizer)
    run_dir = tmp_path / "run"
    assert main(tiny_run_args(run_dir, model, server.base_url)) == 0
    run = RunDir(run_dir)
    first = run.usable_explanations(run.read_config().explain.explainer)[0]
    run.add_explanations([{**first, "explanation": "a text written later"}])
    return run_dir


def test_examples_are_compact_typed_columns_that_read_back_exactly_and_anything_else_stays_json():
    examples = [example(i) for i in range(15)] + [example(i, "negative", prediction=i % 2 == 0) for i in range(16)]
    examples[3]["values"] = [0.5, -1.25, 3.0]
    examples[4]["score"] = None
    blob = encode_examples(examples)
    assert decode_examples(blob) == examples and blob[:1] != b"J"
    assert len(blob) < 0.25 * len(json.dumps(examples))  # ~31 examples: a few hundred bytes, not 5 KB
    odd = [{**example(1), "note": "a field added by hand"}, example(2, kind="a kind from elsewhere")]
    assert decode_examples(encode_examples(odd)) == odd
    assert decode_examples(encode_examples([])) == []


def test_a_replaced_line_stays_as_history_and_each_key_has_one_current_line(tmp_path):
    db = ResultsDB(tmp_path / "results.sqlite")
    db.add_explanations([explanation(1, "old"), explanation(2, "two"), explanation(1, "newer in the same batch")])
    db.add_explanations([explanation(1, "newest")])
    db.add_scores([score_line(1, "old"), score_line(1, "old", baseline=True, auroc=0.4)])
    db.add_scores([score_line(1, "newest", auroc=0.9)])
    assert [r["explanation"] for r in db.explanations()] == ["two", "newest"]
    assert [(r["explanation"], r["current"]) for r in db.history("explanations")] == [
        ("old", False),
        ("two", True),
        ("newer in the same batch", False),
        ("newest", True),
    ]
    now = db.scores()
    assert [(r["explanation"], r["baseline"]) for r in now] == [("old", True), ("newest", False)]
    assert now[1] == score_line(1, "newest", auroc=0.9)  # the line as written, examples and all
    assert [r["n_examples"] for r in db.scores(examples=False)] == [31, 31]
    assert len(db.history("scores")) == 3
    db.close()
    size = (tmp_path / "results.sqlite").stat().st_size
    bigger = ResultsDB(tmp_path / "bigger.sqlite")
    bigger.add_scores([score_line(k, f"text {k}", baseline=b) for k in range(2000) for b in (False, True)])
    bigger.close()
    per_row = ((tmp_path / "bigger.sqlite").stat().st_size - size) / 4000
    assert per_row < 1024, f"{per_row:.0f} bytes a score row with its 31 examples"


def test_a_process_database_merges_once_however_often_the_merge_is_redone(tmp_path):
    run_db = ResultsDB(tmp_path / "results.sqlite")
    run_db.add_explanations([explanation(1, "one"), explanation(2, "two")])
    part = ResultsDB(tmp_path / "results.p1.sqlite", base=tmp_path / "results.sqlite")
    part.add_explanations([explanation(2, "two, again")])
    part.add_scores([score_line(2, "two, again"), score_line(2, "one", baseline=True)])
    part.close()
    copy = tmp_path / "copy.sqlite"
    shutil.copy(tmp_path / "results.p1.sqlite", copy)  # as if a kill came between the merge's commit and the removal
    assert run_db.merge_from([tmp_path / "results.p1.sqlite"]) > 0
    assert not (tmp_path / "results.p1.sqlite").exists()
    assert run_db.merge_from([copy]) == 0 and not copy.exists()
    assert [r["explanation"] for r in run_db.explanations()] == ["one", "two, again"]
    assert len(run_db.history("explanations")) == 3 and len(run_db.scores()) == 2
    assert run_db.scores()[0]["examples"] == score_line(2, "two, again")["examples"]


def test_the_explanation_search_is_by_words_a_phrase_with_its_last_word_a_prefix(tmp_path):
    db = ResultsDB(tmp_path / "results.sqlite")
    db.add_explanations(
        [
            explanation(0, "The word 'cat' in stories"),
            explanation(1, "Capital letters after a full stop"),
            explanation(2, "cats and dogs"),
            explanation(3, None, status="failed"),
            explanation(4, 'Commas, and the token "(" in code'),
            explanation(5, "a cat", coder="other"),
        ]
    )
    db.add_explanations([explanation(2, "dogs alone")])  # the old text no longer matches
    assert db.explained_latents("c").tolist() == [0, 1, 2, 3, 4]
    assert db.explained_latents("c", "CAT").tolist() == [0]  # any case; "cats" is latent 2's old text alone
    assert db.explained_latents("c", "capit").tolist() == [1]  # the last word a prefix
    assert db.explained_latents("c", "word cat").tolist() == [0]
    assert db.explained_latents("c", "cat word").tolist() == []  # the words in their order
    assert db.explained_latents("c", '"(" ').tolist() == [4]  # punctuation alone: as written
    assert db.explained_latents("c", 'stories" OR "dogs').tolist() == []  # no query syntax gets through
    assert db.explained_latents("other", "cat").tolist() == [5]


def _legacy_copy(run_dir: Path, legacy: Path) -> None:
    """``run_dir`` as a run made before the database: its explanation and score lines (every one, in the order
    written) as JSONL, and no results.sqlite."""
    shutil.copytree(run_dir, legacy, ignore=shutil.ignore_patterns("results.sqlite*", "locks"))
    for name, lines in (("explanations.jsonl", explanation_lines(run_dir)), ("scores.jsonl", score_lines(run_dir))):
        (legacy / name).write_text("".join(json.dumps(r) + "\n" for r in lines))


@pytest.mark.slow
def test_a_run_made_before_the_database_migrates_once_and_reports_the_same_summary(made_run, tmp_path):
    before = summarize_run(made_run)
    assert sum(n["replaced"] for n in before["left_out"].values()) > 0  # the replaced explanation's lines are left out
    legacy = tmp_path / "legacy"
    _legacy_copy(made_run, legacy)
    jsonl = {p.name: p.read_bytes() for p in legacy.glob("*.jsonl")}
    assert summarize_run(legacy) == before
    db = ResultsDB(legacy / "results.sqlite")
    assert db.imported() >= {"explanations.jsonl", "scores.jsonl"}
    assert len(db.history("explanations")) == len(explanation_lines(made_run))
    db.close()
    assert {p.name: p.read_bytes() for p in legacy.glob("*.jsonl")} == jsonl  # left as they were
    assert RunDir(legacy).scores() == RunDir(made_run).scores()  # imported once: nothing doubled on the next open
    assert main(["export", str(legacy), "--jsonl", str(tmp_path / "flat")]) == 0
    flat = [json.loads(line) for line in (tmp_path / "flat" / "scores.jsonl").read_text().splitlines()]
    assert flat == RunDir(made_run).scores()
    assert main(["export", str(legacy), "--jsonl", str(tmp_path / "all"), "--history"]) == 0
    every = [json.loads(line) for line in (tmp_path / "all" / "explanations.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "current"} for r in every] == explanation_lines(made_run)
    assert [r["current"] for r in every].count(False) == 1


_IMPORT = """
import sys
from interp.rundir import RunDir
RunDir(sys.argv[1]).results_db().close()
"""


@pytest.mark.slow
def test_a_kill_during_the_import_leaves_the_jsonl_as_it_was_and_the_next_open_imports_it_whole(tmp_path):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    lines = [score_line(k, f"text {k}", baseline=b) for k in range(6_000) for b in (False, True)]
    (legacy / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    before = (legacy / "scores.jsonl").read_bytes()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", _IMPORT, str(legacy)], env=env)
    wal = legacy / "results.sqlite-wal"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (wal.is_file() and wal.stat().st_size > 500_000):
        time.sleep(0.01)  # inside the import's one transaction: its pages are in the journal, not yet committed
    assert proc.poll() is None, "the import finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (legacy / "scores.jsonl").read_bytes() == before
    db = ResultsDB(legacy / "results.sqlite")
    assert "scores.jsonl" not in db.imported() and db.scores() == []  # nothing of the killed import counts
    db.close()
    assert len(RunDir(legacy).scores(examples=False)) == len(lines)
    assert RunDir(legacy).scores()[:2] == lines[:2]


def test_the_standing_of_each_score_line_is_kept_until_a_line_is_written_and_then_read_afresh(tmp_path):
    path = tmp_path / "results.sqlite"
    db = ResultsDB(path)
    db.add_explanations([explanation(1, "one"), explanation(2, "two")])
    db.add_scores([score_line(1, "one", auroc=0.9), score_line(1, "two", baseline=True, auroc=0.4)])
    db.add_scores([score_line(2, "two", auroc=0.8), score_line(2, "one", baseline=True, auroc=0.3)])
    [(coder, scorer, first)] = db.current_metrics("default")
    assert (coder, scorer) == ("c", "embedding") and first["standing"].tolist() == [0, 0, 0, 0]
    assert first["value"].tolist() == [0.9, 0.4, 0.8, 0.3]
    with closing(sqlite3.connect(path)) as con, con:
        kept = con.execute("SELECT version, data FROM metric_columns WHERE explainer = 'default'").fetchall()
        assert len(kept) == 1 and kept[0][1] == first.tobytes()
        con.execute("UPDATE metric_columns SET data = ?", (first[:1].tobytes(),))
    assert len(db.current_metrics("default")[0][2]) == 1  # read back, not computed again, while nothing is written
    db.add_explanations([explanation(1, "one, redone")])  # latent 1's text changes: its line, and 2's random one
    [(_, _, after)] = db.current_metrics("default")
    assert after["standing"].tolist() == [1, 0, 0, 1]  # 1's true line replaced; 2's random "one" is nobody's now
    db.close()
    [(_, _, read_only)] = ResultsDB(path, read_only=True).current_metrics("default")
    assert read_only.tobytes() == after.tobytes()
    assert ResultsDB(path).current_metrics("nobody") == []
