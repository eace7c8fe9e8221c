"""A delphi results folder read back into our schema: explanations, and scores recomputed with our metrics.

The folder is written with delphi's own classes and serialization (``tests.helpers.delphi``): its
``RunConfig.save_json``, ``Latent`` names, ``ClassifierOutput`` per example, the simulation types'
``convert_to_legacy_format``, and ``orjson.dumps`` at the paths ``process_cache`` writes.
"""

import json

import numpy as np
import pytest
from delphi.config import CacheConfig, ConstructorConfig, RunConfig, SamplerConfig

from publish.dataset import PublishError
from publish.delphi_results import is_delphi_results, read_delphi
from publish.published import browse_rows, load_published
from tests.helpers.delphi import ClassifierOutput, Latent, simulation_types, write_explanation, write_score

MODULE = "layers.3"
MODEL = "EleutherAI/pythia-70m"
LLM = "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"


def outputs(labels, predictions, probabilities=None):
    """delphi ``ClassifierOutput``s of six-token examples, activating ones with quantile distances 1..n."""
    probabilities = probabilities or [None] * len(labels)
    return [
        ClassifierOutput(
            str_tokens=[" the", " river", " bank", " was", " wet", "."],
            activations=[0.0, 2.5 * i, 1.0, 0.0, 0.0, 0.0] if label else [0.0] * 6,
            distance=i + 1 if label else -1,
            activating=label,
            prediction=p,
            probability=prob,
            correct=None if p is None else p == label,
        )
        for i, (label, p, prob) in enumerate(zip(labels, predictions, probabilities, strict=True))
    ]


def simulation_score(types, true: list[list[int]], predicted: list[list[float]]):
    """What delphi's ``simulate_and_score`` returns for these sequences (one quantile, plus the overall group)."""
    results = [
        types.SimulationResult(
            tokens=["a"] * len(t),
            predicted_activations=p,
            true_activations=t,
            correlation=float(np.corrcoef(t, p)[0, 1]),
            quantile=0,
        )
        for t, p in zip(true, predicted, strict=True)
    ]
    groups = [
        types.AggregateResult(quantile=0, correlation=0.0, sequence_count=len(results), sequences=results),
        types.AggregateResult(quantile=-1, correlation=0.0, sequence_count=len(results), sequences=results),
    ]
    return types.convert_to_legacy_format(groups)


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results" / "pythia"
    root.mkdir(parents=True)
    config = RunConfig(
        CacheConfig(), ConstructorConfig(), SamplerConfig(), model=MODEL, sparse_model="x", hookpoints=[MODULE]
    )
    config.explainer_model = LLM
    config.save_json(root / "run_config.json", indent=4)
    write_explanation(root, Latent(MODULE, 0), "River banks and water")
    write_explanation(root, Latent(MODULE, 7), "Closing brackets")
    labels = [True, True, True, False, False, False]
    # detection without log-probs: 2 of 3 positives found, 1 false positive, one reply unparsed
    write_score(root, "detection", Latent(MODULE, 0), outputs(labels, [True, True, False, True, False, None]))
    # fuzzing with log-probs: the probabilities rank every positive above every negative but one
    probabilities = [0.9, 0.8, 0.3, 0.4, 0.2, 0.1]
    write_score(
        root, "fuzz", Latent(MODULE, 0), outputs(labels, [True, True, False, False, False, False], probabilities)
    )
    types = simulation_types()
    write_score(
        root, "simulation", Latent(MODULE, 7), simulation_score(types, [[0, 3, 1], [0, 0, 2]], [[0, 2, 2], [1, 0, 3]])
    )
    write_score(root, "detection", Latent("layers.5/mlp", 2), outputs([True, False], [True, False]))
    return root


def by_scorer(row: dict) -> dict:
    return {s["scorer"]: s for s in row["scores"]}


def test_a_delphi_results_folder_reads_into_our_schema_with_our_metrics(results):
    assert is_delphi_results(results)
    tables = load_published(results)
    assert list(tables) == [MODULE, "layers.5/mlp"]
    rows = {r["latent"]: r for r in tables[MODULE]}
    assert sorted(rows) == [0, 7]

    first = rows[0]
    assert (first["model"], first["hookpoint"], first["explanation"], first["explainer"]) == (
        MODEL,
        MODULE,
        "River banks and water",
        "delphi",
    )
    assert first["explanations"][0]["llm"] == LLM
    scores = by_scorer(first)
    assert set(scores) == {"detection", "fuzzing-logprob"}
    detection = scores["detection"]["metrics"]
    assert (detection["n"], detection["positives"], detection["failed"]) == (6, 3, 1)
    assert detection["recall"] == pytest.approx(2 / 3) and detection["precision"] == pytest.approx(2 / 3)
    assert detection["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)  # 1 of the 2 parsed negatives right
    assert (scores["detection"]["metric"], scores["detection"]["value"]) == (
        "balanced_accuracy",
        detection["balanced_accuracy"],
    )
    assert detection["auroc"] is None  # no log-probs, no AUROC
    fuzz = scores["fuzzing-logprob"]
    assert fuzz["metric"] == "auroc" and fuzz["value"] == pytest.approx(8 / 9)  # 0.3 sits below 0.4: 8 of 9 pairs

    simulation = by_scorer(rows[7])["simulation"]
    pooled = np.corrcoef([0, 3, 1, 0, 0, 2], [0, 2, 2, 1, 0, 3])[0, 1]
    assert simulation["metric"] == "correlation" and simulation["value"] == pytest.approx(pooled)
    assert rows[7]["explanation"] == "Closing brackets"

    # a module name with / (written as --) comes back whole; scores without an explanation are kept
    (mlp,) = tables["layers.5/mlp"].to_list()
    assert (mlp["latent"], mlp["explanation"], by_scorer(mlp)["detection"]["value"]) == (2, None, 1.0)
    assert {r["config"] for r in browse_rows(tables)} == {MODULE, "layers.5/mlp"}


def test_a_folder_that_is_not_delphis_says_so_in_one_line(tmp_path):
    (tmp_path / "explanations").mkdir()
    (tmp_path / "explanations" / "notes.txt").write_text("hello")
    assert not is_delphi_results(tmp_path)
    with pytest.raises(PublishError) as error:
        read_delphi(tmp_path)
    assert "is not a delphi results folder" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("scorer", "content", "expected"),
    [
        ("detection", b"[{not json", "Cannot read delphi file"),
        ("detection", json.dumps([{"str_tokens": ["a"]}]).encode(), "ClassifierOutput"),
        (
            "simulation",
            json.dumps([{"scored_sequence_simulations": [{"true_activations": [1]}]}]).encode(),
            "ScoredSimulation",
        ),
        ("detection", b"[]", "non-empty JSON list"),
    ],
)
def test_a_broken_score_file_is_one_line_naming_it(results, scorer, content, expected):
    path = results / "scores" / scorer / f"{MODULE}_latent9.txt"
    path.write_bytes(content)
    with pytest.raises(PublishError) as error:
        load_published(results)
    assert expected in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)
