"""Scores on disk and their summary: per scorer and coder, true explanations beside the random baseline."""

import statistics
from pathlib import Path

from ..jsonl import read_jsonl

MAIN_METRIC = {
    "embedding": "auroc", "surprisal": "auroc", "intruder": "accuracy", "simulation": "correlation",
    "detection": "balanced_accuracy", "fuzzing": "balanced_accuracy",
}
"""The one number each scorer is summarised by; log-prob variants of the classifiers use AUROC."""


def main_metric(scorer: str) -> str:
    """The metric that summarises ``scorer`` (e.g. ``detection-logprob`` -> auroc)."""
    base = scorer.removesuffix("-logprob")
    if base in ("detection", "fuzzing") and scorer.endswith("-logprob"):
        return "auroc"
    return MAIN_METRIC.get(base, "auroc")


def _describe(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "mean": None, "median": None, "values": []}
    return {"n": len(values), "mean": statistics.fmean(values), "median": statistics.median(values), "values": values}


def summarize_scores(rows: list[dict]) -> dict:
    """``{coder: {scorer: {"metric", "explanation": stats, "baseline": stats, "margin"}}}`` from score rows."""
    out: dict = {}
    for row in rows:
        metric = main_metric(row["scorer"])
        value = row["metrics"].get(metric)
        entry = out.setdefault(row["coder"], {}).setdefault(row["scorer"], {"metric": metric, "explanation": [], "baseline": []})
        if value is not None:
            entry["baseline" if row["baseline"] else "explanation"].append(value)
    for scorers in out.values():
        for entry in scorers.values():
            entry["explanation"], entry["baseline"] = _describe(entry["explanation"]), _describe(entry["baseline"])
            a, b = entry["explanation"]["mean"], entry["baseline"]["mean"]
            entry["margin"] = a - b if a is not None and b is not None else None
    return out


def plot_scores(summary: dict, out_dir: Path) -> list[Path]:
    """One histogram per (coder, scorer): explanation scores against the random baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for coder, scorers in summary.items():
        for scorer, entry in scorers.items():
            fig, ax = plt.subplots(figsize=(5, 3.2))
            bins = [i / 20 for i in range(21)]
            ax.hist(entry["explanation"]["values"], bins=bins, alpha=0.7, label="explanation")
            ax.hist(entry["baseline"]["values"], bins=bins, alpha=0.6, label="random explanation")
            ax.set_xlabel(entry["metric"])
            ax.set_ylabel("latents")
            ax.set_title(f"{scorer} — {coder}", fontsize=9)
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = out_dir / f"scores_{coder}_{scorer}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            paths.append(path)
    return paths


def load_scores(run_dir: Path) -> list[dict]:
    """Every line of ``scores.jsonl``."""
    return read_jsonl(Path(run_dir) / "scores.jsonl")
