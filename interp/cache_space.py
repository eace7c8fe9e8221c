"""The disk space a cache will take, estimated before caching starts, so a disk that clearly cannot hold it is
refused at once with both numbers rather than an hour into the work."""

from pathlib import Path

from .cache import TOKENS_FILE, num_shards, read_meta
from .diskspace import free_bytes
from .errors import CacheCorruptError, InterpError, size_text

TRIPLE_BYTES = 12
"""One cached (token, latent, activation) entry: int32, int32, float32."""


def cache_bytes_needed(
    cache_dir: Path, coders: dict[str, int | None], num_windows: int, ctx_len: int, shard_windows: int
) -> tuple[int, list[str]]:
    """(bytes the cache still needs, coders it cannot estimate), from the shards already done where there are any
    (their size per window), else from each coder's k (``coders``: name -> k, None where unknown).

    k is an upper bound: only positive activations are kept. Shards are counted done by their sidecar alone.
    """
    needed = 0 if (cache_dir / TOKENS_FILE).is_file() else num_windows * ctx_len * 4
    unknown = []
    for name, k in coders.items():
        done_windows = done_bytes = 0
        for index in range(num_shards(num_windows, shard_windows)):
            try:
                meta = read_meta(cache_dir / name, index)
            except CacheCorruptError:  # recomputed: counted as still to do
                meta = None
            if meta is not None:
                done_windows, done_bytes = done_windows + meta.num_windows, done_bytes + meta.bytes
        left = num_windows - done_windows
        if done_windows:
            needed += done_bytes * left // done_windows
        elif k is not None:
            needed += left * ctx_len * k * TRIPLE_BYTES
        else:
            unknown.append(name)
    return needed, unknown


def check_cache_space(
    cache_dir: Path, coders: dict[str, int | None], num_windows: int, ctx_len: int, shard_windows: int
) -> int:
    """Refuse a cache that clearly cannot fit: free space under half the estimate (an upper bound); returns the
    estimate, in bytes."""
    needed, unknown = cache_bytes_needed(cache_dir, coders, num_windows, ctx_len, shard_windows)
    free = free_bytes(cache_dir)
    if free is not None and free < needed // 2:
        guessed = f" (not counting {', '.join(unknown)}, whose size cannot be told before caching)" if unknown else ""
        raise InterpError(
            f"{cache_dir} has {size_text(free)} free, and this cache needs about {size_text(needed)}{guessed}: "
            "free some space or cache to another disk; --force tries anyway (a full disk stops it, and the same "
            "command resumes)."
        )
    return needed
