"""Summaries of a run's score lines: per scorer and coder, true explanations beside the random baseline."""

import random
import statistics
from collections import Counter
from typing import NamedTuple

from .metrics import correlation

MAIN_METRIC = {
    "embedding": "auroc",
    "surprisal": "auroc",
    "intervention": "auroc",
    "intruder": "accuracy",
    "simulation": "correlation",
    "detection": "balanced_accuracy",
    "fuzzing": "balanced_accuracy",
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
        raise ValueError(
            f"Score rows of several explainers ({', '.join(sorted(map(str, found)))}): pick one with explainer_rows."
        )


def summarize_scores(rows: list[dict]) -> dict:
    """``{coder: {scorer: {"metric", "explanation": stats, "baseline": stats, "margin", "margin_ci",
    "above_chance"}}}``
    from one explainer's score rows.

    ``margin_ci`` is a 95% interval of the mean margin over the latents scored both ways (each
    latent's explanation against its random explanation, paired); ``above_chance`` says whether
    it lies above zero (None with fewer than two such latents), so a summary can say plainly when
    explanations do no better than another latent's.
    """
    _one_explainer(rows)
    out: dict = {}
    paired: dict = {}
    for row in rows:
        metric = main_metric(row["scorer"])
        value = _metric(row, metric)
        entry = out.setdefault(row["coder"], {}).setdefault(
            row["scorer"], {"metric": metric, "explanation": [], "baseline": []}
        )
        if value is not None:
            entry["baseline" if row["baseline"] else "explanation"].append(value)
            paired.setdefault((row["coder"], row["scorer"], row["latent"]), {})[row["baseline"]] = value
    for coder, scorers in out.items():
        for scorer, entry in scorers.items():
            entry["explanation"], entry["baseline"] = _describe(entry["explanation"]), _describe(entry["baseline"])
            a, b = entry["explanation"]["mean"], entry["baseline"]["mean"]
            entry["margin"] = a - b if a is not None and b is not None else None
            both = [v for (c, s, _), v in paired.items() if (c, s) == (coder, scorer) and len(v) == 2]
            entry["margin_ci"] = mean_interval([v[False] - v[True] for v in both])
            entry["above_chance"] = None if entry["margin_ci"] is None else entry["margin_ci"][0] > 0
    return out


def mean_interval(values: list[float]) -> list[float] | None:
    """A 95% normal interval of the mean of ``values``; None with fewer than two."""
    if len(values) < 2:
        return None
    mean, half = statistics.fmean(values), 1.96 * statistics.stdev(values) / len(values) ** 0.5
    return [mean - half, mean + half]


def _metric(row: dict, name: str) -> float | None:
    """The metric ``name`` of a score line, or None where it is undefined (or the line was mangled by hand)."""
    metrics = row.get("metrics")
    value = metrics.get(name) if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


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


def baseline_explanations(rows: list[dict], seed: int) -> dict[tuple[str, int], str]:
    """Each latent's random explanation: another latent's, by a seeded derangement of the rows sorted by (coder,
    latent), so the assignment depends on which explanations a run holds, not on the order its lines were appended in
    (processes under ``accelerate launch`` append theirs interleaved)."""
    if len(rows) < 2:
        return {}
    rows = sorted(rows, key=lambda r: (r["coder"], r["latent"]))
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    shifted = order[1:] + order[:1]
    return {(rows[i]["coder"], rows[i]["latent"]): rows[j]["explanation"] for i, j in zip(order, shifted, strict=True)}


def all_failed(row: dict) -> bool:
    """Whether every example of a score line failed (none was judged)."""
    metrics = row.get("metrics")
    return bool(row["examples"]) and isinstance(metrics, dict) and metrics.get("failed") == len(row["examples"])


def has_failures(row: dict) -> bool:
    """Whether a score line has examples whose LLM reply failed or could not be read."""
    metrics = row.get("metrics")
    return isinstance(metrics, dict) and bool(metrics.get("failed"))


class CurrentScores(NamedTuple):
    """A run's latest score lines, split by whether each belongs to the explanation it would be shown with.

    Explanations are replaced (``--redo``, another LLM, a search for a better one) while their old score lines stay
    in the append-only ``scores.jsonl``; only ``rows`` may be reported as the scores of the current explanations.
    """

    rows: list[dict]
    """Lines of each latent's current usable explanation (its text), and of the random explanation that the current
    explanations assign it: what every summary, table and published row reports."""
    replaced: list[dict]
    """Lines of an explanation since replaced by another usable one (or of a random explanation no longer the one
    assigned): scoring again (``interp score``) gives them back for the new text."""
    withdrawn: list[dict]
    """Lines of a latent that has no usable explanation of that explainer now (flagged, failed, or gone): nothing
    to score again."""

    def left_out(self) -> dict[str, dict[str, int]]:
        """Scorer -> ``{"replaced": lines, "withdrawn": lines}`` left out, for the scorers that have any."""
        replaced, withdrawn = Counter(r["scorer"] for r in self.replaced), Counter(r["scorer"] for r in self.withdrawn)
        return {s: {"replaced": replaced[s], "withdrawn": withdrawn[s]} for s in sorted(replaced | withdrawn)}


def current_scores(
    explanations: list[dict], scores: list[dict], seed: int, explainer: str | None = None
) -> CurrentScores:
    """Split the latest ``scores`` by the latest ``explanations`` (of ``explainer`` alone when given): the one rule
    of which score lines count.

    A line of a true explanation counts when the latent's explanation of that explainer is usable (status ok) and
    its text is the line's ``explanation``; a random-explanation line counts when its text is the one
    ``baseline_explanations`` assigns from the current usable explanations (with the run's ``seed``), so after
    scoring again the numbers are those a fresh run with these explanations would report.
    """
    usable: dict[str, list[dict]] = {}
    for r in explanations:
        if r.get("status") == "ok" and isinstance(r.get("explanation"), str):
            usable.setdefault(r["explainer"], []).append(r)
    wanted: dict[tuple, str] = {}
    for name, rows in usable.items():
        wanted.update({(name, r["coder"], r["latent"], False): r["explanation"] for r in rows})
        wanted.update({(name, *key, True): text for key, text in baseline_explanations(rows, seed).items()})
    out = CurrentScores([], [], [])
    for line in scores:
        if explainer is not None and line.get("explainer") != explainer:
            continue
        text = wanted.get((line.get("explainer"), line.get("coder"), line.get("latent"), line.get("baseline")))
        kept = out.withdrawn if text is None else out.rows if text == line.get("explanation") else out.replaced
        kept.append(line)
    return out
