"""Comparing coders by meaning: Hungarian matching of explanations and decoders, the shuffled
baseline, the report and plots, and `interp compare` on a real run with neuron coders."""

import json

import numpy as np
import pytest

from interp.cli import main
from interp.coders.neurons import load_neurons
from interp.compare.matching import agreement, cosine_matrix, hungarian, random_pairing
from interp.compare.report import compare_sides, format_report, write_comparison
from interp.compare.sides import Side, load_side, parse_side
from interp.errors import InterpError
from interp.scoring.embedding import load_embedder
from interp.scoring.plots import plot_coder_scores

EXPLANATIONS = [
    "Cats, kittens and other small felines",
    "Python function definitions with the def keyword",
    "Dates written as day, month and year",
    "Words about money, prices and paying",
    "The closing bracket of a list",
    "Kings, queens and the royal court",
    "Verbs in the past tense ending in -ed",
    "Numbers between ten and one hundred",
    "Questions asked by a character in a play",
    "Weather: rain, storms and wind",
    "Import statements at the top of a module",
    "Love, longing and affection between people",
]


@pytest.fixture(scope="module")
def embedder():
    """The embedded all-MiniLM-L6-v2, loaded once for this module."""
    return load_embedder()


def side(tmp_path, texts: list[str], latents: list[int] | None = None, coder: str = "c") -> Side:
    latents = list(range(len(texts))) if latents is None else latents
    return Side(tmp_path, coder, "default", latents, texts, len(texts))


def test_identical_explanations_match_with_similarity_one_and_the_identity(tmp_path, embedder):
    c = compare_sides(
        side(tmp_path, EXPLANATIONS), side(tmp_path, EXPLANATIONS), embedder=embedder, decoders=False, progress=False
    )
    assert c.matching.cols.tolist() == list(range(len(EXPLANATIONS)))
    assert np.allclose(c.matching.scores, 1.0, atol=1e-5)
    r = c.report
    assert r["explanation_matching"]["similarity"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert all(p["latent_a"] == p["latent_b"] and p["explanation_a"] == p["explanation_b"] for p in r["pairs"])
    assert r["shuffled"]["similarity"]["mean"] < 0.5  # unrelated topics paired at random
    assert r["decoder_matching"] is None and "skipped" in r["decoder_note"]


def test_a_permuted_copy_is_recovered_exactly_and_the_shuffled_baseline_is_lower(tmp_path, embedder):
    perm = np.random.default_rng(3).permutation(len(EXPLANATIONS))
    b_latents = [100 + int(i) for i in range(len(EXPLANATIONS))]  # B's latent 100+j explains EXPLANATIONS[perm[j]]
    c = compare_sides(
        side(tmp_path, EXPLANATIONS),
        side(tmp_path, [EXPLANATIONS[i] for i in perm], b_latents),
        embedder=embedder,
        decoders=False,
        seed=5,
        progress=False,
    )
    matched = {p["latent_a"]: p["latent_b"] for p in c.report["pairs"]}
    assert matched == {int(perm[j]): 100 + j for j in range(len(perm))}
    e, s = c.report["explanation_matching"]["similarity"], c.report["shuffled"]["similarity"]
    assert e["mean"] == pytest.approx(1.0, abs=1e-5) and s["mean"] < e["mean"] - 0.4
    assert sum(e["histogram"]) == s["n"] == len(EXPLANATIONS)


def test_paraphrases_match_their_originals_above_the_shuffled_baseline(tmp_path, embedder):
    a = ["Cats and kittens", "Python def keyword", "Money and prices", "Rain and storms", "Kings and queens"]
    b = [
        "Storms, wind and rain",
        "Royalty: a king or a queen",
        "Felines such as cats",
        "Prices, paying, money",
        "Defining a Python function",
    ]
    c = compare_sides(side(tmp_path, a), side(tmp_path, b), embedder=embedder, decoders=False, progress=False)
    assert {p["latent_a"]: p["latent_b"] for p in c.report["pairs"]} == {0: 2, 1: 4, 2: 3, 3: 0, 4: 1}
    assert c.report["explanation_matching"]["similarity"]["mean"] > c.report["shuffled"]["similarity"]["mean"] + 0.3


def test_decoder_matching_of_a_coder_with_a_permuted_copy_recovers_the_permutation(tiny_lm):
    coder = load_neurons(tiny_lm.model, "model.layers.1.mlp", k=8)
    w = coder.decoder_weight().detach().numpy()
    perm = np.random.default_rng(0).permutation(coder.num_latents)
    m = hungarian(cosine_matrix(w, w[perm]))
    assert (perm[m.cols] == m.rows).all() and np.allclose(m.scores, 1.0, atol=1e-5)
    assert agreement(m, m) == 1.0
    assert agreement(m, random_pairing(cosine_matrix(w, w[perm]), seed=0)) < 0.2


def test_thousands_of_latents_match_in_seconds_with_one_matrix():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3000, 64)).astype(np.float32)
    perm = rng.permutation(3000)
    sim = cosine_matrix(w, w[perm], chunk=256)
    assert sim.dtype == np.float32 and sim.shape == (3000, 3000)
    m = hungarian(sim)
    assert (perm[m.cols] == m.rows).all()


def test_rectangular_matching_pairs_the_smaller_side_and_sampling_is_stated(tmp_path, embedder):
    c = compare_sides(
        side(tmp_path, EXPLANATIONS[:5]),
        side(tmp_path, EXPLANATIONS),
        embedder=embedder,
        decoders=False,
        progress=False,
    )
    assert {(p["latent_a"], p["latent_b"]) for p in c.report["pairs"]} == {(i, i) for i in range(5)}
    assert c.report["shuffled"]["pairs"] == 5
    c = compare_sides(
        side(tmp_path, EXPLANATIONS),
        side(tmp_path, EXPLANATIONS),
        embedder=embedder,
        decoders=False,
        max_latents=4,
        progress=False,
    )
    assert c.report["a"]["compared"] == 4 and c.report["a"]["explained"] == len(EXPLANATIONS)
    assert "a seeded sample of at most 4 latents" in format_report(c.report)
    json_path, png_path = write_comparison(c, tmp_path / "out")
    assert json.loads(json_path.read_text())["max_latents"] == 4 and png_path.stat().st_size > 5000


def write_explanations(run_dir, rows):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "explanations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_sides_take_the_last_ok_explanation_and_name_what_is_missing(tmp_path):
    run = tmp_path / "run"
    row = {"coder": "x", "explainer": "default", "status": "ok"}
    write_explanations(
        run,
        [
            {**row, "latent": 3, "explanation": "old"},
            {**row, "latent": 3, "explanation": "new"},
            {**row, "latent": 1, "explanation": "one"},
            {**row, "latent": 2, "status": "failed", "explanation": None},
            {**row, "coder": "y", "latent": 0, "explanation": "y0"},
            {**row, "coder": "y", "explainer": "tokens", "latent": 0, "explanation": "t"},
        ],
    )
    s = load_side(f"{run}:x")
    assert s.latents == [1, 3] and s.explanations == ["one", "new"] and s.explainer == "default"
    assert load_side(f"{run}:y", "tokens").explanations == ["t"]
    with pytest.raises(InterpError, match=r"several coders \(x \(2 latents\), y \(1 latents\)\)"):
        load_side(str(run))
    with pytest.raises(InterpError, match="pass --explainer"):
        load_side(f"{run}:y")
    with pytest.raises(InterpError, match="no usable explanations for coder 'z'; it has: x, y"):
        load_side(f"{run}:z")
    with pytest.raises(InterpError, match="is not a run directory"):
        parse_side(str(tmp_path / "nowhere:x"))
    assert parse_side(str(run)) == (run, None)


def test_coder_scores_side_by_side_plot(tmp_path):
    def entry(xs, base):
        return {"metric": "auroc", "explanation": {"values": xs}, "baseline": {"values": base}}

    summary = {
        "sae": {"embedding": entry([0.8, 0.9, 0.7], [0.5, 0.4]), "detection": entry([0.7], [0.5])},
        "neurons": {"embedding": entry([0.6, 0.55], [0.5, 0.52])},
    }
    path = plot_coder_scores(summary, tmp_path)
    assert path.name == "scores_by_coder.png" and path.stat().st_size > 5000


SMALL = ["--num-tokens", "2048", "--ctx-len", "32", "--shard-windows", "16", "--batch-size", "8", "--quiet"]


@pytest.mark.slow
def test_neuron_coders_run_through_the_pipeline_and_compare(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [
        "run",
        "--run-dir",
        str(run_dir),
        *SMALL,
        "--coders",
        "topk-neurons@model.layers.3.mlp",
        "neurons@model.layers.3.mlp",
        "--explainer",
        "tokens",
        "--scorers",
        "embedding",
        "--latents",
        "0-15",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "scores for model.layers.3.mlp.topk-neurons" in out and "scores for model.layers.3.mlp.neurons" in out
    assert (run_dir / "plots" / "scores_by_coder.png").stat().st_size > 5000

    topk, raw = f"{run_dir}:model.layers.3.mlp.topk-neurons", f"{run_dir}:model.layers.3.mlp.neurons"
    assert main(["compare", topk, raw, "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "both decoders write 576-wide vectors" in out and "agreement of explanation and decoder matching" in out
    report = json.loads(
        (
            run_dir / "compare" / "model.layers.3.mlp.topk-neurons--model.layers.3.mlp.neurons" / "compare.json"
        ).read_text()
    )
    common = set(load_side(topk).latents) & set(load_side(raw).latents)
    assert common  # the same neurons, explained under both sparsities
    partners = {p["latent_a"]: p["decoder_partner_b"] for p in report["pairs"]}
    assert all(
        partners[i] == i for i in common if i in partners
    )  # one down_proj: each neuron's decoder is its own best match
    assert report["decoder_matching"]["cosine"]["max"] == pytest.approx(1.0, abs=1e-5)

    assert main(["compare", topk, topk, "--no-decoders", "--out", str(tmp_path / "self")]) == 0
    self_report = json.loads((tmp_path / "self" / "compare.json").read_text())
    assert self_report["explanation_matching"]["similarity"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert all(p["latent_a"] == p["latent_b"] for p in self_report["pairs"])
    capsys.readouterr()

    assert main(["compare", str(run_dir), raw]) == 2  # two coders: the user must pick one
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "model.layers.3.mlp.topk-neurons" in err
