"""The pipeline over one run directory: every stage that exists, in order, resumable.

Run directory::

    config.json      the RunConfig that produced it (a different config is refused)
    coders/          the default SAE, when the run trained one (sparsify format + train.json)
    cache/           see interp.cache
    summary.json     coder statistics and the default SAE's quality
"""

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import write_json_atomic
from .cache import build_cache, finalize_stats
from .coders import CoderSpec, SparseCoder, load_coder
from .coders.train import load_train_report, train_default_sae
from .coders.sparsify_coder import load_sparsify
from .config import RunConfig
from .corpus import corpus_windows
from .errors import RunConfigMismatchError
from .hooks import site_widths
from .models import LoadedModel, load_model, resolve_hookpoint

log = logging.getLogger(__name__)

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
    if path.is_file():
        old = RunConfig.from_dict(json.loads(path.read_text())).to_dict()
        changes = _diff(old, cfg.to_dict())
        if changes:
            raise RunConfigMismatchError(
                f"{run_dir} was made with a different configuration ({'; '.join(changes)}). "
                "Use another --run-dir, or --overwrite to start it again."
            )
    else:
        write_json_atomic(path, cfg.to_dict())
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


def run_cache(cfg: RunConfig, run_dir: Path, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Stage 1: load the model and coders, cache latents, write stats; returns the summary."""
    from accelerate import PartialState

    state = PartialState()
    run_dir = prepare_run_dir(run_dir, cfg, overwrite=overwrite) if state.is_main_process else Path(run_dir)
    lm = load_model(cfg.model)
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


def run(cfg: RunConfig, run_dir: Path, *, overwrite: bool = False, progress: bool = True) -> dict:
    """The main job: every stage that exists, in order, into ``run_dir``."""
    return run_cache(cfg, run_dir, overwrite=overwrite, progress=progress)
