"""What every stage that writes does around its work: refuse a run directory that cannot be written, hold the
locks on the pieces it writes (``interp.locks``), and on a full disk say how much it still needs
(``interp.diskspace``).

The stages take it as a decorator, ``@writing_stage("explain")``, which adds a ``wait`` keyword (``--wait``).
"""

import functools
from collections.abc import Callable
from pathlib import Path

from .cache import cached_windows
from .cache_space import cache_bytes_needed
from .config import RunConfig
from .diskspace import still_needs
from .jsonl import read_json
from .locks import Work, hold
from .records import select_latents
from .rundir import RunDir
from .scoring.registry import line_name
from .scoring.results import STANDINGS

DOING = {"cache": "caching", "explain": "explaining", "score": "scoring"}
LINE_BYTES = {"explain": 4096, "score": 16384}
"""Bytes one explanation (with its LLM replies) or one score line takes, until the run has lines to measure."""


def replaced_lines(run: RunDir, cfg: RunConfig) -> dict[str, set[tuple]]:
    """Scorer -> the SCORE_KEYs of its lines of ``cfg``'s explainer that are of replaced explanations, for each
    scorer that ``cfg.score`` does not run itself (those score every explanation anyway): what a bare
    ``interp score`` scores again, so the score stage locks these scorers too."""
    given = {line_name(name, cfg.score.score_mode) for name in cfg.score.scorers}
    explainer = cfg.explain.explainer
    out: dict[str, set[tuple]] = {}
    with run.reading() as db:
        for coder, scorer, lines in db.current_metrics(explainer):
            replaced = lines[lines["standing"] == STANDINGS.index("replaced")]
            if scorer not in given and len(replaced):
                keys = zip(replaced["latent"].tolist(), replaced["baseline"].tolist(), strict=True)
                out.setdefault(scorer, set()).update((scorer, coder, k, explainer, bool(b)) for k, b in keys)
    return out


def stage_work(
    stage: str, run: RunDir, cfg: RunConfig, coders: list[str] | None, rescore: dict[str, set[tuple]] | None = None
) -> list[Work]:
    """The pieces a stage writes: the cache of the run as a whole (its coders are cached in one pass); per coder the
    explanations of one explainer; per coder the lines of one scorer of one explainer, for the scorers ``cfg`` names
    and, per coder it has lines of, each scorer in ``rescore`` (``replaced_lines``)."""
    if stage == "cache":
        return [Work(run.lock_file("cache"), f"caching {run.path}")]
    names = coders if coders is not None else run.finished_coders()
    explainer = cfg.explain.explainer
    if stage == "explain":
        return [
            Work(run.lock_file("explain", c, explainer), f"explaining {c} of {run.path} with {explainer}")
            for c in names
        ]
    pieces = {(c, line_name(s, cfg.score.score_mode)) for c in names for s in cfg.score.scorers}
    pieces |= {(key[1], s) for s, keys in (rescore or {}).items() for key in keys if key[1] in names}
    return [
        Work(run.lock_file("score", c, f"{s}--{explainer}"), f"scoring {c} of {run.path} ({explainer}) with {s}")
        for c, s in pieces
    ]


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def bytes_left(stage: str, run: RunDir, cfg: RunConfig) -> int | None:
    """About how many bytes ``stage`` still has to write into ``run`` (read from what it holds now)."""
    if stage == "cache":
        windows = cached_windows(run.cache_dir) if run.has_cache() else cfg.corpus.num_tokens // cfg.corpus.ctx_len
        coders = {}
        if run.cache_dir.is_dir():
            for folder in run.cache_dir.iterdir():
                if (folder / "coder.json").is_file():
                    coders[folder.name] = read_json(folder / "coder.json").get("k")
        return cache_bytes_needed(run.cache_dir, coders, windows, cfg.corpus.ctx_len, cfg.cache.shard_windows)[0]
    explainer = cfg.explain.explainer
    if stage == "explain":
        rows = run.explanations(explainer)
        done = {(r["coder"], r["latent"]) for r in rows if r.get("status") != "failed"}
        r = cfg.records
        chosen = [
            (name, i)
            for name in run.finished_coders()
            for i in select_latents(
                cfg.explain.latents, run.latent_counts(name), min_count=r.min_examples, seed=r.records_seed
            )
        ]
        left = sum(key not in done for key in chosen)
        written = _size(run.results_file)  # the replies are most of it
        lines = len(rows)
    else:
        scored_rows = run.scores(explainer, examples=False)
        scored = {(r["scorer"], r["coder"], r["latent"], r["baseline"]) for r in scored_rows}
        names = [line_name(s, cfg.score.score_mode) for s in cfg.score.scorers]
        todo = [
            (s, r["coder"], r["latent"], b)
            for r in run.usable_explanations(explainer)
            for s in names
            for b in ((False, True) if cfg.score.baseline else (False,))
        ]
        left = sum(key not in scored for key in todo)
        written = _size(run.results_file)
        lines = len(scored_rows)
    return left * (written // lines if lines else LINE_BYTES[stage])


def writing_stage(stage: str) -> Callable:
    """Decorate the stage function ``stage`` (called as ``fn(cfg, run_dir, ..., coders=...)``): before it runs,
    a run that cannot be written is refused in one line, and the locks of its work are taken (``wait=True``: waited
    for); a full disk inside names what it still needs.

    The score stage's ``rescore_replaced=True`` reaches ``fn`` as ``rescore``, the lines of other scorers to score
    again (``replaced_lines``), found before the locks are taken: every scorer it writes is one it locked."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def guarded(cfg: RunConfig, run_dir: Path, *args, wait: bool = False, **kwargs):
            run = RunDir(run_dir)
            if stage != "cache":
                run.read_config()  # not a run: said before a lock folder is made in it
            run.check_writable(stage)
            if stage == "score" and kwargs.pop("rescore_replaced", False):
                kwargs["rescore"] = replaced_lines(run, cfg)
            work = stage_work(stage, run, cfg, kwargs.get("coders"), kwargs.get("rescore"))
            with hold(work, wait=wait), still_needs(lambda: bytes_left(stage, run, cfg), f"{DOING[stage]} {run.path}"):
                return fn(cfg, run_dir, *args, **kwargs)

        return guarded

    return decorate
