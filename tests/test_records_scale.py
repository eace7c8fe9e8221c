"""Records built range by range, from one read of the cache, equal the records the per-batch builder made.

``ReferenceBuilder`` is the record builder as it was before ranged reading (every shard read and
hashed for each call, Python loops over examples, one unembedding product per latent), kept here
only to compare against: every latent of a small real run must come out field by field the same.
"""

import os
import shutil
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from interp import cache, cache_index, records
from interp.cache import iter_shards, shard_file
from interp.cache_index import index_file
from interp.cli import main
from interp.config import RecordsConfig
from interp.errors import CacheCorruptError
from interp.records import CacheView, Example, LatentRecord, LatentStats, RecordBuilder
from interp.rundir import RunDir
from interp.subject import open_subject
from tests.helpers.coders import random_sae
from tests.helpers.models import D_MODEL, save_tiny_model

HISTOGRAM_BINS, TOP_EXAMPLES = 20, 10
SHARDS = 4


# --- the builder before ranged reading, verbatim but for its names -------------------------------


def reference_triples(view: CacheView, latents: torch.Tensor):
    latents = latents.to(torch.int32)
    tok, lat, act = [], [], []
    for meta, t in iter_shards(view.coder_dir, len(view.tokens)):
        lo = torch.searchsorted(t.latent, latents)
        hi = torch.searchsorted(t.latent, latents + 1)
        lengths = hi - lo
        starts = torch.repeat_interleave(lo - torch.cumsum(lengths, 0) + lengths, lengths)
        idx = starts + torch.arange(int(lengths.sum()))
        tok.append(t.token[idx].long() + meta.first_window * meta.ctx_len)
        lat.append(t.latent[idx].long())
        act.append(t.activation[idx])
    tok, lat, act = torch.cat(tok), torch.cat(lat), torch.cat(act)
    order = torch.argsort(lat, stable=True)
    return tok[order], lat[order], act[order]


def _histogram(acts: torch.Tensor, top: float) -> list[int]:
    if acts.numel() == 0 or top <= 0:
        return [0] * HISTOGRAM_BINS
    return torch.histc(acts, bins=HISTOGRAM_BINS, min=0.0, max=top).long().tolist()


def _spread(indices: np.ndarray, n: int, n_quantiles: int, rng) -> tuple[list[int], list[int]]:
    if len(indices) == 0 or n <= 0:
        return [], []
    bins = np.array_split(np.arange(len(indices)), min(n_quantiles, len(indices)))
    per_bin = [n // len(bins) + (1 if i < n % len(bins) else 0) for i in range(len(bins))]
    chosen, quantile = [], []
    for q, (members, want) in enumerate(zip(bins, per_bin, strict=True)):
        take = rng.choice(members, size=min(want, len(members)), replace=False)
        chosen.extend(indices[sorted(take)].tolist())
        quantile.extend([q] * len(take))
    return chosen, quantile


def _train_share(available: int, n_train: int, n_test: int) -> int:
    if available >= n_train + n_test or available < 2:
        return min(n_train, available)
    return max(1, min(n_train, available * n_train // (n_train + n_test)))


class ReferenceBuilder:
    def __init__(self, view: CacheView, cfg: RecordsConfig, decoder=None, lens=None):
        self.view = view
        self.cfg = cfg
        e = cfg.example_len
        self.per_window = view.tokens.shape[1] // e
        self.example_tokens = view.tokens[:, : self.per_window * e].reshape(-1, e)
        self.num_examples = len(self.example_tokens)
        flat = self.example_tokens.flatten()
        self._sorted_positions = torch.argsort(flat, stable=True)
        self._sorted_tokens = flat[self._sorted_positions]
        self.decoder = decoder
        self.lens = lens

    def _example_of(self, token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx = self.view.tokens.shape[1]
        window, pos = token // ctx, token % ctx
        e = self.cfg.example_len
        valid = pos < self.per_window * e
        example = torch.where(valid, window * self.per_window + pos // e, torch.full_like(window, -1))
        return example, pos % e

    def _examples_with_token(self, token_id: int) -> torch.Tensor:
        lo, hi = torch.searchsorted(
            self._sorted_tokens, torch.tensor([token_id, token_id + 1], dtype=self._sorted_tokens.dtype)
        ).tolist()
        return torch.unique(self._sorted_positions[lo:hi] // self.cfg.example_len)

    def _make(self, example: int, offsets: torch.Tensor, values: torch.Tensor) -> Example:
        acts = torch.zeros(self.cfg.example_len)
        acts[offsets] = values
        return Example(self.example_tokens[example].tolist(), acts.tolist(), int(example))

    def logit_tokens(self, latent: int):
        if self.decoder is None or self.lens is None or self.cfg.n_logit_tokens <= 0:
            return [], []
        logits = self.lens.head @ (self.decoder[latent].float() * self.lens.gain)  # the old lens: one product
        n = self.cfg.n_logit_tokens
        up, down = logits.topk(n), (-logits).topk(n)
        return (
            [(int(i), float(v)) for v, i in zip(up.values, up.indices, strict=True)],
            [(int(i), float(-v)) for v, i in zip(down.values, down.indices, strict=True)],
        )

    def build(self, coder: str, latents: list[int]):
        wanted = torch.tensor(sorted(set(latents)), dtype=torch.long)
        tok, lat, act = reference_triples(self.view, wanted)
        if self.view.bos_token_id is not None and self.cfg.skip_bos:
            keep = self.view.tokens.flatten()[tok] != self.view.bos_token_id
            tok, lat, act = tok[keep], lat[keep], act[keep]
        example, offset = self._example_of(tok)
        keep = example >= 0
        example, offset, lat, act = example[keep], offset[keep], lat[keep], act[keep]
        lo, hi = torch.searchsorted(lat, wanted), torch.searchsorted(lat, wanted + 1)
        for latent, a, b in zip(wanted.tolist(), lo.tolist(), hi.tolist(), strict=True):
            yield self._record(coder, latent, example[a:b], offset[a:b], act[a:b])

    def _record(self, coder, latent, example, offset, act) -> LatentRecord:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.records_seed, latent])
        count = len(act)
        top_act = float(act.max()) if count else 0.0
        ids, inverse = torch.unique(example, return_inverse=True)
        maxima = (
            torch.zeros(len(ids)).scatter_reduce(0, inverse, act, "amax", include_self=False)
            if count
            else torch.zeros(0)
        )
        stats = LatentStats(
            count=count,
            frequency=count / max(self.view.num_tokens, 1),
            max=top_act,
            mean=float(act.mean()) if count else 0.0,
            histogram=_histogram(act, top_act),
            num_examples=len(ids),
        )
        promoted, suppressed = self.logit_tokens(latent)
        status = "dead" if count == 0 else "rare" if len(ids) < cfg.min_examples else "ok"
        record = LatentRecord(coder, latent, status, stats, promoted=promoted, suppressed=suppressed)
        if count == 0:
            return record

        def make(j: int) -> Example:
            members = inverse == j
            return self._make(int(ids[j]), offset[members], act[members])

        by_strength = torch.argsort(maxima, descending=True, stable=True).numpy()
        record.top = [make(j) for j in by_strength[:TOP_EXAMPLES]]
        n_train = _train_share(len(ids), cfg.n_train, cfg.n_test)
        if cfg.train_sampling == "top":
            train = by_strength[:n_train].tolist()
        else:
            train, _ = _spread(by_strength[::-1].copy(), n_train, cfg.n_quantiles, rng)
        taken = set(train)
        rest = np.array([j for j in by_strength[::-1] if j not in taken], dtype=np.int64)
        test, quantiles = _spread(rest, cfg.n_test, cfg.n_quantiles, rng)
        record.train = [make(j) for j in train]
        record.test = [make(j) for j in test]
        record.test_quantiles = quantiles
        active = set(ids.tolist())
        record.negatives = self._negatives(active, cfg.n_negatives, rng)
        record.hard_negatives = self._hard_negatives(record.train, active, cfg.n_hard_negatives, rng)
        return record

    def _inactive(self, index: int) -> Example:
        return Example(self.example_tokens[index].tolist(), [0.0] * self.cfg.example_len, int(index))

    def _negatives(self, active: set[int], n: int, rng) -> list[Example]:
        free = self.num_examples - len(active)
        if n <= 0 or free <= 0:
            return []
        chosen: set[int] = set()
        while len(chosen) < min(n, free):
            for j in rng.integers(0, self.num_examples, size=2 * n).tolist():
                if j not in active and len(chosen) < n:
                    chosen.add(j)
        return [self._inactive(j) for j in sorted(chosen)]

    def _hard_negatives(self, train: list[Example], active: set[int], n: int, rng) -> list[Example]:
        if n <= 0:
            return []
        peak_tokens: list[int] = []
        for ex in train:
            t = ex.tokens[int(np.argmax(ex.acts))]
            if t not in peak_tokens and t != self.view.bos_token_id:
                peak_tokens.append(t)
        candidates: list[int] = []
        for t in peak_tokens:
            candidates.extend(
                j for j in self._examples_with_token(t).tolist() if j not in active and j not in candidates
            )
        if len(candidates) > n:
            candidates = sorted(rng.choice(candidates, size=n, replace=False).tolist())
        return [self._inactive(j) for j in candidates]


def old_fields(record: LatentRecord) -> LatentRecord:
    """``record`` without its validation split, which the reference (the builder before there was one) does not draw:
    every other field must equal the reference's."""
    return replace(record, valid=[], valid_quantiles=[], valid_negatives=[], valid_hard_negatives=[])


def reference_records(view, cfg, coder, latents, decoder=None, lens=None) -> list[LatentRecord]:
    """Every record of ``latents``, built the old way."""
    return list(ReferenceBuilder(view, cfg, decoder, lens).build(coder, list(latents)))


# --- a small real run ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, smollm_tokenizer) -> Path:
    """The cache stage of a run on the tiny model: 8,192 tokens of the builtin corpus; top-k and dense neurons, and
    a sparsify SAE with a latent that never fires."""
    model = save_tiny_model(tmp_path_factory.mktemp("model"), smollm_tokenizer)
    sae = random_sae(D_MODEL, "model.layers.1", k=4, bias_std=0.0)
    sae.sae.encoder.bias.data[0] = -1e3
    saes = tmp_path_factory.mktemp("saes")
    sae.sae.save_to_disk(saes / "layers.1")
    run = tmp_path_factory.mktemp("scale") / "run"
    args = ["cache", "--run-dir", str(run), "--quiet", "--model", str(model), "--neuron-k", "6"]
    args += "--num-tokens 8192 --ctx-len 64 --shard-windows 32 --batch-size 16 --coders".split()
    sae_spec = f"sparsify:{saes}/layers.1@model.layers.1"
    assert main([*args, "topk-neurons@model.layers.1.mlp", "neurons@model.layers.2.mlp", sae_spec]) == 0
    return run


@pytest.fixture(scope="module")
def subject(run_dir):
    run = RunDir(run_dir)
    return run, open_subject(run.read_config(), run)


def assert_same(new: LatentRecord, old: LatentRecord) -> None:
    """Field by field; promoted and suppressed logits to float32 rounding (one matmul for many latents, not one
    product per latent), their tokens exactly."""
    for f in fields(LatentRecord):
        a, b = getattr(new, f.name), getattr(old, f.name)
        if f.name in ("promoted", "suppressed"):
            assert [t for t, _ in a] == [t for t, _ in b], (old.latent, f.name)
            assert [v for _, v in a] == pytest.approx([v for _, v in b], rel=1e-5, abs=1e-5), (old.latent, f.name)
        else:
            assert a == b, (old.latent, f.name)


@pytest.mark.parametrize(
    "settings",
    [
        dict(min_examples=60),
        dict(train_sampling="quantiles", n_train=8, n_test=12, n_quantiles=4, example_len=24, n_negatives=300),
        dict(skip_bos=False, n_hard_negatives=40, n_logit_tokens=0, records_seed=7),
    ],
    ids=["defaults", "quantiles-short-examples", "bos-kept"],
)
def test_records_equal_the_reference_on_every_latent_of_a_run(subject, monkeypatch, settings):
    run, sub = subject
    monkeypatch.setattr(records, "RANGE_TRIPLES", 5_000)  # many ranges, and latents too dense to share one
    cfg = RecordsConfig(**settings)
    seen = set()
    for name, coder in sub.coders.items():
        view = run.cache_view(name, sub.lm.tokenizer)
        decoder = coder.decoder_weight().detach()
        builder = RecordBuilder(view, cfg, decoder, records.logit_lens(sub.lm.model, decoder))
        every = range(view.num_latents)
        new = list(builder.build(name, every))
        old = reference_records(view, cfg, name, every, decoder, builder.unembed)
        assert [r.latent for r in new] == list(every)
        for a, b in zip(new, old, strict=True):
            assert_same(old_fields(a), b)
        seen |= {r.status for r in new}
        assert any(r.promoted for r in new) == (cfg.n_logit_tokens > 0)
        picked = [view.num_latents - 1, 5, 3, 40]  # any selection gives each latent's same record
        for a, b in zip(builder.build(name, picked), (new[i] for i in sorted(picked)), strict=True):
            assert a == b
        dead = [r.latent for r in new if r.status == "dead"]
        assert list(builder.build(name, dead)) == [new[i] for i in dead]  # ranges in which nothing fires
    assert seen == ({"ok", "rare", "dead"} if cfg.min_examples > 10 else {"ok", "dead"})


def shard_hashes(monkeypatch) -> list[Path]:
    """Every shard hashed from now on (the real sha256, counted); as in a fresh process, nothing is verified yet."""
    monkeypatch.setattr(cache, "_verified", {})
    hashed, real = [], cache._sha256
    monkeypatch.setattr(cache, "_sha256", lambda path: hashed.append(Path(path)) or real(path))
    return hashed


def test_each_shard_is_hashed_once_per_process_and_again_once_its_file_changes(subject, monkeypatch, tmp_path):
    run, sub = subject
    name = next(iter(sub.coders))
    shutil.copytree(run.coder_cache(name), tmp_path / name)
    shutil.copy(run.cache_dir / cache.TOKENS_FILE, tmp_path)
    hashed = shard_hashes(monkeypatch)
    view = CacheView.open(tmp_path, name)
    builder = RecordBuilder(view, RecordsConfig(min_examples=1))
    for i in range(0, view.num_latents, 8):  # as the explain stage asks: batches of a few latents
        list(builder.build(name, range(i, min(i + 8, view.num_latents))))
    assert sorted(hashed) == [shard_file(tmp_path / name, i) for i in range(SHARDS)]

    hashed.clear()
    path = shard_file(tmp_path / name, 1)
    stat = path.stat()
    path.write_bytes(path.read_bytes())  # rewritten, same bytes: checked again, and still good
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later write, whatever the clock's grain
    list(builder.build(name, range(view.num_latents)))
    assert hashed == [path]

    good = path.read_bytes()
    path.write_bytes(good[:100] + bytes([good[100] ^ 0xFF]) + good[101:])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    with pytest.raises(CacheCorruptError, match="shard-00001.safetensors does not match its sha256"):
        list(builder.build(name, [0]))
    path.write_bytes(good[:-9])
    with pytest.raises(CacheCorruptError, match="shard-00001.safetensors is truncated"):
        list(builder.build(name, [0]))
    path.write_bytes(good)
    assert [r.latent for r in builder.build(name, [0, 1])] == [0, 1]


def test_an_existing_cache_gets_its_index_once_atomically_and_a_bad_index_is_remade(subject, monkeypatch, tmp_path):
    run, sub = subject
    name = next(iter(sub.coders))
    shutil.copytree(run.coder_cache(name), tmp_path / name)
    shutil.copy(run.cache_dir / cache.TOKENS_FILE, tmp_path)
    coder_dir = tmp_path / name
    for i in range(SHARDS):  # as a cache made before the index: shards and sidecars only
        index_file(coder_dir, i).unlink(missing_ok=True)
    cfg = RecordsConfig(min_examples=1)
    every = range(sub.coders[name].num_latents)
    view = CacheView.open(tmp_path, name)
    want = reference_records(view, cfg, name, every)
    assert [old_fields(r) for r in RecordBuilder(view, cfg).build(name, every)] == want
    made = {i: index_file(coder_dir, i).stat().st_mtime_ns for i in range(SHARDS)}
    assert not list(tmp_path.rglob("*.tmp"))  # written through a temporary file, renamed into place

    monkeypatch.setattr(cache, "_verified", {})  # a new process: checked, not written again
    monkeypatch.setattr(cache_index, "_checked", {})
    assert [old_fields(r) for r in RecordBuilder(CacheView.open(tmp_path, name), cfg).build(name, every)] == want
    assert {i: index_file(coder_dir, i).stat().st_mtime_ns for i in range(SHARDS)} == made

    torn = index_file(coder_dir, 0)
    torn.write_bytes(torn.read_bytes()[:50])  # as a non-atomic write killed midway would leave it
    wrong = index_file(coder_dir, 2)
    wrong.write_bytes(index_file(coder_dir, 3).read_bytes())  # another shard's index
    assert [old_fields(r) for r in RecordBuilder(CacheView.open(tmp_path, name), cfg).build(name, every)] == want
    assert all(index_file(coder_dir, i).stat().st_mtime_ns != made[i] for i in (0, 2))
