"""Latent-cache throughput and memory: this project's ``build_cache`` against EleutherAI delphi's ``LatentCache``.

Both sides cache the same token windows of the same model through the same coder, with the same
batch size, and both write their cache to disk:

* ours:   ``build_cache`` + ``finalize_stats``;
* delphi: ``LatentCache.run`` + ``save_splits`` + ``save_config``, as its ``populate_cache`` does,
  on the transformer without its LM head (delphi loads ``AutoModel``), with the encode function
  delphi builds for sparsify coders (``load_sparsify_hooks``, uncompiled). delphi 0.1.3 loads a
  local sparsify SAE on the CPU and never moves it (``load_sparsify.py``, local branch); on CUDA
  the SAE is moved to the model's device, as the header says, so both sides encode on the GPU.

The coder is by default a randomly initialised sparsify TopK SAE (throughput does not depend on
training) at ``--layers`` or ``--hookpoint``, ``--latents`` wide with ``--k`` active; ``--coders``
takes this project's coder specs instead (delphi runs only on ``sparsify:ROOT@HOOKPOINT``, ROOT a
folder of per-hookpoint SAEs or a Hub id). Defaults are the embedded SmolLM2-135M on the CPU,
576 -> 18,432 latents, k=32, layers 6 and 29 (the last), 8,192 tokens in windows of 64.

Each measurement runs in a fresh process that loads the model and makes one untimed forward pass
(so all weights are resident). Only the caching step is timed; its memory ("cache MiB") is the
peak resident set during that step above the resident set just before it (Linux ``/proc``),
shown beside the whole process's peak; on CUDA the GPU's peak allocation during the step is shown
too. The sides run ``--repeats`` times in alternation and the fastest run of each counts, which
damps other load on a shared machine (the header shows it). Ours is also run at ``--scale`` times
the tokens to show that its memory stays flat while delphi holds every activation in memory until
it saves.

Run from the repository root, after ``pip install --no-deps eai-delphi`` and
``pip install orjson jaxtyping blobfile asyncer`` (delphi's import path, without vLLM or faiss;
without delphi, ours runs alone)::

    python benchmarks/cache_throughput.py                      # about 5 minutes on 2 idle CPU cores
    python benchmarks/cache_throughput.py --tokens 32768 --ctx-len 256 --repeats 3
    python benchmarks/cache_throughput.py --model meta-llama/Llama-3.2-1B --device cuda --layers 4 15 \\
        --latents 32768 --tokens 524288 --ctx-len 256 --batch-size 32
"""

import argparse
import contextlib
import importlib.machinery
import importlib.util
import io
import os
import re
import sys
import tempfile
import time
import types
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import torch
from torch import nn

from common import add_model_args, cuda_sync, data, describe, load_tokenizer, mib, model_config, set_threads, table
from interp.cache import build_cache, finalize_stats
from interp.coders import CoderSpec
from interp.config import CacheConfig, CoderConfig, ModelConfig, RunConfig
from interp.models import layer_hookpoints, load_model, model_files, resolve_hookpoint
from interp.subject import open_coders

EXPANSION = 32
"""Default SAE width, in multiples of the hookpoint's width."""


@dataclass(frozen=True)
class Target:
    """One coder to cache: its spec for this project and, where delphi can load it, its (sparsify root, hookpoint)."""

    spec: str
    peer: tuple[str, str] | None


@dataclass
class Job:
    """One caching run: which model and coder, over which windows, written where."""

    model: ModelConfig
    threads: int | None
    target: Target
    windows: torch.Tensor
    batch_size: int
    shard_windows: int
    n_splits: int
    out_dir: Path


@dataclass
class Result:
    """What one caching run measured, and what it ran on."""

    tokens: int
    seconds: float
    nnz: int
    cache_mib: float
    process_mib: float
    cuda_mib: float | None
    setup: str
    """Model, device, dtype and threads, as loaded."""
    coder: str
    """The coder, as loaded: hookpoint, kind and widths."""
    note: str | None = None

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.seconds


def _statusmib(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) / 1024


def measure(work, device: torch.device) -> tuple[object, float, float, float, float | None]:
    """Run ``work()``; return its result, seconds, its peak RSS above the RSS before it, the process's peak RSS,
    and on CUDA the GPU's peak allocation during it (MiB)."""
    cuda = device.type == "cuda"
    cuda_sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    setup_peak = _statusmib("VmHWM")
    before = _statusmib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    start = time.perf_counter()
    out = work()
    cuda_sync(device)
    seconds = time.perf_counter() - start
    peak = _statusmib("VmHWM")
    cuda_mib = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    return out, seconds, peak - before, max(setup_peak, peak), cuda_mib


def warm_up(model: nn.Module, windows: torch.Tensor) -> None:
    """One full forward pass, so every weight is resident and measured memory is the cache's own."""
    with torch.inference_mode():
        model(input_ids=windows[:1].long().to(model.device))
    cuda_sync(model.device)


def coder_label(desc: dict) -> str:
    """A coder as the table names it: ``model.layers.6 (sparsify 576->18,432, k=32)``."""
    k = f", k={desc['k']}" if desc.get("k") else ""
    return f"{desc['hookpoint']} ({desc['kind']} {desc['d_in']}->{desc['num_latents']:,}{k})"


def cache_ours(job: Job) -> Result:
    """Cache ``job`` with this project: ``build_cache`` then ``finalize_stats``."""
    set_threads(job.threads)
    lm = load_model(job.model)
    warm_up(lm.model, job.windows)
    coders = open_coders(RunConfig(model=job.model, coders=CoderConfig([job.target.spec])), lm, None)
    name, coder = next(iter(coders.items()))
    cfg = CacheConfig(batch_size=job.batch_size, shard_windows=job.shard_windows)

    def work() -> dict:
        build_cache(lm, coders, job.windows, job.out_dir, cfg, progress=False)
        return finalize_stats(job.out_dir / name, coder.num_latents, len(job.windows), cfg.shard_windows)

    stats, seconds, cache_mib, process_mib, cuda_mib = measure(work, lm.device)
    return Result(
        job.windows.numel(),
        seconds,
        stats["nnz"],
        cache_mib,
        process_mib,
        cuda_mib,
        describe(lm, job.model),
        coder_label(coder.describe()),
    )


def _stub_faiss() -> None:
    """Stand in for faiss, if missing: ``delphi.latents`` imports it for its FAISS example
    constructor, which caching never uses.
    """
    if importlib.util.find_spec("faiss") is None:
        faiss = types.ModuleType("faiss")
        faiss.__spec__ = importlib.machinery.ModuleSpec("faiss", None)
        sys.modules["faiss"] = faiss


def move_peer_saes(encoders: dict, device: torch.device) -> str | None:
    """Move the SAEs behind delphi's encode functions to ``device``; say so if any was elsewhere.

    delphi 0.1.3 loads a local sparsify SAE with ``device="cpu"`` and never moves it, so on CUDA
    its encoder would run on the CPU (or fail on the GPU's activations).
    """
    moved = set()
    for encode in encoders.values():
        sae = encode.keywords["sae"]
        if sae.device != device:
            moved.add(str(sae.device))
            sae.to(device)
    if not moved:
        return None
    return (
        f"delphi loaded its local SAE on {', '.join(sorted(moved))} and never moves it; "
        f"moved to {device} here, for a fair comparison"
    )


def cache_peer(job: Job) -> Result:
    """Cache ``job`` with delphi, as its ``populate_cache`` does: run, save_splits, save_config."""
    _stub_faiss()
    from delphi.config import CacheConfig as DelphiCacheConfig
    from delphi.latents.cache import LatentCache
    from delphi.sparse_coders.load_sparsify import load_sparsify_hooks

    set_threads(job.threads)
    lm = load_model(job.model)
    model = lm.model.base_model
    warm_up(model, job.windows)
    root, hookpoint = job.target.peer
    with contextlib.redirect_stdout(io.StringIO()):  # delphi prints how it resolved each hookpoint
        encoders, transcode = load_sparsify_hooks(model, root, [hookpoint])
    note = move_peer_saes(encoders, lm.device)
    tokens = job.windows.long()
    log_dir = job.out_dir / "log"
    log_dir.mkdir(parents=True)
    cfg = DelphiCacheConfig(
        batch_size=job.batch_size, cache_ctx_len=tokens.shape[1], n_tokens=tokens.numel(), n_splits=job.n_splits
    )

    def work() -> LatentCache:
        cache = LatentCache(model, encoders, batch_size=job.batch_size, transcode=transcode, log_path=log_dir)
        cache.run(cfg.n_tokens, tokens)
        cache.save_splits(n_splits=cfg.n_splits, save_dir=job.out_dir)
        cache.save_config(save_dir=job.out_dir, cfg=cfg, model_name=job.model.model)
        return cache

    cache, seconds, cache_mib, process_mib, cuda_mib = measure(work, lm.device)
    nnz = sum(len(a) for a in cache.cache.latent_activations.values())
    return Result(
        tokens.numel(), seconds, nnz, cache_mib, process_mib, cuda_mib, describe(lm, job.model), hookpoint, note
    )


def peer_installed() -> bool:
    """Whether eai-delphi can be imported."""
    return importlib.util.find_spec("delphi") is not None


def in_fresh_process(fn, job: Job) -> Result:
    """``fn(job)`` in a new process, so that its memory peaks are its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, job).result()


def model_skeleton(cfg: ModelConfig) -> nn.Module:
    """The model's modules on the meta device (names and widths, no weights): to name hookpoints
    before any worker loads it.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    source, gguf_file = model_files(cfg)
    config = AutoConfig.from_pretrained(source, **({"gguf_file": gguf_file} if gguf_file else {}))
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def hookpoints(skeleton: nn.Module, args: argparse.Namespace) -> list[str]:
    """Full module names for the random SAEs: ``--hookpoint`` names, else ``--layers`` (default: 6 and the last)."""
    if args.hookpoint:
        return [resolve_hookpoint(skeleton, name) for name in args.hookpoint]
    blocks = layer_hookpoints(skeleton)
    layers = args.layers if args.layers is not None else sorted({min(6, len(blocks) - 1), len(blocks) - 1})
    bad = [n for n in layers if not 0 <= n < len(blocks)]
    if bad:
        raise SystemExit(f"--layers {' '.join(map(str, bad))}: the model has layers 0 to {len(blocks) - 1}.")
    return [blocks[n] for n in layers]


def random_sae_targets(skeleton: nn.Module, args: argparse.Namespace, root: Path) -> list[Target]:
    """A randomly initialised sparsify TopK SAE per hookpoint, saved under ``root`` in sparsify's layout (one folder
    per hookpoint, named relative to the base model, as delphi reads them)."""
    from sparsify import SaeConfig, SparseCoder

    d_model = skeleton.config.hidden_size
    prefix = f"{skeleton.base_model_prefix}."
    targets = []
    for hookpoint in hookpoints(skeleton, args):
        relative = hookpoint.removeprefix(prefix)
        torch.manual_seed(args.seed)
        cfg = SaeConfig(num_latents=args.latents or d_model * EXPANSION, k=args.k)
        SparseCoder(d_model, cfg).save_to_disk(root / relative)
        peer = (str(root), relative) if hookpoint.startswith(prefix) else None  # delphi hooks the base model only
        targets.append(Target(f"sparsify:{root / relative}@{hookpoint}", peer))
    return targets


def spec_targets(specs: list[str]) -> list[Target]:
    """Targets for coder specs; delphi gets those it can load (``sparsify:ROOT@HOOKPOINT``)."""
    targets = []
    for text in specs:
        spec = CoderSpec.parse(text)
        if spec.kind == "default":
            raise SystemExit("--coders default trains an SAE inside a run; give a coder that exists (or --layers).")
        peer = (
            (spec.source, spec.hookpoint.removeprefix("model."))
            if spec.kind == "sparsify" and spec.hookpoint
            else None
        )
        targets.append(Target(text, peer))
    return targets


def run_job(fn, target: Target, windows: torch.Tensor, args, scratch: Path) -> Result:
    """Run ``fn`` (``cache_ours`` or ``cache_peer``) on one configuration, in a fresh process and output folder."""
    out_dir = Path(tempfile.mkdtemp(dir=scratch))
    job = Job(
        model_config(args), args.threads, target, windows, args.batch_size, args.shard_windows, args.n_splits, out_dir
    )
    return in_fresh_process(fn, job)


def best(results: list[Result]) -> Result:
    """The fastest of repeated runs, with the most memory any of them used."""
    fastest = min(results, key=lambda r: r.seconds)
    cuda = [r.cuda_mib for r in results if r.cuda_mib is not None]
    return replace(
        fastest,
        cache_mib=max(r.cache_mib for r in results),
        process_mib=max(r.process_mib for r in results),
        cuda_mib=max(cuda) if cuda else None,
    )


def compare(
    targets: list[Target], windows: torch.Tensor, args, scratch: Path
) -> tuple[list[tuple[Result, Result | None]], list[str]]:
    """Both sides on every target, ``args.repeats`` times in alternation: the best run of each (None: delphi did not
    run), and notes on delphi's failures (ours failing stops the benchmark)."""
    sides = (("ours", cache_ours), ("peer", cache_peer)) if peer_installed() else (("ours", cache_ours),)
    runs: dict[tuple[int, str], list[Result]] = defaultdict(list)
    failures = []
    for _ in range(args.repeats):
        for i, target in enumerate(targets):
            for side, fn in sides:
                if side == "peer" and target.peer is None:
                    continue
                try:
                    runs[i, side].append(run_job(fn, target, windows, args, scratch))
                except Exception as e:
                    if side == "ours":
                        raise
                    failures.append(f"delphi failed on {target.spec}: {type(e).__name__}: {e}")
    rows = [(best(runs[i, "ours"]), best(runs[i, "peer"]) if runs[i, "peer"] else None) for i in range(len(targets))]
    return rows, failures


def comparison_table(rows: list[tuple[Result, Result | None]]) -> str:
    """Ours against delphi, one row per coder; CUDA columns when the model ran on a GPU."""
    cuda = rows[0][0].cuda_mib is not None
    head = [
        "coder",
        "tokens",
        "ours tok/s",
        "delphi tok/s",
        "ratio",
        "ours peak MiB",
        "delphi peak MiB",
        "ours cache MiB",
        "delphi cache MiB",
        *(["ours CUDA MiB", "delphi CUDA MiB"] if cuda else []),
        "same nnz",
    ]
    out = []
    for ours, peer in rows:
        if peer is None:
            peer_cells, ratio, same = ["n/a"] * 3, "n/a", "n/a"
        else:
            peer_cells = [f"{peer.tok_per_s:,.0f}", mib(peer.process_mib), mib(peer.cache_mib)]
            ratio = f"{ours.tok_per_s / peer.tok_per_s:.2f}x"
            same = "yes" if ours.nnz == peer.nnz else f"{ours.nnz:,} vs {peer.nnz:,}"
        out.append(
            [
                ours.coder,
                f"{ours.tokens:,}",
                f"{ours.tok_per_s:,.0f}",
                peer_cells[0],
                ratio,
                mib(ours.process_mib),
                peer_cells[1],
                mib(ours.cache_mib),
                peer_cells[2],
                *([mib(ours.cuda_mib), mib(peer.cuda_mib if peer else None)] if cuda else []),
                same,
            ]
        )
    return table(head, out)


def scaling_table(results: list[Result]) -> str:
    """Our memory against tokens cached, for one coder."""
    cuda = results[0].cuda_mib is not None
    head = ["coder", "tokens", "ours tok/s", "ours peak MiB", "ours cache MiB", *(["ours CUDA MiB"] if cuda else [])]
    return table(
        head,
        [
            [
                r.coder,
                f"{r.tokens:,}",
                f"{r.tok_per_s:,.0f}",
                mib(r.process_mib),
                mib(r.cache_mib),
                *([mib(r.cuda_mib)] if cuda else []),
            ]
            for r in results
        ],
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(p, tokens=8192, ctx_len=64, batch_size=16, batch_help="windows per forward pass, both sides")
    g = p.add_argument_group("coders (default: a random sparsify TopK SAE at layers 6 and the last)")
    where = g.add_mutually_exclusive_group()
    where.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=None,
        help="blocks whose output the random SAE reads (default: 6 and the last; 6 29 on the embedded model)",
    )
    where.add_argument(
        "--hookpoint",
        nargs="+",
        default=None,
        help="modules the random SAE reads instead, e.g. model.layers.6.mlp (their output must be the model's width)",
    )
    where.add_argument(
        "--coders",
        nargs="+",
        default=None,
        help="this project's coder specs instead of a random SAE, e.g. sparsify:EleutherAI/sae-x@layers.10",
    )
    g.add_argument(
        "--latents", type=int, default=None, help=f"random SAE width (default: {EXPANSION} x the model's width)"
    )
    g.add_argument("--k", type=int, default=32, help="random SAE's active latents per token (default: 32)")
    g.add_argument("--seed", type=int, default=0, help="seed of the random SAE")
    p.add_argument(
        "--shard-windows",
        type=int,
        default=CacheConfig.shard_windows,
        help=f"windows per shard of our cache (default: {CacheConfig.shard_windows})",
    )
    p.add_argument("--n-splits", type=int, default=5, help="files delphi splits each cache into (default: 5)")
    p.add_argument(
        "--repeats", type=int, default=2, help="runs of each side, alternating; the fastest counts (default: 2)"
    )
    p.add_argument(
        "--scale",
        type=int,
        default=8,
        help="also run ours at this many times --tokens on the first coder, to show flat memory (default: 8; 1 skips)",
    )
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ["TQDM_DISABLE"] = "1"  # delphi's and transformers' bars; inherited by the workers
    cfg = model_config(args)
    tokenizer = load_tokenizer(cfg)
    corpus = data(args)
    windows = corpus.windows(tokenizer, batch_size=args.batch_size)  # delphi drops a partial last batch
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cache-bench-") as tmp:
        scratch = Path(tmp)
        if args.coders:
            targets = spec_targets(args.coders)
        else:
            targets = random_sae_targets(model_skeleton(cfg), args, scratch / "sae")
        rows, failures = compare(targets, windows, args, scratch)
        ours = rows[0][0]
        print(
            f"\n{ours.setup}; ctx_len {args.ctx_len}, batch {args.batch_size} windows, corpus {args.corpus}, "
            f"best of {args.repeats}, load average {load:.1f} before / {os.getloadavg()[0]:.1f} after\n"
        )
        print(comparison_table(rows))
        notes = sorted({peer.note for _, peer in rows if peer is not None and peer.note}) + failures
        if not peer_installed():
            notes.append(
                "delphi is not installed "
                "(pip install --no-deps eai-delphi; pip install orjson jaxtyping blobfile asyncer): ours ran alone"
            )
        for note in notes:
            print(f"\nNote: {note}.")
        if args.scale > 1:
            more = corpus.windows(tokenizer, tokens=args.tokens * args.scale, batch_size=args.batch_size)
            bigger = run_job(cache_ours, targets[0], more, args, scratch)
            print(f"\nOur memory against tokens cached (shards of {args.shard_windows} windows):\n")
            print(scaling_table([ours, bigger]))


if __name__ == "__main__":
    main()
