"""Crash and resume: ``interp run`` killed with SIGKILL at many points, then resumed, ends as an uninterrupted run.

The pipeline runs in child processes (forked from a server that has imported the library once,
so a kill-and-resume costs the run's own work, not torch's import; the first of each chain runs
in a fresh Python interpreter). Kill points are file-system and database events: a shard's sidecar appearing,
a temporary file of an atomic write existing (a write in progress), k new rows in a table of the results database,
a transaction of explanation or score lines at its COMMIT (its rows written into it, none committed yet), a
transaction of score lines whose rows are in but whose examples are not, a plot being drawn. The child checks them
itself, at each of its own file operations in the run directory (an audit hook) and at each statement its
connections to the run's database run (SQLite's trace callback on the real connection), and SIGKILLs itself at the
first one after an event has happened: the chain kills at the same points on every machine, where a watcher polling
from outside missed the points that pass in a millisecond when the child held both cores (a
fresh-clone CI run on a faster machine reached 12 of 16). Before it dies it notes which event it met and how many
rows each table of the database held. A second chain kills at seeded random times, from outside.

After every kill, each file in the run directory must be whole (JSON parses, safetensors load, PNGs decode, JSONL
lines parse but for a torn last one, the results database passes SQLite's integrity check and holds no torn row:
every explanation row's line parses and agrees with its key columns, every score row has its examples, as many as
it says, every key one current row); nothing committed before the kill is lost (every row the database held when
the process started is still there, in its place, and as many rows as the dying process counted); and nothing of the
transaction it was killed in is kept. After the last resume the directory must equal an uninterrupted run's, file by
file, and its database row by row.

Exclusions from the comparison, and why:
  * ``batch_seconds_per_latent`` in the explanation lines: wall time, which differs on every run.
  * the results database is compared by its rows (replies; every explanation and score line ever stored, in the
    order written; the current lines), not its bytes: SQLite lays out pages in the order transactions came, which a
    resume changes; its -wal and -shm files are its journal, not content; its ``meta`` id is random.
Nothing else is excluded: caches, LLM replies, explanations, scores, plots and summary must be identical.

The LLM is the scripted OpenAI-compatible server of ``tests/helpers/openai_server.py`` on 127.0.0.1 with a
deterministic reply (explain: the first marked token; detect: whether a text holds that token).
"""

import json
import multiprocessing
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlparse

import pytest
from PIL import Image
from safetensors.torch import load_file

from interp.results.examples import decode_examples
from interp.rundir import RunDir
from tests.helpers.openai_server import serving
from tests.helpers.pipeline import scripted_reply
from tests.helpers.results import explanation_lines, score_lines

pytestmark = [
    pytest.mark.slow,
    pytest.mark.reliability,
    pytest.mark.skipif(sys.platform != "linux", reason="forkserver and SIGKILL semantics of Linux"),
]

ROOT = Path(__file__).resolve().parents[1]
CODER = "model.layers.3.mlp.topk-neurons"
TIMEOUT = 240.0
"""Seconds one child may run before the harness calls it hung."""
TABLES = ("replies", "explanations", "scores")
"""The tables of the results database whose rows the kill points count."""


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

REAL_CONNECT = sqlite3.connect


def database_file(database) -> str:
    """The file a ``sqlite3.connect`` argument names: a path, or a ``file:`` URI (as ``results.db`` opens it)."""
    name = os.fspath(database)
    return unquote(urlparse(name).path) if isinstance(name, str) and name.startswith("file:") else str(name)


def traced_connect(root: Path, on_statement: Callable[[str], None]) -> Callable[..., sqlite3.Connection]:
    """``sqlite3.connect`` whose connections to a file under ``root`` report each statement to ``on_statement`` as
    SQLite begins running it (its trace callback; a row of ``executemany`` each time): the connection is the real one,
    so every write is SQLite's own, and a process can stop (or fill its disk) between two statements of one
    transaction, or at its COMMIT."""

    def connect(database, *args, **kwargs) -> sqlite3.Connection:
        conn = REAL_CONNECT(database, *args, **kwargs)
        if Path(database_file(database)).is_relative_to(root):
            conn.set_trace_callback(on_statement)
        return conn

    return connect


@dataclass
class Statement:
    """Where the connections of this process to the run's database are: the statement about to run, and the tables
    the open transaction has inserted into."""

    sql: str = ""
    inserted: set[str] = field(default_factory=set)

    def begin(self, sql: str) -> None:
        self.sql = sql.lstrip()
        if self.sql.startswith("BEGIN"):
            self.inserted = set()
        elif m := re.match(r"INSERT (?:OR \w+ )?INTO (\w+)", self.sql):
            self.inserted.add(m.group(1))


AT = Statement()
"""This process's point in its statements (a child's: in the harness it stays empty)."""


def _child(argv: list[str], log: str, run_dir: str, start: dict, window: list[int]) -> None:
    """Entry point of a child: ``interp`` with its output in ``log``; it kills itself at the first event of ``window``
    (indexes of EVENTS) that it reaches, if any, after noting it in ``note_file(log)``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from interp.cli import main

    if not window:
        sys.exit(main(argv))
    start = {k: tuple(v) if isinstance(v, list) else v for k, v in start.items()}  # (mtime, size), through JSON
    check = _die_at_first_event(Path(run_dir), start, window, note_file(log))
    sys.addaudithook(check)
    sqlite3.connect = traced_connect(Path(run_dir), lambda sql: check("statement", (sql,)))
    code = main(argv)
    check("exit", ())  # the last write has no file operation after it: check once more
    sys.exit(code)


def note_file(log: str | Path) -> Path:
    """Where a child notes the event it killed itself at, and the rows the database held then."""
    return Path(f"{log}.kill.json")


def reached_events(run_dir: Path, start: dict, window) -> list[int]:
    """The indexes of ``window`` (into EVENTS) whose events have happened in ``run_dir`` since ``start``, at the
    statement this process is at."""
    return [i for i in window if EVENTS[i][1](run_dir, start)]


def _die_at_first_event(run_dir: Path, start: dict, window, note: Path) -> Callable[[str, tuple], None]:
    """A check for the audit hook and the trace callback: it SIGKILLs this process at a file operation in
    ``run_dir``, or a statement of its database, once an event of ``window`` has happened, first noting the event
    and the rows of the database in ``note``. Its own reads (the events open files) are not checked again; a
    thread's operation while another checks is let through, and the next one is checked."""
    checking = []
    root = str(run_dir)

    def check(event: str, args: tuple) -> None:
        if event == "statement":
            AT.begin(args[0])
            if AT.sql.startswith(ROW_WRITES) and not AT.sql.startswith("INSERT INTO score_examples"):
                return  # a row of a transaction: nothing is committed, and no kill point is there
        else:
            which = FILE_OPERATIONS.get(event, -1 if event == "exit" else None)
            if which is None or (which >= 0 and not str(args[which]).startswith(root)):
                return
            AT.sql = ""  # between statements
        if checking:
            return
        checking.append(True)
        COUNTED.clear()  # the rows are counted once per check
        try:
            reached = reached_events(run_dir, start, window)
            if reached:
                note.write_text(json.dumps({"event": reached[0], "at": AT.sql[:80], "rows": counts(run_dir)}))
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            checking.clear()

    return check


ROW_WRITES = ("INSERT", "UPDATE", "DELETE", "--")
"""Statements that write rows inside a transaction (or a trigger's, reported with ``--``)."""
COUNTED: dict[str, int] = {}
"""The rows ``counts`` found at the check under way, read once for all its events."""


class Outcome(NamedTuple):
    """How one child process ended."""

    killed: bool
    """True when the harness killed it (the kill point was reached)."""
    returncode: int
    seconds: float


Event = Callable[[Path, dict], bool]
"""A kill point: (run directory, its files and rows when the process started) -> has the event happened (at the
statement ``AT`` this process is at)?"""


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


def _read_only(path: Path) -> closing:
    """A read-only connection to the database at ``path`` (the real ``sqlite3.connect``: never traced), closed
    after."""
    return closing(REAL_CONNECT(f"file:{path}?mode=ro", uri=True))


def stored(run_dir: Path) -> dict[str, list]:
    """What the results database has committed, read through a read-only connection (nothing is written, no journal
    folded): the keys of its replies, sorted; its explanation rows and score rows (with their examples' blob), every
    one ever stored in the order written, without ``current`` (a later line clears it)."""
    path = run_dir / "results.sqlite"
    out: dict[str, list] = {table: [] for table in TABLES}
    if not path.is_file():
        return out
    queries = {
        "replies": "SELECT key FROM replies ORDER BY key",
        "explanations": "SELECT id, line FROM explanations ORDER BY id",
        "scores": "SELECT s.id, s.scorer, s.coder, s.latent, s.explainer, s.baseline, s.explanation, s.metrics, "
        "s.n_examples, s.extra, e.data FROM scores s LEFT JOIN score_examples e ON e.score = s.id ORDER BY s.id",
    }
    with _read_only(path) as con:
        for table, sql in queries.items():
            try:
                out[table] = con.execute(sql).fetchall()
            except sqlite3.OperationalError:  # created, its tables not yet
                pass
    return out


def counts(run_dir: Path) -> dict[str, int]:
    """Rows of each table of ``TABLES`` the results database has committed (0 before it exists)."""
    path = run_dir / "results.sqlite"
    out = dict.fromkeys(TABLES, 0)
    if not path.is_file():
        return out
    with _read_only(path) as con:
        for table in TABLES:
            try:
                out[table] = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            except sqlite3.OperationalError:  # created, its tables not yet
                pass
    return out


def new_rows(table: str, k: int) -> Event:
    """The results database committed ``k`` rows of ``table`` since the process started."""

    def event(run_dir: Path, start: dict) -> bool:
        if not COUNTED:
            COUNTED.update(counts(run_dir))
        return COUNTED[table] >= start["rows"][table] + k

    return event


def committing(table: str, stored: int = 0) -> Event:
    """The process is at the COMMIT of a transaction that stores ``table`` rows (they are written into it, none
    committed yet), the run holding at least ``stored`` of them already."""

    def event(run_dir: Path, start: dict) -> bool:
        if not (AT.sql.startswith("COMMIT") and table in AT.inserted):
            return False
        if not COUNTED:
            COUNTED.update(counts(run_dir))
        return COUNTED[table] >= stored

    return event


def storing_examples_of_scores(run_dir: Path, start: dict) -> bool:
    """The process is inside its first transaction of score lines, their rows stored, their examples not yet: a kill
    there must leave neither (a score row without its examples is a torn row)."""
    return AT.sql.startswith("INSERT INTO score_examples") and "scores" in AT.inserted


def written(rel: str) -> Event:
    """``rel`` appeared or was rewritten since the process started."""

    def event(run_dir: Path, start: dict) -> bool:
        try:
            st = (run_dir / rel).stat()
        except FileNotFoundError:
            return False
        return start.get(rel) != (st.st_mtime_ns, st.st_size)

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
    ("first LLM reply cached", new_rows("replies", 1)),
    ("at the commit of the first explanations", committing("explanations")),
    ("2 explanations written", new_rows("explanations", 2)),
    ("at the commit of 2 more explanations", committing("explanations", stored=2)),
    ("2 more explanations written", new_rows("explanations", 2)),
    ("all explanations written", new_rows("explanations", 2)),
    ("inside the commit of the first scores, their examples not yet stored", storing_examples_of_scores),
    ("at the commit of the first scores", committing("scores")),
    ("first scores written", new_rows("scores", 2)),
    ("4 more scores written", new_rows("scores", 4)),
    ("drawing a plot", writing("plots")),
    ("2 plots written", new_files("plots", "*.png", 2)),
    ("final summary written", summary_with_scores),
]
"""Kill points in the order a run meets them; each refers to progress made by the process it kills (a commit: to the
rows the run holds)."""
IN_A_TRANSACTION = {name for name, event in EVENTS if event is storing_examples_of_scores or name.startswith("at the")}
"""The kill points inside a transaction of the results database: nothing of it may be kept."""


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
    ) -> tuple[Outcome, dict | None]:
        """Run the pipeline on ``run_dir`` until it ends, the child reaches an event of ``window`` (indexes of
        EVENTS: it kills itself) or ``kill`` fires (watched from here: then SIGKILL). Also returns what a child that
        killed itself noted (the event, the statement it was at, the rows of the database), or None. Whatever was
        killed, every row the database held before it must still be there."""
        start = snapshot(run_dir) if run_dir.exists() else {}
        before = stored(run_dir)
        start["rows"] = {table: len(rows) for table, rows in before.items()}
        note = note_file(self.log)
        note.unlink(missing_ok=True)
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
        lost = kept_rows(before, stored(run_dir))
        assert not lost, f"committed rows lost after {'a kill' if returncode == -signal.SIGKILL else 'a run'}: {lost}"
        noted = json.loads(note.read_text()) if note.is_file() else None
        return Outcome(returncode == -signal.SIGKILL, returncode, time.monotonic() - t0), noted


def kept_rows(before: dict[str, list], after: dict[str, list]) -> list[str]:
    """What of ``before`` (``stored``) ``after`` lacks: a reply gone, or a line no longer where it was written."""
    gone = set(before["replies"]) - set(after["replies"])
    lost = [f"replies: {len(gone)} gone"] if gone else []
    for table in ("explanations", "scores"):
        if after[table][: len(before[table])] != before[table]:
            lost.append(f"{table}: {len(before[table])} rows before, not all where they were")
    return lost


def after(seconds: float) -> Event:
    """A kill at a fixed time after the process started."""
    deadline = []

    def event(run_dir: Path, start: dict) -> bool:
        if not deadline:
            deadline.append(time.monotonic() + seconds)
        return time.monotonic() >= deadline[0]

    return event


def torn_rows(con: sqlite3.Connection) -> list[str]:
    """The rows of a results database that are not whole: an explanation line that does not parse or disagrees with
    its key columns, a score row without its examples (or with another number of them, or metrics that do not
    parse), a key without exactly one current row."""
    tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    problems = []
    if "explanations" in tables:
        for id_, line, coder, latent, explainer in con.execute(
            "SELECT id, line, coder, latent, explainer FROM explanations"
        ):
            row = json.loads(line)
            if (row.get("coder"), row.get("latent"), row.get("explainer")) != (coder, latent, explainer):
                problems.append(f"explanation row {id_}: its line says another key")
        keys = con.execute(
            "SELECT explainer, coder, latent FROM explanations GROUP BY 1, 2, 3 HAVING sum(current) != 1"
        ).fetchall()
        problems += [f"explanation {k}: not one current row" for k in keys]
    if "scores" in tables:
        for id_, n, metrics, data in con.execute(
            "SELECT s.id, s.n_examples, s.metrics, e.data FROM scores s LEFT JOIN score_examples e ON e.score = s.id"
        ):
            json.loads(metrics)
            if data is None:
                problems.append(f"score row {id_}: no examples")
            elif len(decode_examples(data)) != n:
                problems.append(f"score row {id_}: {len(decode_examples(data))} examples, not {n}")
        keys = con.execute(
            "SELECT scorer, coder, latent, explainer, baseline FROM scores GROUP BY 1, 2, 3, 4, 5 "
            "HAVING sum(current) != 1"
        ).fetchall()
        problems += [f"score {k}: not one current row" for k in keys]
        (orphans,) = con.execute(
            "SELECT count(*) FROM score_examples WHERE score NOT IN (SELECT id FROM scores)"
        ).fetchone()
        problems += [f"{orphans} examples of no score row"] if orphans else []
    return problems


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
                with _read_only(p) as con:
                    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                    torn = torn_rows(con)
                    assert not torn, torn
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


TIMING = "batch_seconds_per_latent"


def normalised(run_dir: Path) -> dict[str, object]:
    """The run directory's files, with the fields that legitimately differ between runs removed; the results
    database as its rows: the replies, every explanation and score line ever stored in the order written, and the
    current ones."""
    out: dict[str, object] = {}
    for p in sorted(run_dir.rglob("*")):
        if not p.is_file():
            continue
        rel = str(p.relative_to(run_dir))
        if rel == "results.sqlite":
            with _read_only(p) as con:
                out[rel] = con.execute("SELECT key, method, value FROM replies ORDER BY key").fetchall()
        elif rel.startswith("results.sqlite-"):
            continue
        else:
            out[rel] = p.read_bytes()
    if "results.sqlite" in out:
        run = RunDir(run_dir)
        untimed = lambda lines: [{k: v for k, v in r.items() if k != TIMING} for r in lines]  # noqa: E731
        out["results.sqlite: every explanation line"] = untimed(explanation_lines(run_dir))
        out["results.sqlite: every score line"] = score_lines(run_dir)
        out["results.sqlite: current explanations"] = untimed(run.explanations())
        out["results.sqlite: current scores"] = run.scores()
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
    assert runs[0][0]["results.sqlite: every score line"], "the reference run scored nothing"
    return runs[0][0], min(seconds for _, seconds in runs)


def resumed_after(run_dir: Path, name: str, reached: list[str], note: dict | None = None) -> None:
    """After a kill at ``name``: every file is whole (fails at once if not); where the child noted its kill, the
    database holds the rows it had committed, no more and no fewer. ``name`` goes to ``reached``, marked
    "(mid-write)" where the kill left the temporary file of an atomic write or a torn JSONL line behind, and
    "(mid-transaction)" where it came inside a transaction of the database."""
    problems = check_whole(run_dir)
    assert not problems, f"after a kill at {name!r}: {problems}"
    if note is not None:
        assert counts(run_dir) == note["rows"], f"after a kill at {name!r} ({note['at']!r}): {note['rows']} noted"
    mark = " (mid-transaction)" if name in IN_A_TRANSACTION else " (mid-write)" if mid_write(run_dir) else ""
    reached.append(name + mark)


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
        outcome, note = harness.run(run_dir, window=remaining, fresh_process=not reached)
        if not outcome.killed:
            assert outcome.returncode == 0, f"run failed (exit {outcome.returncode}); see {harness.log}"
            break
        assert note is not None, f"killed without a note of its point; see {harness.log}"
        resumed_after(run_dir, EVENTS[note["event"]][0], reached, note)
        remaining = [i for i in remaining if i > note["event"]]
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
    assert [re.sub(r" \(mid-(write|transaction)\)$", "", name) for name in reached] == [name for name, _ in EVENTS]
    assert [name for name in reached if name.endswith("(mid-transaction)")], "no kill inside a transaction"


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
