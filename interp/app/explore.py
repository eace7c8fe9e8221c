"""The Explore panel as plain functions: the latent table, one latent's record, and latents on typed text.

Everything is read through the library: records from ``RecordBuilder``, frequencies and main
metrics from ``scoring.results``, score entries (explanation beside its random baseline) as
the published dataset has them.
"""

import math
from dataclasses import fields
from typing import NamedTuple

import numpy as np
import torch
from matplotlib.figure import Figure

from ..errors import InterpError
from ..explain.search import Candidate, best
from ..hooks import capture_tokens
from ..records import HISTOGRAM_BINS, LatentRecord
from ..scoring.results import summarize_columns
from .render import examples_html, markdown_code, markdown_text
from .session import OpenRun

MAX_TEXT_TOKENS = 256
"""Longest text "test my text" reads: one forward pass, cheap enough to serve many users."""
MAX_TEXT_CHARS = 16 * MAX_TEXT_TOKENS
"""Longest text "test my text" tokenizes at all: a megabyte would hold the shared model's turn for seconds."""
MAX_QUERY_CHARS = 500
"""Longest search of the explanations: longer than any explanation, so a longer one could match nothing."""
TEXT_LATENTS = 20
SORTS = ("latent", "frequency")
SCORE_SORT = "score: "
LATENT_HEADERS = ["latent", "status", "explanation", "frequency"]
"""The latent table's first columns; one column per scorer follows."""
PAGE_SIZE = 100
"""Rows of the latent table sent to the page at once: a run of 50,000 latents sends one page, not 50,000 rows."""
SAVED_FIELDS = {f.name for f in fields(Candidate)}
"""What a saved candidate may hold: a line written by a later version with more keys still reads."""
CANDIDATE_HEADERS = [
    "explainer",
    "round",
    "source",
    "candidate",
    "validation score",
    "judge",
    "status",
    "chosen",
    "note",
]
TOKEN_HEADERS = ["token", "token id", "logit"]
EXPLANATION_HEADERS = ["explainer", "status", "explanation", "LLM", "note"]
SCORE_HEADERS = [
    "scorer",
    "explainer",
    "metric",
    "explanation",
    "random explanation",
    "accuracy",
    "AUROC",
    "F1",
    "correlation",
    "examples",
    "failed",
    "stale",
]
TEXT_HEADERS = ["latent", "max activation", "tokens", "strongest on", "explanation"]


class Table(NamedTuple):
    """Column names and rows, for a Gradio Dataframe."""

    headers: list[str]
    rows: list[list]


class LatentPage(NamedTuple):
    """One page of the latent table, and where it stands among the pages."""

    table: Table
    page: int
    """1-based; a page past the last is the last."""
    pages: int
    """At least 1, even with no rows."""
    total: int
    """Latents the query kept, over every page."""

    def line(self) -> str:
        """Markdown: "page X of N (M latents)"."""
        return f"page {self.page} of {self.pages} ({self.total:,} latent{'s' * (self.total != 1)})"


class LatentView(NamedTuple):
    """What the Explore panel shows of one latent."""

    record: LatentRecord
    stats: str
    """Markdown: status, count, frequency, max, mean, activating examples."""
    histogram: Figure
    top: str
    """HTML of the top examples, activating tokens shaded by strength."""
    quantiles: str
    """HTML of the held-out examples, grouped by activation quantile."""
    promoted: Table
    suppressed: Table
    explanations: Table
    scores: Table
    candidates: Table
    """Every candidate the explanation searches of the latent considered; no rows when none was searched."""


class TextLatents(NamedTuple):
    """Which latents fire on a text a user typed."""

    highlight: str
    """HTML of the text shaded by the chosen latent."""
    latents: Table
    """The latents that fire most on the text, strongest first, with their explanations."""


def describe(run: OpenRun) -> str:
    """Markdown overview of a run: model, corpus, coders, explanation counts, mean scores."""
    cfg = run.cfg
    lines = [
        f"**{markdown_text(run.name)}** · model {markdown_code(cfg.model.model)} "
        f"· corpus {markdown_code(cfg.corpus.corpus)}, "
        f"{cfg.corpus.num_tokens:,} tokens in windows of {cfg.corpus.ctx_len}"
    ]
    coders = run.summary().get("coders", {})
    for name in run.coder_names():
        c = coders.get(name, {})
        if c:
            lines.append(
                f"- coder {markdown_code(name)} ({markdown_text(c['kind'])}): {c['num_latents']:,} latents, "
                f"mean L0 {c['mean_l0']:.1f}, "
                f"{100 * c['dead_fraction']:.1f}% never fired on the cached tokens"
            )
        else:
            lines.append(f"- coder {markdown_code(name)}")
    counts = run.status_counts()
    for explainer, by_status in sorted(counts.items()):
        lines.append(
            f"- explanations ({markdown_text(explainer)}): "
            + ", ".join(f"{n} {markdown_text(s)}" for s, n in sorted(by_status.items()))
        )
    if not counts:
        lines.append("- no explanations yet: use the Explain tab")
    for explainer in run.scored_explainers():  # each explainer's apart, as its explanations are counted above
        summary, left_out = summarize_columns(run.metric_columns(explainer))
        for coder, scorers in summary.items():
            for scorer, e in scorers.items():
                mean, base = e["explanation"]["mean"], e["baseline"]["mean"]
                shown = "n/a" if mean is None else f"{mean:.3f}"
                lines.append(
                    f"- {markdown_text(scorer)} of the {markdown_text(explainer)} explanations "
                    f"on {markdown_code(coder)}: "
                    f"mean {e['metric']} {shown}"
                    + (f" (random explanation {base:.3f})" if base is not None else "")
                    + f", {e['explanation']['n']} latents"
                )
        for scorer, n in left_out.items():
            lines.append(
                f"- left out: {n['replaced'] + n['withdrawn']} {markdown_text(scorer)} scores of "
                f"{markdown_text(explainer)} explanations since replaced, flagged or failed"
                + (" (score again in the Score tab)" if n["replaced"] else "")
            )
    return "\n".join(lines)


def sort_choices(run: OpenRun) -> list[str]:
    """Ways to sort the latent table: by latent, frequency, or any scorer's main metric (of the
    run's own explainer).
    """
    scorers = sorted(
        {
            scorer
            for _, scorer, lines in run.metric_columns(run.cfg.explain.explainer)
            if (lines["standing"] == 0).any()
        }
    )
    return [*SORTS, *(SCORE_SORT + s for s in scorers)]


def _best_explanation(lines: list[dict], preferred: str) -> str:
    ok = [r for r in lines if r["status"] == "ok"]
    chosen = next((r for r in ok if r["explainer"] == preferred), ok[0] if ok else None)
    return chosen["explanation"] if chosen else ""


def _score_columns(run: OpenRun, coder: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Scorer -> (latents, main metric) of the current true-explanation scores of the run's own explainer on
    ``coder``, sorted by latent: the table's score columns (kept until the run's results change)."""
    return run.derived(("score_columns", coder), lambda: _current_true_scores(run, coder))


def _current_true_scores(run: OpenRun, coder: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for name, scorer, lines in run.metric_columns(run.cfg.explain.explainer):
        keep = lines[(lines["standing"] == 0) & (lines["baseline"] == 0) & ~np.isnan(lines["value"])]
        if name == coder and len(lines[lines["standing"] == 0]):
            out[scorer] = (keep["latent"], keep["value"])
    return dict(sorted(out.items()))


def _counts(run: OpenRun, coder: str, latents: np.ndarray) -> np.ndarray:
    """How many cached tokens each of ``latents`` fires on; 0 for a latent the coder does not have (a line written
    by hand, or of a coder since made narrower)."""
    counts = run.dir.latent_counts(coder).numpy()
    inside = (latents >= 0) & (latents < len(counts))
    out = np.zeros(len(latents), dtype=np.int64)
    out[inside] = counts[latents[inside]]
    return out


def _latent_order(run: OpenRun, coder: str, query: str, sort: str) -> np.ndarray:
    """The explained latents of ``coder`` that ``query`` keeps, in the order of ``sort``: what the pages cut."""
    with run.dir.reading() as db:
        latents = db.explained_latents(coder, query)
    if sort == "latent":
        return latents
    if sort == "frequency":
        return latents[np.argsort(-_counts(run, coder, latents), kind="stable")]
    scorer = sort[len(SCORE_SORT) :]
    scored, values = _score_columns(run, coder)[scorer]
    has = np.isin(latents, scored)
    at = np.searchsorted(scored, latents[has])
    return np.concatenate([latents[has][np.argsort(-values[at], kind="stable")], latents[~has]])


def _check_table(run: OpenRun, coder: str, query: str, sort: str) -> None:
    if coder not in run.coder_names():
        raise InterpError(f"The run {run.name} has no coder {coder!r}; its coders are {', '.join(run.coder_names())}.")
    if len(query) > MAX_QUERY_CHARS:
        raise InterpError(
            f"The search has {len(query):,} characters; the limit is {MAX_QUERY_CHARS}. Search for a word or phrase."
        )
    if sort not in sort_choices(run):
        raise InterpError(f"Cannot sort by {sort!r}: use {', '.join(sort_choices(run))}.")


def _table_rows(run: OpenRun, coder: str, latents: list[int]) -> Table:
    """The latent table's rows of ``latents``, in that order: each a query of those latents alone."""
    with run.dir.reading() as db:
        found = db.explanations_of(coder, latents)
    lines: dict[int, list[dict]] = {}
    for r in found:
        lines.setdefault(r["latent"], []).append(r)
    columns = _score_columns(run, coder)
    counts, tokens = (
        _counts(run, coder, np.array(latents, dtype=np.int64)).tolist(),
        run.dir.cache_stats(coder)["num_tokens"],
    )
    rows = []
    for latent, count in zip(latents, counts, strict=True):
        group = lines.get(latent, [])
        status = next((r["status"] for r in group if r["status"] == "ok"), group[-1]["status"] if group else "")
        scores = []
        for scored, values in columns.values():
            at = np.searchsorted(scored, latent)
            scores.append(float(values[at]) if at < len(scored) and scored[at] == latent else None)
        frequency = count / tokens
        rows.append([latent, status, _best_explanation(group, run.cfg.explain.explainer), frequency, *scores])
    return Table([*LATENT_HEADERS, *columns], rows)


def latent_table(run: OpenRun, coder: str, query: str = "", sort: str = "latent") -> Table:
    """Every row of the latent table at once (``latent_page`` cuts it into pages, as the app shows it)."""
    whole = latent_page(run, coder, query, sort, page=1, page_size=1)
    return latent_page(run, coder, query, sort, page=1, page_size=max(whole.total, 1)).table


def latent_page(
    run: OpenRun, coder: str, query: str = "", sort: str = "latent", page: int = 1, page_size: int = PAGE_SIZE
) -> LatentPage:
    """Page ``page`` (1-based), ``page_size`` rows, of the latent table: one row per explained latent of ``coder``,
    with its status, explanation, frequency and each scorer's main metric (the scores of the run's own explainer,
    whose explanation the row prefers; a score of an explanation since replaced or flagged is left out, as
    ``RunDir.current_scores`` says).

    ``query`` keeps the latents one of whose explanations holds its words (a full-text search in the run's database:
    the words as a phrase, the last one a prefix, case-insensitive); ``sort`` is one of ``sort_choices`` (frequency
    and scores sort strongest first). The query and the sort apply to every latent before the page is cut, so page 1
    of a search is its best matches. A page below 1 is the first and one past the last is the last, so "next" on the
    last page stays there. Only the order of the latents is kept (``OpenRun.derived``: until the run's results
    change); a page's rows are read for its latents alone.
    """
    _check_table(run, coder, query, sort)
    order = run.derived(("latent_order", coder, query, sort), lambda: _latent_order(run, coder, query, sort))
    total = len(order)
    pages = max(1, math.ceil(total / page_size))
    shown = min(max(page, 1), pages)
    start = (shown - 1) * page_size
    return LatentPage(_table_rows(run, coder, order[start : start + page_size].tolist()), shown, pages, total)


def _histogram(record: LatentRecord) -> Figure:
    fig = Figure(figsize=(5, 2.6))
    ax = fig.subplots()
    width = record.stats.max / HISTOGRAM_BINS if record.stats.max > 0 else 1.0
    ax.bar(
        [width * (i + 0.5) for i in range(HISTOGRAM_BINS)], record.stats.histogram, width=width * 0.9, color="#ff7a00"
    )
    ax.set_xlabel("activation")
    ax.set_ylabel("tokens")
    ax.set_title(f"latent {record.latent} (BOS left out)", fontsize=9)
    fig.tight_layout()
    return fig


def _stats(record: LatentRecord) -> str:
    s = record.stats
    return (
        f"**{markdown_text(record.coder)} — latent {record.latent}** · status **{markdown_text(record.status)}**  \n"
        f"fires on {s.count:,} tokens (frequency {s.frequency:.3%}) in {s.num_examples:,} examples · "
        f"max {s.max:.4g} · mean {s.mean:.4g}"
    )


def _token_table(run: OpenRun, pairs: list[tuple[int, float]]) -> Table:
    pieces = run.text()([i for i, _ in pairs])
    return Table(TOKEN_HEADERS, [[p, i, v] for p, (i, v) in zip(pieces, pairs, strict=True)])


def _explanations(run: OpenRun, coder: str, latent: int) -> Table:
    with run.dir.reading() as db:
        lines = db.explanations_of(coder, [latent])
    rows = [
        [r["explainer"], r["status"], r["explanation"] or "", r.get("model") or "", r.get("note") or ""] for r in lines
    ]
    return Table(EXPLANATION_HEADERS, rows)


def _scores(run: OpenRun, coder: str, latent: int) -> Table:
    """The latent's score entries: the current ones, then those of an explanation since replaced or flagged,
    marked stale with the text they scored."""
    from publish.dataset import score_entries  # the app is the last stage: it may read how publishing pairs scores

    with run.dir.reading() as db:
        lines = db.scores_of(coder, [latent])
    why = {"replaced": "since replaced", "withdrawn": "the latent has no usable one now"}
    mine = [(r, "") for r, standing in lines if standing == "current"]
    for standing in ("replaced", "withdrawn"):
        for r, s in lines:
            if s == standing:
                scored = "random explanation" if r["baseline"] else "explanation"
                mine.append((r, f"stale: of the {scored} {r['explanation']!r}, {why[standing]}"))
    rows = []
    for note in dict.fromkeys(n for _, n in mine):
        for e in score_entries([r for r, n in mine if n == note]):
            m = e["metrics"]
            rows.append(
                [
                    e["scorer"],
                    e["explainer"],
                    e["metric"],
                    e["value"],
                    e["baseline_value"],
                    m["accuracy"],
                    m["auroc"],
                    m["f1"],
                    m["correlation"],
                    m["n"],
                    m["failed"],
                    note,
                ]
            )
    return Table(SCORE_HEADERS, rows)


def candidates_table(run: OpenRun, coder: str, latent: int) -> Table:
    """Every candidate each searched explanation of ``latent`` considered (``interp explain --search``), as its
    explanation line holds them: explainer, round, source, text, validation score, the judge, status,
    whether it is the one kept, and why a candidate failed or was flagged. No rows when no explanation was searched.

    The kept one is marked by the search's own rule (``explain.search.best``), so two candidates with the same text
    are not both marked.
    """
    rows = []
    with run.dir.reading() as db:
        lines = db.explanations_of(coder, [latent])
    for r in lines:
        if not r.get("candidates"):
            continue
        candidates = [Candidate(**{k: v for k, v in c.items() if k in SAVED_FIELDS}) for c in r["candidates"]]
        chosen = best(candidates) if r.get("status") != "failed" else None
        judge = r.get("judge") or {}
        judged = f"{judge.get('scorer', '')} ({judge.get('metric', '')})" if judge else ""
        for c in candidates:
            rows.append(
                [
                    r["explainer"],
                    c.round,
                    c.source,
                    c.text or "",
                    c.score,
                    judged,
                    c.status,
                    "yes" if c is chosen else "",
                    c.note or "",
                ]
            )
    return Table(CANDIDATE_HEADERS, rows)


def latent_view(run: OpenRun, coder: str, latent: int) -> LatentView:
    """Statistics, histogram, top and quantile examples, logit tokens, explanations and scores of one latent."""
    latent = int(latent)
    num = run.coder(coder).num_latents
    if not 0 <= latent < num:
        raise InterpError(f"Latent {latent} does not exist: {coder} has {num} latents (0-{num - 1}).")
    record = next(run.builder(coder).build(coder, [latent]))
    text = run.text()
    top = record.stats.max
    top_html = examples_html(
        [(f"#{i + 1} · max {ex.max_act:.3g}", text(ex.tokens), ex.acts) for i, ex in enumerate(record.top)],
        top,
        empty=f"Latent {latent} never fires in the cached tokens." if record.status == "dead" else "No examples.",
    )
    quantiles = examples_html(
        [
            (f"quantile {q} · max {ex.max_act:.3g}", text(ex.tokens), ex.acts)
            for ex, q in sorted(zip(record.test, record.test_quantiles, strict=True), key=lambda pair: -pair[1])
        ],
        top,
        empty="No held-out examples (the latent is dead or rare).",
    )
    return LatentView(
        record,
        _stats(record),
        _histogram(record),
        top_html,
        quantiles,
        _token_table(run, record.promoted),
        _token_table(run, record.suppressed),
        _explanations(run, coder, latent),
        _scores(run, coder, latent),
        candidates_table(run, coder, latent),
    )


@torch.inference_mode()
def text_latents(run: OpenRun, coder: str, text: str, latent: int | None = None) -> TextLatents:
    """Run the model on ``text`` and list the latents of ``coder`` that fire on it; shade the text by ``latent``."""
    if len(text) > MAX_TEXT_CHARS:
        raise InterpError(
            f"The text has {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,} ({MAX_TEXT_TOKENS} tokens). "
            "Shorten it."
        )
    lm = run.model().lm
    sparse = run.coder(coder)
    if latent is not None and not 0 <= latent < sparse.num_latents:
        raise InterpError(
            f"Latent {latent} does not exist: {coder} has {sparse.num_latents} latents (0-{sparse.num_latents - 1})."
        )
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise InterpError("Type some text to see which latents fire on it.")
    if len(ids) > MAX_TEXT_TOKENS:
        raise InterpError(f"The text has {len(ids)} tokens; the limit is {MAX_TEXT_TOKENS}. Shorten it.")
    bos = lm.tokenizer.bos_token_id
    lead = [bos] if run.cfg.corpus.add_bos and bos is not None else []  # as the cached windows began
    with run.lock:
        acts = capture_tokens(lm.model, torch.tensor([lead + ids], device=lm.device), [sparse.site])[sparse.site]
        code = sparse.encode(acts[0, len(lead) :].to(sparse.device))
    values, indices = code.acts.float().cpu(), code.indices.cpu()
    best: dict[int, list] = {}
    for position in range(len(ids)):
        for value, index in zip(values[position].tolist(), indices[position].tolist(), strict=True):
            if value > 0:
                entry = best.setdefault(index, [0.0, 0, position])
                entry[1] += 1
                if value > entry[0]:
                    entry[0], entry[2] = value, position
    pieces = run.text()(ids)
    ranked = sorted(best.items(), key=lambda item: -item[1][0])[:TEXT_LATENTS]
    explained: dict[int, str] = {}
    with run.dir.reading() as db:
        for r in db.explanations_of(coder, [k for k, _ in ranked]):
            if r["status"] == "ok":
                explained.setdefault(r["latent"], r["explanation"])
    rows = [[k, v, n, pieces[p], explained.get(k, "")] for k, (v, n, p) in ranked]
    shade = latent if latent is not None else (ranked[0][0] if ranked else None)
    per_token = [0.0] * len(ids)
    if shade is not None:
        match = (indices == int(shade)) & (values > 0)
        per_token = (values * match).sum(-1).tolist()
    caption = f"latent {shade}" if shade is not None else "no latent fires"
    highlight = examples_html([(caption, pieces, per_token)], max(per_token, default=0.0))
    return TextLatents(highlight, Table(TEXT_HEADERS, rows))
