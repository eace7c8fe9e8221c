"""A searched run's published dataset carries every candidate and the search settings, and reads back the same.

A tiny random Llama's cached run is explained twice: by a best-of-k search through the scripted server (whose reply
depends on the request's seed, so candidates differ) and by the `tokens` explainer with no search. Both are written
as dataset folders and read back with ``load_published``; the two concatenate, as they share one schema.
"""

import re
import shutil
from pathlib import Path

import datasets
import pytest
from huggingface_hub import DatasetCard

from interp.cli import main
from interp.rundir import RunDir
from publish.dataset import FEATURES
from publish.hub import write_folder
from publish.published import load_published
from tests.helpers.models import save_tiny_model

CODER = "model.layers.1.mlp.topk-neurons"
SPLITS = (
    "--n-train 6 --n-test 6 --n-valid 6 --n-negatives 4 --n-hard-negatives 4 --n-valid-negatives 4 "
    "--n-valid-hard-negatives 4 --min-examples 4 --example-len 16"
).split()
SEARCH = "--search best-of-k --candidates 3 --tokens-candidate --judge embedding".split()


def seeded_reply(body: dict) -> str:
    """The request's seed picks which marked token of the contexts the explanation names."""
    content = [m for m in body["messages"] if m["role"] != "assistant"][-1]["content"]
    tokens = re.findall(r"<<(.*?)>>", content.split("Contexts:", 1)[-1]) or ["nothing"]
    return f' the token "{tokens[body.get("seed", 0) % len(tokens)]}"'


@pytest.fixture(scope="module")
def cached(tmp_path_factory, smollm_tokenizer) -> Path:
    """A cached run of a tiny random Llama with small splits, validation included."""
    model = save_tiny_model(tmp_path_factory.mktemp("model"), smollm_tokenizer)
    run = tmp_path_factory.mktemp("runs") / "cached"
    args = ["cache", "--run-dir", str(run), "--quiet", "--model", str(model)]
    args += ["--coders", "topk-neurons@model.layers.1.mlp", *SPLITS]
    args += "--num-tokens 4096 --ctx-len 32 --shard-windows 32 --batch-size 16 --neuron-k 4".split()
    assert main(args) == 0
    return run


def explained(cached: Path, tmp_path: Path, name: str, *args: str) -> Path:
    run = tmp_path / name
    shutil.copytree(cached, run)
    assert main(["explain", str(run), "--quiet", "--latents", "sample:3", *args]) == 0
    return run


def test_a_searched_run_publishes_its_candidates_and_reads_them_back(cached, tmp_path, server):
    server.request_reply = seeded_reply
    llm = ["--llm", server.base_url, "--llm-model", "scripted", "--explain-batch", "3"]
    run = explained(cached, tmp_path, "searched", *llm, *SEARCH)
    folder = write_folder(run, tmp_path / "dataset", repo_id="t/searched", progress=False)
    rows = load_published(folder.path)[CODER].to_list()
    lines = {r["latent"]: r for r in RunDir(run).explanations("short")}
    assert rows and {r["latent"] for r in rows} == set(lines)
    for row in rows:
        line = lines[row["latent"]]
        assert row["search"] == {
            "search": "best-of-k",
            "judge": "embedding",
            "metric": "auroc",
            "candidates": 3,
            "rounds": 0,
            "temperature": line["search"]["temperature"],
            "tokens_candidate": True,
            "validation_score": line["judge"]["validation_score"],
            "validation_examples": line["judge"]["validation_examples"],
        }
        assert [{k: c[k] for k in ("text", "score", "round", "status", "source")} for c in row["candidates"]] == [
            {k: c[k] for k in ("text", "score", "round", "status", "source")} for c in line["candidates"]
        ]
        assert [c["source"] for c in row["candidates"]] == ["explainer"] * 3 + ["tokens"]
        chosen = [c for c in row["candidates"] if c["chosen"]]
        assert len(chosen) == 1 and chosen[0]["text"] == row["explanation"] == line["explanation"]
        scored = [c["score"] for c in row["candidates"] if c["score"] is not None]
        assert chosen[0]["score"] == max(scored) == row["search"]["validation_score"]

    card = DatasetCard.load(folder.path / "README.md").text
    assert "**Search `best-of-k`** (3 latents of explainer `short`): K = 3 candidates plus the firing-token" in card
    assert "judged by the `embedding` scorer on each latent's validation split (6 activating" in card
    assert "The validation split chose the explanation; the scores below are on the test split" in card


def test_an_unsearched_run_has_the_columns_empty_and_concatenates_with_a_searched_one(cached, tmp_path, server):
    server.request_reply = seeded_reply
    llm = ["--llm", server.base_url, "--llm-model", "scripted", "--explain-batch", "3"]
    searched = load_published(
        write_folder(
            explained(cached, tmp_path, "s", *llm, *SEARCH), tmp_path / "a", repo_id="t/a", progress=False
        ).path
    )[CODER]
    plain_run = explained(cached, tmp_path, "p", "--explainer", "tokens")
    folder = write_folder(plain_run, tmp_path / "b", repo_id="t/b", progress=False)
    plain = load_published(folder.path)[CODER]
    assert plain.features == searched.features == FEATURES
    assert all(r["search"] is None and r["candidates"] == [] for r in plain)
    assert "**Search" not in (folder.path / "README.md").read_text()
    both = datasets.concatenate_datasets([searched, plain])
    assert len(both) == len(searched) + len(plain)
    assert sum(bool(r["candidates"]) for r in both) == len(searched)
