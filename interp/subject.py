"""The subject model and a run's sparse coders, opened once per command and shared by its stages.

A run's coders are named by their hookpoint (neurons: ``<mlp>.neurons`` or ``<mlp>.topk-neurons``),
with ``-2``, ``-3`` added to a repeated name, in the order the run's config lists them: the names
of its cache folders and of the ``coder`` field of every line it writes.
"""

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from .coders import CoderSpec, SparseCoder, load_coder
from .coders.sparsify_coder import load_sparsify
from .coders.train import load_train_report
from .config import RunConfig
from .errors import InterpError
from .hooks import site_widths
from .models import LoadedModel, load_model, resolve_hookpoint
from .rundir import RunDir


class Subject(NamedTuple):
    """The subject model of a run and its coders by name, on the model's device."""

    lm: LoadedModel
    coders: dict[str, SparseCoder]

    def only(self, names: list[str] | None) -> dict[str, SparseCoder]:
        """The coders called ``names`` (all when None); an unknown name lists the run's coders."""
        if names is None:
            return self.coders
        unknown = [n for n in names if n not in self.coders]
        if unknown:
            raise InterpError(f"The run has no coder {unknown[0]!r}; its coders are {', '.join(self.coders)}.")
        return {n: self.coders[n] for n in names}


def _coder_name(coder: SparseCoder, spec: CoderSpec, taken: set[str]) -> str:
    base = coder.hookpoint if spec.kind not in ("neurons", "topk-neurons") else f"{coder.source}.{spec.kind}"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def open_coders(
    cfg: RunConfig, lm: LoadedModel, run: RunDir | None, *, train_default: Callable[[Path], None] | None = None
) -> dict[str, SparseCoder]:
    """Every coder of ``cfg``, by name, checked against the model's widths.

    Coders given by spec load first, so a wrong spec fails before anything is written. The
    default SAE is read from the run (there is none without a run); where it is not trained yet,
    ``train_default(folder)`` trains it (only the cache stage passes one: every other stage only reads a run).
    """
    specs = [CoderSpec.parse(text) for text in cfg.coders.coders]
    given = cfg.coders
    loaded: list[SparseCoder | None] = [
        None
        if spec.kind == "default"
        else load_coder(spec, lm.model, neuron_k=given.neuron_k, saelens_registry=given.saelens_registry).to(lm.device)
        for spec in specs
    ]
    _check_widths(lm, [c for c in loaded if c is not None])
    if any(spec.kind == "default" for spec in specs):
        if run is None:
            raise InterpError(
                "The default SAE lives in a run directory: give the run instead of the coder spec 'default'."
            )
        hookpoint = resolve_hookpoint(lm.model, cfg.train.train_hookpoint)
        folder = run.default_sae_dir(hookpoint)
        if load_train_report(folder) is None:
            if train_default is None:
                raise InterpError(
                    f"The default SAE of {run.path} is not trained yet: run `interp cache {run.path}` first."
                )
            train_default(folder)
        default = load_sparsify(str(folder), hookpoint).to(lm.device)
        default.source = "default"  # not the absolute path: the run directory may move
        _check_widths(lm, [default])
        loaded = [default if c is None else c for c in loaded]
    coders: dict[str, SparseCoder] = {}
    for spec, coder in zip(specs, loaded, strict=True):
        coders[_coder_name(coder, spec, set(coders))] = coder
    return coders


def _check_widths(lm: LoadedModel, coders: list[SparseCoder]) -> None:
    """Refuse a coder whose input or output width does not match the model where it reads and writes."""
    if not coders:
        return
    widths = site_widths(lm.model, [c.site for c in coders], lm.device)
    for coder in coders:
        coder.check_width(widths[coder.site], lm.name)


def open_subject(cfg: RunConfig, run: RunDir | None, lm: LoadedModel | None = None) -> Subject:
    """The run's model (``lm`` when already loaded) and coders as they are: nothing is trained or cached.
    Without a run, coders given by spec alone."""
    lm = lm or load_model(cfg.model)
    return Subject(lm, open_coders(cfg, lm, run))
