"""A run directory: its layout, its config, and what its stages wrote. No other module spells its file names.

::

    RUN/
      config.json          the RunConfig that made the run. Its model, corpus, coders, train, cache and
                           records sections are the run: every later stage reads them from here, and a
                           stage given a different value is refused. The other sections (explain, score,
                           intervene) are the first command's choices: a later stage starts from them,
                           and its flags override them.
      coders/<hookpoint>/  the default SAE, when the run trained one (sparsify format + train.json)
      cache/               the token windows, and per coder its sparse latents and statistics (see interp.cache)
      results.sqlite       the results database (interp.results; with its -wal and -shm files while it is
                           open): explanations, one current row per (coder, latent, explainer); scores, one
                           per (scorer, coder, latent, explainer, baseline), their examples apart and compact
                           (a score counts only while the text it scored is the latent's current
                           explanation); replaced rows kept as history; and the LLM replies keyed by (model,
                           prompt, parameters), so a re-run costs nothing. `interp export` writes it as JSONL
      results.p<i>.sqlite  what process i of an accelerate launch wrote during a stage, merged into results.sqlite
                           by the main process when the stage ends (or the next one begins, after a kill)
      explanations.jsonl   a run made before the database: its explanation lines, scores.jsonl its score lines
      scores.jsonl         and llm_cache.jsonl its replies, each imported once into results.sqlite on the first
      llm_cache.jsonl      command that writes (a read-only one is browsed in place, in memory)
      summary.json         coder statistics, the default SAE's held-out quality, explanation counts, scores
      plots/               plots of the run's own explainer's scores; plots/<explainer>/ of another explainer's
      compare/<A>--<B>/    comparisons of one of its coders with another coder (interp compare)
      publish/             the dataset folder that interp publish writes and uploads
      locks/               one OS lock per piece of work under way (<stage>[--<coder>[--<name>]].lock), each
                           with its holder (pid, host, since, command) in <lock>.json while it is held

Every write is an append of whole lines, an atomic replace or a database transaction, so a run killed at any point
resumes.
"""

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import remove_stale_temps, write_json_atomic
from .cache import TOKENS_FILE, is_finished, load_stats, read_cache_stats, read_coder_description
from .config import FIXED_SECTIONS, RunConfig, check_config, read_config_file
from .errors import InterpError, NotARunDirError, ReadOnlyRunError, RunConfigMismatchError
from .explain import EXPLAINERS
from .jsonl import iter_jsonl, read_json
from .llm.response_cache import legacy_replies
from .records import CacheView, RecordBuilder, logit_lens
from .results.db import ResultsDB
from .results.rows import EXPLANATION_KEY, SCORE_KEY
from .scoring.results import CurrentScores, current_scores

CONFIG = "config.json"
EXPLANATIONS = "explanations.jsonl"
"""A run made before the results database: its explanation lines."""
SCORES = "scores.jsonl"
"""A run made before the results database: its score lines."""
LLM_CACHE = "llm_cache.jsonl"
"""A run made before the results database: its LLM replies."""
RESULTS_DB = "results.sqlite"
SUMMARY = "summary.json"
LOCKS = "locks"

log = logging.getLogger(__name__)

__all__ = ["EXPLANATION_KEY", "SCORE_KEY", "RunDir", "fixed_differences", "not_a_run"]


def not_a_run(shown: str, hint: str) -> str:
    """The one wording of 'this folder is not a run directory', with what to do instead."""
    return f"{shown} is not a run directory (it has no {CONFIG}): {hint}"


@dataclass(frozen=True)
class RunDir:
    """One run directory: where each of its files lives, and reading and writing them.

    >>> run = RunDir("runs/demo")
    >>> cfg = run.read_config()
    >>> rows = run.explanations("default")
    """

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    # --- layout -------------------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    @property
    def results_file(self) -> Path:
        return self.path / RESULTS_DB

    def legacy_files(self) -> dict[str, Path]:
        """What a run made before the results database holds of its results (kind -> file), the files there."""
        files = {"replies": LLM_CACHE, "explanations": EXPLANATIONS, "scores": SCORES}
        return {kind: self.path / name for kind, name in files.items() if (self.path / name).is_file()}

    def results_stamp(self) -> tuple:
        """When the results were last written and how large they are (the database, its journal, legacy files),
        read from the files alone: what changes whenever a line is added."""
        paths = [self.results_file, self.path / f"{RESULTS_DB}-wal", *self.legacy_files().values()]
        return tuple((s.st_mtime_ns, s.st_size) if (s := _stat(p)) else () for p in paths)

    @property
    def summary_file(self) -> Path:
        return self.path / SUMMARY

    @property
    def publish_dir(self) -> Path:
        return self.path / "publish"

    def coder_cache(self, coder: str) -> Path:
        """The cache folder of the coder called ``coder``."""
        return self.cache_dir / coder

    def lock_file(self, stage: str, coder: str | None = None, name: str | None = None) -> Path:
        """The lock a stage holds on one piece of work: ``stage`` alone (the cache), of ``coder``, and of ``name``
        (the explainer; the scorer and explainer)."""
        return self.path / LOCKS / ("--".join(p for p in (stage, coder, name) if p) + ".lock")

    def default_sae_dir(self, hookpoint: str) -> Path:
        """Where the default SAE that reads ``hookpoint`` is trained to."""
        return self.path / "coders" / hookpoint

    def plots_dir(self, explainer: str, own: str) -> Path:
        """``plots/`` for the run's ``own`` explainer, ``plots/<explainer>/`` for another: one
        explainer's summary never
        overwrites another's plots. ``explainer`` must be a known explainer's name: it becomes a folder."""
        if explainer not in EXPLAINERS:
            raise InterpError(f"Unknown explainer {explainer!r}: use one of {', '.join(EXPLAINERS)}.")
        plots = self.path / "plots"
        return plots if explainer == own else plots / explainer

    def compare_dir(self, coder: str, other: str) -> Path:
        """Where the comparison of this run's ``coder`` with ``other`` (another coder's label) is written."""
        return self.path / "compare" / f"{coder}--{other}"

    # --- config -------------------------------------------------------------------------------

    def is_run(self) -> bool:
        """Whether the folder holds a run (its config.json)."""
        return self.config_file.is_file()

    def read_config(self) -> RunConfig:
        """The RunConfig that made the run; a clear error when the folder is not a run."""
        if not self.is_run():
            raise NotARunDirError(
                not_a_run(str(self.path), f"make one with `interp run --run-dir {self.path}` first.")
            )
        return read_config_file(self.config_file)

    def check(self, cfg: RunConfig) -> None:
        """Refuse ``cfg`` where it contradicts what made the run (its fixed sections), naming both values."""
        saved = self.read_config()
        problems = fixed_differences(saved, cfg)
        if problems:
            raise RunConfigMismatchError(
                f"{self.path} was made with {'; '.join(problems)}. "
                "These are fixed for a run: leave them out to use the "
                "run's own, or use a new --run-dir (or --overwrite to start this one again)."
            )

    def start(self, *, overwrite: bool = False) -> None:
        """Before a stage writes: with ``overwrite`` the old run is deleted; files a killed writer
        left half-done go.
        """
        if overwrite and self.path.exists():
            for child in self.path.iterdir():  # not the locks: another process may be waiting on them
                if child.name == LOCKS:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        remove_stale_temps(self.path)

    def writable(self) -> bool:
        """Whether this process can write into the run directory (or make it, where it does not exist yet)."""
        p = self.path.absolute()
        while not p.exists() and p != p.parent:
            p = p.parent
        return os.access(p, os.W_OK)

    def check_writable(self, stage: str) -> None:
        """Refuse, in one line naming the directory, a stage that must write into a run that cannot be written."""
        if not self.writable():
            raise ReadOnlyRunError(
                f"{self.path} cannot be written (a read-only mount, or no permission): `interp {stage}` writes its "
                f"results there. Browsing it works (interp summary, the app, interp publish --dry-run --out "
                f"ELSEWHERE); to add to it, copy it somewhere writable first."
            )

    def write_config(self, cfg: RunConfig) -> None:
        """Save ``cfg`` as the run's config.json once its inputs are known to load (a failed first
        command leaves none).
        """
        check_config(cfg)
        write_json_atomic(self.config_file, cfg.to_dict())

    # --- what the stages wrote ----------------------------------------------------------------

    def explanations(self, explainer: str | None = None) -> list[dict]:
        """The current line per (coder, latent, explainer), of ``explainer`` alone when given."""
        with self.reading() as db:
            return db.explanations(explainer)

    def status_counts(self) -> dict[str, dict[str, int]]:
        """Explainer -> status -> current explanation lines (counted in the database)."""
        with self.reading() as db:
            return db.status_counts()

    def usable_explanations(self, explainer: str | None = None) -> list[dict]:
        """The latest lines that hold an explanation (status ok), of ``explainer`` alone when given."""
        with self.reading() as db:
            return db.explanations(explainer, usable=True)

    def add_explanations(self, rows: list[dict]) -> None:
        """Store explanation lines (one transaction)."""
        with self.writing() as db:
            db.add_explanations(rows)

    def scores(self, explainer: str | None = None, *, examples: bool = True) -> list[dict]:
        """The current line per (scorer, coder, latent, explainer, baseline): a re-score replaces the old line. Without
        ``examples``, each line's examples are left unread (``n_examples`` counts them).

        Lines of explanations replaced since are among them; what is reported as a score goes through
        ``current_scores``.
        """
        with self.reading() as db:
            return db.scores(explainer, examples=examples)

    def current_scores(self, explainer: str | None = None, *, examples: bool = True) -> CurrentScores:
        """The latest score lines that belong to the current explanations (of ``explainer`` alone when given), and
        those left out: the score lines every summary, table and published row reads."""
        with self.reading() as db:
            return current_scores(db.explanations(explainer), db.scores(explainer, examples=examples), explainer)

    def add_scores(self, rows: list[dict]) -> None:
        """Store score lines (one transaction)."""
        with self.writing() as db:
            db.add_scores(rows)

    def results_db(self) -> ResultsDB:
        """The run's results database, for a stage that writes: a run made before it had one has its
        ``llm_cache.jsonl``, ``explanations.jsonl`` and ``scores.jsonl`` imported into it first (each once, in one
        transaction; the JSONL is left as it was)."""
        db = ResultsDB(self.results_file)
        legacy = self.legacy_files()
        if legacy:
            for kind, path in legacy.items():
                rows = legacy_replies(path) if kind == "replies" else iter_jsonl(path)
                if db.import_once(path.name, rows, kind):
                    log.info("imported %s into %s", path, self.results_file)
        return db

    @contextmanager
    def writing(self) -> Iterator[ResultsDB]:
        """The run's results database for one write, closed after it."""
        db = self.results_db()
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def reading(self) -> Iterator[ResultsDB]:
        """The run's results for one read, closed after it: the database (its legacy files imported first) where the
        run can be written; where it cannot, the database as it is, or, for a run whose legacy files were never
        imported, those files read into a database in memory (nothing is written)."""
        if self.writable():
            db = self.results_db()
        else:
            db = ResultsDB(self.results_file, read_only=True) if self.results_file.is_file() else None
            legacy = {p.name for p in self.legacy_files().values()}
            if db is None or not _holds_results(db) or legacy - db.imported():
                if db is not None:
                    db.close()
                db = ResultsDB(None)
                for kind, path in self.legacy_files().items():
                    if kind != "replies":
                        db.import_once(path.name, iter_jsonl(path), kind)
        try:
            yield db
        finally:
            db.close()

    def process_results_db(self, process: int) -> ResultsDB:
        """The results database process ``process`` of a launch writes in a stage (``results.p<process>.sqlite``),
        reading the run's as well; merged into the run's by ``merge_process_results``."""
        return ResultsDB(self.path / f"results.p{process}.sqlite", base=self.results_file)

    def merge_process_results(self) -> None:
        """Ready the run's database for a launch's processes to read, and close it: a legacy JSONL imported, and the
        databases processes wrote (all that are there: a killed launch leaves some) merged into it, each in one
        transaction, then removed."""
        db = self.results_db()
        parts = sorted(self.path.glob("results.p*.sqlite"))
        if parts:
            added = db.merge_from(parts)
            log.info("merged %d replies of %d processes into %s", added, len(parts), self.results_file)
        db.close()

    def summary(self) -> dict:
        """``summary.json``, or {} before the cache has finished; a damaged one is named, not a traceback."""
        path = self.summary_file
        summary = read_json(path, hint="it is rewritten when the run resumes (`interp run`)") if path.is_file() else {}
        return summary if isinstance(summary, dict) else {}

    def write_summary(self, summary: dict) -> None:
        """Replace ``summary.json`` atomically."""
        write_json_atomic(self.summary_file, summary)

    # --- the cache ----------------------------------------------------------------------------

    def has_cache(self) -> bool:
        """Whether the cache has started (its token windows are written)."""
        return (self.cache_dir / TOKENS_FILE).is_file()

    def finished_coders(self) -> list[str]:
        """Coders whose cache is finished, in the order the run's summary lists them (no model needed)."""
        done = {p.name for p in self.cache_dir.iterdir() if is_finished(p)} if self.cache_dir.is_dir() else set()
        listed = self.summary().get("coders", {})
        return [n for n in listed if n in done] + sorted(done - set(listed))

    def coder_description(self, coder: str) -> dict:
        """What the coder called ``coder`` is (kind, source, hookpoint, widths), as its cache recorded it."""
        return read_coder_description(self.coder_cache(coder))

    def cache_stats(self, coder: str) -> dict:
        """Totals of the coder's cache: tokens, nnz, mean L0, dead fraction."""
        return read_cache_stats(self.coder_cache(coder))

    def latent_counts(self, coder: str) -> torch.Tensor:
        """How many cached tokens each latent of ``coder`` fires on."""
        return load_stats(self.coder_cache(coder))["count"]

    def firing_frequencies(self, coders: set[str]) -> dict[tuple[str, int], float]:
        """(coder, latent) -> fraction of cached tokens on which the latent fires; coders with no
        finished cache are left out.
        """
        out = {}
        for coder in coders:
            if not is_finished(self.coder_cache(coder)):
                continue
            tokens = self.cache_stats(coder)["num_tokens"]
            for latent, count in enumerate(self.latent_counts(coder).tolist()):
                out[(coder, latent)] = count / tokens
        return out

    def cache_view(self, coder: str, tokenizer) -> CacheView:
        """The finished cache of ``coder``, opened for building records."""
        return CacheView.open(self.cache_dir, coder, bos_token_id=tokenizer.bos_token_id)

    def record_builder(self, coder: str, cfg: RunConfig, lm, sparse_coder=None) -> RecordBuilder:
        """The record builder of ``coder`` with the run's record settings; with ``sparse_coder``, it also lists the
        tokens each latent promotes (its decoder direction through ``lm``'s unembedding)."""
        view = self.cache_view(coder, lm.tokenizer)
        if sparse_coder is None:
            return RecordBuilder(view, cfg.records)
        decoder = sparse_coder.decoder_weight().detach()
        return RecordBuilder(view, cfg.records, decoder, logit_lens(lm.model, decoder))


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _holds_results(db: ResultsDB) -> bool:
    """Whether ``db`` has the tables of explanations and scores (a database made before them has replies alone)."""
    return bool(db.tables() >= {"explanations", "scores", "score_examples"})


def fixed_differences(saved: RunConfig, cfg: RunConfig) -> list[str]:
    """Each fixed setting where ``cfg`` differs from ``saved``, as ``what the run has, not what cfg has (--flag)``."""
    old, new = saved.to_dict(), cfg.to_dict()
    out = []
    for section in FIXED_SECTIONS:
        for key in old[section]:
            a, b = old[section][key], new[section][key]
            if a != b:
                out.append(f"{section}.{key} {a!r}, not {b!r} (--{key.replace('_', '-')})")
    return out
