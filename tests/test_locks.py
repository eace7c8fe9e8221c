"""One writer per piece of work: two processes explaining (or scoring) the same latents of one run at once.

The second stops at once in one line naming the first (exit 2), or with ``--wait`` runs after it and asks the
server nothing again; every latent is explained once and the server never sees a prompt twice. The app's job
beside a CLI job is refused the same way. Different explainers of one run proceed in parallel.
"""

import json
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from interp.app import explain_score
from interp.app.session import Runs
from interp.app.workspace import Workspace
from interp.cli import main
from interp.errors import BusyError
from interp.locks import Work, hold
from interp.rundir import RunDir
from tests.helpers.models import save_tiny_model
from tests.helpers.pipeline import scripted_reply, tiny_run_args
from tests.helpers.results import explanation_lines, score_lines

CODER = "model.layers.1.mlp.topk-neurons"
LATENTS = "0-11"


class Job(NamedTuple):
    """An ``interp`` command running in a child process, its stderr in ``log``."""

    process: multiprocessing.Process
    log: Path

    def err(self) -> str:
        return self.log.read_text() if self.log.is_file() else ""

    def finish(self) -> tuple[int, str]:
        self.process.join(300)
        assert self.process.exitcode is not None, "the command hung"
        return self.process.exitcode, self.err()


def _child(argv: list[str], log: str) -> None:
    """A child's entry point: ``interp ARGV`` with stderr in ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 2)
    from interp.cli import main as cli_main

    sys.exit(cli_main(argv))


@pytest.fixture(scope="module")
def forks():
    """Starts commands in processes forked from a server that imported the library once (a second each, not ten)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["interp.cli", "interp.stages", __name__])
    count = iter(range(1_000_000))

    def start(logs: Path, *argv: str) -> Job:
        log = logs / f"job-{next(count)}.log"
        p = ctx.Process(target=_child, args=([*argv, "--quiet"], str(log)))
        p.start()
        return Job(p, log)

    return start


@pytest.fixture
def cached(tmp_path, smollm_tokenizer, server) -> Path:
    """A cached tiny run (no explanations yet) inside a workspace; the scripted server holds every reply while
    ``server.gate`` is clear, so a first process is still at work when the second starts."""
    model = save_tiny_model(tmp_path / "ws" / "model", smollm_tokenizer)
    run_dir = tmp_path / "ws" / "run"
    args = tiny_run_args(run_dir, model, server.base_url)
    args[0] = "cache"
    assert main(args) == 0
    server.gate = threading.Event()
    server.gate.set()
    server.reply = lambda content: (server.gate.wait(120), scripted_reply(content))[1]
    return run_dir


def _explain(start, run_dir: Path, url: str, *extra: str) -> Job:
    return start(
        run_dir.parent, "explain", str(run_dir), "--explainer", "default", "--latents", LATENTS, "--llm", url,
        "--llm-model", "scripted", "--explain-batch", "3", *extra,
    )  # fmt: skip


def _score(start, run_dir: Path, url: str, *extra: str) -> Job:
    return start(
        run_dir.parent, "score", str(run_dir), "--scorers", "detection", "--score-mode", "generative",
        "--llm", url, "--llm-model", "scripted", "--explain-batch", "3", *extra,
    )  # fmt: skip


def _holding(lock: Path, first: Job, timeout: float = 120) -> dict:
    """The holder of ``lock`` once ``first`` has taken it (its JSON beside the lock)."""
    holder = lock.with_name(lock.name + ".json")
    deadline = time.monotonic() + timeout
    while not holder.is_file():
        assert first.process.is_alive(), first.err()[-2000:]
        assert time.monotonic() < deadline, "the first process never took the lock"
        time.sleep(0.05)
    return json.loads(holder.read_text())


def _waiting(job: Job, timeout: float = 120) -> None:
    """Return once ``job`` says it is waiting for the lock."""
    deadline = time.monotonic() + timeout
    while "waiting for pid" not in job.err():
        assert job.process.is_alive(), job.err()[-2000:]
        assert time.monotonic() < deadline, "the job never started waiting"
        time.sleep(0.05)


def _prompts(server) -> list[str]:
    return [json.dumps(json.loads(r["body"])["messages"]) for r in server.requests]


def _one_line(err: str, starts: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(starts), err
    assert "Traceback" not in err, err
    return lines[0]


@pytest.mark.slow  # other processes (forked from a server)
def test_a_second_explain_stops_in_one_line_or_waits_and_asks_nothing_again(cached, server, forks):
    run = RunDir(cached)
    server.gate.clear()
    first = _explain(forks, cached, server.base_url)
    holder = _holding(run.lock_file("explain", CODER, "default"), first)
    assert holder["pid"] == first.process.pid and holder["what"].startswith(f"explaining {CODER}")
    code, err = _explain(forks, cached, server.base_url).finish()
    line = _one_line(err, "error: Another process is already explaining")
    assert code == 2 and f"pid {first.process.pid} on " in line and "--wait" in line
    waiting = _explain(forks, cached, server.base_url, "--wait")
    _waiting(waiting)
    server.gate.set()
    assert first.finish()[0] == 0
    code, err = waiting.finish()
    assert code == 0, err[-2000:]
    rows = explanation_lines(cached)  # every line stored, none replaced
    keys = [(r["coder"], r["latent"], r["explainer"]) for r in rows]
    assert len(keys) == len(set(keys)) == 12  # every latent explained once: the waiting process found them done
    prompts = _prompts(server)
    assert len(prompts) == len(set(prompts)) == 12  # the server never saw a prompt twice
    assert not holder_left(run)


def holder_left(run: RunDir) -> list[Path]:
    """Holder files still there: none once every process has finished."""
    return sorted((run.path / "locks").glob("*.json"))


@pytest.mark.slow  # other processes (forked from a server)
def test_a_second_score_stops_and_a_waiting_one_scores_nothing_again(cached, server, forks):
    for explainer in ("tokens", "default"):
        assert main(["explain", str(cached), "--explainer", explainer, "--latents", LATENTS, "--quiet"]) == 0
    server.requests.clear()
    run = RunDir(cached)
    server.gate.clear()
    first = _score(forks, cached, server.base_url, "--explainer", "default")
    _holding(run.lock_file("score", CODER, "detection--default"), first)
    code, err = _score(forks, cached, server.base_url, "--explainer", "default").finish()
    assert code == 2 and "already scoring" in _one_line(err, "error: Another process is already scoring")
    parallel = _score(forks, cached, server.base_url, "--explainer", "tokens")  # another explainer's: not blocked
    _holding(run.lock_file("score", CODER, "detection--tokens"), parallel)
    waiting = _score(forks, cached, server.base_url, "--explainer", "default", "--wait")
    _waiting(waiting)
    server.gate.set()
    for job in (first, parallel, waiting):
        code, err = job.finish()
        assert code == 0, err[-2000:]
    rows = score_lines(cached)  # every line stored, none replaced
    keys = [(r["scorer"], r["coder"], r["latent"], r["explainer"], r["baseline"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * 2 * 12  # two explainers, with their baselines, each line once
    prompts = _prompts(server)
    assert len(prompts) == len(set(prompts))


@pytest.mark.slow  # other processes (forked from a server)
def test_the_apps_explain_job_beside_a_cli_job_is_refused_on_the_page(cached, server, forks):
    server.gate.clear()
    first = _explain(forks, cached, server.base_url)
    holder = _holding(RunDir(cached).lock_file("explain", CODER, "default"), first)
    open_run = Runs(Workspace(cached.parent)).get("run")
    llm = explain_score.llm_spec(Workspace(cached.parent), "url", url=server.base_url, server_model="scripted")
    with pytest.raises(BusyError, match=f"already explaining {CODER}.*pid {holder['pid']}"):
        explain_score.explain(open_run, CODER, "default", llm, LATENTS, progress=False)
    server.gate.set()
    assert first.finish()[0] == 0
    asked = len(server.requests)
    _, table = explain_score.explain(open_run, CODER, "default", llm, LATENTS, progress=False)
    assert len(table.rows) == 12 and len(server.requests) == asked  # after the CLI job: nothing asked again


def test_a_bare_score_locks_the_other_scorers_it_rescores(cached, capsys):
    """A bare ``interp score`` also scores again the lines of other scorers whose explanations were replaced: it
    locks those scorers too, so one held elsewhere stops it in one line (before any model loads)."""
    run = RunDir(cached)
    assert main(["explain", str(cached), "--explainer", "tokens", "--latents", LATENTS, "--quiet"]) == 0
    assert main(["score", str(cached), "--explainer", "tokens", "--scorers", "embedding", "--quiet"]) == 0
    (first,) = [r for r in run.explanations("tokens") if r["latent"] == 0]
    run.add_explanations([{**first, "explanation": "a replaced explanation"}])  # as `explain --redo` leaves it
    lock = run.lock_file("score", CODER, "embedding--tokens")
    capsys.readouterr()
    with hold([Work(lock, "scoring with embedding elsewhere")]):
        assert main(["score", str(cached), "--explainer", "tokens", "--quiet"]) == 2  # its own scorer: detection
    line = _one_line(capsys.readouterr().err, "error: Another process is already scoring")
    assert f"with embedding: pid {os.getpid()} on " in line
    assert {r["scorer"] for r in run.current_scores("tokens").replaced} == {"embedding"}  # nothing rescored
