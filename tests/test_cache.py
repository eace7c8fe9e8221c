"""The latent cache: sparse, exact, stopped early, resumable and checked."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from interp.cache import build_cache, finalize_stats, iter_shards, load_stats, read_shard, shard_file, verify_shard
from interp.coders import CoderSpec, load_coder
from interp.coders.sparsify_coder import SparsifyCoder
from interp.config import CacheConfig
from interp.errors import CacheCorruptError, RunConfigMismatchError
from interp.hooks import Site, capture_tokens
from interp.records import CacheView
from tests.helpers.coders import random_sae

CTX = 16
CFG = CacheConfig(batch_size=4, shard_windows=8)


@pytest.fixture
def windows() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(3, 5000, (20, CTX), generator=g, dtype=torch.int32)


@pytest.fixture
def coders(tiny_lm):
    return {
        "model.layers.1": random_sae(32, "model.layers.1"),
        "model.layers.1.mlp.neurons": load_coder(CoderSpec.parse("neurons@model.layers.1.mlp"), tiny_lm.model),
    }


def dense_reference(lm, coder, windows) -> dict[tuple[int, int], float]:
    """(token, latent) -> activation, from a full forward pass and a dense activation matrix."""
    acts = capture_tokens(lm.model, windows.long(), [coder.site], stop=False)[coder.site].flatten(0, 1)
    if isinstance(coder, SparsifyCoder):
        pre = torch.relu((acts - coder.sae.b_dec) @ coder.sae.encoder.weight.T + coder.sae.encoder.bias)
        dense = torch.zeros_like(pre)
        top = pre.topk(coder.sae.cfg.k, dim=-1)
        dense.scatter_(1, top.indices, top.values)
    else:
        dense = acts.clamp_min(0)
    nz = dense.nonzero()
    return {(int(tok), int(lat)): float(dense[tok, lat]) for tok, lat in nz}


def cached(cache_dir: Path, name: str) -> dict[tuple[int, int], float]:
    out = {}
    for meta, t in iter_shards(cache_dir / name):
        base = meta.first_window * meta.ctx_len
        for tok, lat, act in zip(t.token.tolist(), t.latent.tolist(), t.activation.tolist(), strict=True):
            out[(base + tok, lat)] = act
    return out


def test_cached_latents_equal_a_dense_reference(tiny_lm, coders, windows, tmp_path):
    build_cache(tiny_lm, coders, windows, tmp_path, CFG, progress=False)
    for name, coder in coders.items():
        got, want = cached(tmp_path, name), dense_reference(tiny_lm, coder, windows)
        assert got.keys() == want.keys()
        assert max(abs(got[k] - want[k]) for k in want) < 1e-5


def test_shards_hold_sparse_triples_sorted_by_latent(tiny_lm, coders, windows, tmp_path):
    build_cache(tiny_lm, coders, windows, tmp_path, CFG, progress=False)
    meta, t = read_shard(tmp_path / "model.layers.1", 0)
    assert meta.num_windows == 8 and meta.nnz == len(t.latent) == 8 * CTX * 6
    assert torch.all(t.latent[1:] >= t.latent[:-1])
    assert t.token.dtype == t.latent.dtype == torch.int32 and t.activation.dtype == torch.float32
    last = read_shard(tmp_path / "model.layers.1", 2)[0]
    assert (last.first_window, last.num_windows) == (16, 4)


def test_forward_pass_stops_after_the_deepest_hookpoint(tiny_lm, coders, windows, tmp_path):
    reached = []
    handle = tiny_lm.model.model.layers[2].register_forward_hook(lambda *a: reached.append(1))
    try:
        build_cache(tiny_lm, coders, windows, tmp_path, CFG, progress=False)
    finally:
        handle.remove()
    assert reached == []
    assert capture_tokens(tiny_lm.model, windows[:1].long(), [Site("model.layers.1")])


def test_stats_match_the_triples(tiny_lm, coders, windows, tmp_path):
    build_cache(tiny_lm, coders, windows, tmp_path, CFG, progress=False)
    coder_dir = tmp_path / "model.layers.1"
    summary = finalize_stats(coder_dir, 128, len(windows), CFG.shard_windows)
    stats = load_stats(coder_dir)
    ref = cached(tmp_path, "model.layers.1")
    lat = torch.tensor([latent for _, latent in ref])
    act = torch.tensor(list(ref.values()))
    assert torch.equal(stats["count"], torch.bincount(lat, minlength=128))
    assert torch.allclose(stats["max"], torch.zeros(128).scatter_reduce(0, lat, act, "amax"))
    assert summary["num_tokens"] == windows.numel() and summary["mean_l0"] == 6.0
    assert json.loads((coder_dir / "stats.json").read_text()) == summary


class Crash(Exception):
    pass


class CrashingSae(SparsifyCoder):
    """The real coder, made to fail on its Nth call: a process dying in the middle of a shard."""

    def __init__(self, inner: SparsifyCoder, fail_on: int):
        super().__init__(inner.sae, hookpoint=inner.hookpoint, source=inner.source)
        self.calls, self.fail_on = 0, fail_on

    def encode(self, x):
        self.calls += 1
        if self.calls == self.fail_on:
            raise Crash
        return super().encode(x)


def files(cache_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(cache_dir)): p.read_bytes() for p in sorted(cache_dir.rglob("*")) if p.is_file()}


def test_interrupted_cache_resumes_byte_identical(tiny_lm, windows, tmp_path):
    sae = random_sae(32, "model.layers.1")
    build_cache(tiny_lm, {"sae": sae}, windows, tmp_path / "full", CFG, progress=False)
    finalize_stats(tmp_path / "full" / "sae", sae.num_latents, len(windows), CFG.shard_windows)

    with pytest.raises(Crash):  # dies in the middle of the second shard
        build_cache(tiny_lm, {"sae": CrashingSae(sae, fail_on=4)}, windows, tmp_path / "resumed", CFG, progress=False)
    assert (tmp_path / "resumed" / "sae" / "shard-00000.json").exists()
    assert not (tmp_path / "resumed" / "sae" / "shard-00001.json").exists()
    assert not list((tmp_path / "resumed").rglob("*.tmp"))

    calls = CrashingSae(sae, fail_on=-1)
    build_cache(tiny_lm, {"sae": calls}, windows, tmp_path / "resumed", CFG, progress=False)
    assert calls.calls == 3  # only shards 1 and 2 ran: 2 + 1 batches
    finalize_stats(tmp_path / "resumed" / "sae", sae.num_latents, len(windows), CFG.shard_windows)
    assert files(tmp_path / "resumed") == files(tmp_path / "full")


def test_corrupted_shard_is_named_and_recomputed(tiny_lm, windows, tmp_path):
    sae = random_sae(32, "model.layers.1")
    build_cache(tiny_lm, {"sae": sae}, windows, tmp_path, CFG, progress=False)
    path = shard_file(tmp_path / "sae", 1)
    good = path.read_bytes()
    path.write_bytes(good[:-7] + bytes([good[-7] ^ 0xFF]) + good[-6:])
    with pytest.raises(CacheCorruptError, match="shard-00001.safetensors"):
        verify_shard(tmp_path / "sae", 1)
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CacheCorruptError, match=r"shard-00001.safetensors is truncated"):
        list(iter_shards(tmp_path / "sae"))
    build_cache(tiny_lm, {"sae": sae}, windows, tmp_path, CFG, progress=False)
    assert path.read_bytes() == good


def test_cache_refuses_other_windows_or_another_coder(tiny_lm, windows, tmp_path):
    sae = random_sae(32, "model.layers.1")
    build_cache(tiny_lm, {"sae": sae}, windows, tmp_path, CFG, progress=False)
    with pytest.raises(RunConfigMismatchError, match="different token windows"):
        build_cache(tiny_lm, {"sae": sae}, windows[:10], tmp_path, CFG, progress=False)
    other = random_sae(32, "model.layers.2")
    with pytest.raises(RunConfigMismatchError, match="different coder"):
        build_cache(tiny_lm, {"sae": other}, windows, tmp_path, CFG, progress=False)
    assert len(load_file(tmp_path / "tokens.safetensors")["tokens"]) == len(windows)


def test_processes_split_shards_and_together_cover_all(tiny_lm, windows, tmp_path):
    sae = random_sae(32, "model.layers.1")
    build_cache(tiny_lm, {"sae": sae}, windows, tmp_path / "one", CFG, progress=False)
    for rank in (1, 0):
        build_cache(
            tiny_lm, {"sae": sae}, windows, tmp_path / "two", CFG, process_index=rank, num_processes=2, progress=False
        )
        if rank == 1:
            assert sorted(p.name for p in (tmp_path / "two" / "sae").glob("shard-*.json")) == ["shard-00001.json"]
    assert files(tmp_path / "two") == files(tmp_path / "one")


def test_shard_files_past_the_last_index_are_ignored_and_left_alone(tiny_lm, windows, tmp_path):
    sae = random_sae(32, "model.layers.1")
    build_cache(tiny_lm, {"sae": sae}, windows, tmp_path, CFG, progress=False)  # 20 windows: shards 0, 1, 2
    finalize_stats(tmp_path / "sae", sae.num_latents, len(windows), CFG.shard_windows)
    coder_dir, every = tmp_path / "sae", torch.arange(sae.num_latents)
    want, want_triples = cached(tmp_path, "sae"), CacheView.open(tmp_path, "sae").triples(every)

    stray = coder_dir / "shard-00003.json"  # left by a run with more windows
    stray.write_bytes((coder_dir / "shard-00002.json").read_bytes())
    assert cached(tmp_path, "sae") == want
    build_cache(tiny_lm, {"sae": sae}, windows, tmp_path, CFG, progress=False)  # resuming neither fails nor deletes it
    finalize_stats(coder_dir, sae.num_latents, len(windows), CFG.shard_windows)
    assert cached(tmp_path, "sae") == want and stray.read_bytes() == (coder_dir / "shard-00002.json").read_bytes()

    shard_file(coder_dir, 3).write_bytes(shard_file(coder_dir, 2).read_bytes())  # now a whole, valid shard 3
    got = CacheView.open(tmp_path, "sae").triples(every)
    assert all(torch.equal(a, b) for a, b in zip(got, want_triples, strict=True))  # its triples are not read twice
