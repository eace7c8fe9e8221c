"""The latent cache: one pass of the model, only sparse (token, latent, activation) triples kept.

On-disk layout under ``cache/``::

    tokens.safetensors            the token windows, int32 [windows, ctx_len], written once
    <coder>/coder.json            what the coder is (kind, source, hookpoint, widths)
    <coder>/shard-00000.safetensors
                                  token (int32, index inside the shard), latent (int32),
                                  activation (float32), sorted by latent then token
    <coder>/shard-00000.json      first window, window count, nnz, byte size and sha256
    <coder>/index-00000.safetensors
                                  where each latent's triples start in the shard (``interp.cache_index``;
                                  written on first read, so caches made before it keep working)
    <coder>/stats.safetensors     per latent: count, max, sum of activations
    <coder>/stats.json            totals: tokens, nnz, mean L0, dead fraction

A shard counts as done only when its JSON exists and matches the shard file, so a run killed
at any point resumes at the first missing shard and ends byte-identical to an uninterrupted one.
A reader checks each shard's checksum once per process, and again only once its file has changed.
"""

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .atomic import write_atomic, write_json_atomic
from .coders import SparseCoder
from .config import CacheConfig
from .errors import CacheCorruptError, RunConfigMismatchError
from .hooks import capture_tokens
from .jsonl import read_json
from .models import LoadedModel

FORMAT = "interp-cache/1"
TOKENS_FILE = "tokens.safetensors"
RESUME = "resume the cache with `interp cache` to rebuild it"


class Triples(NamedTuple):
    """Sparse activations of one shard; ``token`` counts from the shard's first window."""

    token: torch.Tensor
    latent: torch.Tensor
    activation: torch.Tensor


@dataclass
class ShardMeta:
    """The sidecar that marks a shard complete and lets a reader verify it."""

    index: int
    first_window: int
    num_windows: int
    ctx_len: int
    nnz: int
    bytes: int
    sha256: str


def shard_file(coder_dir: Path, index: int) -> Path:
    """Path of shard ``index`` of one coder's cache."""
    return coder_dir / f"shard-{index:05d}.safetensors"


def _meta_file(coder_dir: Path, index: int) -> Path:
    return coder_dir / f"shard-{index:05d}.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_meta(coder_dir: Path, index: int) -> ShardMeta | None:
    """The shard's sidecar, or None if the shard was never completed."""
    path = _meta_file(coder_dir, index)
    if not path.is_file():
        return None
    try:
        return ShardMeta(**json.loads(path.read_text()))
    except (ValueError, TypeError) as e:  # not JSON, not UTF-8, not an object with the right fields
        raise CacheCorruptError(f"Shard sidecar {path} is unreadable ({e}); delete it to recompute the shard.") from e


_verified: dict[Path, tuple[tuple, ShardMeta]] = {}
"""Shard path -> (its file's identity when it last passed ``verify_shard``, its sidecar then)."""


def file_identity(path: Path) -> tuple:
    """What changes whenever a file is rewritten or replaced: size, inode and both timestamps (ns)."""
    st = path.stat()
    return st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns


def verify_shard(coder_dir: Path, index: int) -> ShardMeta:
    """Check size and checksum of shard ``index``; raise naming the shard if it is damaged.

    Always reads the whole file; ``verified_shard`` is the once-per-process check readers use.
    """
    meta = read_meta(coder_dir, index)
    path = shard_file(coder_dir, index)
    if meta is None:
        raise CacheCorruptError(f"Shard {path} is not complete (no sidecar); resume the cache to finish it.")
    if not path.is_file():
        raise CacheCorruptError(f"Shard {path} is missing; resume the cache to recompute it.")
    size = path.stat().st_size
    if size != meta.bytes:
        raise CacheCorruptError(f"Shard {path} is truncated or damaged: {size} bytes, expected {meta.bytes}.")
    identity = file_identity(path)
    if _sha256(path) != meta.sha256:
        raise CacheCorruptError(f"Shard {path} does not match its sha256; resume with the cache to recompute it.")
    _verified[path] = (identity, meta)
    return meta


def verified_shard(coder_dir: Path, index: int) -> ShardMeta:
    """``verify_shard``, skipped when this process already verified the same file with the same sidecar.

    Reading records hashes each shard once, not once per batch of latents; a shard rewritten or
    replaced since (another size, inode or timestamp) is checked again.
    """
    path = shard_file(coder_dir, index)
    seen = _verified.get(path)
    if seen is not None and path.is_file() and seen == (file_identity(path), read_meta(coder_dir, index)):
        return seen[1]
    return verify_shard(coder_dir, index)


def load_tensors(path: Path, names: tuple[str, ...], hint: str = RESUME) -> dict[str, torch.Tensor]:
    """The safetensors file ``path``, holding at least ``names``; a ``CacheCorruptError`` naming it
    (and ``hint``) if not.
    """
    try:
        tensors = load_file(path)
    except (OSError, SafetensorError) as e:
        raise CacheCorruptError(f"{path} cannot be read ({e}); {hint}.") from e
    missing = [n for n in names if n not in tensors]
    if missing:
        raise CacheCorruptError(f"{path} lacks the tensors {', '.join(missing)}; {hint}.")
    return tensors


def read_shard(coder_dir: Path, index: int) -> tuple[ShardMeta, Triples]:
    """Verify (once per process) and load shard ``index``."""
    meta = verified_shard(coder_dir, index)
    t = load_tensors(shard_file(coder_dir, index), Triples._fields)
    return meta, Triples(t["token"], t["latent"], t["activation"])


def _shard_done(coder_dir: Path, index: int) -> bool:
    try:
        verify_shard(coder_dir, index)
        return True
    except CacheCorruptError as e:
        if _meta_file(coder_dir, index).is_file():  # it was finished once: say why it is redone
            tqdm.write(f"recomputing damaged shard: {e}")
        return False


def _write_shard(coder_dir: Path, index: int, first_window: int, num_windows: int, ctx_len: int, triples: Triples):
    order = torch.argsort(triples.latent, stable=True)
    tensors = {
        "token": triples.token[order].contiguous(),
        "latent": triples.latent[order].contiguous(),
        "activation": triples.activation[order].contiguous(),
    }
    path = shard_file(coder_dir, index)
    write_atomic(path, lambda p: save_file(tensors, str(p), metadata={"format": FORMAT}))
    meta = ShardMeta(index, first_window, num_windows, ctx_len, len(order), path.stat().st_size, _sha256(path))
    write_json_atomic(_meta_file(coder_dir, index), asdict(meta))


def to_triples(latents, ctx_len: int, first_token: int) -> Triples:
    """Keep the positive entries of ``latents`` (``[tokens, k]``) as triples, never densifying."""
    acts, indices = latents
    rows = torch.arange(acts.shape[0], device=acts.device).unsqueeze(1).expand_as(acts)
    keep = acts > 0
    return Triples(
        (rows[keep] + first_token).to(torch.int32).cpu(),
        indices[keep].to(torch.int32).cpu(),
        acts[keep].float().cpu(),
    )


def _check_tokens(cache_dir: Path, windows: torch.Tensor) -> None:
    path = cache_dir / TOKENS_FILE
    try:
        old = load_tensors(path, ("tokens",))["tokens"] if path.is_file() else None
    except CacheCorruptError as e:  # the windows are cut again on every run: write them anew
        tqdm.write(f"rewriting the token windows: {e}")
        old = None
    if old is not None:
        if old.shape != windows.shape or not torch.equal(old, windows):
            raise RunConfigMismatchError(
                f"{path} holds different token windows than this run would cache; "
                "use a new run directory or --overwrite."
            )
    else:
        write_atomic(path, lambda p: save_file({"tokens": windows.contiguous()}, str(p)))


def _check_coder(coder_dir: Path, coder: SparseCoder) -> None:
    path = coder_dir / "coder.json"
    desc = coder.describe()
    if path.is_file():
        old = read_json(
            path, hint="delete it if this cache was made with the same coder, or start again with --overwrite"
        )
        if old != desc:
            raise RunConfigMismatchError(
                f"{coder_dir} was cached with a different coder ({old}); use a new run directory or --overwrite."
            )
    else:
        write_json_atomic(path, desc)


def num_shards(num_windows: int, shard_windows: int) -> int:
    """How many shards ``num_windows`` windows fill."""
    return -(-num_windows // shard_windows)


def build_cache(
    lm: LoadedModel,
    coders: dict[str, SparseCoder],
    windows: torch.Tensor,
    cache_dir: Path,
    cfg: CacheConfig,
    *,
    process_index: int = 0,
    num_processes: int = 1,
    progress: bool = True,
) -> None:
    """Cache every coder's active latents over ``windows`` into ``cache_dir``, resuming if possible.

    With several processes (``accelerate launch``), process i computes the shards whose index
    is i modulo the process count; call ``finalize_stats`` once all have finished.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if process_index == 0:
        _check_tokens(cache_dir, windows)
    dirs = {name: cache_dir / name for name in coders}
    for name, coder in coders.items():
        dirs[name].mkdir(parents=True, exist_ok=True)
        if process_index == 0:
            _check_coder(dirs[name], coder)
    n_windows, ctx_len = windows.shape
    todo = []
    for i in range(process_index, num_shards(n_windows, cfg.shard_windows), num_processes):
        missing = [name for name in coders if not _shard_done(dirs[name], i)]
        if missing:
            todo.append((i, missing))
    total = sum(min(cfg.shard_windows, n_windows - i * cfg.shard_windows) for i, _ in todo) * ctx_len
    bar = tqdm(total=total, unit="tok", unit_scale=True, desc="caching", disable=not progress)
    start = time.perf_counter()
    for index, names in todo:
        first = index * cfg.shard_windows
        shard = windows[first : first + cfg.shard_windows]
        parts: dict[str, list[Triples]] = {name: [] for name in names}
        sites = [coders[name].site for name in names]
        for b in range(0, len(shard), cfg.batch_size):
            batch = shard[b : b + cfg.batch_size].to(lm.device, torch.long)
            acts = capture_tokens(lm.model, batch, sites)
            for name in names:
                coder = coders[name]
                x = acts[coder.site].flatten(0, 1)
                with torch.inference_mode():
                    latents = coder.encode(x.to(coder.device))
                parts[name].append(to_triples(latents, ctx_len, b * ctx_len))
            bar.update(batch.numel())
        for name in names:
            merged = Triples(*(torch.cat(cols) for cols in zip(*parts[name], strict=True)))
            _write_shard(dirs[name], index, first, len(shard), ctx_len, merged)
    bar.close()
    if progress and total:
        elapsed = time.perf_counter() - start
        tqdm.write(f"cached {total:,} tokens in {elapsed:.1f} s ({total / elapsed:,.0f} tok/s)")


def cached_windows(cache_dir: Path) -> int:
    """How many token windows the cache in ``cache_dir`` holds, read from the header of its tokens file."""
    path = Path(cache_dir) / TOKENS_FILE
    try:
        with safe_open(path, "pt") as f:
            return f.get_slice("tokens").get_shape()[0]
    except (OSError, SafetensorError) as e:
        raise CacheCorruptError(f"{path} cannot be read ({e}); {RESUME}.") from e


def covering_shards(coder_dir: Path, num_windows: int | None = None) -> Iterator[ShardMeta]:
    """The sidecars of the shards that cover the cache's ``num_windows`` windows, in order, each verified first
    (once per process).

    ``num_windows`` defaults to the windows of the cache around ``coder_dir``. Shard files past
    the last window (left by a run with more windows, or copied in) are not part of this cache:
    they are never read, so they can neither break nor pollute it, and are left where they are.
    """
    coder_dir = Path(coder_dir)
    if num_windows is None:
        num_windows = cached_windows(coder_dir.parent)
    index = covered = 0
    while covered < num_windows:
        meta = verified_shard(coder_dir, index)
        if meta.first_window != covered or meta.num_windows < 1:
            raise CacheCorruptError(
                f"Shard sidecar {_meta_file(coder_dir, index)} says it starts at window {meta.first_window} with "
                f"{meta.num_windows} windows, but shard {index} must start at window {covered}; "
                "delete it to recompute the shard."
            )
        yield meta
        covered += meta.num_windows
        index += 1


def iter_shards(coder_dir: Path, num_windows: int | None = None) -> Iterator[tuple[ShardMeta, Triples]]:
    """The shards of ``covering_shards``, each loaded whole."""
    for index, meta in enumerate(covering_shards(coder_dir, num_windows)):  # shard i is the i-th one covering
        t = load_tensors(shard_file(coder_dir, index), Triples._fields)
        yield meta, Triples(t["token"], t["latent"], t["activation"])


def finalize_stats(coder_dir: Path, num_latents: int, num_windows: int, shard_windows: int) -> dict:
    """Per-latent firing count, max and sum over all shards; written beside them and returned."""
    count = torch.zeros(num_latents, dtype=torch.int64)
    maximum = torch.zeros(num_latents, dtype=torch.float32)
    total = torch.zeros(num_latents, dtype=torch.float64)
    tokens = nnz = 0
    for index in range(num_shards(num_windows, shard_windows)):
        meta, t = read_shard(coder_dir, index)
        latent = t.latent.long()
        count += torch.bincount(latent, minlength=num_latents)
        maximum = maximum.scatter_reduce(0, latent, t.activation, reduce="amax")
        total.index_add_(0, latent, t.activation.double())
        tokens += meta.num_windows * meta.ctx_len
        nnz += meta.nnz
    write_atomic(
        coder_dir / "stats.safetensors",
        lambda p: save_file({"count": count, "max": maximum, "sum": total}, str(p)),
    )
    summary = {
        "num_tokens": tokens,
        "num_latents": num_latents,
        "nnz": nnz,
        "mean_l0": nnz / max(tokens, 1),
        "dead_fraction": float((count == 0).float().mean()),
        "alive_latents": int((count > 0).sum()),
    }
    write_json_atomic(coder_dir / "stats.json", summary)
    return summary


def is_finished(coder_dir: Path) -> bool:
    """Whether ``finalize_stats`` has run for this coder's cache."""
    return (Path(coder_dir) / "stats.json").is_file() and (Path(coder_dir) / "stats.safetensors").is_file()


def read_cache_stats(coder_dir: Path) -> dict:
    """The totals ``finalize_stats`` wrote: tokens, nnz, mean L0, dead fraction."""
    path = Path(coder_dir) / "stats.json"
    if not path.is_file():
        raise CacheCorruptError(f"{path} is missing: the cache did not finish. Resume it with `interp cache`.")
    stats = read_json(path, hint=RESUME)
    tokens = stats.get("num_tokens") if isinstance(stats, dict) else None
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
        raise CacheCorruptError(f"{path} holds no token count; {RESUME}.")
    return stats


def read_coder_description(coder_dir: Path) -> dict:
    """What the cached coder is (kind, source, hookpoint, widths), as ``build_cache`` recorded it."""
    path = Path(coder_dir) / "coder.json"
    if not path.is_file():
        raise CacheCorruptError(f"{path} is missing: the cache of this coder is incomplete; {RESUME}.")
    return read_json(path, hint=RESUME)


def load_stats(coder_dir: Path) -> dict[str, torch.Tensor]:
    """Per-latent ``count``, ``max`` and ``sum`` written by ``finalize_stats``."""
    path = Path(coder_dir) / "stats.safetensors"
    if not path.is_file():
        raise CacheCorruptError(f"{path} is missing: the cache did not finish. Resume it with `interp cache`.")
    return load_tensors(path, ("count", "max", "sum"))
