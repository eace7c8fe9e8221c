"""The pipeline's stages over one run directory (``interp.rundir``), in order, each resumable.

``run_cache`` makes the run; ``run_explain``, ``run_score`` and ``summarize_run`` read everything
that makes it (model, corpus, coders, record settings) from its config.json and take only their
own settings. ``run`` is every stage, with the subject model and the coders loaded once.
"""

import logging
import time
from collections import Counter
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import NamedTuple

from tqdm.auto import tqdm

from .cache import build_cache, finalize_stats
from .cache_space import check_cache_space
from .coders import SparseCoder
from .coders.train import load_train_report, train_default_sae
from .config import RunConfig, check_config
from .corpus import split_windows
from .errors import InterpError, StageFailedError
from .explain import TokenText, explain_batch, note_other_models
from .explain.search import Search, SearchSettings, note_other_searches
from .llm import CachedClient, GenerationParams, LLMClient, run_client, runs_locally
from .models import LoadedModel, load_model, resolve_hookpoint
from .processes import everyone_done, launch_state, on_own_device, share
from .records import select_latents
from .results.db import ResultsDB
from .rundir import SCORE_KEY, RunDir
from .scoring.base import ScoreResult
from .scoring.plots import plot_coder_scores, plot_diagnostics, plot_scores, score_plot
from .scoring.registry import make_scorers, needs_llm, scorer_settings
from .scoring.results import all_failed, baseline_explanations, columns_table, has_failures, summarize_columns
from .stage_guard import writing_stage
from .steer_effects import PromptEffect, explainer_steer_prompts, latent_effects
from .subject import Subject, open_coders, open_subject
from .views import (
    LEAKING_BEFORE,
    ExplainerView,
    explainer_view,
    made_with_leaking_prompts,
    scored_view,
    validation_view,
)

log = logging.getLogger(__name__)


class Cached(NamedTuple):
    """What the cache stage leaves: the run's summary so far, and the model and coders it opened."""

    summary: dict
    subject: Subject


@writing_stage("cache")
def run_cache(
    cfg: RunConfig, run_dir: Path, *, overwrite: bool = False, progress: bool = True, force: bool = False
) -> Cached:
    """Stage 1: make the run (or resume it): load the model and coders, train the default SAE once, cache latents.

    A disk that clearly cannot hold the cache is refused before caching starts, unless ``force``.

    config.json is written only once the model, the corpus and every coder given by spec have
    loaded, so a first command with a mistake in it leaves nothing that blocks the corrected one.
    """
    check_config(cfg)
    state = launch_state()  # before anything else makes accelerate's state: it is made once
    run = RunDir(run_dir)
    if state.is_main_process:
        run.start(overwrite=overwrite)
        if run.is_run():
            run.check(cfg)
    model_cfg = cfg.model
    if state.num_processes > 1 and model_cfg.device_map is None:  # one whole copy per process, on its own device
        model_cfg = replace(model_cfg, device_map=str(state.device))
    lm = load_model(model_cfg)
    train = "default" in cfg.coders.coders
    windows = split_windows(cfg.corpus, lm.tokenizer, cfg.train if train else None)

    def train_default(folder: Path) -> None:
        run.write_config(cfg)  # every input has loaded: a killed training resumes under this config
        report = train_default_sae(lm, windows.train, windows.heldout, folder, cfg.train)
        log.info(
            "default SAE: held-out FVU %.3f, %.1f%% of latents never fired on the held-out tokens",
            report["heldout_fvu"],
            100 * report["heldout_dead_fraction"],
        )

    with state.main_process_first():  # the default SAE is trained once, by the main process
        coders = open_coders(cfg, lm, run, train_default=train_default if state.is_main_process else None)
    if state.is_main_process:
        run.write_config(cfg)
    if not force:
        k = {name: coder.describe().get("k") for name, coder in coders.items()}
        check_cache_space(run.cache_dir, k, len(windows.cache), cfg.corpus.ctx_len, cfg.cache.shard_windows)
    build_cache(
        lm,
        coders,
        windows.cache,
        run.cache_dir,
        cfg.cache,
        process_index=state.process_index,
        num_processes=state.num_processes,
        progress=progress,
    )
    state.wait_for_everyone()
    summary = {"coders": {}}
    if state.is_main_process:
        for name, coder in coders.items():
            stats = finalize_stats(
                run.coder_cache(name), coder.num_latents, len(windows.cache), cfg.cache.shard_windows
            )
            summary["coders"][name] = {**coder.describe(), **stats}
        if train:
            summary["default_sae"] = load_train_report(
                run.default_sae_dir(resolve_hookpoint(lm.model, cfg.train.train_hookpoint))
            )
        run.write_summary(summary)
    return Cached(summary, Subject(lm, coders))


TOKENS_BATCH = 256
"""Latents the tokens explainer (no LLM) explains per appended batch of explanations.jsonl lines."""


def latents_per_batch(cfg: RunConfig) -> int:
    """Latents explained (or scored) together: ``explain_batch`` for a local LLM; with a server, enough that
    ``concurrency`` requests stay in flight across latents, not only within one."""
    e = cfg.explain
    return e.explain_batch if runs_locally(e.llm) else max(e.explain_batch, e.concurrency)


def _open_run(cfg: RunConfig, run_dir: Path) -> RunDir:
    """The existing run at ``run_dir``, once ``cfg`` is known to agree with it and to be in range."""
    run = RunDir(run_dir)
    run.start()
    check_config(cfg)
    run.check(cfg)
    return run


@writing_stage("explain")
def run_explain(
    cfg: RunConfig,
    run_dir: Path,
    *,
    subject: Subject | None = None,
    client: LLMClient | None = None,
    coders: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Stage 2-3: build records and explain the selected latents of ``coders`` (default: all), appending to the run.

    ``cfg`` must agree with the run on what makes it; its explain and intervene settings are
    this stage's. Resumable: latents already explained (or found dead or rare) by this
    explainer are skipped; failures are tried again.
    """
    run = _open_run(cfg, run_dir)
    if not run.has_cache():
        raise InterpError(f"{run.path} has no cache yet: run `interp cache {run.path}` first.")
    subject = subject or open_subject(on_own_device(cfg), run)
    lm = subject.lm
    explainer = cfg.explain.explainer
    db = client.db if isinstance(client, CachedClient) else stage_results(run)
    if client is None and explainer != "tokens":  # not `client or`: an empty CachedClient is falsy
        client = run_client(on_own_device(cfg), lm, db)
    text = TokenText(lm.tokenizer)
    params = GenerationParams(max_tokens=cfg.explain.max_new_tokens)
    model = client.model if client is not None else None
    done = {(r["coder"], r["latent"]): r for r in run.explanations(explainer) if r.get("status") != "failed"}
    jobs, kept = [], []
    for name, coder in subject.only(coders).items():
        r = cfg.records
        chosen = share(  # this process's share, under accelerate launch
            select_latents(cfg.explain.latents, run.latent_counts(name), min_count=r.min_examples, seed=r.records_seed)
        )
        kept += [done[(name, i)] for i in chosen if (name, i) in done]
        jobs.append((name, coder, [i for i in chosen if cfg.explain.redo or (name, i) not in done]))
    note_other_models(explainer, model, kept, cfg.explain.redo)
    search = _search(cfg, subject, client, text, params) if cfg.explain.search != "none" else None
    v = cfg.intervene  # the explainer's own prompts, never the scorer's; a pool too small is refused before any work
    steering = explainer == "intervention"
    steer_prompts = explainer_steer_prompts(v.steer_prompts, v.num_steer_prompts) if steering else []
    note_other_searches(search.settings if search else None, kept, cfg.explain.redo)
    bar = tqdm(
        total=sum(len(todo) for *_, todo in jobs),
        unit="latent",
        desc=f"explaining ({explainer})",
        disable=not progress,
    )
    start = time.perf_counter()
    now: Counter = Counter()
    failure: str | None = None
    # The tokens explainer costs nothing per latent, so its batch is only how often lines are synced to disk: in
    # batches of 8, the appends' fsyncs were 5% of the stage at 1,000 latents; a kill loses seconds of work.
    step = TOKENS_BATCH if explainer == "tokens" and search is None else latents_per_batch(cfg)
    for name, coder, todo in jobs:
        # one ranged pass over the cache; the explainer and the judge are each handed their own view of a record
        stream = run.record_builder(name, cfg, lm, coder).build(name, todo, contrast=explainer == "contrastive")
        while records := list(islice(stream, step)):
            seen = [explainer_view(r) for r in records]
            effects = _intervention_effects(cfg, lm, coder, seen, steer_prompts) if steer_prompts else None
            if search:
                results = search.explain(seen, [validation_view(r) for r in records], effects)
            else:
                results = explain_batch(seen, explainer, text, client, params, cfg.explain.max_retries, effects)
            db.add_explanations([r.to_dict() for r in results])
            now.update(r.status for r in results)
            failure = failure or next((r.note for r in results if r.status == "failed"), None)
            bar.update(len(records))
            bar.set_postfix(per_min=f"{60 * bar.n / (time.perf_counter() - start):.1f}")
    bar.close()
    stage_done(run, db)
    asked = now["ok"] + now["flagged"] + now["failed"]
    if asked and now["failed"] == asked:
        raise StageFailedError(
            f"All {asked} latents sent to the LLM failed ({failure}); they are recorded as failed, and the same "
            "command retries them once the LLM answers."
        )
    return {
        "explanations": run.status_counts().get(explainer, {}),
        "explainer": explainer,
        "failed_now": now["failed"],
    }


def stage_results(run: RunDir) -> ResultsDB:
    """The results database this process writes in a stage: the run's own, alone (the databases of a launch killed
    partway merged into it first); in a launch of several processes
    (machines may share the run over a network filesystem), one of its own that also reads the run's as it is now,
    which nobody writes until the stage ends (the main process first merges what a killed launch left)."""
    state = launch_state()
    if state.num_processes == 1:
        run.merge_process_results()  # what a killed launch left, before this process reads or writes
        return run.results_db()
    if state.is_main_process:
        run.merge_process_results()
    everyone_done()
    return run.process_results_db(state.process_index)


def stage_done(run: RunDir, db: ResultsDB) -> None:
    """The end of a stage in every process: each closes the results database it wrote, so the file on disk is whole
    and still when the command returns (SQLite folds its journal into it as the last connection closes); in a launch,
    the main process then merges the processes' databases into the run's."""
    state = launch_state()
    db.close()  # reopened if the next stage asks again
    everyone_done()
    if state.num_processes > 1:
        if state.is_main_process:
            run.merge_process_results()
        everyone_done()  # nobody reopens its database (nor reads the run's) while the merge writes


def _search(cfg: RunConfig, subject: Subject, client: LLMClient | None, text: TokenText, params) -> Search:
    """The explanation search ``cfg.explain`` asks for, its judge made as the scorer of that name is."""
    e = cfg.explain
    if e.explainer == "tokens" or client is None:
        raise InterpError("--search needs an LLM explainer: the tokens explainer has one explanation per latent.")
    if cfg.records.n_valid == 0:
        raise InterpError(
            "--search chooses on the validation split, and this run's records draw none (--n-valid 0); make a run "
            "with --n-valid above 0."
        )
    judge_cfg = replace(cfg, score=replace(cfg.score, scorers=[e.judge]))
    (judge,) = make_scorers(judge_cfg, client, subject.lm, subject.coders)
    return Search(SearchSettings.of(e), judge, e.explainer, text, client, params)


def _intervention_effects(
    cfg: RunConfig, lm: LoadedModel, coder: SparseCoder, records: list[ExplainerView], prompts: list[str]
) -> list[list[PromptEffect] | None]:
    """What steering each explainable latent (at a strength calibrated on ``prompts``, the explainer's own) does to
    the next token after ``prompts``."""
    v = cfg.intervene
    return [
        latent_effects(lm, coder, r.latent, prompts, v.target_kl, v.steer_top_tokens)[1] if r.status == "ok" else None
        for r in records
    ]


@writing_stage("score")
def run_score(
    cfg: RunConfig,
    run_dir: Path,
    *,
    subject: Subject | None = None,
    client: LLMClient | None = None,
    coders: list[str] | None = None,
    progress: bool = True,
    rescore: dict[str, set[tuple]] | None = None,
) -> dict:
    """Stage 4: score the explanations of ``cfg.explain.explainer`` (and a random baseline) of ``coders`` (default:
    all).

    ``cfg`` must agree with the run on what makes it; its score settings are this stage's.
    Resumable: (scorer, coder, latent, explainer, baseline) already scored are skipped, except
    those with failed examples (an LLM request that failed): they are scored again, and the new
    line, if it differs, replaces the old one. Replies already cached are not asked again.
    With ``rescore_replaced=True`` (turned by ``writing_stage`` into ``rescore``, the lines it locked: see
    ``replaced_lines``), every other scorer whose lines are of replaced explanations (``current_scores``) scores
    those latents again, in the mode its lines were scored in, so the run reports one consistent table.
    """
    run = _open_run(cfg, run_dir)
    explainer = cfg.explain.explainer
    explained = run.usable_explanations(explainer)
    if not explained:
        raise InterpError(
            f"No usable {explainer!r} explanations in {run.path}: run `interp explain {run.path}` first."
        )
    subject = subject or open_subject(on_own_device(cfg), run)
    lm = subject.lm
    again = rescore or {}  # found before the locks were taken, so no scorer is written unlocked
    others = [replace(cfg, score=scorer_settings(cfg.score, name)) for name in again]
    db = client.db if isinstance(client, CachedClient) else stage_results(run)
    if client is None and any(needs_llm(c.score.scorers) for c in [cfg, *others]):
        client = run_client(on_own_device(cfg), lm, db)
    scorers = make_scorers(cfg, client, lm, subject.coders)
    for other in others:
        scorers += make_scorers(other, client, lm, subject.coders)
    previous = {tuple(r[k] for k in SCORE_KEY): r for r in run.scores(explainer, examples=False)}
    drawn = [r for r in previous.values() if r["baseline"]]  # kept while still current
    baseline = baseline_explanations(explained, cfg.records.records_seed, drawn) if cfg.score.baseline else {}
    done = {
        (key, r["explanation"]) for key, r in previous.items() if not has_failures(r)
    }  # a new explanation is rescored
    chosen = subject.only(coders)
    scored_now = judged_now = 0
    bar = tqdm(
        total=sum(r["coder"] in chosen for r in explained) * len(scorers),
        unit="score",
        desc="scoring",
        disable=not progress,
    )
    for name in chosen:
        rows = share([r for r in explained if r["coder"] == name])  # this process's share, under accelerate launch
        if not rows:
            continue
        builder = run.record_builder(name, cfg, lm)  # a scorer is handed the test split alone
        records = {r.latent: scored_view(r) for r in builder.build(name, [r["latent"] for r in rows])}
        for scorer in scorers:
            jobs = []
            only = again.get(scorer.name)  # a scorer the command was not given: the lines it scores again
            for r in rows:
                for is_baseline, text in ((False, r["explanation"]), (True, baseline.get((name, r["latent"])))):
                    key = (scorer.name, name, r["latent"], explainer, is_baseline)
                    if text is not None and (key, text) not in done and (only is None or key in only):
                        jobs.append((r["latent"], is_baseline, text))
            step = latents_per_batch(cfg)
            for i in range(0, len(jobs), step):
                chunk = jobs[i : i + step]
                results = scorer.score([(records[latent], text) for latent, _, text in chunk])
                new = [
                    ScoreResult(scorer.name, name, latent, explainer, is_baseline, text, metrics, outcomes).to_dict()
                    for (latent, is_baseline, text), (metrics, outcomes) in zip(chunk, results, strict=True)
                ]
                db.add_scores([r for r in new if not _same_line(previous.get(tuple(r[k] for k in SCORE_KEY)), r)])
                scored_now += len(new)
                judged_now += sum(not all_failed(r) for r in new)
                bar.update(sum(not b for _, b, _ in chunk))
    bar.close()
    stage_done(run, db)
    if scored_now and not judged_now:
        raise StageFailedError(
            f"Every score of this command failed: no reply of the LLM ({cfg.explain.llm}) could be read. They are "
            "recorded, and the same command scores them again once the LLM answers."
        )
    return summarize_run(run.path, explainer)


def _same_line(stored: dict | None, line: dict) -> bool:
    """Whether a new score line says what the stored one (read without its examples) says: not written again."""
    return (
        stored is not None
        and stored["explanation"] == line["explanation"]
        and stored["metrics"] == line["metrics"]
        and stored["n_examples"] == len(line["examples"])
    )


PLOT_LATENTS = 20_000
"""Latents per coder drawn in the frequency and agreement plots at most (a seeded sample beyond): a million dots
are a blot, and slow."""


def summarize_run(run_dir: Path, explainer: str | None = None) -> dict:
    """The score summary of one explainer of ``run_dir`` (its plots rewritten), without loading any model.

    ``explainer`` defaults to the run's own (its config.json's); the summary names it. Explainers
    are never pooled: their explanations differ, and so do their scores. Only the lines of the current
    explanations count (``RunDir.current_scores``); ``left_out`` counts the others per scorer, and ``leaked`` the
    current explanations made from what their scorers score (``views.made_with_leaking_prompts``: runs made before).
    """
    run = RunDir(run_dir)
    own = run.read_config().explain.explainer
    explainer = explainer or own
    with run.reading() as db:  # each query reads its columns alone: no score line's JSON, no example
        columns = list(db.current_metrics(explainer))
        leaked = sum(map(made_with_leaking_prompts, db.count_leaking(explainer, LEAKING_BEFORE)))
        scored = db.scored_explainers()
    summary, left_out = summarize_columns(columns)
    if not summary and not left_out:
        if scored:
            raise InterpError(
                f"No scores of the {explainer!r} explainer in {run.path}; it has scores of "
                f"{', '.join(scored)}: pick one with --explainer."
            )
        raise InterpError(f"No scores in {run.path}: run `interp score {run.path}` first.")
    plots = run.plots_dir(explainer, own)
    writable = run.writable()  # a read-only run is summarized as it is: its plots stay as they were
    for coder, scorer, lines in columns:  # a plot of old scores only would show them as current
        if writable and scorer not in summary.get(coder, {}) and (lines["standing"] > 0).any():
            score_plot(plots, coder, scorer).unlink(missing_ok=True)
    if summary and writable:
        plot_scores(summary, plots)
        plot_diagnostics(columns_table(columns, PLOT_LATENTS), run.firing_frequencies(set(summary)), plots)
        plot_coder_scores(summary, plots)
    return {"scores": summary, "explainer": explainer, "left_out": left_out, "leaked": leaked}


def run(
    cfg: RunConfig,
    run_dir: Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    wait: bool = False,
    force: bool = False,
) -> dict:
    """The main job: every stage, in order, into ``run_dir``; the model, the coders and the LLM are each loaded
    once. ``wait``: wait for another process on the same work (else stop); ``force``: cache despite the disk."""
    cached = run_cache(cfg, run_dir, overwrite=overwrite, progress=progress, wait=wait, force=force)
    directory = RunDir(run_dir)
    client = None
    if cfg.explain.explainer != "tokens" or needs_llm(cfg.score.scorers):
        client = run_client(cfg, cached.subject.lm, stage_results(directory))
    summary = dict(cached.summary)
    summary.update(run_explain(cfg, run_dir, subject=cached.subject, client=client, progress=progress, wait=wait))
    summary.update(run_score(cfg, run_dir, subject=cached.subject, client=client, progress=progress, wait=wait))
    directory.write_summary(summary)
    return summary
