"""Reading a range of latents from a coder's cache without loading the rest of each shard.

A shard's triples are sorted by latent, so the triples of latents ``[lo, hi)`` are one contiguous
slice of it. ``index-00000.safetensors`` beside ``shard-00000.safetensors`` holds where each
latent's slice starts (``offsets``, int64, one more than the coder's latents, CSR style), and the
shard's sha256 it was made from. It is written atomically the first time a range of that shard is
read, so caches made before the index existed keep working, and is made again whenever it does not
belong to its shard (the shard was recomputed) or does not hold a valid index; each index is
checked once per process. A range is then read through ``safetensors.safe_open``, which maps the
file and copies only the slice. Where the cache cannot be written (a read-only mount of a run cached
before indexes existed), each index is built once per process and kept in memory instead.
"""

import errno
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import write_atomic
from .cache import RESUME, ShardMeta, covering_shards, file_identity, shard_file
from .errors import CacheCorruptError

FORMAT = "interp-cache-index/1"
SOURCE = "source"
"""The one metadata key of an index: ``FORMAT;sha256=<the shard's sha256>``. One key, because safetensors writes
several in no fixed order, and a resumed run's files must be byte-identical to an uninterrupted run's."""
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
"""Why an index could not be written that means the folder is not writable (not that the disk is full)."""
log = logging.getLogger(__name__)

_checked: dict[Path, tuple[tuple, str, int]] = {}
"""Index path -> (its file's identity, the shard sha256 and latent count it was checked against)."""
_in_memory: dict[Path, tuple[tuple[str, int], np.ndarray]] = {}
"""Index path -> ((shard sha256, latent count), offsets) of indexes that could not be written beside their shard."""


def index_file(coder_dir: Path, index: int) -> Path:
    """Path of the latent offset index of shard ``index``."""
    return Path(coder_dir) / f"index-{index:05d}.safetensors"


def _source(meta: ShardMeta) -> str:
    return f"{FORMAT};sha256={meta.sha256}"


def _valid(path: Path, meta: ShardMeta, num_latents: int) -> bool:
    """Whether ``path`` is an index of the shard ``meta`` describes, over ``num_latents`` latents."""
    try:
        with safe_open(path, "pt") as f:
            header = f.metadata() or {}
            offsets = f.get_tensor("offsets")
    except (OSError, SafetensorError):
        return False
    return (
        header.get(SOURCE) == _source(meta)
        and offsets.dtype == torch.int64
        and offsets.shape == (num_latents + 1,)
        and int(offsets[0]) == 0
        and int(offsets[-1]) == meta.nnz
        and bool((offsets[1:] >= offsets[:-1]).all())
    )


def _write_index(coder_dir: Path, index: int, meta: ShardMeta, num_latents: int) -> bool:
    """Count the shard's triples per latent and write their offsets, atomically; False (the offsets kept in memory)
    where the folder cannot be written."""
    path = shard_file(coder_dir, index)
    try:
        with safe_open(path, "pt") as f:
            latent = f.get_tensor("latent").long()
    except (OSError, SafetensorError) as e:
        raise CacheCorruptError(f"{path} cannot be read ({e}); {RESUME}.") from e
    if len(latent) != meta.nnz or (len(latent) and (latent.min() < 0 or latent.max() >= num_latents)):
        raise CacheCorruptError(f"{path} holds latents outside 0-{num_latents - 1} or not {meta.nnz:,}; {RESUME}.")
    if len(latent) > 1 and bool((latent[1:] < latent[:-1]).any()):
        raise CacheCorruptError(f"{path} is not sorted by latent (made by another program?); {RESUME}.")
    offsets = torch.zeros(num_latents + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.bincount(latent, minlength=num_latents), 0)
    metadata = {SOURCE: _source(meta)}
    target = index_file(coder_dir, index)
    try:
        write_atomic(target, lambda p: save_file({"offsets": offsets}, str(p), metadata=metadata))
    except OSError as e:
        if e.errno not in READ_ONLY:
            raise
        if not _in_memory:
            log.info("%s cannot be written: the cache's latent indexes are kept in memory for this process", coder_dir)
        _in_memory[target] = ((meta.sha256, num_latents), offsets.numpy())
        return False
    return True


def checked_index(coder_dir: Path, index: int, meta: ShardMeta, num_latents: int) -> Path | np.ndarray:
    """The index of shard ``index`` (verified, described by ``meta``), made or remade if it is not valid for it: its
    file, or its offsets where the file could not be written."""
    path = index_file(coder_dir, index)
    kept = _in_memory.get(path)
    if kept is not None and kept[0] == (meta.sha256, num_latents):
        return kept[1]
    seen = _checked.get(path)
    if seen is not None and path.is_file() and seen == (file_identity(path), meta.sha256, num_latents):
        return path
    if not _valid(path, meta, num_latents) and not _write_index(coder_dir, index, meta, num_latents):
        return _in_memory[path][1]
    _checked[path] = (file_identity(path), meta.sha256, num_latents)
    return path


def _offsets(index: Path | np.ndarray, lo: int, hi: int) -> np.ndarray:
    if isinstance(index, np.ndarray):
        return index[lo : hi + 1]
    with safe_open(index, "np") as f:
        return f.get_slice("offsets")[lo : hi + 1]


class ShardRange(NamedTuple):
    """The triples of a range of latents ``[lo, hi)`` in one shard (its latents are implied by ``counts``)."""

    meta: ShardMeta
    counts: np.ndarray
    """[hi - lo] triples of each latent, in order: the slice holds latent lo's, then lo + 1's, and so on."""
    token: np.ndarray
    """int32, counted from the shard's first window."""
    activation: np.ndarray


def read_range(coder_dir: Path, num_windows: int, num_latents: int, lo: int, hi: int) -> Iterator[ShardRange]:
    """The triples of latents ``[lo, hi)`` of each shard covering the cache's ``num_windows`` windows, in shard
    order, each sorted by latent then token; the rest of each shard is not read."""
    coder_dir = Path(coder_dir)
    for index, meta in enumerate(covering_shards(coder_dir, num_windows)):  # shard i is the i-th one covering
        offsets = _offsets(checked_index(coder_dir, index, meta, num_latents), lo, hi)
        a, b = int(offsets[0]), int(offsets[-1])
        path = shard_file(coder_dir, index)
        try:
            with safe_open(path, "np") as f:
                token, activation = f.get_slice("token")[a:b], f.get_slice("activation")[a:b]
        except (OSError, SafetensorError) as e:
            raise CacheCorruptError(f"{path} cannot be read ({e}); {RESUME}.") from e
        yield ShardRange(meta, np.diff(offsets), token, activation)
