"""Explaining and scoring across processes (``accelerate launch --cpu --num_processes 2``): each process takes its
share of the selected latents, and the run ends with exactly the lines one process writes (same keys and texts for
the deterministic tokens explainer and the embedding scorer; no key twice). One process killed partway: a rerun
finishes the rest, and the run ends the same.

Both tests start from one cached run and one uninterrupted single-process reference (a module fixture): the
launches are what takes the time.
"""

import fcntl
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import psutil
import pytest

from interp.cli import main
from tests.helpers.models import save_tiny_model
from tests.helpers.pipeline import scripted_reply

pytestmark = pytest.mark.reliability  # three accelerate launches: a minute or two on 2 busy cores

LAUNCH = [  # torchrun: `accelerate launch --cpu` starts one process unless MPI runs it
    sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "interp",
]  # fmt: skip
EXPLAIN = ["--explainer", "tokens", "--latents", "0-39", "--quiet"]
SCORE = ["--explainer", "tokens", "--scorers", "embedding", "--quiet"]
EKEY, SKEY = ("coder", "latent", "explainer"), ("scorer", "coder", "latent", "explainer", "baseline")
TIMING = ("batch_seconds_per_latent",)


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


def _lines(path: Path, drop: tuple[str, ...] = ()) -> list[dict]:
    data = path.read_text()
    assert data.endswith("\n"), "a torn last line"
    rows = [json.loads(line) for line in data.splitlines()]
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
    assert _keyed(_lines(two / "explanations.jsonl", TIMING), EKEY) == _keyed(
        _lines(one / "explanations.jsonl", TIMING), EKEY
    )
    scores, want = _keyed(_lines(two / "scores.jsonl"), SKEY), _keyed(_lines(one / "scores.jsonl"), SKEY)
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


def _blocked_on(path: Path) -> set[int]:
    """The pids waiting for the OS lock (flock) of ``path``, as /proc/locks lists them (``N: -> FLOCK ...``)."""
    inode = f":{os.stat(path).st_ino}"
    pids = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "->" and fields[2] == "FLOCK" and fields[6].endswith(inode):
            pids.add(int(fields[5]))
    return pids


def _rank(pid: int) -> int | None:
    try:
        rank = psutil.Process(pid).environ().get("RANK")
    except psutil.Error:
        return None
    return int(rank) if rank is not None else None


def test_one_process_killed_partway_a_rerun_finishes_the_rest(runs, tmp_path):
    """Rank 1 is SIGKILLed once it has built its records and explained its first batch, as it waits to append them
    (the test holds the file's append lock, as another appender would, so the point is the same every time)."""
    run = tmp_path / "killed"
    shutil.copytree(runs.cached, run)
    lines = run / "explanations.jsonl"
    lines.touch()
    with open(lines, "ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        launch = subprocess.Popen(
            [*LAUNCH, "explain", str(run), *EXPLAIN], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 600
        while len(waiting := _blocked_on(lines)) < 2:
            assert launch.poll() is None, launch.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the two processes never reached their first append"
            time.sleep(0.05)
        (victim,) = [pid for pid in waiting if _rank(pid) == 1]
        os.kill(victim, signal.SIGKILL)
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)  # rank 0 may append before accelerate tears it down
    launch.communicate(timeout=600)
    assert launch.returncode != 0
    want = _keyed(_lines(runs.one / "explanations.jsonl", TIMING), EKEY)
    whole = [line for line in lines.read_text().splitlines(keepends=True) if line.endswith("\n")]
    assert len(whole) < len(want)  # rank 1 wrote nothing (a line rank 0 was cut in is not counted)
    assert main(["explain", str(run), *EXPLAIN]) == 0  # the same command, in one process
    assert _keyed(_lines(lines, TIMING), EKEY) == want


def _replies(run_dir: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{run_dir / 'results.sqlite'}?mode=ro", uri=True) as con:
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
    assert _lines(two / "explanations.jsonl", TIMING)[-12:] and not list(two.glob("results.p*"))
