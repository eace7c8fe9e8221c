"""The pipeline over one run directory: every stage that exists, in order, resumable.

Run directory::

    config.json      the RunConfig that produced it (a different config is refused)
    coders/          the default SAE, when the run trained one (sparsify format + train.json)
    cache/           see interp.cache
    explanations.jsonl
                     one line per (coder, latent, explainer), appended as they arrive
    llm_cache.jsonl  LLM responses keyed by (model, prompt, parameters): a re-run costs nothing
    scores.jsonl     one line per (scorer, coder, latent, explainer, baseline): metrics and per-example outcomes
    plots/           score histograms, explanation against the random baseline
    summary.json     coder statistics, the default SAE's quality, explanation counts
"""

import logging
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .atomic import remove_stale_temps, write_json_atomic
from .cache import TOKENS_FILE, build_cache, finalize_stats
from .coders import CoderSpec, SparseCoder, load_coder
from .coders.train import load_train_report, train_default_sae
from .coders.sparsify_coder import load_sparsify
from .config import CACHE_SECTIONS, RunConfig, check_config, read_config_file
from .corpus import corpus_windows
from .errors import InterpError, RunConfigMismatchError
from .explain import EXPLAINERS, EXPLANATION_KEY, TokenText, explain_batch
from .hooks import site_widths
from .jsonl import append_jsonl, latest_rows, read_json, read_jsonl
from .llm import GenerationParams, LLMClient, make_client
from .models import EMBEDDED, LoadedModel, load_model, resolve_hookpoint
from .records import CacheView, LatentRecord, RecordBuilder, logit_lens
from .steer import PromptEffect, latent_effects, load_steer_prompts
from .scoring.base import SCORE_KEY, Scorer, ScoreResult
from .scoring.classify import MODES, DetectionScorer, FuzzingScorer
from .scoring.embedding import EmbeddingScorer, load_embedder
from .scoring.intervention import InterventionScorer
from .scoring.intruder import IntruderScorer
from .scoring.simulation import SimulationScorer
from .scoring.surprisal import SurprisalScorer
from .scoring.results import (
    explainer_rows, firing_frequencies, load_scores, plot_diagnostics, plot_scores, scored_explainers, summarize_scores,
)
from .compare.plots import plot_coder_scores

log = logging.getLogger(__name__)

EXPLANATIONS = "explanations.jsonl"
SCORES = "scores.jsonl"
CLASSIFIERS = {"detection": DetectionScorer, "fuzzing": FuzzingScorer}
LLM_CACHE = "llm_cache.jsonl"
HELDOUT_WINDOWS = 16
"""Windows kept apart from training to measure the default SAE's quality."""


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def prepare_run_dir(run_dir: Path, cfg: RunConfig, *, overwrite: bool = False) -> Path:
    """Create ``run_dir`` with ``config.json``, or check that an existing one matches ``cfg``."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    remove_stale_temps(run_dir)  # what a killed run was writing; its work is redone
    new = cfg.to_dict()
    if path.is_file():
        old = read_config_file(path).to_dict()
        changes = _diff({k: old[k] for k in CACHE_SECTIONS}, {k: new[k] for k in CACHE_SECTIONS})
        if changes:
            raise RunConfigMismatchError(
                f"{run_dir} was cached with a different configuration ({'; '.join(changes)}). "
                "Use another --run-dir, or --overwrite to start it again."
            )
    # Later stages may change their settings; each output line records what produced it.
    write_json_atomic(path, new)
    return run_dir


@dataclass
class Windows:
    """Token windows for the cache, and (for the default SAE) for training and held-out checks."""

    cache: torch.Tensor
    train: torch.Tensor | None = None
    heldout: torch.Tensor | None = None


def make_windows(cfg: RunConfig, lm: LoadedModel, *, train: bool) -> Windows:
    """Cut the corpus once: cache windows first, then training and held-out windows after them."""
    n_cache = cfg.corpus.num_tokens // cfg.corpus.ctx_len
    n_train = cfg.train.train_tokens // cfg.corpus.ctx_len if train else 0
    n_heldout = HELDOUT_WINDOWS if train else 0
    windows = corpus_windows(cfg.corpus, lm.tokenizer, num_windows=n_cache + n_train + n_heldout)
    if not train:
        return Windows(windows[:n_cache])
    if len(windows) < n_cache + n_heldout + cfg.train.train_batch_size:
        log.warning("corpus too small to keep training windows apart from cached ones; training on the cached windows")
        return Windows(windows[:n_cache], windows[:n_cache], windows[:HELDOUT_WINDOWS])
    return Windows(windows[:n_cache], windows[n_cache : len(windows) - n_heldout], windows[len(windows) - n_heldout :])


def default_coder_dir(run_dir: Path, lm: LoadedModel, cfg: RunConfig) -> Path:
    """Where the default SAE of this run lives."""
    return Path(run_dir) / "coders" / resolve_hookpoint(lm.model, cfg.train.train_hookpoint)


def _coder_name(coder: SparseCoder, spec: CoderSpec, taken: set[str]) -> str:
    base = coder.hookpoint if spec.kind not in ("neurons", "topk-neurons") else f"{coder.source}.{spec.kind}"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def resolve_coders(cfg: RunConfig, lm: LoadedModel, run_dir: Path, windows: Windows) -> dict[str, SparseCoder]:
    """Load (or, for 'default', train once) every coder of the run, checked against the model's widths."""
    coders: dict[str, SparseCoder] = {}
    for text in cfg.coders.coders:
        spec = CoderSpec.parse(text)
        if spec.kind == "default":
            out = default_coder_dir(run_dir, lm, cfg)
            if load_train_report(out) is None:
                report = train_default_sae(lm, windows.train, windows.heldout, out, cfg.train)
                log.info("default SAE: held-out FVU %.3f, dead %.1f%%", report["heldout_fvu"], 100 * report["heldout_dead_fraction"])
            coder = load_sparsify(str(out), resolve_hookpoint(lm.model, cfg.train.train_hookpoint))
            coder.source = "default"  # not the absolute path: the run directory may move
        else:
            coder = load_coder(spec, lm.model, neuron_k=cfg.coders.neuron_k)
        coders[_coder_name(coder, spec, set(coders))] = coder.to(lm.device)
    widths = site_widths(lm.model, [c.site for c in coders.values()], lm.device)
    for coder in coders.values():
        coder.check_width(widths[coder.site], lm.name)
    return coders


def load_run_config(run_dir: Path) -> RunConfig:
    """The RunConfig saved in ``run_dir``."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise InterpError(f"{run_dir} is not a run directory (no config.json): run `interp cache --run-dir {run_dir}` first.")
    return read_config_file(path)


def read_summary(run_dir: Path) -> dict:
    """``summary.json`` of ``run_dir``, or {} before the cache has finished; a damaged one is named, not a traceback."""
    path = Path(run_dir) / "summary.json"
    summary = read_json(path, hint="it is rewritten when the run resumes (`interp run`)") if path.is_file() else {}
    return summary if isinstance(summary, dict) else {}


def open_coders(cfg: RunConfig, run_dir: Path | None = None) -> tuple[LoadedModel, dict[str, SparseCoder]]:
    """The subject model and the coders of ``cfg`` as they are, training and caching nothing (for steering and the app)."""
    lm = load_model(cfg.model)
    if "default" in cfg.coders.coders and (run_dir is None or load_train_report(default_coder_dir(run_dir, lm, cfg)) is None):
        raise InterpError("The default SAE is not trained yet: run `interp cache` on this run directory first, or give --coders.")
    return lm, resolve_coders(cfg, lm, Path(run_dir or "."), Windows(cache=None))


def run_cache(cfg: RunConfig, run_dir: Path, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Stage 1: load the model and coders, cache latents, write stats; returns the summary."""
    check_config(cfg)
    from accelerate import PartialState

    state = PartialState()
    run_dir = prepare_run_dir(run_dir, cfg, overwrite=overwrite) if state.is_main_process else Path(run_dir)
    model_cfg = cfg.model
    if state.num_processes > 1 and model_cfg.device_map is None:  # one whole copy per process, on its own device
        model_cfg = replace(model_cfg, device_map=str(state.device))
    lm = load_model(model_cfg)
    train = "default" in cfg.coders.coders
    windows = make_windows(cfg, lm, train=train)
    with state.main_process_first():  # the default SAE is trained once, by the main process
        coders = resolve_coders(cfg, lm, run_dir, windows)
    build_cache(
        lm, coders, windows.cache, run_dir / "cache", cfg.cache,
        process_index=state.process_index, num_processes=state.num_processes, progress=progress,
    )
    state.wait_for_everyone()
    summary = {"coders": {}}
    if state.is_main_process:
        for name, coder in coders.items():
            stats = finalize_stats(run_dir / "cache" / name, coder.num_latents, len(windows.cache), cfg.cache.shard_windows)
            summary["coders"][name] = {**coder.describe(), **stats}
        if train:
            summary["default_sae"] = load_train_report(default_coder_dir(run_dir, lm, cfg))
        write_json_atomic(run_dir / "summary.json", summary)
    return summary


def select_latents(spec: str, count: torch.Tensor, *, min_count: int, seed: int) -> list[int]:
    """Latent indices for ``spec``: all, sample:N (among latents firing at least ``min_count`` times), A-B, or A,B,C."""
    n = len(count)
    try:
        if spec == "all":
            return list(range(n))
        if spec.startswith("sample:"):
            alive = torch.nonzero(count >= min_count).flatten().tolist()
            wanted = int(spec.split(":", 1)[1])
            if wanted < 1:
                raise ValueError(spec)
            k = min(wanted, len(alive))
            return sorted(random.Random(seed).sample(alive, k))
        if "-" in spec:
            a, b = (int(x) for x in spec.split("-", 1))
            if a <= b and not 0 <= a <= b < n:  # checked before it is listed: A-B may name billions
                raise InterpError(f"Latents {a}-{b} do not all exist: this coder has {n} latents (0-{n - 1}).")
            chosen = list(range(a, b + 1))
        else:
            chosen = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise InterpError(f"Cannot read latent selection {spec!r}: use all, sample:N (N >= 1), A-B or A,B,C.") from None
    if not chosen:
        raise InterpError(f"Latent selection {spec!r} selects no latents (a range A-B needs A <= B).")
    bad = [i for i in chosen if not 0 <= i < n]
    if bad:
        raise InterpError(f"Latents {bad[:5]} do not exist: this coder has {n} latents (0-{n - 1}).")
    return chosen


def llm_client(cfg: RunConfig, lm: LoadedModel, cache_path: Path | None) -> LLMClient:
    """The explainer/scorer LLM ``cfg.explain`` names; the subject model itself when it is the same model."""
    e = cfg.explain
    if e.llm == "local" or e.llm.startswith("local:"):
        same = e.llm == "local" and cfg.model.model == EMBEDDED and cfg.model.quantization == "none"
        options = {"batch_size": e.explain_batch, **({"lm": lm} if same else {})}
    else:
        options = {"concurrency": e.concurrency, "api_key_env": e.api_key_env}
    return make_client(e.llm, e.llm_model, cache_path=cache_path, **options)


def _explanations(path: Path, explainer: str) -> list[dict]:
    """The latest line per latent of ``explainer`` in explanations.jsonl (a retried failure is replaced by its retry)."""
    return [r for r in latest_rows(read_jsonl(path), EXPLANATION_KEY) if r["explainer"] == explainer]


def _done(path: Path, explainer: str) -> set[tuple[str, int]]:
    return {(r["coder"], r["latent"]) for r in _explanations(path, explainer) if r.get("status") != "failed"}


def run_explain(cfg: RunConfig, run_dir: Path, *, client: LLMClient | None = None, progress: bool = True) -> dict:
    """Stage 2-3: build records and explain the selected latents, appending to explanations.jsonl.

    Resumable: latents already explained (or found dead or rare) by this explainer are skipped;
    failures are tried again.
    """
    run_dir = Path(run_dir)
    remove_stale_temps(run_dir)
    check_config(cfg)
    if not (run_dir / "cache" / TOKENS_FILE).is_file():
        raise InterpError(f"{run_dir} has no cache yet: run `interp cache --run-dir {run_dir}` first.")
    lm = load_model(cfg.model)
    coders = resolve_coders(cfg, lm, run_dir, Windows(cache=None))
    if client is None and cfg.explain.explainer != "tokens":  # not `client or`: an empty CachedClient is falsy
        client = llm_client(cfg, lm, run_dir / LLM_CACHE)
    text = TokenText(lm.tokenizer)
    params = GenerationParams(max_tokens=cfg.explain.max_new_tokens)
    out_path = run_dir / EXPLANATIONS
    done = _done(out_path, cfg.explain.explainer)
    jobs = []
    for name, coder in coders.items():
        view = CacheView.open(run_dir / "cache", name, bos_token_id=lm.tokenizer.bos_token_id)
        chosen = select_latents(cfg.explain.latents, view.count, min_count=cfg.records.min_examples, seed=cfg.records.records_seed)
        todo = [i for i in chosen if (name, i) not in done]
        jobs.append((name, coder, view, todo))
    bar = tqdm(total=sum(len(j[3]) for j in jobs), unit="latent", desc=f"explaining ({cfg.explain.explainer})", disable=not progress)
    start = time.perf_counter()
    for name, coder, view, todo in jobs:
        decoder = coder.decoder_weight().detach()
        builder = RecordBuilder(view, cfg.records, decoder, logit_lens(lm.model, decoder))
        for i in range(0, len(todo), cfg.explain.explain_batch):
            records = list(builder.build(name, todo[i : i + cfg.explain.explain_batch]))
            effects = _intervention_effects(cfg, lm, coder, records) if cfg.explain.explainer == "intervention" else None
            results = explain_batch(records, cfg.explain.explainer, text, client, params, cfg.explain.max_retries, effects)
            append_jsonl(out_path, [r.to_dict() for r in results])
            bar.update(len(records))
            bar.set_postfix(per_min=f"{60 * bar.n / (time.perf_counter() - start):.1f}")
    bar.close()
    rows = _explanations(out_path, cfg.explain.explainer)
    return {"explanations": dict(Counter(str(r.get("status")) for r in rows)), "explainer": cfg.explain.explainer}


def _intervention_effects(cfg: RunConfig, lm: LoadedModel, coder: SparseCoder, records: list[LatentRecord]) -> list[list[PromptEffect] | None]:
    """What steering each explainable latent (at the calibrated strength) does to the next token after the steering prompts."""
    v = cfg.intervene
    prompts = load_steer_prompts(v.steer_prompts, v.num_steer_prompts)
    return [
        latent_effects(lm, coder, r.latent, prompts, v.target_kl, v.steer_top_tokens)[1] if r.status == "ok" else None
        for r in records
    ]


def needs_llm(scorers: list[str]) -> bool:
    """Whether any of these scorers asks an LLM (the others need only the subject model or an embedder)."""
    return any(name in CLASSIFIERS or name in ("intruder", "simulation") for name in scorers)


def make_scorers(cfg: RunConfig, client: LLMClient | None, lm: LoadedModel, coders: dict[str, SparseCoder] | None = None) -> list[Scorer]:
    """The scorers ``cfg.score`` names, sharing one LLM client; surprisal and intervention read the subject model (intervention steers ``coders``)."""
    s = cfg.score
    tokenizer = lm.tokenizer
    scorers: list[Scorer] = []
    for name in s.scorers:
        if name == "embedding":
            scorers.append(EmbeddingScorer(tokenizer, load_embedder(s.embedder)))
        elif name == "intruder":
            scorers.append(IntruderScorer(client, tokenizer, mode=s.score_mode, group_size=s.texts_per_prompt))
        elif name == "surprisal":
            scorers.append(SurprisalScorer(lm, batch_size=s.texts_per_prompt * 4))
        elif name == "intervention":
            v = cfg.intervene
            prompts = load_steer_prompts(v.steer_prompts, v.num_steer_prompts)
            scorers.append(InterventionScorer(lm, coders or {}, prompts, target_kl=v.target_kl, max_new_tokens=v.steer_new_tokens,
                                              batch_size=s.texts_per_prompt * 4))
        elif name == "simulation":
            scorers.append(SimulationScorer(client, tokenizer, mode=s.score_mode))
        elif name in CLASSIFIERS:
            if s.score_mode not in MODES:
                raise InterpError(f"Unknown --score-mode {s.score_mode!r}: use {' or '.join(MODES)}.")
            scorers.append(CLASSIFIERS[name](client, tokenizer, mode=s.score_mode, batch_size=s.texts_per_prompt))
        else:
            raise InterpError(f"Unknown scorer {name!r}: use embedding, surprisal, intervention, intruder, simulation, {', '.join(CLASSIFIERS)}.")
    return scorers


def _baseline_explanations(rows: list[dict], seed: int) -> dict[tuple[str, int], str]:
    """Each latent's random explanation: another latent's, by a seeded derangement."""
    if len(rows) < 2:
        return {}
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    shifted = order[1:] + order[:1]
    return {(rows[i]["coder"], rows[i]["latent"]): rows[j]["explanation"] for i, j in zip(order, shifted)}


def run_score(cfg: RunConfig, run_dir: Path, *, client: LLMClient | None = None, progress: bool = True) -> dict:
    """Stage 4: score the explanations of ``cfg.explain.explainer`` (and a random baseline), append to scores.jsonl.

    Resumable: (scorer, coder, latent, explainer, baseline) already scored are skipped, except
    those with failed examples (an LLM request that failed): they are scored again, and the new
    line, if it differs, replaces the old one. Replies already cached are not asked again.
    """
    run_dir = Path(run_dir)
    remove_stale_temps(run_dir)
    check_config(cfg)
    explainer = cfg.explain.explainer
    explained = [r for r in _explanations(run_dir / EXPLANATIONS, explainer) if r.get("status") == "ok" and isinstance(r.get("explanation"), str)]
    if not explained:
        raise InterpError(f"No usable {explainer!r} explanations in {run_dir}: run `interp explain` first.")
    lm = load_model(cfg.model)
    coders = resolve_coders(cfg, lm, run_dir, Windows(cache=None))
    if client is None and needs_llm(cfg.score.scorers):
        client = llm_client(cfg, lm, run_dir / LLM_CACHE)
    scorers = make_scorers(cfg, client, lm, coders)
    baseline = _baseline_explanations(explained, cfg.records.records_seed) if cfg.score.baseline else {}
    out_path = run_dir / SCORES
    previous = {tuple(r[k] for k in SCORE_KEY): r for r in latest_rows(read_jsonl(out_path), SCORE_KEY)}
    done = {key for key, r in previous.items() if not _has_failures(r)}
    bar = tqdm(total=len(explained) * len(scorers), unit="score", desc="scoring", disable=not progress)
    for name, coder in coders.items():
        rows = [r for r in explained if r["coder"] == name]
        if not rows:
            continue
        view = CacheView.open(run_dir / "cache", name, bos_token_id=lm.tokenizer.bos_token_id)
        records = {r.latent: r for r in RecordBuilder(view, cfg.records).build(name, [r["latent"] for r in rows])}
        for scorer in scorers:
            jobs = []
            for r in rows:
                for is_baseline, text in ((False, r["explanation"]), (True, baseline.get((name, r["latent"])))):
                    if text is not None and (scorer.name, name, r["latent"], explainer, is_baseline) not in done:
                        jobs.append((r["latent"], is_baseline, text))
            for i in range(0, len(jobs), cfg.explain.explain_batch):
                chunk = jobs[i : i + cfg.explain.explain_batch]
                results = scorer.score([(records[latent], text) for latent, _, text in chunk])
                new = [
                    ScoreResult(scorer.name, name, latent, explainer, is_baseline, text, metrics, outcomes).to_dict()
                    for (latent, is_baseline, text), (metrics, outcomes) in zip(chunk, results)
                ]
                append_jsonl(out_path, [r for r in new if previous.get(tuple(r[k] for k in SCORE_KEY)) != r])
                bar.update(sum(not b for _, b, _ in chunk))
    bar.close()
    return summarize_run(run_dir, explainer)


def _has_failures(row: dict) -> bool:
    """Whether a score line has examples whose LLM reply failed or could not be read."""
    metrics = row.get("metrics")
    return isinstance(metrics, dict) and bool(metrics.get("failed"))


def plots_dir(run_dir: Path, explainer: str, own: str) -> Path:
    """Where the plots of ``explainer``'s scores go: ``plots/`` for the run's ``own`` explainer, ``plots/<explainer>/`` for
    another, so that summarising one explainer never overwrites (or leaves stale among its own) another's plots."""
    if explainer not in EXPLAINERS:  # the name becomes a folder: only a known one may
        raise InterpError(f"Unknown explainer {explainer!r}: use one of {', '.join(EXPLAINERS)}.")
    plots = Path(run_dir) / "plots"
    return plots if explainer == own else plots / explainer


def summarize_run(run_dir: Path, explainer: str | None = None) -> dict:
    """The score summary of one explainer of ``run_dir`` (its plots rewritten), without loading any model.

    ``explainer`` defaults to the run's own (its config.json's); the summary names it. Explainers
    are never pooled: their explanations differ, and so do their scores.
    """
    own = load_run_config(run_dir).explain.explainer
    explainer = explainer or own
    rows = load_scores(run_dir)
    mine = explainer_rows(rows, explainer)
    summary = summarize_scores(mine)
    if not summary:
        if rows:
            raise InterpError(f"No scores of the {explainer!r} explainer in {run_dir}; it has scores of "
                              f"{', '.join(scored_explainers(rows))}: pick one with --explainer.")
        raise InterpError(f"No scores in {run_dir}: run `interp score --run-dir {run_dir}` first.")
    plots = plots_dir(run_dir, explainer, own)
    plot_scores(summary, plots)
    plot_diagnostics(mine, firing_frequencies(run_dir, set(summary)), plots)
    plot_coder_scores(summary, plots)
    return {"scores": summary, "explainer": explainer}


def run(cfg: RunConfig, run_dir: Path, *, overwrite: bool = False, progress: bool = True) -> dict:
    """The main job: every stage that exists, in order, into ``run_dir``."""
    summary = run_cache(cfg, run_dir, overwrite=overwrite, progress=progress)
    summary.update(run_explain(cfg, run_dir, progress=progress))
    summary.update(run_score(cfg, run_dir, progress=progress))
    write_json_atomic(Path(run_dir) / "summary.json", summary)
    return summary
