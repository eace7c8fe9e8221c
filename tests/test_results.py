"""Score summaries and diagnostics: main metrics, scorer agreement, frequency plots."""

import json

import torch
from safetensors.torch import save_file

from interp.scoring.results import (
    firing_frequencies, main_metric, plot_diagnostics, score_table, scorer_agreement, summarize_scores,
)


def row(scorer: str, latent: int, value: float, baseline: bool = False, coder: str = "sae") -> dict:
    return {"scorer": scorer, "coder": coder, "latent": latent, "baseline": baseline,
            "metrics": {main_metric(scorer): value}}


ROWS = [
    *(row("embedding", k, v) for k, v in enumerate([0.9, 0.7, 0.5, 0.6])),
    *(row("detection-logprob", k, v) for k, v in enumerate([0.8, 0.6, 0.4, 0.5])),
    *(row("simulation", k, v) for k, v in enumerate([-0.1, 0.1, 0.3, 0.2])),
    row("embedding", 0, 0.4, baseline=True),
]


def test_main_metrics_per_scorer():
    assert [main_metric(s) for s in ("embedding", "detection", "detection-logprob", "intruder-logprob", "simulation")] == [
        "auroc", "balanced_accuracy", "auroc", "accuracy", "correlation"]


def test_summary_sets_explanations_beside_the_baseline():
    entry = summarize_scores(ROWS)["sae"]["embedding"]
    assert entry["explanation"]["mean"] == 0.675 and entry["baseline"]["mean"] == 0.4
    assert abs(entry["margin"] - 0.275) < 1e-12


def test_scorer_agreement_is_spearman_over_shared_latents():
    table = score_table(ROWS)["sae"]
    assert table["embedding"] == {0: 0.9, 1: 0.7, 2: 0.5, 3: 0.6}  # the baseline row is left out
    agreement = scorer_agreement(table)
    assert agreement[("embedding", "detection-logprob")] == (1.0, 4)  # same order of latents
    assert agreement[("embedding", "simulation")] == (-1.0, 4)  # exactly reversed
    partial = scorer_agreement({"a": {0: 1.0, 1: 2.0}, "b": {1: 5.0, 2: 3.0}})
    assert partial[("a", "b")] == (None, 1)  # one shared latent: undefined, not zero


def test_frequencies_come_from_the_cache_stats_and_plots_are_written(tmp_path):
    coder_dir = tmp_path / "cache" / "sae"
    coder_dir.mkdir(parents=True)
    counts = torch.tensor([10, 5, 1, 0])
    save_file({"count": counts, "max": torch.ones(4), "sum": counts.double()}, str(coder_dir / "stats.safetensors"))
    (coder_dir / "stats.json").write_text(json.dumps({"num_tokens": 100}))
    freq = firing_frequencies(tmp_path, {"sae", "missing-coder"})
    assert freq == {("sae", 0): 0.1, ("sae", 1): 0.05, ("sae", 2): 0.01, ("sae", 3): 0.0}
    paths = plot_diagnostics(ROWS, freq, tmp_path / "plots")
    assert [p.name for p in paths] == ["frequency_sae.png", "agreement_sae.png"]
    assert all(p.stat().st_size > 5000 for p in paths)
