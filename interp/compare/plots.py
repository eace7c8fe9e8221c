"""The figure of a comparison: how two coders' latents match by meaning."""

import math
from pathlib import Path

import numpy as np

from ..atomic import save_figure_atomic
from ..pyplot import pyplot
from .matching import HIST_BINS, Matching

HEATMAP_SIDE = 256
"""Most pairs drawn in the heat map; larger matchings show every k-th pair."""


def plot_matching(
    sim: np.ndarray,
    matching: Matching,
    shuffled: np.ndarray,
    decoder_matched: np.ndarray | None,
    path: Path,
    *,
    title: str,
) -> Path:
    """Heat map of explanation similarity (pairs sorted by matched similarity, so the diagonal is the matching)
    beside histograms of matched, shuffled and decoder-matched similarities."""
    plt = pyplot()
    order = np.argsort(-matching.scores, kind="stable")
    step = max(1, math.ceil(len(order) / HEATMAP_SIDE))
    shown = order[::step]
    fig, (ax_map, ax_hist) = plt.subplots(1, 2, figsize=(11, 4.6))
    image = ax_map.imshow(
        sim[np.ix_(matching.rows[shown], matching.cols[shown])],
        vmin=-0.2,
        vmax=1,
        cmap="viridis",
        interpolation="nearest",
    )
    fig.colorbar(image, ax=ax_map, fraction=0.046, label="explanation cosine similarity")
    every = f", every {step}th pair" if step > 1 else ""
    ax_map.set_title(f"{title}\nmatched pairs by similarity (diagonal){every}", fontsize=9)
    ax_map.set_xlabel("B latents, in the order of their matched A latent")
    ax_map.set_ylabel("A latents, best matched first")
    ax_hist.hist(
        matching.scores, bins=HIST_BINS, alpha=0.7, label=f"explanation-matched (mean {matching.scores.mean():.2f})"
    )
    ax_hist.hist(shuffled, bins=HIST_BINS, alpha=0.55, label=f"shuffled pairs (mean {shuffled.mean():.2f})")
    if decoder_matched is not None:
        ax_hist.hist(
            decoder_matched,
            bins=HIST_BINS,
            histtype="step",
            linewidth=1.8,
            color="black",
            label=f"decoder-matched (mean {decoder_matched.mean():.2f})",
        )
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
