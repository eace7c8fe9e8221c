"""Explanation quality: each explainer's mean AUROC beside the random-explanation baseline, on one run.

The same latents of a run (by default the demo's, ``make demo``) are explained by each explainer
and scored by each scorer, with the pipeline's own stages (``run_explain``, ``run_score``): the
lines are added to the run, so a second call resumes and ``interp summary RUN --explainer X``
shows any of them. The default scorers are the two that ``interp validate`` passes with the
embedded models (README: Are the scorers valid?); the LLM is the run's (``--llm`` for another).

The table: per explainer and scorer, the mean AUROC of its explanations, the mean of the random
baseline (each latent scored with another latent's explanation), the margin with its paired 95%
interval, the latents explained (ok of asked), and the explainer's seconds per latent. On a CPU the
surprisal scorer dominates: about half a minute to a minute per latent and explainer on 2 cores.

    python benchmarks/explainer_quality.py                        # runs/demo, 48 latents: hours on 2 CPU cores
    python benchmarks/explainer_quality.py runs/mine --explainers short tokens --latents sample:96
"""

import argparse
import logging
import time
import typing
from dataclasses import replace
from pathlib import Path

from interp.config import Explainer, ScorerName
from interp.llm import run_client
from interp.rundir import RunDir
from interp.stages import run_explain, run_score
from interp.subject import open_subject

EXPLAINERS: list[Explainer] = ["short", "default", "tokens"]
"""The small-model explainer, the delphi-style one, and the no-LLM floor."""
SCORERS: list[ScorerName] = ["embedding", "surprisal"]
"""The scorers that pass ``interp validate`` with the embedded models."""


def _cell(entry: dict) -> str:
    """``0.561 [0.497] +0.064 (+0.031..+0.097)`` for one scorer of one explainer."""
    low, high = entry["margin_ci"] or (float("nan"), float("nan"))
    return (
        f"{entry['explanation']['mean']:.3f} [{entry['baseline']['mean']:.3f}] "
        f"{entry['margin']:+.3f} ({low:+.3f}..{high:+.3f})"
    )


def measure(run_path: Path, explainers: list[str], scorers: list[str], latents: str, llm: str | None) -> list[dict]:
    """Explain and score ``latents`` of the run with each explainer; one row per explainer and coder."""
    run = RunDir(run_path)
    base = run.read_config()
    if llm:
        base = replace(base, explain=replace(base.explain, llm=llm))
    subject = open_subject(base, run)
    client = run_client(base, subject.lm, run.llm_cache_file) if any(e != "tokens" for e in explainers) else None
    rows = []
    for explainer in explainers:
        cfg = replace(
            base,
            explain=replace(base.explain, explainer=explainer, latents=latents),
            score=replace(base.score, scorers=list(scorers), baseline=True),
        )
        start = time.perf_counter()
        explained = run_explain(cfg, run_path, subject=subject, client=client)
        seconds = time.perf_counter() - start
        summary = run_score(cfg, run_path, subject=subject, client=client)["scores"]
        statuses = explained["explanations"]
        for coder, by_scorer in summary.items():
            rows.append(
                {
                    "explainer": explainer,
                    "coder": coder,
                    "ok": statuses.get("ok", 0),
                    "asked": sum(statuses.values()),
                    "seconds": seconds,
                    **{s: by_scorer[s] for s in scorers if s in by_scorer},
                }
            )
    return rows


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "run", nargs="?", default="runs/demo", type=Path, help="a cached run directory (default: runs/demo)"
    )
    parser.add_argument("--explainers", nargs="+", default=EXPLAINERS, choices=typing.get_args(Explainer))
    parser.add_argument("--scorers", nargs="+", default=SCORERS, choices=typing.get_args(ScorerName))
    parser.add_argument("--latents", default="sample:48", help="which latents (as `interp explain --latents`)")
    parser.add_argument("--llm", default=None, help="the explainer LLM (default: the run's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = measure(args.run, args.explainers, args.scorers, args.latents, args.llm)
    print(table(rows, args.scorers, args.latents))


if __name__ == "__main__":
    main()
