"""Crash and resume: ``interp run`` killed with SIGKILL at many points, then resumed, ends as an uninterrupted run.

The pipeline runs in child processes (forked from a server that has imported the library once,
so a kill-and-resume costs the run's own work, not torch's import; the first of each chain runs
in a fresh Python interpreter). Kill points are file-system events: a shard's sidecar appearing,
a temporary file of an atomic write existing (a write in progress), k new lines in a JSONL
file, k new rows in the results database, a plot being drawn. The child checks them itself,
from an audit hook, at each of its own file operations in the run directory, and SIGKILLs itself at the first one
after an event has happened: the chain kills at the same points on every machine, where a watcher polling
from outside missed the points that pass in a millisecond when the child held both cores (a
fresh-clone CI run on a faster machine reached 12 of 16). A second chain kills at seeded
random times, from outside. After every kill, each file in the run directory must be whole (JSON parses,
safetensors load, PNGs decode, JSONL lines parse but for a torn last one, the results database passes SQLite's
integrity check); after the last resume the directory must equal an uninterrupted run's, file by file.

Exclusions from the comparison, and why:
  * ``batch_seconds_per_latent`` in explanations.jsonl: wall time, which differs on every run.
  * the results database is compared by its rows, not its bytes: SQLite lays out pages in the order transactions
    came, which a resume changes; its -wal and -shm files are its journal, not content.
Nothing else is excluded: caches, LLM replies, scores, plots and summary must be identical.

The LLM is the scripted OpenAI-compatible server of ``tests/helpers/openai_server.py`` on 127.0.0.1 with a
deterministic reply (explain: the first marked token; detect: whether a text holds that token).
"""

import json
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
from PIL import Image
from safetensors.torch import load_file

from tests.helpers.openai_server import serving
from tests.helpers.pipeline import scripted_reply

pytestmark = [
    pytest.mark.slow,
    pytest.mark.reliability,
    pytest.mark.skipif(sys.platform != "linux", reason="forkserver and SIGKILL semantics of Linux"),
]

ROOT = Path(__file__).resolve().parents[1]
CODER = "model.layers.3.mlp.topk-neurons"
TIMEOUT = 240.0
"""Seconds one child may run before the harness calls it hung."""


def run_args(run_dir: Path, url: str) -> list[str]:
    """A run small enough for seconds per process, with several shards, explain batches and score chunks."""
    return [
        "run",
        "--run-dir",
        str(run_dir),
        "--quiet",
        "--num-tokens",
        "1024",
        "--ctx-len",
        "32",
        "--shard-windows",
        "4",
        "--batch-size",
        "4",
        "--coders",
        "topk-neurons@model.layers.3.mlp",
        "--latents",
        "sample:6",
        "--explain-batch",
        "2",
        "--concurrency",
        "2",
        "--llm",
        url,
        "--llm-model",
        "scripted",
        "--explainer",
        "default",
        "--scorers",
        "detection",
        "--score-mode",
        "generative",
    ]


FILE_OPERATIONS = {"open": 0, "os.rename": 1, "os.remove": 0, "os.mkdir": 0, "shutil.rmtree": 0}
"""Audit events of file operations, with which of their arguments is the path they write (os.rename: the target)."""


def _child(argv: list[str], log: str, run_dir: str, start: dict, window: list[int]) -> None:
    """Entry point of a child: ``interp`` with its output in ``log``; it kills itself at the first event of ``window``
    (indexes of EVENTS) that it reaches, if any."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from interp.cli import main

    if not window:
        sys.exit(main(argv))
    start = {k: tuple(v) if isinstance(v, list) else v for k, v in start.items()}  # (mtime, size), through JSON
    sys.addaudithook(_die_at_first_event(Path(run_dir), start, window))
    code = main(argv)
    _die_if_reached(Path(run_dir), start, window)  # the last write has no file operation after it: check once more
    sys.exit(code)


def reached_events(run_dir: Path, start: dict, window) -> list[int]:
    """The indexes of ``window`` (into EVENTS) whose events have happened in ``run_dir`` since ``start``."""
    return [i for i in window if EVENTS[i][1](run_dir, start)]


def _die_if_reached(run_dir: Path, start: dict, window) -> None:
    """SIGKILL this process if an event of ``window`` has happened."""
    if reached_events(run_dir, start, window):
        os.kill(os.getpid(), signal.SIGKILL)


def _die_at_first_event(run_dir: Path, start: dict, window) -> Callable[[str, tuple], None]:
    """An audit hook that SIGKILLs this process at a file operation in ``run_dir`` once an event of ``window`` has
    happened. Its own reads (the events open files) are not checked again; a thread's operation while another
    checks is let through, and the next one is checked."""
    checking = []
    root = str(run_dir)

    def hook(event: str, args: tuple) -> None:
        which = FILE_OPERATIONS.get(event)
        if which is None or checking or not str(args[which]).startswith(root):
            return
        checking.append(True)
        try:
            _die_if_reached(run_dir, start, window)
        finally:
            checking.clear()

    return hook


class Outcome(NamedTuple):
    """How one child process ended."""

    killed: bool
    """True when the harness killed it (the kill point was reached)."""
    returncode: int
    seconds: float


Event = Callable[[Path, dict], bool]
"""A kill point: (run directory, its files when the process started) -> has the event happened?"""


def snapshot(run_dir: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (mtime_ns, size) of every file under ``run_dir``."""
    out = {}
    for p in run_dir.rglob("*"):
        try:
            st = p.stat()
        except FileNotFoundError:  # renamed away while we looked
            continue
        if p.is_file():
            out[str(p.relative_to(run_dir))] = (st.st_mtime_ns, st.st_size)
    return out


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _replies(run_dir: Path) -> int:
    """Rows of the results database's response cache (0 before it exists), read through a read-only connection."""
    path = run_dir / "results.sqlite"
    if not path.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
            return con.execute("SELECT count(*) FROM replies").fetchone()[0]
    except sqlite3.OperationalError:  # created, its tables not yet
        return 0


def new_replies(k: int) -> Event:
    """The results database gained ``k`` cached LLM replies since the process started."""

    def event(run_dir: Path, start: dict) -> bool:
        return _replies(run_dir) >= start.get("replies", 0) + k

    return event


def written(rel: str) -> Event:
    """``rel`` appeared or was rewritten since the process started."""

    def event(run_dir: Path, start: dict) -> bool:
        try:
            st = (run_dir / rel).stat()
        except FileNotFoundError:
            return False
        return start.get(rel) != (st.st_mtime_ns, st.st_size)

    return event


def new_lines(rel: str, k: int) -> Event:
    """``rel`` gained ``k`` lines since the process started."""

    def event(run_dir: Path, start: dict) -> bool:
        return _lines(run_dir / rel) >= start.get(f"lines:{rel}", 0) + k

    return event


def writing(folder: str) -> Event:
    """An atomic write is in progress in ``folder``: its temporary file exists."""

    def event(run_dir: Path, start: dict) -> bool:
        try:
            return any(
                e.name.endswith(".tmp") and f"{folder}/{e.name}" not in start for e in os.scandir(run_dir / folder)
            )
        except FileNotFoundError:
            return False

    return event


def new_files(folder: str, pattern: str, k: int) -> Event:
    """``k`` new files matching ``pattern`` in ``folder``."""

    def event(run_dir: Path, start: dict) -> bool:
        have = {str(p.relative_to(run_dir)) for p in (run_dir / folder).glob(pattern)}
        return len(have - set(start)) >= k

    return event


def summary_with_scores(run_dir: Path, start: dict) -> bool:
    """The last write of a run: summary.json with the scores in it (run_cache writes one without them first)."""
    try:
        return written("summary.json")(run_dir, start) and b'"scores"' in (run_dir / "summary.json").read_bytes()
    except FileNotFoundError:
        return False


SHARDS = f"cache/{CODER}"
EVENTS: list[tuple[str, Event]] = [
    ("config written", written("config.json")),
    ("token windows cached", written("cache/tokens.safetensors")),
    ("writing a shard", writing(SHARDS)),
    ("shard 0 done", written(f"{SHARDS}/shard-00000.json")),
    ("2 more shards done", new_files(SHARDS, "shard-*.json", 2)),
    ("shard 6 written, its sidecar not yet", written(f"{SHARDS}/shard-00006.safetensors")),
    ("cache stats written", written(f"{SHARDS}/stats.safetensors")),
    ("first LLM reply cached", new_replies(1)),
    ("2 explanations written", new_lines("explanations.jsonl", 2)),
    ("2 more explanations written", new_lines("explanations.jsonl", 2)),
    ("all explanations written", new_lines("explanations.jsonl", 2)),
    ("first scores written", new_lines("scores.jsonl", 2)),
    ("4 more scores written", new_lines("scores.jsonl", 4)),
    ("drawing a plot", writing("plots")),
    ("2 plots written", new_files("plots", "*.png", 2)),
    ("final summary written", summary_with_scores),
]
"""Kill points in the order a run meets them; each refers to progress made by the process it kills."""


IN_A_FRESH_PROCESS = "import json, sys; from tests.test_crash_resume import _child; _child(*json.loads(sys.argv[1]))"
"""``python -c`` this with ``_child``'s arguments as JSON: the same child in a fresh interpreter."""


class Harness:
    """Starts ``interp`` children (forked from a preloaded server, or in a fresh Python) and kills them at a point."""

    def __init__(self, url: str, logs: Path):
        self.url = url
        self.log = str(logs)
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["interp.cli", "interp.stages", __name__])
        warm = self.ctx.Process(target=time.sleep, args=(0,))  # start the server now, so no run's time includes it
        warm.start()
        warm.join()

    def run(
        self, run_dir: Path, kill: Event | None = None, *, window=(), fresh_process: bool = False
    ) -> tuple[Outcome, list[int]]:
        """Run the pipeline on ``run_dir`` until it ends, the child reaches an event of ``window`` (indexes of
        EVENTS: it kills itself) or ``kill`` fires (watched from here: then SIGKILL). Also returns the events of
        ``window`` that had happened when it ended."""
        start = snapshot(run_dir) if run_dir.exists() else {}
        for rel in ("explanations.jsonl", "scores.jsonl"):
            start[f"lines:{rel}"] = _lines(run_dir / rel)
        start["replies"] = _replies(run_dir)
        args = [run_args(run_dir, self.url), self.log, str(run_dir), start, list(window)]
        t0 = time.monotonic()
        if fresh_process:
            proc = subprocess.Popen([sys.executable, "-c", IN_A_FRESH_PROCESS, json.dumps(args)], cwd=ROOT)
            pid, alive, code = proc.pid, lambda: proc.poll() is None, lambda: proc.wait()
        else:
            proc = self.ctx.Process(target=_child, args=args)
            proc.start()
            pid, alive, code = proc.pid, proc.is_alive, lambda: (proc.join(), proc.exitcode)[1]
        while alive():
            if kill is not None and kill(run_dir, start):
                os.kill(pid, signal.SIGKILL)
                break
            if time.monotonic() - t0 > TIMEOUT:
                os.kill(pid, signal.SIGKILL)
                code()
                pytest.fail(f"interp run hung for {TIMEOUT:.0f} s on {run_dir}; see {self.log}")
            time.sleep(0.002)
        returncode = code()  # a SIGKILL is always ours: sent from here, or by the child at its point
        return Outcome(returncode == -signal.SIGKILL, returncode, time.monotonic() - t0), reached_events(
            run_dir, start, window
        )


def after(seconds: float) -> Event:
    """A kill at a fixed time after the process started."""
    deadline = []

    def event(run_dir: Path, start: dict) -> bool:
        if not deadline:
            deadline.append(time.monotonic() + seconds)
        return time.monotonic() >= deadline[0]

    return event


def check_whole(run_dir: Path) -> list[str]:
    """Every file a reader might open is whole; returns what is not. Temporary files of atomic writes are skipped."""
    problems = []
    for p in sorted(run_dir.rglob("*")):
        if not p.is_file() or any(part.endswith(".tmp") for part in p.relative_to(run_dir).parts):
            continue
        try:
            if p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".safetensors":
                load_file(p)
            elif p.suffix == ".png":
                with Image.open(p) as im:
                    im.load()
            elif p.suffix == ".sqlite":
                with sqlite3.connect(f"file:{p}?mode=ro", uri=True) as con:
                    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            elif p.suffix == ".jsonl":
                data = p.read_bytes()
                lines = data.split(b"\n")
                for line in lines[:-1]:  # the part after the last newline may be a torn line, and only it
                    json.loads(line)
        except Exception as e:  # any failure to read is what this check reports
            problems.append(f"{p.relative_to(run_dir)}: {type(e).__name__}: {e}")
    return problems


def mid_write(run_dir: Path) -> bool:
    """Did the process die while writing: a temporary file of an atomic write, or a JSONL file not
    ending in a newline?
    """
    torn = any(p.stat().st_size and p.read_bytes()[-1:] != b"\n" for p in run_dir.glob("*.jsonl"))
    return torn or any(run_dir.rglob(".*.tmp"))


def normalised(run_dir: Path) -> dict[str, object]:
    """The run directory's files, with the fields that legitimately differ between runs removed."""
    out: dict[str, object] = {}
    for p in sorted(run_dir.rglob("*")):
        if not p.is_file():
            continue
        rel = str(p.relative_to(run_dir))
        if rel == "explanations.jsonl":
            rows = [json.loads(line) for line in p.read_text().splitlines()]
            out[rel] = [{k: v for k, v in r.items() if k != "batch_seconds_per_latent"} for r in rows]
        elif rel == "results.sqlite":
            with sqlite3.connect(f"file:{p}?mode=ro", uri=True) as con:
                out[rel] = con.execute("SELECT key, method, value FROM replies ORDER BY key").fetchall()
        elif rel.startswith("results.sqlite-"):
            continue
        else:
            out[rel] = p.read_bytes()
    return out


def differences(a: dict, b: dict) -> list[str]:
    """What differs between two ``normalised`` directories, briefly."""
    diffs = [f"only in the resumed run: {k}" for k in sorted(set(b) - set(a))]
    diffs += [f"missing from the resumed run: {k}" for k in sorted(set(a) - set(b))]
    diffs += [f"differs: {k}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
    return diffs


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    srv = serving()
    srv.reply = scripted_reply
    logs = tmp_path_factory.mktemp("logs") / "children.log"
    yield Harness(srv.base_url, logs)
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def reference(harness, tmp_path_factory):
    """An uninterrupted run, and the shorter time of two: the random kills are fractions of it, and one slow run
    (3.3 s where runs take 2) put every kill of the chain after its process had ended. The two runs' files must
    be the same."""
    runs = []
    for name in ("reference", "again"):
        run_dir = tmp_path_factory.mktemp(name) / "run"
        outcome, _ = harness.run(run_dir)
        assert outcome.returncode == 0, f"reference run failed; see {harness.log}"
        assert not check_whole(run_dir)
        runs.append((normalised(run_dir), outcome.seconds))
    assert not differences(runs[0][0], runs[1][0]), differences(runs[0][0], runs[1][0])
    return runs[0][0], min(seconds for _, seconds in runs)


def resumed_after(run_dir: Path, name: str, reached: list[str]) -> None:
    """After a kill at ``name``: every file is whole (fails at once if not); ``name`` goes to ``reached``, marked
    "(mid-write)" where the kill left the temporary file of an atomic write or a torn JSONL line behind."""
    problems = check_whole(run_dir)
    assert not problems, f"after a kill at {name!r}: {problems}"
    reached.append(name + (" (mid-write)" if mid_write(run_dir) else ""))


def finish(harness: Harness, run_dir: Path) -> None:
    """Run to the end, uninterrupted: it must succeed."""
    final, _ = harness.run(run_dir)
    assert final.returncode == 0, f"the resumed run failed (exit {final.returncode}); see {harness.log}"


def event_chain(harness: Harness, run_dir: Path) -> list[str]:
    """Run, each process killed at the first of the remaining EVENTS it reaches (each resume starts where the last
    kill left off, and the points it passed before its kill are dropped); then finish the run. The first process
    is a fresh Python, the others are forked.

    Returns the names of the kill points reached (see ``resumed_after``)."""
    reached, remaining = [], list(range(len(EVENTS)))
    while remaining:
        outcome, happened = harness.run(run_dir, window=remaining, fresh_process=not reached)
        if not outcome.killed:
            assert outcome.returncode == 0, f"run failed (exit {outcome.returncode}); see {harness.log}"
            break
        resumed_after(run_dir, EVENTS[happened[0]][0], reached)
        remaining = [i for i in remaining if i > happened[0]]
    finish(harness, run_dir)
    return reached


def timed_chain(harness: Harness, run_dir: Path, times: list[float]) -> list[str]:
    """Run, the k-th process killed ``times[k]`` seconds after its start (watched from here), until a process ends
    before its time; then finish the run. Returns the kills that landed (see ``resumed_after``)."""
    reached = []
    for t in times:
        outcome, _ = harness.run(run_dir, after(t))
        if not outcome.killed:
            assert outcome.returncode == 0, f"run failed (exit {outcome.returncode}); see {harness.log}"
            break
        resumed_after(run_dir, f"{t:.2f} s", reached)
    finish(harness, run_dir)
    return reached


def test_sigkill_at_each_stage_then_resume_equals_an_uninterrupted_run(harness, reference, tmp_path):
    want, _ = reference
    reached = event_chain(harness, tmp_path / "run")
    diffs = differences(want, normalised(tmp_path / "run"))
    print(f"\nkill points (events): {len(reached)} of {len(EVENTS)} reached and passed: {reached}")
    assert not diffs, diffs
    assert [name.removesuffix(" (mid-write)") for name in reached] == [name for name, _ in EVENTS]


def test_sigkill_at_random_times_then_resume_equals_an_uninterrupted_run(harness, reference, tmp_path):
    want, seconds = reference
    seed = int(os.environ.get("INTERP_CRASH_SEED", "0"))
    rng = random.Random(seed)
    # each resume has less left to do, so each kill comes sooner
    times = [rng.uniform(0.1, 0.6) * seconds * 0.75**k for k in range(8)]
    reached = timed_chain(harness, tmp_path / "run", times)
    diffs = differences(want, normalised(tmp_path / "run"))
    print(
        f"\nkill points (random times, seed {seed}, reference run {seconds:.1f} s): "
        f"{len(reached)} reached and passed: {reached}"
    )
    assert not diffs, diffs
    assert reached, "no random kill landed before the run finished"
