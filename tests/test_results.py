"""Score summaries and diagnostics: main metrics, scorer agreement, frequency plots."""

import json

import pytest
import torch
from safetensors.torch import save_file

from interp.atomic import write_json_atomic
from interp.cli import main
from interp.config import ExplainConfig, RunConfig
from interp.errors import InterpError
from interp.jsonl import append_jsonl
from interp.rundir import RunDir
from interp.scoring.base import ScoreResult
from interp.scoring.plots import plot_diagnostics
from interp.scoring.results import (
    baseline_explanations,
    main_metric,
    score_table,
    scorer_agreement,
    summarize_scores,
)
from interp.stages import summarize_run


def row(scorer: str, latent: int, value: float, baseline: bool = False, coder: str = "sae") -> dict:
    return {
        "scorer": scorer,
        "coder": coder,
        "latent": latent,
        "baseline": baseline,
        "metrics": {main_metric(scorer): value},
    }


ROWS = [
    *(row("embedding", k, v) for k, v in enumerate([0.9, 0.7, 0.5, 0.6])),
    *(row("detection-logprob", k, v) for k, v in enumerate([0.8, 0.6, 0.4, 0.5])),
    *(row("simulation", k, v) for k, v in enumerate([-0.1, 0.1, 0.3, 0.2])),
    row("embedding", 0, 0.4, baseline=True),
]


def explained(run_dir, rows: list[dict]) -> list[dict]:
    """Write the explanation lines that the score lines ``rows`` scored (status ok) to ``run_dir``, and ``rows``
    with the texts of those explanations and of the random ones the run assigns: only such lines count."""
    texts = {(r["explainer"], r["coder"], r["latent"]): f"{r['explainer']} #{r['latent']}" for r in rows}
    lines = [
        {"explainer": e, "coder": c, "latent": k, "status": "ok", "explanation": t} for (e, c, k), t in texts.items()
    ]
    append_jsonl(run_dir / "explanations.jsonl", lines)
    seed = RunConfig().records.records_seed
    assigned = {
        e: baseline_explanations([r for r in lines if r["explainer"] == e], seed) for e in {r[0] for r in texts}
    }
    return [
        {
            **r,
            "explanation": assigned[r["explainer"]][(r["coder"], r["latent"])]
            if r["baseline"]
            else texts[(r["explainer"], r["coder"], r["latent"])],
        }
        for r in rows
    ]


def test_main_metrics_per_scorer():
    assert [
        main_metric(s) for s in ("embedding", "detection", "detection-logprob", "intruder-logprob", "simulation")
    ] == ["auroc", "balanced_accuracy", "auroc", "accuracy", "correlation"]


def test_summary_sets_explanations_beside_the_baseline_and_pairs_the_margin():
    entry = summarize_scores(ROWS)["sae"]["embedding"]
    assert entry["explanation"]["mean"] == 0.675 and entry["baseline"]["mean"] == 0.4
    # only latent 0 is scored both ways: the margin is its own 0.9 - 0.4, not the unpaired 0.675 - 0.4 of two sets
    assert abs(entry["margin"] - 0.5) < 1e-12 and entry["margin_n"] == 1 and entry["margin_ci"] is None
    assert summarize_scores(ROWS)["sae"]["simulation"]["margin"] is None  # never scored both ways


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
    freq = RunDir(tmp_path).firing_frequencies({"sae", "missing-coder"})
    assert freq == {("sae", 0): 0.1, ("sae", 1): 0.05, ("sae", 2): 0.01, ("sae", 3): 0.0}
    paths = plot_diagnostics(score_table(ROWS), freq, tmp_path / "plots")
    assert [p.name for p in paths] == ["frequency_sae.png", "agreement_sae.png"]
    assert all(p.stat().st_size > 5000 for p in paths)


def test_a_run_scored_by_two_explainers_is_summarised_one_explainer_at_a_time(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_json_atomic(run_dir / "config.json", RunConfig(explain=ExplainConfig(explainer="tokens")).to_dict())
    auroc = {
        ("tokens", False): [0.9, 0.7],
        ("tokens", True): [0.5, 0.5],
        ("default", False): [0.3, 0.1],
        ("default", True): [0.4, 0.6],
    }
    append_jsonl(
        run_dir / "scores.jsonl",
        explained(
            run_dir,
            [
                ScoreResult("embedding", "sae", latent, explainer, baseline, "", {"auroc": v}, []).to_dict()
                for (explainer, baseline), values in auroc.items()
                for latent, v in enumerate(values)
            ],
        ),
    )
    (run_dir / "cache" / "sae").mkdir(parents=True)
    save_file(
        {"count": torch.tensor([10, 5]), "max": torch.ones(2), "sum": torch.ones(2).double()},
        str(run_dir / "cache" / "sae" / "stats.safetensors"),
    )
    (run_dir / "cache" / "sae" / "stats.json").write_text(json.dumps({"num_tokens": 100}))

    own, other = summarize_run(run_dir), summarize_run(run_dir, "default")
    assert own["explainer"] == "tokens" and other["explainer"] == "default"  # the run's own explainer by default
    mine, theirs = own["scores"]["sae"]["embedding"], other["scores"]["sae"]["embedding"]
    assert mine["explanation"]["values"] == [0.9, 0.7] and mine["baseline"]["values"] == [0.5, 0.5]
    assert theirs["explanation"]["values"] == [0.3, 0.1] and theirs["baseline"]["values"] == [0.4, 0.6]
    assert abs(mine["margin"] - 0.3) < 1e-12 and abs(theirs["margin"] + 0.3) < 1e-12  # pooled, both would read 0
    assert (run_dir / "plots" / "scores_sae_embedding.png").is_file()  # the run's own explainer's plots
    assert (
        run_dir / "plots" / "default" / "scores_sae_embedding.png"
    ).is_file()  # another's beside them, not over them
    with pytest.raises(ValueError, match="several explainers"):
        summarize_scores(RunDir(run_dir).scores())
    with pytest.raises(InterpError, match=r"No scores of the 'logits' explainer .* it has scores of default, tokens"):
        summarize_run(run_dir, "logits")
    with pytest.raises(InterpError, match="Unknown explainer"):  # the name would become a folder under plots/
        RunDir(run_dir).plots_dir("../../elsewhere", "tokens")

    assert main(["summary", "--run-dir", str(run_dir), "--explainer", "default"]) == 0
    out = capsys.readouterr().out
    assert "scores for sae of the default explanations" in out and "embedding auroc 0.200 [0.500] n=2" in " ".join(
        out.split()
    )
    assert main(["summary", "--run-dir", str(run_dir)]) == 0
    assert "embedding auroc 0.800 [0.500] n=2" in " ".join(capsys.readouterr().out.split())
    assert main(["summary", "--run-dir", str(run_dir), "--explainer", "logits"]) == 2
    assert "default, tokens" in capsys.readouterr().err


def test_a_margin_whose_interval_includes_zero_is_called_at_chance(tmp_path, capsys):
    clear = [(0.8, 0.5), (0.75, 0.52), (0.9, 0.45), (0.7, 0.55), (0.85, 0.5)]
    noise = [(0.6, 0.5), (0.4, 0.55), (0.52, 0.5), (0.45, 0.6), (0.58, 0.41)]
    rows = [
        ScoreResult(scorer, "sae", latent, "tokens", baseline, "x", {"auroc": pair[baseline]}, []).to_dict()
        for scorer, pairs in (("embedding", clear), ("surprisal", noise))
        for latent, pair in enumerate(pairs)
        for baseline in (False, True)
    ]
    summary = summarize_scores(rows)["sae"]
    low, high = summary["embedding"]["margin_ci"]
    assert summary["embedding"]["above_chance"] is True and 0 < low < summary["embedding"]["margin"] < high
    assert summary["surprisal"]["above_chance"] is False and summary["surprisal"]["margin_ci"][0] < 0
    one = summarize_scores(rows[:2])["sae"]["embedding"]
    assert one["margin_ci"] is None and one["above_chance"] is None  # one latent: no interval to speak of

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_json_atomic(run_dir / "config.json", RunConfig(explain=ExplainConfig(explainer="tokens")).to_dict())
    append_jsonl(run_dir / "scores.jsonl", explained(run_dir, rows))
    assert main(["summary", str(run_dir)]) == 0
    out = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert "margin +0.296 (paired, n=5; 95% CI +0.196 to +0.396)" in out["embedding"]
    assert "at chance" not in out["embedding"]
    assert "at chance: try a served explainer" in out["surprisal"]
