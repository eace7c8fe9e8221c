"""Run directories as the app holds them open: config, lines on disk, and the model loaded once.

Several browser sessions share one ``OpenRun`` per run directory, so the subject model and
its coders are loaded once per process. Every lock and cache the app's visitors share is here:

- ``Runs`` keeps the last ``KEEP_OPEN`` run directories open, keyed by path and the time
  ``config.json`` was written, so a rewritten config opens the run afresh; ``Runs._lock``
  makes each lookup atomic, so two visitors never open the same run twice.
- ``OpenRun.lock`` (re-entrant) lets one thread at a time load the model and the record
  builders, and makes forward passes on the shared model take turns: a steering hook
  registered for one user must never act on another user's pass (``intervene``, ``explore``).
- ``OpenRun`` reads the run's explanations and scores again only when its results database (or an
  old run's JSONL) has changed on disk, so the CLI or another visitor writing lines shows up at once; what
  is computed from them (``OpenRun.derived``: the current scores, the latent table of a search)
  is kept on the same terms, so turning the table's pages on a run of 50,000 latents costs a slice.
- ``Runs.build_default`` builds the default run once however many visitors ask at the same time.
"""

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..coders import SparseCoder
from ..config import RunConfig
from ..errors import InterpError
from ..explain import TokenText
from ..records import RecordBuilder
from ..rundir import RunDir
from ..stages import run
from ..subject import Subject, open_subject
from .workspace import Workspace

KEEP_OPEN = 2
"""Run directories whose models stay loaded at once; the least recently used is let go."""
KEEP_DERIVED = 16
"""Results computed from a run's lines (``OpenRun.derived``) kept at once; the least recently used is let go."""


class OpenRun:
    """One run directory opened by the app; its model and coders load on first use."""

    def __init__(self, path: Path, workspace: Workspace):
        self.path = path
        self.dir = RunDir(path)
        self.name = workspace.relative(path)
        self.cfg: RunConfig = self.dir.read_config()
        self.lock = threading.RLock()
        self._loaded: Subject | None = None
        self._builders: dict[str, RecordBuilder] = {}
        self._text: TokenText | None = None
        self._derived: OrderedDict[tuple, tuple[tuple, object]] = OrderedDict()
        self._derived_lock = threading.Lock()

    def coder_names(self) -> list[str]:
        """Coders whose cache is finished, in the order the run lists them (no model needed)."""
        return self.dir.finished_coders()

    def summary(self) -> dict:
        """``summary.json``, or {} before the cache has finished."""
        return self.dir.summary()

    def model(self) -> Subject:
        """The subject model and every coder of the run, loaded once (as ``interp steer`` loads them)."""
        with self.lock:
            if self._loaded is None:
                self._loaded = open_subject(self.cfg, self.dir)
            return self._loaded

    def coder(self, name: str) -> SparseCoder:
        """The coder called ``name`` in this run."""
        coders = self.model().coders
        if name not in coders:
            raise InterpError(f"The run {self.name} has no coder {name!r}; its coders are {', '.join(coders)}.")
        return coders[name]

    def text(self) -> TokenText:
        """Token id -> text with the run's tokenizer."""
        if self._text is None:
            self._text = TokenText(self.model().lm.tokenizer)
        return self._text

    def builder(self, name: str) -> RecordBuilder:
        """The record builder of coder ``name`` (with the logit lens for promoted tokens), made once."""
        with self.lock:
            if name not in self._builders:
                self._builders[name] = self.dir.record_builder(name, self.cfg, self.model().lm, self.coder(name))
            return self._builders[name]

    def derived(self, key: tuple, make):
        """``make()``, kept under ``key`` until the run's results change on disk: for what is computed from the lines
        alone. The files are looked at before ``make`` reads them, so a value is never kept past a change (at worst
        it is computed once more). Callers must not change what they are given."""
        stamps = self.dir.results_stamp()
        with self._derived_lock:
            kept = self._derived.get(key)
            if kept is not None and kept[0] == stamps:
                self._derived.move_to_end(key)
                return kept[1]
        value = make()
        with self._derived_lock:
            self._derived[key] = (stamps, value)
            self._derived.move_to_end(key)
            while len(self._derived) > KEEP_DERIVED:
                self._derived.popitem(last=False)
        return value

    def status_counts(self) -> dict[str, dict[str, int]]:
        """Explainer -> status -> current explanation lines (a count in the database)."""
        return self.derived(("status_counts",), lambda: self._read(lambda db: db.status_counts()))

    def scored_explainers(self) -> list[str]:
        """The explainers with current score lines."""
        return self.derived(("scored_explainers",), lambda: self._read(lambda db: db.scored_explainers()))

    def scorer_names(self) -> list[str]:
        """The scorers with current score lines (of any explainer's explanations, current or not), sorted."""
        return sorted({s for e in self.scored_explainers() for _, s, _ in self.metric_columns(e)})

    def metric_columns(self, explainer: str) -> list[tuple[str, str, np.ndarray]]:
        """``ResultsDB.current_metrics(explainer)``: every current score line's latent, baseline, main metric and
        standing, per coder and scorer; what the overview, the score columns and their sorting read."""
        key = ("metric_columns", explainer)
        return self.derived(key, lambda: self._read(lambda db: list(db.current_metrics(explainer))))

    def _read(self, query):
        with self.dir.reading() as db:
            return query(db)


class Runs:
    """The run directories this process has open, looked up by the path a user typed."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._open: OrderedDict[tuple[Path, int], OpenRun] = OrderedDict()
        self._lock = threading.Lock()
        self._building = threading.Lock()

    def get(self, path: str) -> OpenRun:
        """The run at ``path`` (inside the workspace), opened once per version of its config.json."""
        full = self.workspace.run_dir(path)
        key = (full, RunDir(full).config_file.stat().st_mtime_ns)
        with self._lock:
            if key not in self._open:
                self._open[key] = OpenRun(full, self.workspace)
                while len(self._open) > KEEP_OPEN:
                    self._open.popitem(last=False)
            self._open.move_to_end(key)
            return self._open[key]

    def build_default(self, path: str, cfg: RunConfig | None = None) -> Path:
        """``build_default_run`` into ``path``; a visitor who asks while it runs waits for it, then finds it built."""
        with self._building:
            return build_default_run(self.workspace, path, cfg)


def run_is_complete(path: Path) -> bool:
    """Whether the main job finished in ``path`` (its summary holds scores)."""
    return "scores" in RunDir(path).summary()


def build_default_run(workspace: Workspace, path: str, cfg: RunConfig | None = None, *, progress: bool = True) -> Path:
    """Run the main job (``cfg``, default: the embedded default) into ``path`` (inside the
    workspace), resuming a partial one.
    """
    full = workspace.resolve(path)
    if not run_is_complete(full):
        run(cfg or RunConfig(), full, progress=progress)
    return full
