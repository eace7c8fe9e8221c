"""One-to-one matching of two sets of latents by cosine similarity (Hungarian algorithm).

The similarity matrix of the latents compared is the only quadratic object: it is filled in
row chunks, so no ``[n, m, d]`` intermediate exists, and the caller bounds ``n`` and ``m``
(``--max-latents``).
"""

from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

HIST_BINS = np.linspace(-1.0, 1.0, 41)
"""Histogram bins for cosine similarities, kept in every report so figures can be redrawn."""


class Matching(NamedTuple):
    """A one-to-one pairing of rows (set A) with columns (set B) of a similarity matrix."""

    rows: np.ndarray
    """Indices into A, ascending."""

    cols: np.ndarray
    """The B index paired with each row."""

    scores: np.ndarray
    """The similarity of each pair, ``sim[rows, cols]``."""


def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x`` (``[n, d]``) as float32 with every row scaled to length 1 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def cosine_matrix(a: np.ndarray, b: np.ndarray, *, chunk: int = 1024) -> np.ndarray:
    """``[n, m]`` float32 cosine similarities of the rows of ``a`` and ``b``, computed ``chunk`` rows at a time."""
    a, b = unit_rows(a), unit_rows(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"cannot compare vectors of width {a.shape[1]} and {b.shape[1]}")
    out = np.empty((len(a), len(b)), dtype=np.float32)
    for start in range(0, len(a), chunk):
        np.matmul(a[start : start + chunk], b.T, out=out[start : start + chunk])
    return np.clip(out, -1.0, 1.0, out=out)


def hungarian(sim: np.ndarray) -> Matching:
    """The one-to-one pairing with the largest total similarity (``min(n, m)`` pairs)."""
    rows, cols = linear_sum_assignment(sim, maximize=True)
    return Matching(rows, cols, sim[rows, cols])


def random_pairing(sim: np.ndarray, seed: int) -> Matching:
    """A seeded random one-to-one pairing of as many rows as ``hungarian`` pairs: the shuffled baseline."""
    n, m = sim.shape
    rng = np.random.default_rng(seed)
    k = min(n, m)
    rows = np.sort(rng.permutation(n)[:k])
    cols = rng.permutation(m)[:k]
    return Matching(rows, cols, sim[rows, cols])


def agreement(x: Matching, y: Matching) -> float:
    """Fraction of ``x``'s pairs that ``y`` makes too (1 when both matchings are the same)."""
    pairs = set(zip(y.rows.tolist(), y.cols.tolist(), strict=True))
    return sum(p in pairs for p in zip(x.rows.tolist(), x.cols.tolist(), strict=True)) / max(1, len(x.rows))


def describe(values: np.ndarray) -> dict:
    """Mean, spread, quantiles and a histogram (over ``HIST_BINS``) of similarity values."""
    v = np.asarray(values, dtype=np.float64)
    if not len(v):
        return {"n": 0}
    q = np.quantile(v, [0.1, 0.25, 0.5, 0.75, 0.9])
    return {
        "n": len(v),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "p10": float(q[0]),
        "p25": float(q[1]),
        "median": float(q[2]),
        "p75": float(q[3]),
        "p90": float(q[4]),
        "max": float(v.max()),
        "histogram": np.histogram(np.clip(v, -1, 1), bins=HIST_BINS)[0].tolist(),
    }
