"""Explaining and scoring across processes (``accelerate launch --cpu --num_processes 2``): each process takes its
share of the selected latents, and the run ends with exactly the lines one process writes (same keys and texts for
the deterministic tokens explainer and the embedding scorer; no key twice), in the run's results database, the
processes' own databases merged into it and gone. One process killed inside the commit of its first batch (the other
having committed its share): nothing of that batch is stored, nothing committed is lost, a rerun finishes the rest,
and the run ends the same.

Both tests start from one cached run and one uninterrupted single-process reference (a module fixture): the
launches are what takes the time.
"""

import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import NamedTuple

import pytest

from interp.cli import main
from tests.helpers.models import save_tiny_model
from tests.helpers.pipeline import scripted_reply
from tests.helpers.results import explanation_lines, score_lines
from tests.test_crash_resume import check_whole, traced_connect

pytestmark = pytest.mark.reliability  # three accelerate launches: a minute or two on 2 busy cores

LAUNCH = [  # torchrun: `accelerate launch --cpu` starts one process unless MPI runs it
    sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "interp",
]  # fmt: skip
EXPLAIN = ["--explainer", "tokens", "--latents", "0-39", "--quiet"]
SCORE = ["--explainer", "tokens", "--scorers", "embedding", "--quiet"]
EKEY, SKEY = ("coder", "latent", "explainer"), ("scorer", "coder", "latent", "explainer", "baseline")
TIMING = ("batch_seconds_per_latent",)
ROOT = Path(__file__).resolve().parents[1]
KILLED_RANK = "INTERP_TEST_KILLED_RANK"
"""The rank of the launch's process that dies inside the commit of its first batch of explanation lines, once every
other process has committed its own (``python -m tests.test_accelerate_split`` as the launch's program)."""


class Runs(NamedTuple):
    """A cached run with nothing explained yet, and a copy of it explained and scored by one process."""

    cached: Path
    one: Path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, smollm_tokenizer) -> Runs:
    root = tmp_path_factory.mktemp("split")
    model = save_tiny_model(root / "model", smollm_tokenizer)
    cached = root / "cached"
    cache = ["cache", str(cached), "--model", str(model), "--quiet"] + (
        "--num-tokens 1024 --ctx-len 32 --shard-windows 8 --batch-size 8 --coders topk-neurons@model.layers.1.mlp"
    ).split()
    assert main(cache) == 0
    one = root / "one"
    shutil.copytree(cached, one)
    assert main(["explain", str(one), *EXPLAIN]) == 0
    assert main(["score", str(one), *SCORE]) == 0
    return Runs(cached, one)


def _lines(run_dir: Path, table: str, drop: tuple[str, ...] = ()) -> list[dict]:
    """Every line of ``table`` (explanations or scores) the run's database ever stored, in the order written, each
    without ``drop``; the database whole (no torn row) and no process's database left beside it."""
    assert not check_whole(run_dir), check_whole(run_dir)
    assert not list(run_dir.glob("results.p*")), "a process's database was left unmerged"
    rows = explanation_lines(run_dir) if table == "explanations" else score_lines(run_dir)
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def _keyed(rows: list[dict], key: tuple[str, ...]) -> dict[tuple, dict]:
    out = {tuple(r[k] for k in key): r for r in rows}
    assert len(out) == len(rows), "a key written twice"
    return out


def test_two_processes_explain_and_score_exactly_what_one_does(runs, tmp_path):
    two = tmp_path / "two"
    shutil.copytree(runs.cached, two)
    for stage, args in (("explain", EXPLAIN), ("score", SCORE)):
        done = subprocess.run([*LAUNCH, stage, str(two), *args], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    one = runs.one
    assert _keyed(_lines(two, "explanations", TIMING), EKEY) == _keyed(_lines(one, "explanations", TIMING), EKEY)
    scores, want = _keyed(_lines(two, "scores"), SKEY), _keyed(_lines(one, "scores"), SKEY)
    assert scores.keys() == want.keys()
    # The random baselines too: their texts are drawn from the explanations sorted by key, not in the order the two
    # processes appended them (before, every baseline line of a split run differed from one process's).
    assert all(_close(scores[k], want[k]) for k in want)


def _close(a, b) -> bool:
    """Equal, floats to float32 rounding: each process embeds its own batches of texts (other paddings, one thread
    under torchrun), so a metric can differ in its last digits from one process's."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _count(path: Path, table: str) -> int:
    """Rows of ``table`` that the database at ``path`` has committed (0 where it or the table does not exist). Not
    through a read-only connection: a database closed cleanly has no -shm file, which one would need to read it."""
    if not path.is_file():
        return 0
    with closing(sqlite3.connect(path)) as con:
        try:
            return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except sqlite3.OperationalError:  # created, its tables not yet
            return 0


def _die_inside_the_first_commit(run_dir: Path, others: list[Path], timeout: float = 300) -> None:
    """Make this process SIGKILL itself at the COMMIT of its first transaction of explanation lines (written into
    it, not committed), once each database of ``others`` holds committed explanation lines (the other processes'
    shares), so the point is the same every time."""
    inserted = []

    def on_statement(sql: str) -> None:
        sql = sql.lstrip()
        if sql.startswith("BEGIN"):
            inserted.clear()
        elif sql.startswith("INSERT INTO explanations"):
            inserted.append(True)
        elif sql.startswith("COMMIT") and inserted:
            deadline = time.monotonic() + timeout
            while not all(_count(p, "explanations") for p in others) and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)

    sqlite3.connect = traced_connect(run_dir, on_statement)


def test_one_process_killed_inside_a_commit_keeps_what_was_committed_and_a_rerun_finishes_the_rest(runs, tmp_path):
    """Rank 1 is SIGKILLed at the commit of its first batch of explanations, once it has built its records and
    explained them, and once rank 0 has committed its share (into its own database, as every process of a launch
    writes): the point is the same every time. Rank 1's batch leaves nothing; rank 0's lines are kept, not redone,
    by the same command run again in one process."""
    run = tmp_path / "killed"
    shutil.copytree(runs.cached, run)
    mine, theirs = run / "results.p0.sqlite", run / "results.p1.sqlite"
    program = [*LAUNCH[:-1], "tests.test_accelerate_split"]  # interp, as each process of the launch runs it
    launch = subprocess.run(
        [*program, "explain", str(run), *EXPLAIN],
        env={**os.environ, KILLED_RANK: "1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert launch.returncode != 0, launch.stderr[-3000:]
    assert _count(theirs, "explanations") == 0  # killed inside its commit: nothing of its batch stored
    with closing(sqlite3.connect(mine)) as con:
        committed = [json.loads(line) for (line,) in con.execute("SELECT line FROM explanations ORDER BY id")]
    want = _keyed(_lines(runs.one, "explanations", TIMING), EKEY)
    assert 0 < len(committed) < len(want) and _count(run / "results.sqlite", "explanations") == 0
    assert main(["explain", str(run), *EXPLAIN]) == 0  # the same command, in one process
    lines = _lines(run, "explanations")
    assert _keyed([{k: v for k, v in r.items() if k not in TIMING} for r in lines], EKEY) == want
    assert lines[: len(committed)] == committed  # rank 0's lines, timing and all: kept, not explained again


def _replies(run_dir: Path) -> list[tuple]:
    with closing(sqlite3.connect(run_dir / "results.sqlite")) as con:
        return con.execute("SELECT key, method, value FROM replies ORDER BY key").fetchall()


def test_two_processes_cache_the_llms_replies_in_databases_of_their_own_merged_into_the_runs(runs, tmp_path, server):
    """Machines may share a run over a network filesystem, where SQLite's locks cannot be trusted: no two processes
    write one database file; the run's holds every reply once the stage ends, and a rerun reads them all."""
    server.reply = scripted_reply
    one, two = tmp_path / "one", tmp_path / "two"
    for run_dir in (one, two):
        shutil.copytree(runs.cached, run_dir)
    llm = ["--explainer", "default", "--latents", "0-11", "--llm", server.base_url, "--llm-model", "scripted"]
    assert main(["explain", str(one), *llm, "--quiet"]) == 0
    asked = len(server.requests)
    done = subprocess.run([*LAUNCH, "explain", str(two), *llm, "--quiet"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(server.requests) == 2 * asked and not list(two.glob("results.p*"))
    assert _replies(two) == _replies(one) and _replies(one)
    server.requests.clear()
    again = subprocess.run(
        [*LAUNCH, "explain", str(two), *llm, "--redo", "--quiet"], capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert not server.requests  # every process read the run's replies
    assert len(_lines(two, "explanations")) == 2 * 12  # each latent explained again once, its old line history


if __name__ == "__main__":  # a process of the launch in the killed test: interp, one rank of it dying in a commit
    killed, _run = os.environ[KILLED_RANK], Path(sys.argv[2])
    if os.environ.get("RANK") == killed:
        others = [r for r in range(int(os.environ["WORLD_SIZE"])) if str(r) != killed]
        _die_inside_the_first_commit(_run, [_run / f"results.p{r}.sqlite" for r in others])
    sys.exit(main(sys.argv[1:]))
