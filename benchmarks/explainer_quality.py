"""Explanation quality: each explainer's mean AUROC beside the random-explanation baseline, on one run.

The same latents of a run (by default the demo's, ``make demo``) are explained by each explainer
and scored by each scorer, with the pipeline's own stages (``run_explain``, ``run_score``): the
lines are added to the run, so a second call resumes and ``interp summary RUN --explainer X``
shows any of them. The default scorers are the two that ``interp validate`` passes with the
embedded models (README: Are the scorers valid?); the LLM is the run's (``--llm`` for another).

The table: per explainer (or search) and scorer, the mean AUROC of its explanations, the mean of the random
baseline (each latent scored with another latent's explanation), the margin with its paired 95%
interval, the latents explained (ok of asked), and the seconds per latent of explaining (for a search:
asking every candidate and judging them). On a CPU the surprisal scorer dominates: about half a minute to a
minute per latent and explainer on 2 cores.

The searches (``--searches``; README: Explanation search) are the `short` explainer's: best-of-4 and best-of-8 (K
`short` candidates plus the firing-token list, judged by the embedding scorer on the validation split) and refine
(``--refine-candidates`` per round, 2 rounds). Every row explains its latents again (``redo``), as the searches
replace each other's lines; replies already asked come from the run's response cache, so best-of-8 asks only the
4 candidates best-of-4 did not.

The selection-bias table takes the largest best-of-k's candidates of each latent and chooses among them two ways:
on the test split (EleutherAI delphi's best-of-k, which reports the same score) and on the validation split (ours,
which reports the chosen one's test score). Each way shows the score it chose by, the score it reports, the mean
test score of the K (what an unchosen candidate scores) and the gap between the last two, with its 95% interval.
The same is done with K random explanations (other latents' candidates): those are noise for this latent, so any
gap there is selection bias.

    python benchmarks/explainer_quality.py                        # runs/demo, 48 latents: hours on 2 CPU cores
    python benchmarks/explainer_quality.py runs/mine --explainers short tokens --searches --latents sample:96
"""

import argparse
import logging
import random
import statistics
import time
import typing
from dataclasses import replace
from pathlib import Path

from interp.config import Explainer, RunConfig, ScorerName
from interp.llm import run_client
from interp.records import LatentRecord
from interp.rundir import RunDir
from interp.scoring.registry import make_scorers
from interp.scoring.results import main_metric, mean_interval
from interp.stages import run_explain, run_score
from interp.subject import Subject, open_subject
from interp.views import scored_view, validation_view

EXPLAINERS: list[Explainer] = ["short", "default", "tokens"]
"""The small-model explainer, the delphi-style one, and the no-LLM floor."""
SCORERS: list[ScorerName] = ["embedding", "surprisal"]
"""The scorers that pass ``interp validate`` with the embedded models."""
SEARCHES = {
    "best-of-4": {"search": "best-of-k", "candidates": 4},
    "best-of-8": {"search": "best-of-k", "candidates": 8},
    "refine": {"search": "refine", "rounds": 2},
}
"""The searches of the `short` explainer the benchmark compares (all with the tokens candidate, judge embedding)."""
JUDGE: ScorerName = "embedding"
SEED = 0
"""Seed of the random explanations of the selection-bias table."""


def _cell(entry: dict) -> str:
    """``0.561 [0.497] +0.064 (+0.031..+0.097)`` for one scorer of one explainer."""
    low, high = entry["margin_ci"] or (float("nan"), float("nan"))
    return (
        f"{entry['explanation']['mean']:.3f} [{entry['baseline']['mean']:.3f}] "
        f"{entry['margin']:+.3f} ({low:+.3f}..{high:+.3f})"
    )


def variants(explainers: list[str], searches: list[str], refine_candidates: int) -> list[tuple[str, dict]]:
    """(row label, explain settings) of each row: the explainers without a search, then the searches."""
    rows = [(e, {"explainer": e, "search": "none"}) for e in explainers]
    for name in searches:
        settings = {"explainer": "short", "tokens_candidate": True, "judge": JUDGE, **SEARCHES[name]}
        if name == "refine":
            settings["candidates"] = refine_candidates
            name = f"refine (R = 2, {refine_candidates} per round)"
        rows.append((name, settings))
    return rows


def measure(
    run_path: Path,
    rows_of: list[tuple[str, dict]],
    scorers: list[str],
    latents: str,
    llm: str | None,
    llm_model: str | None = None,
) -> tuple[list[dict], dict]:
    """Explain and score ``latents`` of the run with each variant; one row per variant and coder, and the
    selection-bias table of the largest best-of-k (empty without one)."""
    run = RunDir(run_path)
    base = run.read_config()
    if llm:
        base = replace(base, explain=replace(base.explain, llm=llm, llm_model=llm_model))
    subject = open_subject(base, run)
    needs_llm = any(v["explainer"] != "tokens" for _, v in rows_of)
    client = run_client(base, subject.lm, run.results_db()) if needs_llm else None
    widest = max((v["candidates"] for _, v in rows_of if v["search"] == "best-of-k"), default=None)
    rows, bias = [], {}
    for label, settings in rows_of:
        cfg = replace(
            base,
            explain=replace(base.explain, latents=latents, redo=True, **settings),
            score=replace(base.score, scorers=list(scorers), baseline=True),
        )
        start = time.perf_counter()
        explained = run_explain(cfg, run_path, subject=subject, client=client)
        seconds = time.perf_counter() - start
        if settings["search"] == "best-of-k" and settings["candidates"] == widest:
            bias = selection_bias(cfg, run, subject)
        summary = run_score(cfg, run_path, subject=subject, client=client)["scores"]
        statuses = explained["explanations"]
        for coder, by_scorer in summary.items():
            rows.append(
                {
                    "explainer": label,
                    "coder": coder,
                    "ok": statuses.get("ok", 0),
                    "asked": sum(statuses.values()),
                    "seconds": seconds,
                    **{s: by_scorer[s] for s in scorers if s in by_scorer},
                }
            )
    return rows, bias


def _first_max(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])  # max keeps the first of equals, as the search does


def _choices(valid: list[float], test: list[float]) -> dict[str, tuple[float, float, float]]:
    """Chosen way -> (score it chose by, score it reports, mean test score of the candidates) for one latent."""
    mean = statistics.fmean(test)
    on_test, on_valid = _first_max(test), _first_max(valid)
    return {
        "test (delphi)": (test[on_test], test[on_test], mean),
        "validation (ours)": (valid[on_valid], test[on_valid], mean),
    }


def selection_bias(cfg: RunConfig, run: RunDir, subject: Subject) -> dict:
    """``{candidates: {chosen way: [(chose by, reports, mean of K) per latent]}}`` for the search lines of ``cfg``'s
    settings: the candidates each latent's search found, and as many random ones (other latents' candidates), each
    scored by the judge on the validation split and on the test split."""
    wanted = {k: getattr(cfg.explain, k) for k in ("search", "candidates", "temperature", "tokens_candidate", "judge")}
    lines = [
        r
        for r in run.explanations(cfg.explain.explainer)
        if r.get("search") and all(r["search"][k] == v for k, v in wanted.items())
    ]
    (judge,) = make_scorers(replace(cfg, score=replace(cfg.score, scorers=[JUDGE])), None, subject.lm, subject.coders)
    metric = main_metric(JUDGE)
    rng = random.Random(SEED)
    asked: list[tuple[str, list[str], LatentRecord]] = []  # (kind, texts, record), scored in two batched calls below
    for coder in sorted({r["coder"] for r in lines}):
        found = {
            r["latent"]: [c["text"] for c in r["candidates"] if c["status"] == "ok"]
            for r in lines
            if r["coder"] == coder and r["status"] == "ok"
        }
        for record in run.record_builder(coder, cfg, subject.lm).build(coder, sorted(found)):
            mine = found[record.latent]
            others = [t for latent, texts in found.items() if latent != record.latent for t in texts]
            noise = rng.sample(others, min(len(mine), len(others)))
            asked += [
                (kind, texts, record)
                for kind, texts in (("search's candidates", mine), ("random explanations", noise))
                if len(texts) > 1
            ]
    valid = iter(judge.score([(validation_view(r), t) for _, texts, r in asked for t in texts]))
    test = iter(judge.score([(scored_view(r), t) for _, texts, r in asked for t in texts]))
    out: dict = {"search's candidates": {}, "random explanations": {}}
    for kind, texts, _ in asked:
        on_valid = [next(valid)[0][metric] for _ in texts]
        on_test = [next(test)[0][metric] for _ in texts]
        if None not in on_valid and None not in on_test:
            for way, scores in _choices(on_valid, on_test).items():
                out[kind].setdefault(way, []).append(scores)
    return out


def table(rows: list[dict], scorers: list[str], latents: str) -> str:
    """A Markdown table of ``rows``; each scorer's cell is mean [random] margin (95% interval)."""
    head = ["explainer", *[f"{s} AUROC [random] margin (95% CI)" for s in scorers], "ok / latents", "s per latent"]
    lines = [f"latents: {latents}", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [
            r["explainer"],
            *[_cell(r[s]) if s in r else "-" for s in scorers],
            f"{r['ok']} / {r['asked']}",
            f"{r['seconds'] / max(r['asked'], 1):.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bias_table(bias: dict) -> str:
    """A Markdown table of the selection-bias measurement: per kind of candidates and way of choosing, the means over
    latents and the gap (reported minus the candidates' mean test score) with its 95% interval."""
    head = ["candidates", "chosen on", "score it chose by", "score it reports", "mean test score of the K"]
    lines = [
        "| " + " | ".join([*head, "reported - mean of K (95% CI)", "latents"]) + " |",
        "|" + " --- |" * (len(head) + 2),
    ]
    for kind, ways in bias.items():
        for way, per_latent in ways.items():
            chose, reports, mean = (statistics.fmean(col) for col in zip(*per_latent, strict=True))
            gaps = [r - m for _, r, m in per_latent]
            low, high = mean_interval(gaps) or (float("nan"), float("nan"))
            at_chance = " at chance" if low <= 0 <= high else ""
            lines.append(
                f"| {kind} | {way} | {chose:.3f} | {reports:.3f} | {mean:.3f} "
                f"| {reports - mean:+.3f} ({low:+.3f}..{high:+.3f}){at_chance} | {len(per_latent)} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "run", nargs="?", default="runs/demo", type=Path, help="a cached run directory (default: runs/demo)"
    )
    parser.add_argument("--explainers", nargs="+", default=EXPLAINERS, choices=typing.get_args(Explainer))
    parser.add_argument("--scorers", nargs="+", default=SCORERS, choices=typing.get_args(ScorerName))
    parser.add_argument("--latents", default="sample:48", help="which latents (as `interp explain --latents`)")
    parser.add_argument(
        "--searches",
        nargs="*",
        default=list(SEARCHES),
        choices=list(SEARCHES),
        help="searches of the short explainer to add as rows (none: `--searches` alone)",
    )
    parser.add_argument("--refine-candidates", type=int, default=2, help="candidates per round of refine (default: 2)")
    parser.add_argument("--llm", default=None, help="the explainer LLM (default: the run's)")
    parser.add_argument("--llm-model", default=None, help="the model name a served --llm is asked for")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows_of = variants(args.explainers, args.searches, args.refine_candidates)
    rows, bias = measure(args.run, rows_of, args.scorers, args.latents, args.llm, args.llm_model)
    print(table(rows, args.scorers, args.latents))
    if bias:
        print(f"\nselection bias (judge {JUDGE}, {main_metric(JUDGE)}):")
        print(bias_table(bias))


if __name__ == "__main__":
    main()
