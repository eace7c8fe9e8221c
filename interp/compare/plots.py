"""Figures for comparing coders: the matching of two coders, and every coder's scores side by side."""

import math
from pathlib import Path

import numpy as np

from ..atomic import save_figure_atomic
from ..pyplot import pyplot
from .matching import HIST_BINS, Matching

HEATMAP_SIDE = 256
"""Most pairs drawn in the heat map; larger matchings show every k-th pair."""


def plot_matching(
    sim: np.ndarray, matching: Matching, shuffled: np.ndarray, decoder_matched: np.ndarray | None, path: Path, *, title: str,
) -> Path:
    """Heat map of explanation similarity (pairs sorted by matched similarity, so the diagonal is the matching)
    beside histograms of matched, shuffled and decoder-matched similarities."""
    plt = pyplot()
    order = np.argsort(-matching.scores, kind="stable")
    step = max(1, math.ceil(len(order) / HEATMAP_SIDE))
    shown = order[::step]
    fig, (ax_map, ax_hist) = plt.subplots(1, 2, figsize=(11, 4.6))
    image = ax_map.imshow(sim[np.ix_(matching.rows[shown], matching.cols[shown])], vmin=-0.2, vmax=1, cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax_map, fraction=0.046, label="explanation cosine similarity")
    every = f", every {step}th pair" if step > 1 else ""
    ax_map.set_title(f"{title}\nmatched pairs by similarity (diagonal){every}", fontsize=9)
    ax_map.set_xlabel("B latents, in the order of their matched A latent")
    ax_map.set_ylabel("A latents, best matched first")
    ax_hist.hist(matching.scores, bins=HIST_BINS, alpha=0.7, label=f"explanation-matched (mean {matching.scores.mean():.2f})")
    ax_hist.hist(shuffled, bins=HIST_BINS, alpha=0.55, label=f"shuffled pairs (mean {shuffled.mean():.2f})")
    if decoder_matched is not None:
        ax_hist.hist(decoder_matched, bins=HIST_BINS, histtype="step", linewidth=1.8, color="black",
                     label=f"decoder-matched (mean {decoder_matched.mean():.2f})")
    low = min(matching.scores.min(), shuffled.min(), *([] if decoder_matched is None else [decoder_matched.min()]))
    ax_hist.set_xlim(max(-1.0, math.floor(10 * low) / 10 - 0.05), 1.02)
    ax_hist.set_xlabel("explanation cosine similarity of a pair")
    ax_hist.set_ylabel("pairs")
    ax_hist.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure_atomic(fig, path, dpi=100)
    plt.close(fig)
    return path


def plot_coder_scores(summary: dict, out_dir: Path) -> Path:
    """``scores_by_coder.png``: per scorer, each coder's explanation scores beside its random-explanation baseline.

    ``summary`` is ``summarize_scores`` output: ``{coder: {scorer: {"metric", "explanation", "baseline"}}}``.
    Box plots with every latent as a dot, so SAE latents and neurons can be read off one figure.
    """
    plt = pyplot()
    coders = list(summary)
    scorers = list(dict.fromkeys(s for per in summary.values() for s in per))
    fig, axes = plt.subplots(1, max(1, len(scorers)), figsize=(1.2 + 1.9 * len(coders) * max(1, len(scorers)), 4.2), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, scorer in zip(axes[0], scorers):
        metric = None
        for i, coder in enumerate(coders):
            entry = summary[coder].get(scorer)
            if entry is None:
                continue
            metric = entry["metric"]
            if not entry["explanation"]["values"]:  # e.g. AUROC of raw neurons, which fire in every example
                ax.text(i, 0.5, "no defined\nscores", transform=ax.get_xaxis_transform(), ha="center", va="center", fontsize=8, color="tab:red")
            for offset, key, color in ((-0.18, "explanation", "tab:blue"), (0.18, "baseline", "tab:gray")):
                values = entry[key]["values"]
                if not values:
                    continue
                x = i + offset
                ax.boxplot([values], positions=[x], widths=0.3, showfliers=False, patch_artist=True,
                           boxprops={"facecolor": color, "alpha": 0.35}, medianprops={"color": color})
                ax.scatter(x + rng.uniform(-0.07, 0.07, len(values)), values, s=9, color=color, alpha=0.8, zorder=3)
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
