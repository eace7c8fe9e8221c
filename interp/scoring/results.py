"""Summaries of a run's score lines: per scorer and coder, true explanations beside the random baseline."""

import math
import random
import statistics
from collections import Counter
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

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


def _describe(values: np.ndarray) -> dict:
    """Count, mean (``math.fsum``, as ``statistics.fmean``) and median of ``values``, and the values as a list."""
    if not len(values):
        return {"n": 0, "mean": None, "median": None, "values": []}
    listed = values.tolist()
    return {
        "n": len(listed),
        "mean": math.fsum(listed) / len(listed),
        "median": float(np.median(values)),
        "values": listed,
    }


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


COLUMNS = np.dtype([("latent", "<i8"), ("baseline", "u1"), ("value", "<f8"), ("standing", "u1")])
"""One (coder, scorer)'s score lines as columns: the latent, whether the line is of a random explanation, its main
metric (NaN where undefined) and its standing (``STANDINGS``), ordered by latent and then baseline."""
STANDINGS = ("current", "replaced", "withdrawn")
"""A score line's standing, as ``current_scores`` splits them, coded by position."""


def summarize_scores(rows: list[dict]) -> dict:
    """``{coder: {scorer: {"metric", "explanation": stats, "baseline": stats, "margin", "margin_ci", "margin_n",
    "above_chance"}}}`` from one explainer's score rows (``summarize_columns`` of them, each counted)."""
    _one_explainer(rows)
    grouped: dict[tuple[str, str], list[tuple]] = {}
    for row in rows:
        value = metric_value(row, main_metric(row["scorer"]))
        grouped.setdefault((row["coder"], row["scorer"]), []).append(
            (row["latent"], row["baseline"], float("nan") if value is None else value, 0)
        )
    columns = [
        (coder, scorer, np.sort(np.array(lines, COLUMNS), order=["latent", "baseline"]))
        for (coder, scorer), lines in grouped.items()
    ]
    return summarize_columns(columns)[0]


def summarize_columns(columns: Iterable[tuple[str, str, np.ndarray]]) -> tuple[dict, dict[str, dict[str, int]]]:
    """The summary ``summarize_scores`` gives, and the lines left out (scorer -> ``{"replaced": n, "withdrawn": n}``,
    for the scorers that have any), from each (coder, scorer)'s lines as ``COLUMNS``: what a run's database
    answers without a line read whole.

    ``margin`` is the mean, over the ``margin_n`` latents scored both ways, of each latent's explanation's score minus
    its random explanation's (paired), and ``margin_ci`` its 95% interval, on the same latents; ``above_chance`` says
    whether the interval lies above zero (None with fewer than two such latents), so a summary can say plainly when
    explanations do no better than another latent's. The two means (``explanation`` and ``baseline`` stats) are each
    over every latent scored that way, so after a partial re-explaining they may describe different latents: their
    difference is not the margin.
    """
    out: dict = {}
    left: dict[str, Counter] = {}
    for coder, scorer, lines in columns:
        standing = np.bincount(lines["standing"], minlength=len(STANDINGS))
        if standing[1] or standing[2]:
            left.setdefault(scorer, Counter()).update(replaced=int(standing[1]), withdrawn=int(standing[2]))
        now = lines[lines["standing"] == 0]
        if not len(now):
            continue
        known = now[~np.isnan(now["value"])]
        true, base = known[known["baseline"] == 0], known[known["baseline"] == 1]
        both = np.intersect1d(true["latent"], base["latent"], assume_unique=True)
        diffs = (true["value"][np.isin(true["latent"], both)] - base["value"][np.isin(base["latent"], both)]).tolist()
        ci = mean_interval(diffs)
        out.setdefault(coder, {})[scorer] = {
            "metric": main_metric(scorer),
            "explanation": _describe(true["value"]),
            "baseline": _describe(base["value"]),
            "margin": statistics.fmean(diffs) if diffs else None,
            "margin_n": len(diffs),
            "margin_ci": ci,
            "above_chance": None if ci is None else ci[0] > 0,
        }
    left_out = {s: {"replaced": c["replaced"], "withdrawn": c["withdrawn"]} for s, c in sorted(left.items())}
    return out, left_out


def mean_interval(values: list[float]) -> list[float] | None:
    """A 95% normal interval of the mean of ``values``; None with fewer than two."""
    if len(values) < 2:
        return None
    mean, half = statistics.fmean(values), 1.96 * float(np.std(values, ddof=1)) / len(values) ** 0.5
    return [mean - half, mean + half]


def metric_value(row: dict, name: str) -> float | None:
    """The metric ``name`` of a score line, or None where it is undefined (or the line was mangled by hand)."""
    metrics = row.get("metrics")
    value = metrics.get(name) if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def score_table(rows: list[dict]) -> dict[str, dict[str, dict[int, float]]]:
    """``{coder: {scorer: {latent: main metric}}}`` of one explainer's true explanations (not the baseline)."""
    _one_explainer(rows)
    out: dict = {}
    for row in rows:
        value = metric_value(row, main_metric(row["scorer"]))
        if not row["baseline"] and value is not None:
            out.setdefault(row["coder"], {}).setdefault(row["scorer"], {})[row["latent"]] = value
    return out


def columns_table(columns: Iterable[tuple[str, str, np.ndarray]], limit: int | None = None, seed: int = 0) -> dict:
    """``score_table`` of lines as ``COLUMNS`` (the current ones): with ``limit``, of at most that many latents per
    coder, a seeded sample shared by its scorers (so their agreement is over the same latents), for a plot."""
    out: dict = {}
    for coder, scorer, lines in columns:
        keep = lines[(lines["standing"] == 0) & (lines["baseline"] == 0) & ~np.isnan(lines["value"])]
        out.setdefault(coder, {})[scorer] = keep
    for scorers in out.values():
        latents = np.unique(np.concatenate([k["latent"] for k in scorers.values()]))
        if limit is not None and len(latents) > limit:
            latents = np.sort(np.random.default_rng(seed).choice(latents, limit, replace=False))
        for scorer, keep in scorers.items():
            keep = keep[np.isin(keep["latent"], latents)]
            scorers[scorer] = dict(zip(keep["latent"].tolist(), keep["value"].tolist(), strict=True))
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


def baseline_explanations(rows: list[dict], seed: int, scored: list[dict] | tuple = ()) -> dict[tuple[str, int], str]:
    """Each latent's random explanation: another latent's current explanation (of the explainer of ``rows``, its
    usable lines).

    A latent keeps the random text it was scored with (``scored``: earlier random-explanation score lines) while that
    text is still another latent's current explanation (``is_another_latents``), so explaining more latents moves no
    baseline, and re-explaining one latent moves only the baselines drawn from its old text. A latent without one
    draws it, with a stream of its own (``seed``, coder, latent), among the other latents' explanations (one of
    another text where there is one): the draw does not depend on the order of the lines, nor on which process asks.
    """
    texts = {(r["coder"], r["latent"]): r["explanation"] for r in rows}
    holders = explanation_holders(rows)
    out = {}
    for line in sorted(scored, key=lambda r: r["scorer"]):  # the same choice whatever order the lines come in
        key = (line["coder"], line["latent"])
        if key in texts and key not in out and is_another_latents(line["explanation"], key, holders):
            out[key] = line["explanation"]
    pool = sorted(texts)
    if len(pool) < 2:
        return out
    for key in pool:
        if key not in out:
            out[key] = texts[_donor(key, pool, texts, seed)]
    return out


def explanation_holders(rows: list[dict]) -> dict[str, set[tuple[str, int]]]:
    """Explanation text -> the (coder, latent) whose current explanation it is, over ``rows`` (usable lines)."""
    out: dict[str, set[tuple[str, int]]] = {}
    for r in rows:
        out.setdefault(r["explanation"], set()).add((r["coder"], r["latent"]))
    return out


def is_another_latents(text: str, key: tuple[str, int], holders: dict[str, set[tuple[str, int]]]) -> bool:
    """Whether ``text`` is the current explanation of a latent other than ``key``: a random explanation of ``key``."""
    held = holders.get(text, ())
    return len(held) > 1 or (len(held) == 1 and key not in held)


def _donor(key: tuple[str, int], pool: list[tuple[str, int]], texts: dict, seed: int) -> tuple[str, int]:
    """The latent whose explanation ``key`` is scored with, drawn from ``pool`` (sorted) by ``key``'s own stream:
    another latent, of another text where a few draws find one."""
    rng = random.Random(f"{seed}:{key[0]}:{key[1]}")
    for _ in range(32):
        other = pool[rng.randrange(len(pool))]
        if other != key and texts[other] != texts[key]:
            return other
    others = [k for k in pool if k != key and texts[k] != texts[key]] or [k for k in pool if k != key]
    return rng.choice(others)


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


def current_scores(explanations: list[dict], scores: list[dict], explainer: str | None = None) -> CurrentScores:
    """Split the latest ``scores`` by the latest ``explanations`` (of ``explainer`` alone when given): the one rule
    of which score lines count.

    A line of a true explanation counts when the latent's explanation of that explainer is usable (status ok) and
    its text is the line's ``explanation``; a random-explanation line counts while the latent has a usable
    explanation and the line's text is the current explanation of another latent (``is_another_latents``): what
    ``baseline_explanations`` keeps. Explaining more latents leaves every line counted; after scoring again the
    numbers are those a fresh run with these explanations would report.
    """
    usable: dict[str, list[dict]] = {}
    for r in explanations:
        if r.get("status") == "ok" and isinstance(r.get("explanation"), str):
            usable.setdefault(r["explainer"], []).append(r)
    own = {(name, r["coder"], r["latent"]): r["explanation"] for name, rows in usable.items() for r in rows}
    holders = {name: explanation_holders(rows) for name, rows in usable.items()}
    out = CurrentScores([], [], [])
    for line in scores:
        name = line.get("explainer")
        if explainer is not None and name != explainer:
            continue
        key = (line.get("coder"), line.get("latent"))
        text = own.get((name, *key))
        if text is None:
            out.withdrawn.append(line)
        elif line.get("baseline"):
            current = is_another_latents(line.get("explanation"), key, holders[name])
            (out.rows if current else out.replaced).append(line)
        else:
            (out.rows if text == line.get("explanation") else out.replaced).append(line)
    return out
