"""Publishing: a real run becomes a dataset and a card, is pushed to a local Hub and read back.

The Hub is ``tests.helpers.hub_server.FakeHub`` on 127.0.0.1, driven by the real huggingface_hub client; a
client hook fails any request for another host, so nothing can reach huggingface.co.
"""

import hashlib
import json
import logging
import shutil
import subprocess
import sys

import datasets
import pytest
import torch
from huggingface_hub import DatasetCard, HfApi
from huggingface_hub.errors import HfHubHTTPError

from interp.cli import main
from interp.errors import InterpError
from interp.records import CacheView
from interp.rundir import RunDir
from interp.scoring.metrics import classification
from publish.dataset import FEATURES, SCHEMA_VERSION, PublishError, build_dataset, data_file, read_run, score_entries
from publish.hub import preview, publish_run, push_folder, write_folder
from publish.published import browse_rows, compare_published, load_published, read_eleuther
from tests.helpers.hub_server import local_hub

TOKEN = "hf_FAKEtokenForInterpTests9f3a7c"
REPO = "interp-tests/smollm2-explanations"
CODER = "model.layers.3.mlp.topk-neurons"
SMALL = ["--num-tokens", "2048", "--ctx-len", "32", "--shard-windows", "16", "--batch-size", "8", "--quiet"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small real run: 4 latents of top-k MLP neurons, token-list explanations, embedding scores."""
    path = tmp_path_factory.mktemp("publish") / "run"
    args = [
        "run",
        "--run-dir",
        str(path),
        *SMALL,
        "--coders",
        "topk-neurons@model.layers.3.mlp",
        "--latents",
        "sample:4",
        "--explainer",
        "tokens",
        "--scorers",
        "embedding",
    ]
    assert main(args) == 0
    return path


@pytest.fixture(scope="module")
def folder(run_dir, tmp_path_factory):
    """The run written as a dataset folder, as `interp publish --dry-run` would."""
    return write_folder(run_dir, tmp_path_factory.mktemp("folder") / "dataset", repo_id=REPO, progress=False)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The local fake Hub, with huggingface_hub confined to it."""
    with local_hub(monkeypatch, tmp_path, TOKEN) as srv:
        yield srv


@pytest.mark.slow
def test_explanation_rows_match_the_run_files_and_the_cache(run_dir, folder, smollm_tokenizer):
    tables = load_published(folder.path)
    assert list(tables) == [CODER] and folder.rows == {CODER: 4}
    rows = tables[CODER].to_list()
    explained = {r["latent"]: r for r in RunDir(run_dir).explanations()}
    assert [r["latent"] for r in rows] == sorted(explained)
    scores = RunDir(run_dir).scores()
    bos = smollm_tokenizer.bos_token_id
    view = CacheView.open(run_dir / "cache", CODER, bos_token_id=bos)
    for row in rows:
        assert row["schema_version"] == SCHEMA_VERSION and row["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        assert (
            row["coder"] == CODER
            and row["coder_kind"] == "topk-neurons"
            and row["hookpoint"] == "model.layers.3.mlp.down_proj"
        )
        assert row["explanation"] == explained[row["latent"]]["explanation"] and row["explainer"] == "tokens"
        assert row["explanations"] == [
            {"explainer": "tokens", "explanation": row["explanation"], "status": "ok", "llm": None, "note": None}
        ]
        mine = {r["baseline"]: r for r in scores if r["latent"] == row["latent"]}
        [entry] = row["scores"]
        assert (entry["scorer"], entry["metric"]) == ("embedding", "auroc")
        assert entry["value"] == mine[False]["metrics"]["auroc"] and entry["metrics"]["auroc"] == entry["value"]
        assert entry["baseline_value"] == mine[True]["metrics"]["auroc"]
        assert entry["baseline_explanation"] == mine[True]["explanation"] != row["explanation"]
        assert (
            entry["metrics"]["positives"] == mine[False]["metrics"]["positives"]
            and json.loads(entry["other_metrics"]) == {}
        )
        # statistics against the cache itself: every activation of the latent off BOS
        tok, _, act = view.triples(torch.tensor([row["latent"]]))
        off_bos = view.tokens.flatten()[tok] != bos
        assert row["count"] == int(off_bos.sum()) and row["frequency"] == row["count"] / 2048
        assert row["max_activation"] == pytest.approx(float(act[off_bos].max()))
        top = row["top_examples"]
        assert 1 <= len(top) <= 10 and max(top[0]["activations"]) == pytest.approx(row["max_activation"])
        assert all(len(e["tokens"]) == len(e["token_ids"]) == len(e["activations"]) == 32 for e in top)
        assert [max(e["activations"]) for e in top] == sorted((max(e["activations"]) for e in top), reverse=True)
        assert (
            top[0]["token_ids"] == view.tokens[top[0]["index"]].tolist()
        )  # ctx 32 = example_len: example i is window i
        promoted = row["promoted_tokens"]
        assert len(promoted) == 10 and [p["logit"] for p in promoted] == sorted(
            (p["logit"] for p in promoted), reverse=True
        )
        assert promoted[0]["logit"] > 0 > row["suppressed_tokens"][0]["logit"]
    assert tables[CODER].features == FEATURES


@pytest.mark.slow
def test_two_folders_of_one_name_load_back_each_with_its_own_rows(folder, tmp_path):
    tables = load_published(folder.path)
    first = tables[CODER].to_list()
    other = tmp_path / folder.path.name  # the same folder name, another run's rows
    shutil.copytree(folder.path, other)
    changed = tables[CODER].map(lambda r: {"explanation": "another run's explanation"}, features=FEATURES)
    changed.to_parquet(other / data_file(CODER))
    assert [r["explanation"] for r in load_published(other)[CODER]] == ["another run's explanation"] * len(first)
    assert load_published(folder.path)[CODER].to_list() == first


@pytest.mark.slow
def test_the_saved_folder_loads_back_with_datasets_to_the_same_rows(folder, run_dir, smollm):
    path = folder.path
    assert folder.files == ["README.md", data_file(CODER)] and (path / data_file(CODER)).is_file()
    again = load_published(path)[CODER]
    # a fresh read: datasets' cache of a local folder is keyed by its name, and other tests publish to `dataset/` too
    direct = datasets.load_dataset(str(path), CODER, split="train", download_mode="force_redownload")
    assert direct.to_list() == again.to_list() and direct.features == FEATURES
    built = build_dataset(run_dir, lm=smollm, progress=False)[CODER]
    assert built.to_list() == direct.to_list()  # what was built is what is on disk

    shown = preview(run_dir, n=2, repo_id=REPO, lm=smollm)
    assert shown.rows == direct.to_list()[:2]
    assert shown.card == (path / "README.md").read_text()


@pytest.mark.slow
def test_the_card_parses_with_huggingface_hub_and_describes_the_data(folder, run_dir):
    card = DatasetCard.load(folder.path / "README.md")
    data = card.data
    assert data.license == "cc-by-4.0" and {"interpretability", "sparse-autoencoder"} <= set(data.tags)
    assert data.size_categories == ["n<1K"]
    interp = data.get("interp")
    assert (
        interp["schema_version"] == SCHEMA_VERSION and interp["subject_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    assert interp["coders"] == [
        {
            "config": CODER,
            "kind": "topk-neurons",
            "source": "model.layers.3.mlp",
            "hookpoint": "model.layers.3.mlp.down_proj",
            "num_latents": 1536,
        }
    ]
    configs = datasets.utils.metadata.MetadataConfigs.from_dataset_card_data(data)
    assert configs == {CODER: {"data_files": [{"split": "train", "path": data_file(CODER)}], "default": True}}
    infos = datasets.info.DatasetInfosDict.from_dataset_card_data(data)
    assert infos[CODER].features == FEATURES and infos[CODER].splits["train"].num_examples == 4

    summary = json.loads((run_dir / "summary.json").read_text())["scores"][CODER]["embedding"]
    mean, base = summary["explanation"]["mean"], summary["baseline"]["mean"]
    row = f"| `{CODER}` | tokens | embedding | auroc | {mean:.3f} | {base:.3f} | {mean - base:.3f} | 4 |"
    assert row in card.text
    for words in (
        "## How it was made",
        "2,048 tokens",
        "no LLM",
        f'load_dataset("{REPO}"',
        "## Limitations",
        "random explanation",
    ):
        assert words in card.text


@pytest.mark.slow
def test_a_folder_of_another_schema_version_is_refused(folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(folder.path, copy)
    text = (copy / "README.md").read_text()
    (copy / "README.md").write_text(text.replace(SCHEMA_VERSION, "interp-explanations/99"))
    with pytest.raises(PublishError, match="interp-explanations/99"):
        load_published(copy)


@pytest.mark.slow
def test_a_folder_published_before_the_search_columns_reads_with_them_empty(folder, tmp_path):
    """Schema 1 had no ``search`` and ``candidates``: its rows come back in today's schema, nothing else changed."""
    import pyarrow.parquet as pq

    copy = tmp_path / "v1"
    shutil.copytree(folder.path, copy)
    (copy / "README.md").write_text((copy / "README.md").read_text().replace(SCHEMA_VERSION, "interp-explanations/1"))
    for part in copy.glob("data/*/*.parquet"):
        table = pq.read_table(part).drop_columns(["search", "candidates"])
        pq.write_table(
            table.set_column(
                table.schema.get_field_index("schema_version"),
                "schema_version",
                [["interp-explanations/1"] * table.num_rows],
            ),
            part,
        )
    now, before = load_published(folder.path), load_published(copy)
    assert before.keys() == now.keys()
    for name, table in before.items():
        assert table.features == now[name].features
        assert table.to_list() == [{**row, "search": None, "candidates": []} for row in now[name].to_list()]


def _everything_written(*roots) -> bytes:
    return b"".join(p.read_bytes() for root in roots for p in sorted(root.rglob("*")) if p.is_file())


@pytest.mark.slow
def test_publish_pushes_data_and_card_in_one_commit_and_the_token_only_in_headers(
    run_dir, hub, tmp_path, capsys, caplog, monkeypatch
):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    monkeypatch.setenv("INTERP_TEST_TOKEN", TOKEN)
    out = tmp_path / "out"
    assert main(["publish", str(run_dir), REPO, "--token-env", "INTERP_TEST_TOKEN", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert f"published to {hub.url}/datasets/{REPO} (public)" in printed.out

    repo = hub.repos[REPO]
    assert repo.repo_type == "dataset" and not repo.private
    assert len(repo.commits) == 2  # the repo's initial commit, then data and card together
    local = {"README.md", data_file(CODER)}
    assert set(repo.head.files) == local | {".gitattributes"}
    for name in local:
        assert repo.head.files[name] == (out / name).read_bytes()
    assert repo.head.lfs == {data_file(CODER)}  # Parquet went through LFS, the card inline
    methods = [(r.method, r.path.split("?")[0]) for r in hub.requests]
    assert ("PUT", f"/lfs/{hashlib.sha256((out / data_file(CODER)).read_bytes()).hexdigest()}") in methods
    assert any(path.endswith("/commit/main") for _, path in methods)

    for r in hub.requests:  # the token travels in the Authorization header and nowhere else
        assert TOKEN not in r.path and TOKEN.encode() not in r.body
        assert all(TOKEN not in v for k, v in r.headers.items() if k != "authorization")
    assert sum(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.requests) >= 4
    assert not any(
        r.headers.get("authorization") for r in hub.requests if r.method == "PUT"
    )  # the LFS store never sees it
    assert TOKEN.encode() not in _everything_written(out, run_dir)
    assert TOKEN not in printed.out + printed.err + caplog.text
    assert any(
        "POST" in m and "commit" in m for m in caplog.text.splitlines()
    )  # huggingface_hub's debug log was captured

    # re-publishing the same run changes nothing; a data file the run no longer has is removed
    assert main(["publish", str(run_dir), REPO, "--token-env", "INTERP_TEST_TOKEN", "--out", str(out), "--quiet"]) == 0
    assert len(repo.commits) == 2
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.upload_file(
        path_or_fileobj=b"old",
        path_in_repo="data/gone/train-00000-of-00001.parquet",
        repo_id=REPO,
        repo_type="dataset",
    )
    assert len(repo.commits) == 3
    assert main(["publish", str(run_dir), REPO, "--token-env", "INTERP_TEST_TOKEN", "--out", str(out), "--quiet"]) == 0
    assert len(repo.commits) == 4 and set(repo.head.files) == local | {".gitattributes"}

    back = load_published(REPO, endpoint=hub.url, cache_dir=str(tmp_path / "cache"))
    assert back[CODER].to_list() == load_published(out)[CODER].to_list()
    assert TOKEN.encode() not in _everything_written(tmp_path / "cache")
    capsys.readouterr()

    # asking for a private repository where a public one exists is refused, with one line
    assert (
        main(
            [
                "publish",
                str(run_dir),
                REPO,
                "--private",
                "--token-env",
                "INTERP_TEST_TOKEN",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    [line] = [text for text in err.splitlines() if text.startswith("error:")]
    assert "already exists and is public" in line and err.rstrip().endswith(line) and TOKEN not in err
    assert len(repo.commits) == 4


@pytest.mark.slow
def test_a_private_repository_needs_the_token_to_read(run_dir, folder, hub, tmp_path, smollm):
    result = publish_run(
        run_dir,
        "interp-tests/private-set",
        token=TOKEN,
        private=True,
        out_dir=tmp_path / "out",
        endpoint=hub.url,
        lm=smollm,
        progress=False,
    )  # what the app's Publish panel calls
    assert result.private is True and hub.repos["interp-tests/private-set"].private
    assert result.uploaded == ["README.md", data_file(CODER)] and result.deleted == [] and result.rows == {CODER: 4}
    assert result.commit_oid == hub.repos["interp-tests/private-set"].head.oid
    assert result.url == f"{hub.url}/datasets/interp-tests/private-set" and TOKEN not in repr(result)
    with pytest.raises(HfHubHTTPError):
        HfApi(endpoint=hub.url, token=False).dataset_info("interp-tests/private-set")
    with pytest.raises(PublishError, match="Cannot download dataset interp-tests/private-set"):
        load_published("interp-tests/private-set", endpoint=hub.url, cache_dir=str(tmp_path / "anon"))
    rows = load_published("interp-tests/private-set", endpoint=hub.url, token=TOKEN, cache_dir=str(tmp_path / "c"))
    assert rows[CODER].num_rows == 4

    with pytest.raises(PublishError, match="refused|failed") as wrong:
        push_folder(folder, "interp-tests/other", token="hf_wrongTOKEN", endpoint=hub.url)
    assert "hf_wrongTOKEN" not in str(wrong.value) and "other" not in hub.repos


@pytest.mark.slow
def test_dry_run_writes_the_folder_without_a_token_and_uploads_nothing(run_dir, hub, tmp_path, capsys):
    out = tmp_path / "dry"
    assert main(["publish", str(run_dir), REPO, "--dry-run", "--out", str(out), "--quiet"]) == 0
    assert "dry run: nothing uploaded" in capsys.readouterr().out
    assert (out / "README.md").is_file() and (out / data_file(CODER)).is_file()
    assert hub.requests == []


@pytest.mark.slow
def test_publishing_without_a_token_fails_before_building(run_dir, hub, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["publish", str(run_dir), REPO, "--token-env", "INTERP_NO_SUCH_VAR", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "No Hugging Face token" in err and "$INTERP_NO_SUCH_VAR" in err
    assert not out.exists() and hub.requests == []


def test_a_directory_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(InterpError, match="not a run directory"):
        read_run(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PublishError, match="no explanations"):
        read_run(tmp_path)


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_the_eleuther_json_layout_is_read_into_the_same_schema(tmp_path):
    root = tmp_path / "auto_interp_explanations"
    _write(
        root / "Gemma/16k/res/model.layers.3_feature.json",
        {"0": "Words about rivers", "5": "Closing brackets", "7": "Dates"},
    )
    _write(root / "scores/gemma/16k/res/fuzz_layer_3.json", {"0": 0.8, "5": 0.55})
    _write(root / "scores/gemma/16k/res/detection_layer_3.json", {"0": 0.9})
    _write(root / "scores/gemma/16k/res/fuzz_layer_9.json", {"2": 0.6})  # no explanation file: kept as scores alone

    tables = load_published(root)
    assert list(tables) == [
        "Gemma_16k_res_model.layers.3",
        "gemma_16k_res_layers.9",
    ]  # the second is named by its score path
    rows = {r["latent"]: r for r in tables["Gemma_16k_res_model.layers.3"]}
    assert sorted(rows) == [0, 5, 7] and tables["Gemma_16k_res_model.layers.3"].features == FEATURES
    assert (
        rows[0]["explanation"] == "Words about rivers"
        and rows[0]["hookpoint"] == "model.layers.3"
        and rows[0]["model"] == "Gemma"
    )
    assert [(s["scorer"], s["value"]) for s in rows[0]["scores"]] == [("detection", 0.9), ("fuzz", 0.8)]
    assert [(s["scorer"], s["value"]) for s in rows[5]["scores"]] == [("fuzz", 0.55)] and rows[7]["scores"] == []
    [lonely] = tables["gemma_16k_res_layers.9"].to_list()
    assert lonely["latent"] == 2 and lonely["explanation"] is None and lonely["scores"][0]["value"] == 0.6

    other = tmp_path / "other"
    _write(other / "Mine/res/model.layers.3_feature.json", {"5": "Right brackets", "11": "Numbers"})
    pairs = compare_published(tables["Gemma_16k_res_model.layers.3"], read_eleuther(other)["Mine_res_model.layers.3"])
    assert pairs == [
        {
            "hookpoint": "model.layers.3",
            "latent": 5,
            "a": {"explanation": "Closing brackets", "scores": {"fuzz (eleuther)": 0.55}},
            "b": {"explanation": "Right brackets", "scores": {}},
        }
    ]
    flat = browse_rows(tables)
    assert len(flat) == 4 and flat[0] == {
        "config": "Gemma_16k_res_model.layers.3",
        "hookpoint": "model.layers.3",
        "latent": 0,
        "status": "ok",
        "explanation": "Words about rivers",
        "detection (eleuther)": 0.9,
        "fuzz (eleuther)": 0.8,
    }


def test_malformed_eleuther_files_name_the_file(tmp_path):
    _write(tmp_path / "a/model.layers.1_feature.json", {"first": "x"})
    with pytest.raises(PublishError, match="model.layers.1_feature.json: key 'first' is not a latent index"):
        read_eleuther(tmp_path)
    _write(tmp_path / "a/model.layers.1_feature.json", {"1": 3})
    with pytest.raises(PublishError, match="latent 1 is not a string"):
        read_eleuther(tmp_path)
    _write(tmp_path / "a/model.layers.1_feature.json", ["x"])
    with pytest.raises(PublishError, match="holds a list"):
        read_eleuther(tmp_path)
    with pytest.raises(PublishError, match="neither a folder nor a Hub dataset id"):
        load_published(tmp_path / "missing" / "deep" / "path")


def test_score_entries_keep_every_metric_typed_or_as_json():
    detection = classification([True, True, False, False], [True, None, False, True], [2.0, 0.5, -1.0, 0.3]).to_dict()
    rows = [
        {
            "scorer": "detection-logprob",
            "explainer": "default",
            "baseline": False,
            "explanation": "rivers",
            "metrics": detection,
        },
        {
            "scorer": "detection-logprob",
            "explainer": "default",
            "baseline": True,
            "explanation": "dates",
            "metrics": {**detection, "auroc": 0.25},
        },
        {
            "scorer": "intervention",
            "explainer": "default",
            "baseline": False,
            "explanation": "rivers",
            "metrics": {"auroc": 0.7, "kl": 0.5, "reached_target": True},
        },
    ]
    first, second = score_entries(rows)
    assert (first["scorer"], first["metric"], first["value"], first["baseline_value"]) == (
        "detection-logprob",
        "auroc",
        detection["auroc"],
        0.25,
    )
    assert (
        first["metrics"]["failed"] == 1
        and first["metrics"]["accuracy"] == detection["accuracy"]
        and first["baseline_explanation"] == "dates"
    )
    assert json.loads(first["other_metrics"]) == {}
    assert second["baseline_value"] is None and second["baseline_explanation"] is None  # no baseline scored (yet)
    assert second["metrics"]["auroc"] == 0.7 and json.loads(second["other_metrics"]) == {
        "kl": 0.5,
        "reached_target": True,
    }
    table = datasets.Dataset.from_list(
        [{"scores": [first, second]}], features=datasets.Features({"scores": FEATURES["scores"]})
    )
    assert table[0]["scores"] == [first, second]


@pytest.mark.slow  # a fresh Python process
def test_the_core_does_not_import_publish():
    code = "import sys, interp.cli, interp.stages; print('publish' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "False"  # sparsify may print a notice first
