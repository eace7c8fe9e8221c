"""Metrics for scorers, with every edge case defined instead of crashing.

A prediction of ``None`` means the scorer's reply could not be parsed: it is counted in
``failed`` and left out of the rates, so "all replies unparsable" reads as ``accuracy=None,
failed=n`` rather than as accuracy 0. A metric that is undefined (AUROC with one class, a
correlation of a constant) is ``None``.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import pearsonr, rankdata, spearmanr


@dataclass
class ClassificationMetrics:
    """Binary classification quality; ``None`` where undefined."""

    n: int
    positives: int
    negatives: int
    failed: int
    accuracy: float | None
    balanced_accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    auroc: float | None

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def auroc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); None with only one class."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return None
    ranks = rankdata(s)
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def classification(
    labels: Sequence[bool], predictions: Sequence[bool | None], scores: Sequence[float | None] | None = None
) -> ClassificationMetrics:
    """Metrics of ``predictions`` (None = failed) against ``labels``; AUROC from ``scores`` when given."""
    pairs = [(bool(label), bool(p)) for label, p in zip(labels, predictions, strict=True) if p is not None]
    tp = sum(label and p for label, p in pairs)
    tn = sum(not label and not p for label, p in pairs)
    fp = sum(not label and p for label, p in pairs)
    fn = sum(label and not p for label, p in pairs)
    recall = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    precision = _ratio(tp, tp + fp)
    f1 = _ratio(2 * precision * recall, precision + recall) if precision is not None and recall is not None else None
    balanced = (recall + specificity) / 2 if recall is not None and specificity is not None else None
    area = None
    if scores is not None:
        kept = [
            (bool(label), float(s))
            for label, s in zip(labels, scores, strict=True)
            if s is not None and np.isfinite(s)
        ]
        area = auroc([label for label, _ in kept], [s for _, s in kept]) if kept else None
    return ClassificationMetrics(
        n=len(labels),
        positives=sum(bool(label) for label in labels),
        negatives=sum(not label for label in labels),
        failed=len(labels) - len(pairs),
        accuracy=_ratio(tp + tn, len(pairs)),
        balanced_accuracy=balanced,
        precision=precision,
        recall=recall,
        f1=f1,
        auroc=area,
    )


def correlation(x: Sequence[float], y: Sequence[float]) -> dict[str, float | None]:
    """Pearson and Spearman correlation; None when either side is constant or too short."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"pearson": None, "spearman": None}
    return {"pearson": float(pearsonr(a, b).statistic), "spearman": float(spearmanr(a, b).statistic)}
