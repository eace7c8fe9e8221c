"""Every reader of a run's results at 50,000 to 1,000,000 explained latents: the results database against the JSONL
files of the version before it, on the same lines.

Each size is a run directory made the way real runs are: ``interp cache`` of a random sparsify TopK SAE ``N``
latents wide (k=32, at block 1 of a random 2-block Llama with the embedded SmolLM2's tokenizer, as
``records_throughput.py`` uses), so the app and the summary read a real cache of that width. Its results are real
lines repeated: a small run (``--source`` latents, default 4,096, over the same corpus) is explained by ``interp
explain --explainer tokens --latents all`` and scored by the embedding scorer's own ``score`` (a bag-of-words
embedder in place of all-MiniLM-L6-v2, whose millions of example texts would take hours here); its explanation
lines and score lines (31 examples each) are then written for every latent of the large run with the keys changed,
through ``RunDir.add_explanations`` and ``add_scores`` as the stages write them, the random-explanation lines with
the text ``baseline_explanations`` assigns there, and a second scorer's lines (the embedding lines again, named
``surprisal``): two scorers with baselines, four score rows a latent, 4M at 1M latents.

Each reader then runs in a fresh process, timed from outside, with its peak resident memory (``wait4``):

* ``interp summary RUN``, the whole command: the first after the lines were written (it decides each score line's
  standing and keeps it in the database, as the summary at the end of ``interp score`` does), then again (read back);
* the app opening the run: overview, sort choices, explainers, scorers and the latent table's first page (``open``,
  what ``Handlers.open_run`` shows), then in the same process its next page, the table sorted by a score, a word
  searched, and one latent's explanations, scores and candidates (the page of a latent but its record, which is
  read from the cache as before and costs the same at any size);
* ``interp export RUN --jsonl DIR``, every line streamed out (``--export``, at the sizes given);
* ``interp publish RUN --dry-run`` (``--publish``, at the sizes given: it builds every latent's record).

``--previous DIR`` (a checkout of the commit before the database, ``git worktree add /tmp/prev 0d18f6a``) also runs
that version's own readers on the same lines as JSONL (the run's export, history and all, in a copy of the run without
its database), up to ``--jsonl-max`` latents: it reads each file whole, about 45 GB at 1M latents, which does not fit
this machine. The database's size on disk, per score row, is reported beside the JSONL's.

    python benchmarks/run_scale.py --latents 50000 200000 1000000 --previous /tmp/prev
"""

import argparse
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib
from contextlib import closing
from pathlib import Path

import torch

from cache_throughput import model_skeleton, random_sae_targets
from common import mib, table
from interp.config import ModelConfig
from interp.models import load_model
from interp.rundir import RunDir
from interp.scoring.base import ScoreResult
from interp.scoring.embedding import EmbeddingScorer
from interp.scoring.results import baseline_explanations
from interp.views import scored_view
from records_throughput import random_model

ROOT = Path(__file__).resolve().parents[1]
EXPLAINER = "tokens"
WRITE_BATCH = 4096
"""Score lines per ``add_scores`` call while filling a large run (a score stage writes a batch of latents' lines)."""


class BagOfWords:
    """An embedder with sentence-transformers' ``encode``: hashed word counts, normalised. It stands in for
    all-MiniLM-L6-v2 so that the source run's score lines are written in minutes; only similarities differ."""

    dim = 256

    def encode(self, texts, *, batch_size, normalize_embeddings, convert_to_tensor, show_progress_bar):
        out = torch.zeros(len(texts), self.dim)
        for i, text in enumerate(texts):
            for word in text.split():
                out[i, zlib.crc32(word.encode()) % self.dim] += 1
        return torch.nn.functional.normalize(out, dim=1) if normalize_embeddings else out


def load() -> str:
    """The 1-minute load average now, for the tables (the machine is shared)."""
    return Path("/proc/loadavg").read_text().split()[0]


PEAK = r"""
import atexit, os, sys
def peak():
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    with open(os.environ["PEAK_FILE"], "w") as f:
        f.write(hwm.split()[1])
atexit.register(peak)
"""
"""Prepended to a child's code: its peak resident set (VmHWM, of its own memory map: not the parent's that a fork
copies, which ``wait4`` would count) written where ``PEAK_FILE`` says when it exits."""
CLI = PEAK + "import sys\nfrom interp.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def child(args: list[str], env: dict | None = None, stdout=subprocess.DEVNULL) -> tuple[float, float, str]:
    """Run ``args`` (``python -c CODE ...``, CODE starting with ``PEAK``) to its end in a fresh process, failing
    loudly: wall seconds, peak resident MiB, its stdout."""
    peak = Path(tempfile.mkstemp(suffix=".peak")[1])
    start = time.perf_counter()
    done = subprocess.run(args, stdout=stdout, env={**os.environ, **(env or {}), "PEAK_FILE": str(peak)}, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} ... failed")
    kib = int(peak.read_text())
    peak.unlink()
    return seconds, kib / 1024, done.stdout or ""


def interp(*args: str) -> float:
    """``interp ARGS`` run to its end; its wall time."""
    return child([sys.executable, "-c", CLI, *args])[0]


def cached_run(work: Path, latents: int, tokens: int) -> RunDir:
    """A cached run of ``latents`` latents over ``tokens`` tokens under ``work`` (reused when finished)."""
    run = RunDir(work / f"run-{latents}-{tokens}")
    if (run.path / "cached").exists():
        return run
    folder = work / "model"
    if not folder.exists():
        random_model(folder, 128, 2)
    ns = argparse.Namespace(hookpoint=None, layers=[1], latents=latents, k=32, seed=0)
    batch = max(1, min(128, 2**28 // (latents * 4 * 64)))  # pre-activations of windows of 64 tokens: 256 MiB
    target = random_sae_targets(model_skeleton(ModelConfig(model=str(folder))), ns, work / f"sae-{latents}")
    seconds = interp(
        *["cache", str(run.path), "--num-tokens", str(tokens), "--explainer", EXPLAINER, "--quiet"],
        *["--batch-size", str(batch), "--shard-windows", "512", "--model", str(folder), "--dtype", "float32"],
        *["--coders", target[0].spec],
    )
    print(f"cached {tokens:,} tokens of {latents:,} latents in {seconds:.0f} s (load {load()})", flush=True)
    (run.path / "cached").write_text(f"{seconds:.1f}\n")
    return run


def source_run(work: Path, latents: int, tokens: int) -> RunDir:
    """The small run whose lines are repeated: explained by the tokens explainer, scored by the embedding scorer
    (a bag-of-words embedder) through its own ``score``, with random explanations."""
    run = cached_run(work, latents, tokens)
    if (run.path / "scored").exists():
        return run
    interp("explain", str(run.path), "--explainer", EXPLAINER, "--latents", "all", "--quiet")
    cfg = run.read_config()
    lm = load_model(cfg.model)
    scorer = EmbeddingScorer(lm.tokenizer, embedder=BagOfWords())
    explained = run.usable_explanations(EXPLAINER)
    baseline = baseline_explanations(explained, cfg.records.records_seed)
    (coder,) = run.finished_coders()
    texts = {r["latent"]: r["explanation"] for r in explained}
    jobs = []
    for whole in run.record_builder(coder, cfg, lm).build(coder, list(texts)):
        record = scored_view(whole)
        jobs += [(record, False, texts[record.latent]), (record, True, baseline[(coder, record.latent)])]
    scoring = writing = 0.0
    for i in range(0, len(jobs), 1024):
        chunk = jobs[i : i + 1024]
        start = time.perf_counter()
        results = scorer.score([(record, text) for record, _, text in chunk])
        lines = [
            ScoreResult(scorer.name, coder, record.latent, EXPLAINER, b, text, metrics, examples).to_dict()
            for (record, b, text), (metrics, examples) in zip(chunk, results, strict=True)
        ]
        scoring += time.perf_counter() - start
        start = time.perf_counter()
        run.add_scores(lines)
        writing += time.perf_counter() - start
    note = (
        f"source run: {len(explained):,} latents, {len(jobs):,} score lines; scoring (bag-of-words embedder, the "
        f"fastest scorer there is) {scoring:.1f} s, writing the lines {writing:.2f} s "
        f"({100 * writing / (scoring + writing):.1f}% of the two)"
    )
    print(note, flush=True)
    (run.path / "scored").write_text(note + "\n")
    return run


def fill(source: RunDir, run: RunDir) -> str:
    """Every latent of ``run`` explained and scored with ``source``'s lines, repeated (once: reused after)."""
    done = run.path / "filled"
    if done.exists():
        return done.read_text().strip()
    run.results_file.unlink(missing_ok=True)
    (coder,) = run.finished_coders()
    n = len(run.latent_counts(coder))
    lines = source.usable_explanations(EXPLAINER)
    made = [{**lines[i % len(lines)], "coder": coder, "latent": i} for i in range(n)]
    start = time.perf_counter()
    for i in range(0, n, 50_000):
        run.add_explanations(made[i : i + 50_000])
    explaining = time.perf_counter() - start
    baseline = baseline_explanations(made, run.read_config().records.records_seed)
    pairs: dict[int, dict] = {}
    for r in source.current_scores(EXPLAINER).rows:
        pairs.setdefault(r["latent"], {})[r["baseline"]] = r
    pairs = [(v[False], v[True]) for v in pairs.values() if len(v) == 2]
    start = time.perf_counter()
    rows = 0
    for scorer in ("embedding", "surprisal"):
        out = []
        for i, row in enumerate(made):
            texts = (row["explanation"], baseline[(coder, row["latent"])])
            for line, text in zip(pairs[i % len(pairs)], texts, strict=True):
                out.append({**line, "scorer": scorer, "coder": coder, "latent": row["latent"], "explanation": text})
            if len(out) >= WRITE_BATCH:
                run.add_scores(out)
                rows, out = rows + len(out), []
        run.add_scores(out)
        rows += len(out)
    scoring = time.perf_counter() - start
    note = (
        f"{n:,} explanations written in {explaining:.0f} s, {rows:,} score rows in {scoring:.0f} s "
        f"({1e3 * scoring / rows:.2f} ms a row, batches of {WRITE_BATCH:,}; load {load()})"
    )
    print(note, flush=True)
    done.write_text(note + "\n")
    return note


APP = (
    PEAK
    + r"""
import json, sys, time
from pathlib import Path
from interp.app import explain_score, explore
from interp.app.session import OpenRun
from interp.app.workspace import Workspace
path, word = Path(sys.argv[1]), sys.argv[2]
out = {}
def timed(name, fn):
    start = time.perf_counter()
    value = fn()
    out[name] = time.perf_counter() - start
    return value
def opened():
    run = OpenRun(path, Workspace(path.parent))
    (coder,) = run.coder_names()
    explore.describe(run), explore.sort_choices(run), explain_score.explainers(run)
    if hasattr(run, "scorer_names"):
        run.scorer_names()
    else:  # the version before the database: its Handlers.open_run listed them so
        sorted({r["scorer"] for r in run.scores()})
    return run, coder, explore.latent_page(run, coder)
run, coder, first = timed("open", opened)
timed("next page", lambda: explore.latent_page(run, coder, page=2))
timed("sort by score", lambda: explore.latent_page(run, coder, sort="score: embedding"))
found = timed("search", lambda: explore.latent_page(run, coder, query=word))
latent = first.table.rows[len(first.table.rows) // 2][0]
timed("one latent", lambda: (explore._explanations(run, coder, latent), explore._scores(run, coder, latent),
                             explore.candidates_table(run, coder, latent)))
out["found"] = found.total
print(json.dumps(out))
"""
)


def app_times(run: RunDir, word: str, env: dict | None = None) -> dict:
    """The app's reads of ``run`` in one fresh process: each step's seconds, and the process's peak memory."""
    seconds, peak, out = child([sys.executable, "-c", APP, str(run.path), word], env, stdout=subprocess.PIPE)
    return {**json.loads(out.strip().splitlines()[-1]), "peak MiB": peak}


def legacy_copy(run: RunDir, work: Path) -> RunDir:
    """``run`` as the version before the database kept it: its lines (every one) as JSONL, no results.sqlite."""
    legacy = RunDir(work / f"{run.path.name}-jsonl")
    if (legacy.path / "exported").exists():
        return legacy
    shutil.rmtree(legacy.path, ignore_errors=True)
    shutil.copytree(run.path, legacy.path, ignore=shutil.ignore_patterns("results.sqlite*", "locks", "publish"))
    interp("export", str(run.path), "--jsonl", str(legacy.path / "flat"), "--history")
    for name in ("explanations.jsonl", "scores.jsonl"):
        with open(legacy.path / "flat" / name) as f, open(legacy.path / name, "w") as g:
            for line in f:
                row = json.loads(line)
                del row["current"]
                g.write(json.dumps(row) + "\n")
    shutil.rmtree(legacy.path / "flat")
    (legacy.path / "exported").write_text("done\n")
    return legacy


def search_word(run: RunDir) -> str:
    """A word of one explanation in the middle of the run: what a user types in the search box."""
    with run.reading() as db:
        (coder,) = run.finished_coders()
        (line,) = db.explanations_of(coder, [len(run.latent_counts(coder)) // 2])
    words = [re.sub(r"\W", "", w) for w in line["explanation"].split()[2:]]
    return max(words, key=len)


def measure(run: RunDir, work: Path, word: str, publish: bool, export: bool, env: dict | None = None) -> dict:
    """Every reader of ``run`` in fresh processes (the version on ``env``'s PYTHONPATH): seconds and peak MiB."""
    out = {"load before": load()}
    exe = [sys.executable, "-c", CLI]
    summary = [*exe, "summary", str(run.path), "--explainer", EXPLAINER]
    if run.results_file.exists():  # as right after lines were written: no kept standing (an earlier measure's)
        with closing(sqlite3.connect(run.results_file)) as db, db:
            db.execute("DELETE FROM metric_columns")
    out["summary, first"] = child(summary, env)[:2]  # the database: each line's standing decided, then kept
    out["summary"] = child(summary, env)[:2] if env is None else out["summary, first"]  # read back
    out["app"] = app_times(run, word, env)
    if export:
        out["export"] = child([*exe, "export", str(run.path), "--jsonl", str(work / "export")], env)[:2]
    if publish:
        dest = work / f"publish-{run.path.name}"
        out["publish"] = child(
            [*exe, "publish", str(run.path), "bench/x", "--dry-run", "--out", str(dest), "--quiet"], env
        )[:2]
    out["load after"] = load()
    return out


def sizes(run: RunDir) -> dict:
    """The database's bytes on disk, and its score rows (replaced ones too)."""
    with sqlite3.connect(f"{run.results_file.absolute().as_uri()}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT count(*) FROM scores").fetchone()[0]
    db_bytes = sum(p.stat().st_size for p in run.path.glob("results.sqlite*"))
    return {"score rows": rows, "disk MiB": db_bytes / 2**20}


def report(rows: list[dict]) -> str:
    """The table: one line per size and store."""
    head = [
        "explained latents",
        "store",
        "results on disk MiB (a score row)",
        "`interp summary` s / peak MiB: first after lines were written / again",
        "app: open + first page s",
        "next page / sort by score / search / one latent s",
        "app peak MiB",
        "`interp export` s / MiB",
        "`publish --dry-run` s / MiB",
        "load",
    ]
    body = []
    for r in rows:
        a = r["app"]
        pair = lambda v: f"{v[0]:.1f} / {mib(v[1])}" if v else "—"  # noqa: E731
        body.append(
            [
                f"{r['latents']:,}",
                r["store"],
                f"{r['disk MiB']:,.0f} ({r['disk MiB'] * 2**20 / r['score rows']:,.0f} B)",
                f"{pair(r['summary, first'])} / {pair(r['summary'])}",
                f"{a['open']:.2f}",
                f"{a['next page']:.2f} / {a['sort by score']:.2f} / {a['search']:.2f} / {a['one latent']:.2f}",
                mib(a["peak MiB"]),
                pair(r.get("export")),
                pair(r.get("publish")),
                f"{r['load before']}-{r['load after']}",
            ]
        )
    return table(head, body)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/interp-run-scale"), help="where runs are made and reused")
    p.add_argument("--latents", type=int, nargs="*", default=[50_000, 200_000], help="explained-run sizes")
    p.add_argument("--tokens", type=int, default=16_384, help="cached tokens of each run (default: 16,384)")
    p.add_argument("--source", type=int, default=4096, help="latents of the run whose lines are repeated")
    p.add_argument("--source-tokens", type=int, default=131_072, help="cached tokens of that run")
    p.add_argument("--previous", type=Path, default=None, help="a checkout of the version before the database")
    p.add_argument("--jsonl-max", type=int, default=200_000, help="largest run the previous version reads")
    p.add_argument("--publish", type=int, nargs="*", default=[], help="sizes at which publish --dry-run is timed")
    p.add_argument("--export", type=int, nargs="*", default=[], help="sizes at which interp export is timed")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    random.seed(0)
    source = source_run(args.work, args.source, args.source_tokens)
    print((source.path / "scored").read_text().strip(), flush=True)
    rows = []
    for n in args.latents:
        run = cached_run(args.work, n, args.tokens)
        print(fill(source, run), flush=True)
        word = search_word(run)
        row = {"latents": n, "store": "database", **sizes(run)}
        row.update(measure(run, args.work, word, n in args.publish, n in args.export))
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.previous and n <= args.jsonl_max:
            legacy = legacy_copy(run, args.work)
            env = {"PYTHONPATH": str(args.previous)}
            old = {"latents": n, "store": "JSONL (previous version)", "score rows": row["score rows"]}
            old.update(measure(legacy, args.work, word, n in args.publish, False, env))
            old["disk MiB"] = sum(f.stat().st_size for f in legacy.path.glob("*.jsonl")) / 2**20
            rows.append(old)
            print(json.dumps(old), flush=True)
    print(report(rows))


if __name__ == "__main__":
    main()
