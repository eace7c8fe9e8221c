"""The Explain and Score panels as plain functions over ``interp.stages``: the same stages the CLI runs.

The app changes only the explain and score settings of the run's saved configuration (which
explainer, LLM, latents, scorers), never what was cached; results go to the run directory as
``interp explain`` and ``interp score`` write them, so they resume and show up in the CLI too.
"""

import math
import typing
from dataclasses import replace
from typing import NamedTuple

from ..config import ExplainConfig, Search
from ..errors import InterpError
from ..explain.search import SearchSettings
from ..records import select_latents
from ..scoring.results import main_metric
from ..stages import run_explain, run_score
from .explore import Table
from .render import markdown_text
from .session import OpenRun
from .workspace import Workspace

BACKENDS = ("local", "url")
"""An LLM run in this process, or an OpenAI-compatible server."""
SEARCHES: tuple[str, ...] = typing.get_args(Search)
"""none (one explanation per latent), best-of-k, refine: ``interp explain --search``."""
MAX_CANDIDATES = 16
"""Most candidates per latent and round the panel asks for: each is an LLM request, and a visitor of a Space could
otherwise ask for millions."""
MAX_ROUNDS = 8
"""Most refinement rounds the panel runs, for the same reason."""
EXPLAINED_HEADERS = ["latent", "status", "explanation", "LLM", "note"]
SUMMARY_HEADERS = [
    "scorer",
    "metric",
    "mean",
    "median",
    "random explanation (mean)",
    "margin (paired)",
    "vs random",
    "latents",
    "latents scored both ways",
]
OUTCOME_HEADERS = ["call", "kind", "quantile", "fires", "prediction", "score", "text"]


class LLMChoice(NamedTuple):
    """The panel's LLM as ``ExplainConfig`` settings."""

    llm: str
    llm_model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    """Where the server's key comes from; empty: send no key."""


def llm_spec(
    workspace: Workspace,
    backend: str,
    model: str = "",
    url: str = "",
    server_model: str = "",
    *,
    keyed_urls: frozenset[str] | None = None,
) -> LLMChoice:
    """The panel's LLM choice as ``ExplainConfig`` settings.

    ``local`` with no model is the embedded SmolLM2; a local model is a Hub id or a folder inside
    the workspace (loaded without ``trust_remote_code``). ``url`` is an OpenAI-compatible base URL
    with the model it serves; its key comes from $OPENAI_API_KEY, never from the page, and goes
    only to ``keyed_urls`` (None: to any URL). A Space passes only its owner's server there, since
    a visitor who typed their own URL would otherwise receive the owner's key.
    """
    if backend == "local":
        return LLMChoice("local:" + workspace.model_source(model) if model.strip() else "local")
    if backend == "url":
        url, server_model = url.strip(), server_model.strip()
        if not url.startswith(("http://", "https://")):
            raise InterpError(f"{url!r} is not an OpenAI-compatible base URL: give http(s)://host:port/v1.")
        if not server_model:
            raise InterpError("Name the model the server serves (e.g. Qwen/Qwen2.5-7B-Instruct).")
        keyed = keyed_urls is None or url.rstrip("/") in {u.rstrip("/") for u in keyed_urls}
        return LLMChoice(url, server_model, "OPENAI_API_KEY" if keyed else "")
    raise InterpError(f"Unknown LLM backend {backend!r}: use {' or '.join(BACKENDS)}.")


class SearchChoice(NamedTuple):
    """The panel's explanation search as ``ExplainConfig`` settings (``interp explain --search ...``)."""

    search: str = ExplainConfig.search
    candidates: int = ExplainConfig.candidates
    rounds: int = ExplainConfig.rounds
    judge: str = ExplainConfig.judge
    temperature: float = ExplainConfig.temperature
    tokens_candidate: bool = ExplainConfig.tokens_candidate


def _whole(value, what: str, most: int) -> int:
    """A whole number typed in the panel (the API may send any JSON value), at most ``most``; its least is
    ``check_config``'s."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not number.is_integer():
        raise InterpError(f"{str(value)[:40]!r} is not a whole number: type how many {what}.")
    if number > most:
        raise InterpError(f"{int(number):,} {what} is more than the app runs ({most}): use the CLI for more.")
    return int(number)


def search_spec(*values) -> SearchChoice:
    """The panel's search settings (in ``SearchChoice``'s order; one not given or None is the default), checked as
    values: a mode of ``SEARCHES``, whole numbers of candidates and rounds (at most ``MAX_CANDIDATES`` and
    ``MAX_ROUNDS``), a number for the temperature. Their least values and the judge's name are checked with the rest
    of the configuration when the job starts (``check_config``), in the words the CLI uses.

    >>> search_spec("best-of-k", 8.0, None, "embedding")[:4]
    ('best-of-k', 8, 1, 'embedding')
    """
    defaults = SearchChoice()
    given = [values[i] if i < len(values) and values[i] is not None else d for i, d in enumerate(defaults)]
    search, candidates, rounds, judge, temperature, tokens_candidate = given
    if search not in SEARCHES:
        raise InterpError(f"Unknown search {str(search)[:40]!r}: use {', '.join(SEARCHES)}.")
    try:
        heat = float(temperature)
    except (TypeError, ValueError):
        heat = math.nan
    if not math.isfinite(heat):
        raise InterpError(f"{str(temperature)[:40]!r} is not a temperature: type a number such as 0.7.")
    return SearchChoice(
        search,
        _whole(candidates, "candidates per round", MAX_CANDIDATES),
        _whole(rounds, "refinement rounds", MAX_ROUNDS),
        str(judge),
        heat,
        bool(tokens_candidate),
    )


def _check_finished(run: OpenRun, coder: str) -> None:
    """Refuse ``coder`` (as typed) unless it is one of the run's finished coders: its name becomes a path."""
    names = run.coder_names()
    if coder not in names:
        raise InterpError(f"The run {run.name} has no finished coder {coder!r}; its coders are {', '.join(names)}.")


def chosen_latents(run: OpenRun, coder: str, latents: str) -> list[int]:
    """The latents of ``coder`` that ``latents`` (one number, all, sample:N, A-B, A,B,C) names, as
    ``interp explain`` picks them.
    """
    _check_finished(run, coder)
    count = run.dir.latent_counts(coder)
    r = run.cfg.records
    return select_latents(latents.strip(), count, min_count=r.min_examples, seed=r.records_seed)


def _explain_config(run: OpenRun, explainer: str, llm: LLMChoice, latents: str, search, redo: bool) -> ExplainConfig:
    """The run's explain settings with the panel's: what ``interp explain`` would build from the same flags."""
    chosen = search._asdict() if search is not None else {}
    return replace(run.cfg.explain, explainer=explainer, **llm._asdict(), latents=latents.strip(), redo=redo, **chosen)


def explain(
    run: OpenRun,
    coder: str,
    explainer: str,
    llm: LLMChoice,
    latents: str,
    *,
    search: SearchChoice | None = None,
    redo: bool = False,
    progress: bool = True,
) -> tuple[dict, Table]:
    """Explain ``latents`` of ``coder`` with ``explainer`` (resumable: done ones are skipped, unless ``redo``); the
    counts and the rows.

    ``search`` (default: the run's saved settings) searches as ``interp explain --search`` does: several candidates
    per latent, the best on the validation split kept, every candidate saved on the latent's line.
    """
    wanted = set(chosen_latents(run, coder, latents))
    cfg = replace(run.cfg, explain=_explain_config(run, explainer, llm, latents, search, redo))
    summary = run_explain(cfg, run.path, coders=[coder], progress=progress)
    with run.dir.reading() as db:
        lines = db.explanations_of(coder, sorted(wanted))
    rows = [
        [r["latent"], r["status"], r["explanation"] or "", r.get("model") or "", r.get("note") or ""]
        for r in lines
        if r["explainer"] == explainer
    ]
    return summary, Table(EXPLAINED_HEADERS, sorted(rows))


def other_searches(run: OpenRun, coder: str, explainer: str, latents: str, search: SearchChoice) -> int:
    """How many of the chosen latents hold a usable ``explainer`` explanation made with other search settings than
    ``search``: an explain job keeps them unless told to redo them (as ``interp explain`` warns)."""
    wanted = set(chosen_latents(run, coder, latents))
    cfg = replace(run.cfg.explain, **search._asdict())
    settings = SearchSettings.of(cfg).to_dict() if cfg.search != "none" else None
    with run.dir.reading() as db:
        lines = db.explanations_of(coder, sorted(wanted))
    return sum(r["explainer"] == explainer and r["status"] == "ok" and r.get("search") != settings for r in lines)


def score(
    run: OpenRun,
    coder: str,
    explainer: str,
    scorers: list[str],
    score_mode: str,
    llm: LLMChoice,
    *,
    progress: bool = True,
) -> Table:
    """Score ``explainer``'s explanations of ``coder`` (and their random baseline) with ``scorers``;
    the summary per scorer.

    Resumable, as ``interp score``: explanations already scored by a scorer are skipped.
    """
    if not scorers:
        raise InterpError("Choose at least one scorer.")
    _check_finished(run, coder)
    cfg = replace(
        run.cfg,
        explain=replace(run.cfg.explain, explainer=explainer, **llm._asdict()),
        score=replace(run.cfg.score, scorers=list(scorers), score_mode=score_mode),
    )
    return summary_table(
        run_score(cfg, run.path, coders=[coder], progress=progress)["scores"], coder
    )  # of this explainer alone


def _against_random(entry: dict) -> str:
    """'above chance' or 'at chance' (the margin's 95% interval includes zero), or '' with too few latents to say."""
    if entry.get("above_chance") is None:
        return ""
    return "above chance" if entry["above_chance"] else "at chance: try a served explainer"


def summary_table(summary: dict, coder: str) -> Table:
    """Per scorer of ``coder`` (from ``summarize_scores``): its main metric's mean and median
    against the random explanation's.
    """
    rows = []
    for scorer, e in summary.get(coder, {}).items():
        rows.append(
            [
                scorer,
                e["metric"],
                e["explanation"]["mean"],
                e["explanation"]["median"],
                e["baseline"]["mean"],
                e["margin"],
                _against_random(e),
                e["explanation"]["n"],
                e["margin_n"],
            ]
        )
    return Table(SUMMARY_HEADERS, rows)


def plots(run: OpenRun, coder: str, explainer: str | None = None) -> list[tuple[str, str]]:
    """(path, caption) of the summary plots of ``explainer``'s scores (default: the run's own) that
    concern ``coder``, and the all-coder one.
    """
    own = run.cfg.explain.explainer
    folder = run.dir.plots_dir(explainer or own, own)
    if not folder.is_dir():
        return []
    chosen = [p for p in sorted(folder.glob("*.png")) if coder in p.stem or p.stem == "scores_by_coder"]
    return [(str(p), p.stem) for p in chosen]


class Outcomes(NamedTuple):
    """How one scorer judged each held-out example of one explanation."""

    metrics: str
    """Markdown: the explanation scored and its metrics."""
    table: Table
    right: int
    wrong: int


def _verdicts(examples: list[dict]) -> list[bool | None]:
    """Right or wrong per example: the scorer's yes/no when it gave one, else its ranking.

    Ranking scorers (embedding, surprisal, log-prob classifiers) give a score, no answer: the
    examples ranked in the top P (P = the number of positive examples) count as called positive.
    """
    if any(e["prediction"] is not None for e in examples) or all(e["score"] is None for e in examples):
        return [None if e["prediction"] is None else e["prediction"] == e["label"] for e in examples]
    positives = sum(e["label"] for e in examples)
    ranked = sorted((i for i, e in enumerate(examples) if e["score"] is not None), key=lambda i: -examples[i]["score"])
    called = set(ranked[:positives])
    return [None if e["score"] is None else (i in called) == e["label"] for i, e in enumerate(examples)]


def outcomes(run: OpenRun, coder: str, latent: int, scorer: str, explainer: str) -> Outcomes:
    """Each held-out example the scorer judged for the explanation of ``latent``: label, call, score, text."""
    with run.dir.reading() as db:
        lines = db.scores_of(coder, [int(latent)])
    row, standing = next(
        ((r, s) for r, s in lines if (r["scorer"], r["explainer"], r["baseline"]) == (scorer, explainer, False)),
        (None, None),
    )
    if row is None:
        raise InterpError(
            f"No {scorer} score of the {explainer} explanation of {coder} latent {latent}: score it first."
        )
    examples = row["examples"]
    builder = run.builder(coder)
    text = run.text()
    verdicts = _verdicts(examples)
    rows = []
    for e, verdict in zip(examples, verdicts, strict=True):
        if e["kind"] in ("test", "negative", "hard_negative") and 0 <= e["index"] < builder.num_examples:
            shown = "".join(text(builder.example_tokens[e["index"]].tolist()))
        else:
            shown = f"({e['kind']} passage {e['index']})"
        call = "failed" if verdict is None else "right" if verdict else "wrong"
        rows.append([call, e["kind"], e.get("quantile"), e["label"], e["prediction"], e["score"], shown])
    metric = main_metric(scorer)
    values = ", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row["metrics"].items() if v is not None
    )
    value = row["metrics"].get(metric)
    md = (
        f"**{markdown_text(scorer)}** on the *{markdown_text(explainer)}* explanation of latent {latent}: {metric} "
        f"**{'n/a' if value is None else f'{value:.3g}'}**  \n{values}"
    )
    if standing != "current":
        md += (
            f"  \n**stale**: this scored {markdown_text(repr(row['explanation']))}, which is no longer the latent's "
            "explanation; score again to judge the current one"
        )
    return Outcomes(
        md, Table(OUTCOME_HEADERS, rows), sum(v is True for v in verdicts), sum(v is False for v in verdicts)
    )


def explainers(run: OpenRun) -> list[str]:
    """Explainers with lines in the run, the run's own first."""
    found = set(run.status_counts())
    own = run.cfg.explain.explainer
    return [own] * (own in found) + sorted(found - {own})
