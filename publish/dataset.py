"""A run directory as a Hugging Face dataset: one row per explained latent, one config per coder.

Each row holds what a reader needs without re-running anything: which model, hookpoint and
coder, the latent's explanations (with explainer and LLM), every scorer's metrics beside the
random-explanation baseline, firing statistics, the top examples (tokens and activations) and
the tokens the latent promotes and suppresses, and, when a search chose the explanation, every
candidate it considered with its validation score. ``FEATURES`` is the schema; ``SCHEMA_VERSION``
changes whenever a column is added, removed or changes meaning. The README documents it.

On disk (and on the Hub) each config is one Parquet file, ``data/<coder>/train-00000-of-00001.parquet``.
"""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, Features, List, Value
from tqdm.auto import tqdm

from interp.atomic import write_atomic
from interp.config import ModelConfig, RunConfig
from interp.errors import InterpError
from interp.explain import TokenText
from interp.explain.search import Candidate, best
from interp.models import EMBEDDED, LoadedModel, load_model
from interp.records import LatentRecord
from interp.rundir import RunDir
from interp.scoring.results import main_metric, summarize_columns
from interp.subject import open_coders
from interp.views import LEAKING_BEFORE, made_with_leaking_prompts

SCHEMA_VERSION = "interp-explanations/2"
"""Name and major version of the row schema below (2 added ``search`` and ``candidates``)."""

EMBEDDED_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hub id of the embedded subject model (shipped as a Q4_1 GGUF)."""

DATA_DIR = "data"
SPLIT = "train"
RECORD_CHUNK = 1024
"""Latents whose records are built per pass over the shards."""

INT_METRICS = ("n", "positives", "negatives", "failed", "groups")
FLOAT_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "f1",
    "auroc",
    "chance",
    "correlation",
    "spearman",
)
"""Metrics with a column of their own; any other metric a scorer reports goes to ``other_metrics`` (JSON)."""

_TOKEN = {"token": Value("string"), "token_id": Value("int64"), "logit": Value("float32")}
_METRICS = {**{k: Value("int64") for k in INT_METRICS}, **{k: Value("float64") for k in FLOAT_METRICS}}
_SEARCH = {
    "search": Value("string"),
    "judge": Value("string"),
    "metric": Value("string"),
    "candidates": Value("int64"),
    "rounds": Value("int64"),
    "temperature": Value("float64"),
    "tokens_candidate": Value("bool"),
    "validation_score": Value("float64"),
    "validation_examples": Value("int64"),
}
_CANDIDATE = {
    "text": Value("string"),
    "score": Value("float64"),
    "round": Value("int64"),
    "status": Value("string"),
    "source": Value("string"),
    "chosen": Value("bool"),
}

FEATURES = Features(
    {
        "schema_version": Value("string"),
        "model": Value("string"),
        "hookpoint": Value("string"),
        "coder": Value("string"),
        "coder_kind": Value("string"),
        "coder_source": Value("string"),
        "latent": Value("int64"),
        "status": Value("string"),
        "explanation": Value("string"),
        "explainer": Value("string"),
        "explanations": List(
            {
                "explainer": Value("string"),
                "explanation": Value("string"),
                "status": Value("string"),
                "llm": Value("string"),
                "note": Value("string"),
            }
        ),
        "scores": List(
            {
                "scorer": Value("string"),
                "explainer": Value("string"),
                "metric": Value("string"),
                "value": Value("float64"),
                "baseline_value": Value("float64"),
                "baseline_explanation": Value("string"),
                "metrics": _METRICS,
                "other_metrics": Value("string"),
            }
        ),
        "count": Value("int64"),
        "frequency": Value("float64"),
        "max_activation": Value("float32"),
        "mean_activation": Value("float32"),
        "num_examples": Value("int64"),
        "top_examples": List(
            {
                "index": Value("int64"),
                "tokens": List(Value("string")),
                "token_ids": List(Value("int32")),
                "activations": List(Value("float32")),
            }
        ),
        "promoted_tokens": List(_TOKEN),
        "suppressed_tokens": List(_TOKEN),
        "search": _SEARCH,
        "candidates": List(_CANDIDATE),
    }
)
"""The row schema of every config (see the README's "Publishing" section)."""


def without_record() -> dict:
    """The record columns of a row read from elsewhere (EleutherAI's layout, delphi's results), which hold no cache:
    no statistics, no examples, no promoted tokens."""
    return {
        "count": None,
        "frequency": None,
        "max_activation": None,
        "mean_activation": None,
        "num_examples": None,
        "top_examples": [],
        "promoted_tokens": [],
        "suppressed_tokens": [],
        **without_search(),
    }


def without_search() -> dict:
    """The search columns of a row whose explanation no search chose: null settings, no candidates (the column is
    there, empty, so datasets of searched and unsearched runs concatenate)."""
    return {"search": None, "candidates": []}


def search_columns(line: dict | None) -> dict:
    """The ``search`` and ``candidates`` columns of an explanation line of ``explanations.jsonl``.

    The chosen candidate is the one the search kept (``interp.explain.search.best``, the rule that chose it), so a
    reader sees which text won and by how much on the validation split.
    """
    if line is None or not line.get("search"):
        return without_search()
    settings, judge, found = line["search"], line.get("judge") or {}, line.get("candidates") or []
    candidates = [
        Candidate(c.get("text"), c["status"], c["round"], source=c.get("source", "explainer"), score=c.get("score"))
        for c in found
    ]
    kept = best(candidates)
    return {
        "search": {
            "search": settings["search"],
            "judge": settings["judge"],
            "metric": judge.get("metric"),
            "candidates": settings["candidates"],
            "rounds": settings["rounds"],
            "temperature": settings["temperature"],
            "tokens_candidate": settings["tokens_candidate"],
            "validation_score": judge.get("validation_score"),
            "validation_examples": judge.get("validation_examples"),
        },
        "candidates": [
            {
                "text": c.text,
                "score": c.score,
                "round": c.round,
                "status": c.status,
                "source": c.source,
                "chosen": c is kept,
            }
            for c in candidates
        ],
    }


class PublishError(InterpError):
    """A run directory that cannot be published, or a Hub that refuses it."""


class RunData(NamedTuple):
    """What publishing reads of a run directory besides its rows, each a count or a summary the database answers
    (``read_run``): nothing here grows with the latents. The rows themselves are read a chunk of latents at a time
    (``dataset_rows``)."""

    run: RunDir
    config: RunConfig
    coders: dict[str, dict]
    """Coder name -> its ``cache/<coder>/coder.json``, for the coders that have explanations."""
    stats: dict[str, dict]
    """Coder name -> its ``cache/<coder>/stats.json`` (tokens, mean L0, dead fraction)."""
    summary: dict
    """``summary.json`` (the default SAE's held-out quality, when the run trained one), or {}."""
    left_out: dict[str, dict[str, int]]
    """Scorer -> score lines left out as of replaced (or since flagged) explanations, over every explainer."""
    rows: dict[str, int]
    """Coder name -> rows of its config: latents with an explanation line, whatever its status."""
    explainers: dict[str, dict[str, int]]
    """Explainer -> status -> explanation lines."""
    llms: dict[str, list[str]]
    """Explainer -> the LLMs its explanations name."""
    leaked: dict[str, int]
    """Explainer -> explanations made from what their scorers score (``views.made_with_leaking_prompts``)."""
    searches: dict[tuple[str, str], int]
    """(explainer, search settings as sorted JSON) -> explanations that search chose."""
    scores: dict[str, dict]
    """Explainer -> its score summary (``scoring.results.summarize_columns``) of the current explanations' lines: an
    explanation's row never shows another's score."""


def read_run(run_dir: str | Path) -> RunData:
    """Read a run directory's config, coder descriptions, and the counts and summaries of its results."""
    run = RunDir(run_dir)
    config = run.read_config()
    with run.reading() as db:
        rows = db.latent_counts()
        if not rows:
            raise PublishError(f"{run.path} has no explanations to publish: run `interp explain {run.path}` first.")
        explainers = db.status_counts()
        leaked = {e: sum(map(made_with_leaking_prompts, db.count_leaking(e, LEAKING_BEFORE))) for e in explainers}
        scores, left_out = {}, {}
        for explainer in db.scored_explainers():
            summary, left = summarize_columns(db.current_metrics(explainer))
            if summary:
                scores[explainer] = summary
            for scorer, n in left.items():
                counts = left_out.setdefault(scorer, {"replaced": 0, "withdrawn": 0})
                counts["replaced"] += n["replaced"]
                counts["withdrawn"] += n["withdrawn"]
        llms, searches = db.explainer_models(), db.searches()
    coders = {name: run.coder_description(name) for name in rows}
    stats = {name: run.cache_stats(name) for name in rows}
    return RunData(
        run,
        config,
        coders,
        stats,
        run.summary(),
        dict(sorted(left_out.items())),
        rows,
        explainers,
        llms,
        leaked,
        searches,
        scores,
    )


def model_id(cfg: ModelConfig) -> str:
    """The subject model as others can find it: the Hub id of the embedded model, else what the run was given."""
    return EMBEDDED_ID if cfg.model == EMBEDDED else cfg.model


def _metric_columns(metrics: dict) -> tuple[dict, str]:
    typed = {k: None if metrics.get(k) is None else int(metrics[k]) for k in INT_METRICS}
    typed.update({k: None if metrics.get(k) is None else float(metrics[k]) for k in FLOAT_METRICS})
    other = {k: v for k, v in metrics.items() if k not in typed}
    return typed, json.dumps(other, sort_keys=True)


def score_entries(rows: list[dict]) -> list[dict]:
    """One entry per (scorer, explainer) of one latent: its metrics beside the random baseline's."""
    pairs: dict[tuple[str, str], dict[bool, dict]] = {}
    for r in rows:
        pairs.setdefault((r["scorer"], r["explainer"]), {})[r["baseline"]] = r
    out = []
    for (scorer, explainer), pair in sorted(pairs.items()):
        metric = main_metric(scorer)
        true, base = pair.get(False), pair.get(True)
        metrics, other = _metric_columns(true["metrics"] if true else {})
        out.append(
            {
                "scorer": scorer,
                "explainer": explainer,
                "metric": metric,
                "value": true["metrics"].get(metric) if true else None,
                "baseline_value": base["metrics"].get(metric) if base else None,
                "baseline_explanation": base["explanation"] if base else None,
                "metrics": metrics,
                "other_metrics": other,
            }
        )
    return out


def _tokens(pairs: list[tuple[int, float]], text: TokenText) -> list[dict]:
    pieces = text([i for i, _ in pairs])
    return [{"token": p, "token_id": i, "logit": v} for p, (i, v) in zip(pieces, pairs, strict=True)]


def latent_row(
    record: LatentRecord,
    coder: dict,
    model: str,
    explanations: list[dict],
    scores: list[dict],
    primary: str,
    text: TokenText,
) -> dict:
    """The dataset row of one latent from its record, its explanation lines and its score lines."""
    chosen = next((r for r in explanations if r["explainer"] == primary and r["status"] == "ok"), None)
    return {
        "schema_version": SCHEMA_VERSION,
        "model": model,
        "hookpoint": coder["hookpoint"],
        "coder": record.coder,
        "coder_kind": coder["kind"],
        "coder_source": coder["source"],
        "latent": record.latent,
        "status": record.status,
        "explanation": chosen["explanation"] if chosen else None,
        "explainer": primary if chosen else None,
        "explanations": [
            {
                "explainer": r["explainer"],
                "explanation": r["explanation"],
                "status": r["status"],
                "llm": r.get("model"),
                "note": r.get("note"),
            }
            for r in sorted(explanations, key=lambda r: r["explainer"])
        ],
        "scores": score_entries(scores),
        "count": record.stats.count,
        "frequency": record.stats.frequency,
        "max_activation": record.stats.max,
        "mean_activation": record.stats.mean,
        "num_examples": record.stats.num_examples,
        "top_examples": [
            {"index": ex.index, "tokens": text(ex.tokens), "token_ids": ex.tokens, "activations": ex.acts}
            for ex in record.top
        ],
        "promoted_tokens": _tokens(record.promoted, text),
        "suppressed_tokens": _tokens(record.suppressed, text),
        **search_columns(next((r for r in explanations if r["explainer"] == primary), None)),
    }


def rows_per_config(run: RunData) -> dict[str, int]:
    """Config (coder) name -> rows it has: one per latent with an explanation line, whatever its status."""
    return dict(run.rows)


def _group(rows: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(r["latent"], []).append(r)
    return out


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class _Rows(NamedTuple):
    """What building a run's rows needs loaded once: the model's text, and each coder."""

    lm: LoadedModel
    loaded: dict
    text: TokenText


def _open(run: RunData, lm: LoadedModel | None) -> _Rows:
    cfg = run.config
    lm = lm or load_model(cfg.model)
    loaded = open_coders(cfg, lm, run.run)
    missing = sorted(set(run.coders) - set(loaded))
    if missing:
        raise PublishError(f"Coders {missing} have explanations but are not in {run.run.config_file}.")
    return _Rows(lm, loaded, TokenText(lm.tokenizer))


def dataset_rows(
    run: RunData, name: str, opened: _Rows, *, limit: int | None = None, progress: bool = True
) -> Iterator[list[dict]]:
    """The rows of coder ``name``'s config in latent order, a chunk of ``RECORD_CHUNK`` latents at a time: each chunk
    reads its latents' explanation and score lines alone, so a million latents never sit in memory."""
    cfg, info, model = run.config, run.coders[name], model_id(run.config.model)
    builder = run.run.record_builder(name, cfg, opened.lm, opened.loaded[name])
    with run.run.reading() as db:
        latents = db.explained_latents(name).tolist()[:limit]
        bar = tqdm(total=len(latents), desc=f"dataset rows ({name})", unit="latent", disable=not progress)
        with bar:
            for chunk in _chunks(latents, RECORD_CHUNK):
                explanations = _group(db.explanations_of(name, chunk))
                scores = _group(
                    [r for r, standing in db.scores_of(name, chunk, examples=False) if standing == "current"]
                )
                rows = [
                    latent_row(
                        record,
                        info,
                        model,
                        explanations[record.latent],
                        scores.get(record.latent, []),
                        cfg.explain.explainer,
                        opened.text,
                    )
                    for record in builder.build(name, chunk, top_only=True)  # a row holds no sampled split
                ]
                bar.update(len(chunk))
                yield rows


def build_dataset(
    run: RunData | str | Path, *, lm: LoadedModel | None = None, limit: int | None = None, progress: bool = True
) -> dict[str, Dataset]:
    """Config (coder) name -> a ``Dataset`` with one row per explained latent, in latent order, in memory: for a
    preview (``limit`` keeps the first latents of each coder) and for reading; ``write_dataset`` streams a whole run
    to Parquet instead.

    Loads the subject model (for the tokenizer and the unembedding that gives promoted tokens)
    unless ``lm`` is given.

    >>> tables = build_dataset("runs/demo", limit=5)
    >>> tables["model.layers.6"][0]["explanation"]
    """
    run = run if isinstance(run, RunData) else read_run(run)
    opened = _open(run, lm)
    tables = {}
    for name in run.coders:
        rows = [row for chunk in dataset_rows(run, name, opened, limit=limit, progress=progress) for row in chunk]
        # straight to Arrow in the features' schema: the same table as Dataset.from_list, a third of its time
        tables[name] = Dataset(pa.Table.from_pylist(rows, schema=FEATURES.arrow_schema))
    return tables


def write_dataset(
    run: RunData, out_dir: str | Path, *, lm: LoadedModel | None = None, progress: bool = True
) -> tuple[list[str], dict[str, int]]:
    """Write each config as Parquet under ``out_dir``, its rows streamed a chunk of latents at a time (each file
    replaced whole once written: ``write_atomic``); the paths written (relative) and the rows of each config.

    Config folders under ``data/`` that the run no longer has are removed, so the folder holds exactly this dataset.
    """
    out_dir = Path(out_dir)
    opened = _open(run, lm)
    written, counts = [], {}
    for name in run.coders:
        rel = data_file(name)
        counts[name] = 0

        def write(path: Path, name: str = name) -> None:
            with pq.ParquetWriter(str(path), FEATURES.arrow_schema) as writer:
                for rows in dataset_rows(run, name, opened, progress=progress):
                    writer.write_table(pa.Table.from_pylist(rows, schema=FEATURES.arrow_schema))
                    counts[name] += len(rows)

        write_atomic(out_dir / rel, write)
        written.append(rel)
    _remove_stale_configs(out_dir, set(run.coders))
    return written, counts


def data_file(config: str) -> str:
    """Where a config's rows live inside the dataset folder (and the Hub repo)."""
    return f"{DATA_DIR}/{config}/{SPLIT}-00000-of-00001.parquet"


def _remove_stale_configs(out_dir: Path, keep: set[str]) -> None:
    """Remove the config folders under ``out_dir/data`` not in ``keep``."""
    folder = out_dir / DATA_DIR
    for stale in [p for p in folder.iterdir() if p.name not in keep] if folder.is_dir() else []:
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink()
