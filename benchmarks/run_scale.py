"""A run with tens of thousands of explained latents: how long reading its results, ``interp summary`` and
``interp publish --dry-run`` take, and how long ``interp explain --explainer tokens --latents all`` takes on a
1M-token cache.

Each run directory is made the way real runs are: ``interp cache`` (a random sparsify TopK SAE ``N`` latents wide,
k=32, at block 1 of a random 2-block Llama with the embedded SmolLM2's tokenizer and 49,152-token vocabulary, as
``records_throughput.py`` uses: caching SmolLM2-135M itself is slow on 2 CPU cores, and what these steps cost
depends on the number of latents and examples, not on the weights), then ``interp explain --explainer tokens
--latents all`` (no LLM). Its ``scores.jsonl`` is written by the embedding scorer's own ``score`` (each latent's
records, its explanation and the seeded random baseline's, ``ScoreResult`` lines appended by ``RunDir.add_scores``)
with a bag-of-words embedder in place of all-MiniLM-L6-v2, whose 2 million example texts at 50,000 latents would
take hours here; the lines are the stage's, only the similarities differ. Then, at each size:

* reading ``explanations.jsonl`` (the latest line per key: ``RunDir.explanations``),
* reading ``scores.jsonl`` (``RunDir.scores``) and splitting it by the current explanations (``current_scores``),
* the app's Explore table: its first page from a freshly opened run (``latent_page``: every latent's row made, sorted
  and cut to a page of 100) and the next page (a slice of the kept table),
* ``interp summary RUN`` and ``interp publish RUN --dry-run --out DIR``, whole commands (their Python start
  included: ``python -c 'import interp.cli'`` is timed beside them).

Runs are kept under ``--work`` and reused. With ``--explain-tokens T`` it also makes a run of ``T`` cached tokens
(``--explain-latents`` wide, default 4,608: SmolLM2's 576 x 8) and times ``interp explain RUN --explainer tokens
--latents all`` on it, from no explanations. ``--model embedded`` makes those runs with the embedded SmolLM2 and
its default trained SAE instead (about an hour of caching at 1M tokens on 2 CPU cores).

Run from the repository root::

    python benchmarks/run_scale.py                                  # 5,000 and 50,000 latents
    python benchmarks/run_scale.py --latents 5000 --explain-tokens 1048576
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import zlib
from pathlib import Path

import torch

from cache_throughput import model_skeleton, random_sae_targets
from common import table
from interp.app.explore import latent_page
from interp.app.session import OpenRun
from interp.app.workspace import Workspace
from interp.config import ModelConfig
from interp.jsonl import read_jsonl
from interp.models import load_model
from interp.rundir import RunDir
from interp.scoring.base import ScoreResult
from interp.scoring.embedding import EmbeddingScorer
from interp.scoring.results import baseline_explanations
from interp.views import scored_view
from records_throughput import random_model

INTERP = [sys.executable, "-m", "interp"]
EXPLAINER = "tokens"


class BagOfWords:
    """An embedder with sentence-transformers' ``encode``: hashed word counts, normalised. It stands in for
    all-MiniLM-L6-v2 so that 50,000 latents' score lines can be written in minutes; only similarities differ."""

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


def interp(*args: str) -> float:
    """Run ``interp ARGS`` to its end (failing loudly); its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([*INTERP, *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def make_run(work: Path, model: str, latents: int, tokens: int, *, explain: bool) -> RunDir:
    """A cached run of ``latents`` latents over ``tokens`` tokens under ``work`` (reused when finished); with
    ``explain``, its tokens explanations of every latent too."""
    run = RunDir(work / f"run-{model}-{latents}-{tokens}")
    if not (run.path / "cached").exists():
        args = ["cache", str(run.path), "--num-tokens", str(tokens), "--explainer", EXPLAINER, "--quiet"]
        args += ["--batch-size", "128", "--shard-windows", "512"]  # the tiny model: fewer, larger forward passes
        if model == "random":
            folder = work / "model"
            if not folder.exists():
                random_model(folder, 128, 2)
            ns = argparse.Namespace(hookpoint=None, layers=[1], latents=latents, k=32, seed=0)
            target = random_sae_targets(model_skeleton(ModelConfig(model=str(folder))), ns, work / f"sae-{latents}")
            args += ["--model", str(folder), "--dtype", "float32", "--coders", target[0].spec]
        seconds = interp(*args)
        print(f"cached {tokens:,} tokens of {latents:,} latents in {seconds:.0f} s (load {load()})", flush=True)
        (run.path / "cached").write_text(f"{seconds:.1f}\n")
    if explain and not (run.path / "explained").exists():
        seconds = interp("explain", str(run.path), "--explainer", EXPLAINER, "--latents", "all", "--quiet")
        n = len(run.usable_explanations(EXPLAINER))
        print(f"explained {n:,} latents in {seconds:.0f} s (load {load()})", flush=True)
        (run.path / "explained").write_text(f"{seconds:.1f}\n")
    return run


def write_scores(run: RunDir, batch: int = 512) -> None:
    """Every usable explanation's embedding-scorer line and its random baseline's, through the scorer's own
    ``score`` and ``RunDir.add_scores`` (as ``interp score`` writes them), once."""
    if (run.path / "scored").exists():
        return
    run.scores_file.unlink(missing_ok=True)
    cfg = run.read_config()
    lm = load_model(cfg.model)
    scorer = EmbeddingScorer(lm.tokenizer, embedder=BagOfWords())
    explained = run.usable_explanations(EXPLAINER)
    baseline = baseline_explanations(explained, cfg.records.records_seed)
    start = time.perf_counter()
    for coder in run.finished_coders():
        texts = {r["latent"]: r["explanation"] for r in explained if r["coder"] == coder}
        chunk: list = []
        for whole in run.record_builder(coder, cfg, lm).build(coder, list(texts)):
            record = scored_view(whole)
            chunk += [(record, False, texts[record.latent]), (record, True, baseline[(coder, record.latent)])]
            if len(chunk) >= 2 * batch:
                add_scores(run, scorer, coder, chunk)
                chunk = []
        add_scores(run, scorer, coder, chunk)
    print(f"wrote {len(read_jsonl(run.scores_file)):,} score lines in {time.perf_counter() - start:.0f} s", flush=True)
    (run.path / "scored").write_text("done\n")


def replicate(source: RunDir, run: RunDir) -> None:
    """``run``'s explanation and score lines: ``source``'s (real ones), repeated over ``run``'s latents with the keys
    changed, through ``RunDir.add_explanations`` and ``add_scores``; each random-explanation line gets the text that
    ``baseline_explanations`` assigns in ``run``, so the lines count as current. For sizes whose ``interp explain``
    would take longer than this machine has (about 26 ms a latent under load)."""
    if (run.path / "scored").exists():
        return
    run.explanations_file.unlink(missing_ok=True)
    run.scores_file.unlink(missing_ok=True)
    (coder,) = run.finished_coders()
    count = run.latent_counts(coder)
    latents = [i for i in range(len(count)) if count[i] >= run.read_config().records.min_examples]
    lines = source.usable_explanations(EXPLAINER)
    made = [{**lines[i % len(lines)], "coder": coder, "latent": latent} for i, latent in enumerate(latents)]
    run.add_explanations(made)
    baseline = baseline_explanations(made, run.read_config().records.records_seed)
    scored: dict[int, dict] = {}
    for r in source.current_scores(EXPLAINER).rows:
        scored.setdefault(r["latent"], {})[r["baseline"]] = r
    pairs = [(v[False], v[True]) for v in scored.values() if len(v) == 2]
    for start in range(0, len(made), 2048):
        out = []
        for i, row in enumerate(made[start : start + 2048], start):
            texts = (row["explanation"], baseline[(coder, row["latent"])])
            for line, text in zip(pairs[i % len(pairs)], texts, strict=True):
                out.append({**line, "coder": coder, "latent": row["latent"], "explanation": text})
        run.add_scores(out)
    print(f"replicated {len(made):,} explanations of {source.path.name} in {run.path.name}", flush=True)
    (run.path / "scored").write_text("replicated\n")


def add_scores(run: RunDir, scorer: EmbeddingScorer, coder: str, jobs: list) -> None:
    """Score ``jobs`` (record, baseline?, text) and append their lines."""
    results = scorer.score([(record, text) for record, _, text in jobs])
    run.add_scores(
        [
            ScoreResult(scorer.name, coder, record.latent, EXPLAINER, baseline, text, metrics, examples).to_dict()
            for (record, baseline, text), (metrics, examples) in zip(jobs, results, strict=True)
        ]
    )


def timed(fn) -> tuple[float, object]:
    """Seconds ``fn()`` takes, and what it returned."""
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def measure(run: RunDir, out: Path) -> dict:
    """The reads and the two commands on ``run``."""
    fresh = RunDir(run.path)
    t_expl, expl = timed(lambda: fresh.explanations(EXPLAINER))
    t_scores, scores = timed(fresh.scores)
    t_current, current = timed(lambda: fresh.current_scores(EXPLAINER))
    t_page, t_next = app_pages(run)
    t_import = interp_import()
    t_summary = interp("summary", str(run.path), "--explainer", EXPLAINER)
    t_publish = interp("publish", str(run.path), "bench/run-scale", "--dry-run", "--out", str(out), "--quiet")
    return {
        "latents": len(expl),
        "score lines": len(scores),
        "current": len(current.rows),
        "explanations.jsonl MiB": run.explanations_file.stat().st_size / 2**20,
        "scores.jsonl MiB": run.scores_file.stat().st_size / 2**20,
        "explanations s": t_expl,
        "scores s": t_scores,
        "current_scores s": t_current,
        "app first page s": t_page,
        "app next page s": t_next,
        "import s": t_import,
        "summary s": t_summary,
        "publish s": t_publish,
        "load": load(),
    }


def app_pages(run: RunDir) -> tuple[float, float]:
    """Seconds for the app's latent table to show its first page from a freshly opened run, and then the next."""
    opened = OpenRun(run.path, Workspace(run.path.parent))
    (coder,) = opened.coder_names()
    first, _ = timed(lambda: latent_page(opened, coder))
    second, _ = timed(lambda: latent_page(opened, coder, page=2))
    return first, second


def interp_import() -> float:
    """Seconds for a Python process to start and import the CLI (part of every command's time)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import interp.cli"], check=True)
    return time.perf_counter() - start


def scale_table(rows: list[dict]) -> str:
    """One row per size, and the growth from the first size to each other."""
    head = [
        "explained latents",
        "score lines",
        "explanations.jsonl / scores.jsonl MiB",
        "explanations s",
        "scores s",
        "current_scores s",
        "app table: first page / next s",
        "`interp summary` s",
        "`interp publish --dry-run` s",
        "load avg",
    ]
    body = [
        [
            f"{r['latents']:,}",
            f"{r['score lines']:,}",
            f"{r['explanations.jsonl MiB']:,.1f} / {r['scores.jsonl MiB']:,.0f}",
            f"{r['explanations s']:.2f}",
            f"{r['scores s']:.2f}",
            f"{r['current_scores s']:.2f}",
            f"{r['app first page s']:.2f} / {r['app next page s']:.3f}",
            f"{r['summary s']:.1f}",
            f"{r['publish s']:.1f}",
            r["load"],
        ]
        for r in rows
    ]
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        keys = ["explanations s", "scores s", "current_scores s", "app first page s", "summary s", "publish s"]
        body.append([f"x{b['latents'] / a['latents']:.1f}", "", ""] + [f"x{b[k] / a[k]:.1f}" for k in keys] + [""])
    start = rows[-1]["import s"]
    return table(head, body) + f"\n\n(Python start + `import interp.cli`: {start:.1f} s of each command.)"


def time_explain(work: Path, model: str, latents: int, tokens: int) -> str:
    """``interp explain RUN --explainer tokens --latents all`` on a run of ``tokens`` cached tokens, from none."""
    run = make_run(work, model, latents, tokens, explain=False)
    run.explanations_file.unlink(missing_ok=True)
    before, cpu = load(), resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = interp("explain", str(run.path), "--explainer", EXPLAINER, "--latents", "all", "--quiet")
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
    n = len(run.usable_explanations(EXPLAINER))
    return (
        f"`interp explain --explainer tokens --latents all`, {tokens:,} cached tokens, {latents:,} latents "
        f"({model} model): {n:,} explained in {seconds:.1f} s wall, {cpu_s:.1f} s CPU "
        f"(load average {before} before, {load()} after)"
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/interp-run-scale"), help="where runs are made and reused")
    p.add_argument("--model", default="random", choices=["random", "embedded"], help="random (default) or embedded")
    p.add_argument("--latents", type=int, nargs="*", default=[5000, 50000], help="explained-run sizes (latents)")
    p.add_argument(
        "--tokens", type=int, default=131072, help="cached tokens of those runs (default: 131,072: every latent fires)"
    )
    p.add_argument(
        "--replicate",
        action="store_true",
        help="the larger runs' lines are the first run's, repeated over their latents (their caches are real)",
    )
    p.add_argument("--explain-tokens", type=int, default=None, help="also time explain on a cache this large")
    p.add_argument("--explain-latents", type=int, default=4608, help="latents of that run (default: 4,608)")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    rows = []
    first = None
    for n in args.latents:
        run = make_run(args.work, args.model, n, args.tokens, explain=first is None or not args.replicate)
        if first is not None and args.replicate:
            replicate(first, run)
        else:
            write_scores(run)
        first = first or run
        rows.append(measure(run, args.work / f"publish-{n}"))
        print(json.dumps(rows[-1]), flush=True)
    if rows:
        print(scale_table(rows))
    if args.explain_tokens:
        print(time_explain(args.work, args.model, args.explain_latents, args.explain_tokens))


if __name__ == "__main__":
    main()
