"""Latent-cache throughput and memory: this project's ``build_cache`` against EleutherAI delphi's ``LatentCache``.

Both sides cache the same token windows of the embedded SmolLM2-135M through the same randomly
initialised sparsify TopK SAE (576 -> 18432 latents, k=32; throughput does not depend on
training), with the same batch size, and both write their cache to disk:

* ours:   ``build_cache`` + ``finalize_stats``;
* delphi: ``LatentCache.run`` + ``save_splits`` + ``save_config``, as its ``populate_cache`` does,
  on the transformer without its LM head (delphi loads ``AutoModel``), with the encode function
  delphi builds for sparsify coders (``load_sparsify_hooks``, uncompiled).

Each measurement runs in a fresh process that loads the model and makes one untimed forward pass
(so all weights are resident). Only the caching step is timed; its memory ("cache MiB") is the
peak resident set during that step above the resident set just before it (Linux ``/proc``),
shown beside the whole process's peak. The sides run ``--repeats`` times in alternation and the
fastest run of each counts, which damps other load on a shared machine (the header shows it). Ours is also run at a larger token count to show that its
memory stays flat while delphi holds every activation in memory until it saves.

Run from the repository root, after ``pip install --no-deps eai-delphi`` and
``pip install orjson jaxtyping blobfile asyncer`` (delphi's import path, without vLLM or faiss)::

    python benchmarks/cache_throughput.py                      # about 5 minutes on 2 idle CPU cores
    python benchmarks/cache_throughput.py --tokens 32768 --ctx-len 256 --repeats 3
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
from transformers import AutoTokenizer

from interp.cache import build_cache, finalize_stats
from interp.coders.sparsify_coder import load_sparsify
from interp.config import CacheConfig, CorpusConfig, ModelConfig
from interp.corpus import corpus_windows
from interp.models import embedded_model_dir, load_model

D_MODEL = 576
EXPANSION = 32
K = 32


@dataclass
class Job:
    """One caching run: which SAE, over which windows, written where."""

    sae_root: Path
    layer: int
    windows: torch.Tensor
    batch_size: int
    shard_windows: int
    n_splits: int
    out_dir: Path

    @property
    def sae_name(self) -> str:
        """The SAE's folder name, relative to the base model as sparsify names it."""
        return f"layers.{self.layer}"

    @property
    def hookpoint(self) -> str:
        """The SAE's module in the causal LM, as this project names it."""
        return f"model.layers.{self.layer}"


@dataclass
class Result:
    """What one caching run measured."""

    tokens: int
    seconds: float
    nnz: int
    cache_mib: float
    process_mib: float

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.seconds


def _status_mib(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) / 1024


def measure(work) -> tuple[object, float, float, float]:
    """Run ``work()``; return its result, seconds, its peak RSS above the RSS before it, and the process's peak RSS."""
    setup_peak = _status_mib("VmHWM")
    before = _status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    start = time.perf_counter()
    out = work()
    seconds = time.perf_counter() - start
    peak = _status_mib("VmHWM")
    return out, seconds, peak - before, max(setup_peak, peak)


def warm_up(model: torch.nn.Module, windows: torch.Tensor) -> None:
    """One full forward pass, so every weight is resident and measured memory is the cache's own."""
    with torch.inference_mode():
        model(input_ids=windows[:1].long().to(model.device))


def cache_ours(job: Job) -> Result:
    """Cache ``job`` with this project: ``build_cache`` then ``finalize_stats``."""
    lm = load_model(ModelConfig())
    warm_up(lm.model, job.windows)
    coder = load_sparsify(str(job.sae_root), job.hookpoint).to(lm.device)
    cfg = CacheConfig(batch_size=job.batch_size, shard_windows=job.shard_windows)

    def work() -> dict:
        build_cache(lm, {job.hookpoint: coder}, job.windows, job.out_dir, cfg, progress=False)
        return finalize_stats(job.out_dir / job.hookpoint, coder.num_latents, len(job.windows), cfg.shard_windows)

    stats, seconds, cache_mib, process_mib = measure(work)
    return Result(job.windows.numel(), seconds, stats["nnz"], cache_mib, process_mib)


def _stub_faiss() -> None:
    """Stand in for faiss, if missing: ``delphi.latents`` imports it for its FAISS example constructor, which caching never uses."""
    if importlib.util.find_spec("faiss") is None:
        faiss = types.ModuleType("faiss")
        faiss.__spec__ = importlib.machinery.ModuleSpec("faiss", None)
        sys.modules["faiss"] = faiss


def cache_peer(job: Job) -> Result:
    """Cache ``job`` with delphi, as its ``populate_cache`` does: run, save_splits, save_config."""
    _stub_faiss()
    from delphi.config import CacheConfig as DelphiCacheConfig
    from delphi.latents.cache import LatentCache
    from delphi.sparse_coders.load_sparsify import load_sparsify_hooks

    model = load_model(ModelConfig()).model.base_model
    warm_up(model, job.windows)
    with contextlib.redirect_stdout(io.StringIO()):  # delphi prints how it resolved each hookpoint
        encoders, transcode = load_sparsify_hooks(model, str(job.sae_root), [job.sae_name])
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
        cache.save_config(save_dir=job.out_dir, cfg=cfg, model_name="embedded")
        return cache

    cache, seconds, cache_mib, process_mib = measure(work)
    nnz = sum(len(a) for a in cache.cache.latent_activations.values())
    return Result(tokens.numel(), seconds, nnz, cache_mib, process_mib)


def in_fresh_process(fn, job: Job) -> Result:
    """``fn(job)`` in a new process, so that its memory peak is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, job).result()


def save_random_sae(root: Path, layer: int, seed: int) -> None:
    """A randomly initialised sparsify TopK SAE for ``layers.<layer>``, in sparsify's on-disk format."""
    from sparsify import SaeConfig, SparseCoder

    torch.manual_seed(seed)
    SparseCoder(D_MODEL, SaeConfig(expansion_factor=EXPANSION, k=K)).save_to_disk(root / f"layers.{layer}")


def make_windows(tokenizer, tokens: int, ctx_len: int, batch_size: int) -> torch.Tensor:
    """Windows for ``tokens`` tokens, a whole number of batches (delphi drops a partial last batch)."""
    windows = corpus_windows(CorpusConfig(ctx_len=ctx_len, num_tokens=tokens), tokenizer)
    return windows[: len(windows) // batch_size * batch_size]


def run_job(fn, sae_root: Path, layer: int, windows: torch.Tensor, args, scratch: Path) -> Result:
    """Run ``fn`` (``cache_ours`` or ``cache_peer``) on one configuration, in a fresh process and output folder."""
    out_dir = Path(tempfile.mkdtemp(dir=scratch))
    job = Job(sae_root, layer, windows, args.batch_size, args.shard_windows, args.n_splits, out_dir)
    return in_fresh_process(fn, job)


def best(results: list[Result]) -> Result:
    """The fastest of repeated runs, with the most memory any of them used."""
    fastest = min(results, key=lambda r: r.seconds)
    return replace(
        fastest,
        cache_mib=max(r.cache_mib for r in results),
        process_mib=max(r.process_mib for r in results),
    )


def compare(layers: list[int], windows: torch.Tensor, args, scratch: Path) -> list[tuple[int, Result, Result]]:
    """Both sides on every layer, ``args.repeats`` times in alternation; the best run of each."""
    runs: dict[tuple[int, str], list[Result]] = defaultdict(list)
    for _ in range(args.repeats):
        for layer in layers:
            for side, fn in (("ours", cache_ours), ("peer", cache_peer)):
                runs[layer, side].append(run_job(fn, scratch / "sae", layer, windows, args, scratch))
    return [(layer, best(runs[layer, "ours"]), best(runs[layer, "peer"])) for layer in layers]


def fmt_row(cells: list, widths: list[int]) -> str:
    return "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))


def print_comparison(rows: list[tuple[int, Result, Result]]) -> None:
    head = ["layer", "tokens", "ours tok/s", "delphi tok/s", "ratio", "ours peak MiB", "delphi peak MiB",
            "ours cache MiB", "delphi cache MiB", "same nnz"]
    widths = [len(h) for h in head]
    print(fmt_row(head, widths))
    for layer, ours, peer in rows:
        print(fmt_row([
            layer, f"{ours.tokens:,}", f"{ours.tok_per_s:,.0f}", f"{peer.tok_per_s:,.0f}",
            f"{ours.tok_per_s / peer.tok_per_s:.2f}x", f"{ours.process_mib:,.0f}", f"{peer.process_mib:,.0f}",
            f"{ours.cache_mib:,.0f}", f"{peer.cache_mib:,.0f}",
            "yes" if ours.nnz == peer.nnz else f"{ours.nnz:,} vs {peer.nnz:,}",
        ], widths))


def print_scaling(layer: int, results: list[Result]) -> None:
    head = ["layer", "tokens", "ours tok/s", "ours peak MiB", "ours cache MiB"]
    widths = [len(h) for h in head]
    print(fmt_row(head, widths))
    for r in results:
        print(fmt_row([layer, f"{r.tokens:,}", f"{r.tok_per_s:,.0f}", f"{r.process_mib:,.0f}", f"{r.cache_mib:,.0f}"], widths))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, nargs="+", default=[6, 29], help="SAE layers to compare (default: 6 29)")
    p.add_argument("--tokens", type=int, default=8192, help="tokens cached per side, layer and repeat (default: 8192)")
    p.add_argument("--ctx-len", type=int, default=64, help="tokens per window (default: 64; delphi uses 256)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward pass, both sides (default: 16)")
    p.add_argument("--shard-windows", type=int, default=CacheConfig.shard_windows,
                   help=f"windows per shard of our cache (default: {CacheConfig.shard_windows})")
    p.add_argument("--n-splits", type=int, default=5, help="files delphi splits each cache into (default: 5)")
    p.add_argument("--repeats", type=int, default=2,
                   help="runs of each side, alternating; the fastest counts (default: 2)")
    p.add_argument("--scale", type=int, default=8,
                   help="also run ours at this many times --tokens on the first layer, to show flat memory (default: 8; 1 skips)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random SAE")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ["TQDM_DISABLE"] = "1"  # delphi's and transformers' bars; inherited by the workers
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    windows = make_windows(tokenizer, args.tokens, args.ctx_len, args.batch_size)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cache-bench-") as tmp:
        scratch = Path(tmp)
        for layer in args.layers:
            save_random_sae(scratch / "sae", layer, args.seed)
        rows = compare(args.layers, windows, args, scratch)
        print(f"\nSmolLM2-135M, sparsify TopK SAE {D_MODEL}->{D_MODEL * EXPANSION} k={K}, ctx_len {args.ctx_len}, "
              f"batch {args.batch_size} windows, {torch.get_num_threads()} torch threads, best of {args.repeats}, "
              f"load average {load:.1f} before / {os.getloadavg()[0]:.1f} after")
        print_comparison(rows)
        if args.scale > 1:
            layer = args.layers[0]
            more = make_windows(tokenizer, args.tokens * args.scale, args.ctx_len, args.batch_size)
            bigger = run_job(cache_ours, scratch / "sae", layer, more, args, scratch)
            print(f"\nOur memory against tokens cached (shards of {args.shard_windows} windows):")
            print_scaling(layer, [rows[0][1], bigger])


if __name__ == "__main__":
    main()
