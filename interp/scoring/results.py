"""Scores on disk and their summary: per scorer and coder, true explanations beside the random baseline."""

import statistics
from pathlib import Path

from ..atomic import save_figure_atomic
from ..cache import load_stats
from ..errors import CorruptFileError
from ..jsonl import latest_rows, read_json, read_jsonl
from ..pyplot import pyplot
from .base import SCORE_KEY
from .metrics import correlation

REWRITE_STATS = "resume the cache with `interp cache` to rewrite it"

MAIN_METRIC = {
    "embedding": "auroc", "surprisal": "auroc", "intervention": "auroc", "intruder": "accuracy", "simulation": "correlation",
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


def explainer_rows(rows: list[dict], explainer: str) -> list[dict]:
    """The rows of one explainer: a summary is of one explainer's explanations, never of several pooled."""
    return [r for r in rows if r.get("explainer") == explainer]


def scored_explainers(rows: list[dict]) -> list[str]:
    """The explainers ``rows`` hold, sorted."""
    return sorted({r["explainer"] for r in rows})


def _one_explainer(rows: list[dict]) -> None:
    """Refuse rows of several explainers: pooled, they would describe no explanation anyone wrote."""
    found = {r.get("explainer") for r in rows}
    if len(found) > 1:
        raise ValueError(f"Score rows of several explainers ({', '.join(sorted(map(str, found)))}): pick one with explainer_rows.")


def summarize_scores(rows: list[dict]) -> dict:
    """``{coder: {scorer: {"metric", "explanation": stats, "baseline": stats, "margin"}}}`` from one explainer's score rows."""
    _one_explainer(rows)
    out: dict = {}
    for row in rows:
        metric = main_metric(row["scorer"])
        value = _metric(row, metric)
        entry = out.setdefault(row["coder"], {}).setdefault(row["scorer"], {"metric": metric, "explanation": [], "baseline": []})
        if value is not None:
            entry["baseline" if row["baseline"] else "explanation"].append(value)
    for scorers in out.values():
        for entry in scorers.values():
            entry["explanation"], entry["baseline"] = _describe(entry["explanation"]), _describe(entry["baseline"])
            a, b = entry["explanation"]["mean"], entry["baseline"]["mean"]
            entry["margin"] = a - b if a is not None and b is not None else None
    return out


def _bins(metric: str) -> list[float]:
    """Histogram bins over the metric's range: correlations run from -1, the rest from 0."""
    low = -1.0 if metric == "correlation" else 0.0
    return [low + (1 - low) * i / 20 for i in range(21)]


def plot_scores(summary: dict, out_dir: Path) -> list[Path]:
    """One histogram per (coder, scorer): explanation scores against the random baseline."""
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for coder, scorers in summary.items():
        for scorer, entry in scorers.items():
            fig, ax = plt.subplots(figsize=(5, 3.2))
            bins = _bins(entry["metric"])
            ax.hist(entry["explanation"]["values"], bins=bins, alpha=0.7, label="explanation")
            ax.hist(entry["baseline"]["values"], bins=bins, alpha=0.6, label="random explanation")
            ax.set_xlabel(entry["metric"])
            ax.set_ylabel("latents")
            ax.set_title(f"{scorer} — {coder}", fontsize=9)
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = out_dir / f"scores_{coder}_{scorer}.png"
            save_figure_atomic(fig, path, dpi=100)
            plt.close(fig)
            paths.append(path)
    return paths


def _metric(row: dict, name: str) -> float | None:
    """The metric ``name`` of a score line, or None where it is undefined (or the line was mangled by hand)."""
    metrics = row.get("metrics")
    value = metrics.get(name) if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def load_scores(run_dir: Path) -> list[dict]:
    """The latest line of ``scores.jsonl`` for each (scorer, coder, latent, explainer, baseline): a re-score replaces the old line."""
    return latest_rows(read_jsonl(Path(run_dir) / "scores.jsonl"), SCORE_KEY)


def firing_frequencies(run_dir: Path, coders: set[str]) -> dict[tuple[str, int], float]:
    """(coder, latent) -> fraction of cached tokens on which the latent fires, from each coder's cache stats."""
    out = {}
    for coder in coders:
        coder_dir = Path(run_dir) / "cache" / coder
        if not (coder_dir / "stats.safetensors").is_file():
            continue
        stats = read_json(coder_dir / "stats.json", hint=REWRITE_STATS)
        tokens = stats.get("num_tokens") if isinstance(stats, dict) else None
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
            raise CorruptFileError(f"{coder_dir / 'stats.json'} holds no token count; {REWRITE_STATS}.")
        for latent, count in enumerate(load_stats(coder_dir)["count"].tolist()):
            out[(coder, latent)] = count / tokens
    return out


def score_table(rows: list[dict]) -> dict[str, dict[str, dict[int, float]]]:
    """``{coder: {scorer: {latent: main metric}}}`` of one explainer's true explanations (not the baseline)."""
    _one_explainer(rows)
    out: dict = {}
    for row in rows:
        value = _metric(row, main_metric(row["scorer"]))
        if not row["baseline"] and value is not None:
            out.setdefault(row["coder"], {}).setdefault(row["scorer"], {})[row["latent"]] = value
    return out


def scorer_agreement(table: dict[str, dict[int, float]]) -> dict[tuple[str, str], tuple[float | None, int]]:
    """Spearman correlation (and latents shared) between every two scorers' scores of the same latents."""
    names = sorted(table)
    out = {}
    for a in names:
        for b in names:
            shared = sorted(set(table[a]) & set(table[b]))
            rho = correlation([table[a][k] for k in shared], [table[b][k] for k in shared])["spearman"]
            out[(a, b)] = (rho, len(shared))
    return out


def plot_diagnostics(rows: list[dict], frequencies: dict[tuple[str, int], float], out_dir: Path) -> list[Path]:
    """Per coder: each scorer's score against firing frequency, and the scorers' agreement matrix."""
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for coder, scorers in score_table(rows).items():
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        for scorer, values in sorted(scorers.items()):
            pairs = [(frequencies[(coder, k)], v) for k, v in values.items() if frequencies.get((coder, k))]
            if pairs:
                ax.scatter(*zip(*pairs), s=14, alpha=0.7, label=f"{scorer} ({main_metric(scorer)})")
        ax.set_xscale("log")
        ax.set_xlabel("firing frequency (fraction of tokens)")
        ax.set_ylabel("score")
        ax.set_title(f"score vs frequency — {coder}", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out_dir / f"frequency_{coder}.png")
        save_figure_atomic(fig, paths[-1], dpi=100)
        plt.close(fig)

        names = sorted(scorers)
        agreement = scorer_agreement(scorers)
        fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2.5, 1.0 * len(names) + 1.8))
        grid = [[agreement[(a, b)][0] for b in names] for a in names]
        ax.imshow([[float("nan") if v is None else v for v in line] for line in grid], vmin=-1, vmax=1, cmap="RdBu")
        for i, line in enumerate(grid):
            for j, v in enumerate(line):
                ax.text(j, i, "n/a" if v is None else f"{v:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_title(f"scorer agreement (Spearman over latents) — {coder}", fontsize=9)
        fig.tight_layout()
        paths.append(out_dir / f"agreement_{coder}.png")
        save_figure_atomic(fig, paths[-1], dpi=100)
        plt.close(fig)
    return paths
