"""Summaries of a run's score lines: per scorer and coder, true explanations beside the random baseline."""

import statistics

from .metrics import correlation

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
