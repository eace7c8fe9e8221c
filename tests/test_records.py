"""Latent records agree with a brute-force reading of the same activations."""

import numpy as np
import pytest
import torch

from interp.cache import build_cache, finalize_stats
from interp.config import CacheConfig, RecordsConfig
from interp.hooks import capture_tokens
from interp.records import CacheView, RecordBuilder, logit_lens
from tests.helpers.coders import random_sae

BOS = 1
CTX, E = 32, 8


@pytest.fixture
def setup(tiny_lm, tmp_path):
    g = torch.Generator().manual_seed(1)
    windows = torch.randint(3, 400, (24, CTX), generator=g, dtype=torch.int32)  # small vocab: tokens repeat
    windows[:, 0] = BOS
    sae = random_sae(32, "model.layers.1", k=4, bias_std=0.0)
    sae.sae.encoder.bias.data[0] = -1e3  # a latent that can never fire
    build_cache(tiny_lm, {"sae": sae}, windows, tmp_path, CacheConfig(batch_size=4, shard_windows=8), progress=False)
    finalize_stats(tmp_path / "sae", sae.num_latents, len(windows), 8)
    acts = capture_tokens(tiny_lm.model, windows.long(), [sae.site])[sae.site].flatten(0, 1)
    with torch.inference_mode():
        lat = sae.encode(acts)
    dense = torch.zeros(len(acts), sae.num_latents).scatter_(1, lat.indices, lat.acts)
    dense[windows.flatten() == BOS] = 0  # records skip BOS
    view = CacheView.open(tmp_path, "sae", bos_token_id=BOS)
    return sae, windows, dense, view


def per_example_max(dense: torch.Tensor, latent: int) -> torch.Tensor:
    return dense[:, latent].reshape(-1, E).max(dim=1).values


def test_top_examples_are_the_top_and_stats_match(setup):
    sae, windows, dense, view = setup
    builder = RecordBuilder(view, RecordsConfig(example_len=E, n_train=5, n_test=6, min_examples=1))
    records = list(builder.build("sae", range(sae.num_latents)))
    assert [r.latent for r in records] == list(range(sae.num_latents))
    checked = 0
    for r in records:
        col = dense[:, r.latent]
        assert r.stats.count == int((col > 0).sum())
        assert r.stats.max == pytest.approx(float(col.max()))
        assert sum(r.stats.histogram) == r.stats.count
        if r.status == "dead":
            assert r.stats.count == 0 and not r.train
            continue
        ref = per_example_max(dense, r.latent)
        want = torch.sort(ref, descending=True).values[: len(r.top)]
        assert [ex.max_act for ex in r.top] == pytest.approx(want.tolist())
        for ex in r.top + r.test:
            assert ex.tokens == windows.flatten()[ex.index * E : (ex.index + 1) * E].tolist()
            assert ex.acts == pytest.approx(dense[ex.index * E : (ex.index + 1) * E, r.latent].tolist())
        checked += 1
    assert checked > 20


def test_train_and_test_are_disjoint_and_test_spans_quantiles(setup):
    sae, _, dense, view = setup
    for sampling in ("top", "quantiles"):
        cfg = RecordsConfig(
            example_len=E, n_train=6, n_test=10, n_quantiles=5, train_sampling=sampling, min_examples=1
        )
        for r in RecordBuilder(view, cfg).build("sae", range(sae.num_latents)):
            train, test = {ex.index for ex in r.train}, {ex.index for ex in r.test}
            assert not train & test
            if r.stats.num_examples >= 16:
                assert len(r.train) == 6 and len(r.test) == 10
                assert sorted(set(r.test_quantiles)) == list(range(5))
                strengths = [ex.max_act for ex in r.test]
                assert strengths[0] <= strengths[-1]  # listed from the weakest quantile up


def test_negatives_never_activate_and_hard_negatives_share_peak_tokens(setup):
    sae, _, dense, view = setup
    cfg = RecordsConfig(example_len=E, n_train=5, n_negatives=7, n_hard_negatives=4, min_examples=1)
    seen_hard = 0
    for r in RecordBuilder(view, cfg).build("sae", range(sae.num_latents)):
        if r.status == "dead":
            continue
        ref = per_example_max(dense, r.latent)
        assert len(r.negatives) == min(7, int((ref == 0).sum()))
        for ex in r.negatives + r.hard_negatives:
            assert ref[ex.index] == 0 and max(ex.acts) == 0
        peaks = {ex.tokens[int(np.argmax(ex.acts))] for ex in r.train}
        for ex in r.hard_negatives:
            assert peaks & set(ex.tokens)
        seen_hard += len(r.hard_negatives)
    assert seen_hard > 0


def test_rare_and_dead_latents_are_reported_not_crashed(setup):
    sae, _, dense, view = setup
    records = list(
        RecordBuilder(view, RecordsConfig(example_len=E, min_examples=10)).build("sae", range(sae.num_latents))
    )
    by_status = {s: [r for r in records if r.status == s] for s in ("ok", "rare", "dead")}
    assert [r.latent for r in by_status["dead"]][:1] == [0]
    assert by_status["rare"] and by_status["ok"]
    for r in by_status["rare"]:
        assert 0 < r.stats.num_examples < 10


def test_promoted_tokens_follow_the_decoder_through_the_unembedding(tiny_lm, setup):
    sae, _, _, view = setup
    lens = logit_lens(tiny_lm.model, sae.decoder_weight())
    builder = RecordBuilder(view, RecordsConfig(example_len=E, n_logit_tokens=5), sae.decoder_weight(), lens)
    r = next(builder.build("sae", [3]))
    head = tiny_lm.model.lm_head.weight
    logits = head @ (sae.decoder_weight()[3] * tiny_lm.model.model.norm.weight)
    assert [t for t, _ in r.promoted] == logits.topk(5).indices.tolist()
    assert [t for t, _ in r.suppressed] == (-logits).topk(5).indices.tolist()
    assert logit_lens(tiny_lm.model, torch.zeros(4, 7)) is None  # not in the residual stream


def test_any_latent_selection_gives_the_same_records_as_the_full_range(setup):
    sae, _, _, view = setup
    builder = RecordBuilder(view, RecordsConfig(example_len=E, min_examples=1))
    full = {r.latent: r for r in builder.build("sae", range(sae.num_latents))}
    picked = [77, 3, 40, 41, 127]
    assert [r.latent for r in builder.build("sae", picked)] == sorted(picked)
    for r in builder.build("sae", picked):
        assert r == full[r.latent]


def test_top_only_records_are_the_whole_records_without_their_sampled_splits(tiny_lm, setup):
    sae, _, _, view = setup
    lens = logit_lens(tiny_lm.model, sae.decoder_weight())
    builder = RecordBuilder(view, RecordsConfig(example_len=E, min_examples=1), sae.decoder_weight(), lens)
    full = list(builder.build("sae", range(sae.num_latents)))
    top = list(builder.build("sae", range(sae.num_latents), top_only=True))
    assert sum(bool(r.top) for r in full) > 20
    for whole, lean in zip(full, top, strict=True):
        assert (lean.latent, lean.status, lean.stats) == (whole.latent, whole.status, whole.stats)
        assert (lean.top, lean.promoted, lean.suppressed) == (whole.top, whole.promoted, whole.suppressed)
        splits = (lean.train, lean.test, lean.test_quantiles, lean.negatives, lean.hard_negatives)
        assert not any(splits + (lean.valid, lean.valid_quantiles, lean.valid_negatives, lean.valid_hard_negatives))


def test_few_activating_examples_are_shared_between_train_and_test(setup):
    sae, _, _, view = setup
    cfg = RecordsConfig(example_len=E, n_train=20, n_test=20, min_examples=1)
    for r in RecordBuilder(view, cfg).build("sae", range(sae.num_latents)):
        n = r.stats.num_examples
        if 2 <= n < 40:
            assert len(r.train) == max(1, n // 2) and len(r.test) == min(20, n - len(r.train)) and r.test
