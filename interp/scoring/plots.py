"""Figures of a run's scores: per coder and scorer against the random explanation, against firing
frequency, the scorers' agreement, and every coder side by side."""

from pathlib import Path

import numpy as np

from ..atomic import save_figure_atomic
from ..pyplot import pyplot
from .results import main_metric, scorer_agreement

DOTS = 5000
"""Latents drawn as dots beside each box at most (a seeded sample beyond): the box is over every latent."""


def _bins(metric: str) -> list[float]:
    """Histogram bins over the metric's range: correlations run from -1, the rest from 0."""
    low = -1.0 if metric == "correlation" else 0.0
    return [low + (1 - low) * i / 20 for i in range(21)]


def score_plot(out_dir: Path, coder: str, scorer: str) -> Path:
    """Where ``plot_scores`` draws the scores of ``scorer`` on ``coder``."""
    return out_dir / f"scores_{coder}_{scorer}.png"


def plot_scores(summary: dict, out_dir: Path) -> list[Path]:
    """One histogram per (coder, scorer): explanation scores against the random baseline."""
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for coder, scorers in summary.items():
        for scorer, entry in scorers.items():
            fig, ax = plt.subplots(figsize=(5, 3.2))
            bins = _bins(entry["metric"])
            for key, alpha, label in (("explanation", 0.7, "explanation"), ("baseline", 0.6, "random explanation")):
                ax.hist(np.asarray(entry[key]["values"], dtype=float), bins=bins, alpha=alpha, label=label)
            ax.set_xlabel(entry["metric"])
            ax.set_ylabel("latents")
            ax.set_title(f"{scorer} — {coder}", fontsize=9)
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = score_plot(out_dir, coder, scorer)
            save_figure_atomic(fig, path, dpi=100)
            plt.close(fig)
            paths.append(path)
    return paths


def plot_diagnostics(table: dict, frequencies: dict[tuple[str, int], float], out_dir: Path) -> list[Path]:
    """Per coder: each scorer's score against firing frequency, and the scorers' agreement matrix, from a score table
    (``results.score_table``: coder -> scorer -> latent -> main metric)."""
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for coder, scorers in table.items():
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        for scorer, values in sorted(scorers.items()):
            pairs = [(frequencies[(coder, k)], v) for k, v in values.items() if frequencies.get((coder, k))]
            if pairs:
                ax.scatter(*zip(*pairs, strict=True), s=14, alpha=0.7, label=f"{scorer} ({main_metric(scorer)})")
        ax.set_xscale("log")
        ax.set_xlabel("firing frequency (fraction of tokens)")
        ax.set_ylabel("score")
        ax.set_title(f"score vs frequency — {coder}", fontsize=9)
        if ax.get_legend_handles_labels()[0]:  # no latent with a known frequency: nothing to label
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


def plot_coder_scores(summary: dict, out_dir: Path) -> Path:
    """``scores_by_coder.png``: per scorer, each coder's explanation scores beside its random-explanation baseline.

    ``summary`` is ``summarize_scores`` output: ``{coder: {scorer: {"metric", "explanation", "baseline"}}}``.
    Box plots with the latents as dots (at most ``DOTS``, a seeded sample), so SAE latents and neurons can be read
    off one figure.
    """
    plt = pyplot()
    coders = list(summary)
    scorers = list(dict.fromkeys(s for per in summary.values() for s in per))
    fig, axes = plt.subplots(
        1, max(1, len(scorers)), figsize=(1.2 + 1.9 * len(coders) * max(1, len(scorers)), 4.2), squeeze=False
    )
    rng = np.random.default_rng(0)
    # Not strict: with no scorer there is still one (empty) axis, to carry the legend.
    for ax, scorer in zip(axes[0], scorers, strict=False):
        metric = None
        for i, coder in enumerate(coders):
            entry = summary[coder].get(scorer)
            if entry is None:
                continue
            metric = entry["metric"]
            if not entry["explanation"]["values"]:  # e.g. AUROC of raw neurons, which fire in every example
                ax.text(
                    i,
                    0.5,
                    "no defined\nscores",
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="tab:red",
                )
            for offset, key, color in ((-0.18, "explanation", "tab:blue"), (0.18, "baseline", "tab:gray")):
                values = np.asarray(entry[key]["values"], dtype=float)
                if not len(values):
                    continue
                x = i + offset
                ax.boxplot(
                    [values],
                    positions=[x],
                    widths=0.3,
                    showfliers=False,
                    patch_artist=True,
                    boxprops={"facecolor": color, "alpha": 0.35},
                    medianprops={"color": color},
                )
                dots = values if len(values) <= DOTS else rng.choice(values, DOTS, replace=False)
                ax.scatter(x + rng.uniform(-0.07, 0.07, len(dots)), dots, s=9, color=color, alpha=0.8, zorder=3)
        ax.set_xticks(range(len(coders)), [c.replace(".", ".\u200b") for c in coders], fontsize=7, rotation=15)
        ax.set_xlim(-0.6, len(coders) - 0.4)
        ax.set_title(scorer, fontsize=10)
        ax.set_ylabel(metric or "score")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].scatter([], [], color="tab:blue", label="explanation")
    axes[0][0].scatter([], [], color="tab:gray", label="random explanation")
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "scores_by_coder.png"
    save_figure_atomic(fig, path, dpi=100)
    plt.close(fig)
    return path
