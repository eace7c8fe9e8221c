"""The main job and the CLI on the embedded default: files, summary, resume, one-line errors."""

import json
import re
import subprocess
import sys

import pytest

from interp.cli import main
from interp.rundir import RunDir
from tests.helpers.results import explanation_lines, score_lines

SMALL = ["--num-tokens", "2048", "--ctx-len", "32", "--shard-windows", "16", "--batch-size", "8", "--quiet"]


@pytest.mark.slow
def test_run_trains_the_default_sae_caches_and_summarises(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [
        "run",
        "--run-dir",
        str(run_dir),
        *SMALL,
        "--train-tokens",
        "4096",
        "--expansion-factor",
        "4",
        "--coders",
        "default",
        "topk-neurons@model.layers.6.mlp",
        "--explainer",
        "tokens",
        "--scorers",
        "embedding",
        "--latents",
        "sample:2",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "default SAE at model.layers.6: held-out FVU" in out and str(run_dir) in out
    summary = json.loads((run_dir / "summary.json").read_text())
    sae = summary["coders"]["model.layers.6"]
    assert sae["num_latents"] == 576 * 4 and sae["mean_l0"] == 32.0 and sae["num_tokens"] == 2048
    assert 0 < summary["default_sae"]["heldout_fvu"] < 1
    neurons = summary["coders"]["model.layers.6.mlp.topk-neurons"]
    assert neurons["num_latents"] == 1536 and neurons["mean_l0"] <= 32
    assert (run_dir / "coders" / "model.layers.6" / "sae.safetensors").is_file()
    assert json.loads((run_dir / "config.json").read_text())["corpus"]["num_tokens"] == 2048
    shards = sorted(p.name for p in (run_dir / "cache" / "model.layers.6").glob("shard-*.safetensors"))
    assert shards == [f"shard-0000{i}.safetensors" for i in range(4)]

    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert main(args) == 0  # a finished run resumes to the same files
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_expected_mistakes_print_one_line_and_exit_2(tmp_path, capsys):
    assert main(["cache", "--run-dir", str(tmp_path / "a"), *SMALL, "--coders", "neurons@model.layers.60.mlp"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Unknown hookpoint 'model.layers.60.mlp'") and "\n" not in err
    assert "model.layers.{0..29}.mlp" in err

    assert main(["cache", "--run-dir", str(tmp_path / "b"), *SMALL, "--coders", "neurons@model.layers.1.mlp"]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "cache",
                "--run-dir",
                str(tmp_path / "b"),
                *SMALL,
                "--num-tokens",
                "4096",
                "--coders",
                "neurons@model.layers.1.mlp",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "corpus.num_tokens 2048, not 4096 (--num-tokens)" in err and "--overwrite" in err
    assert (tmp_path / "b" / "cache" / "model.layers.1.mlp.neurons" / "stats.json").is_file()  # nothing lost

    assert main(["cache", "--run-dir", str(tmp_path / "c"), *SMALL, "--coders", "saelens:/no/such/sae"]) == 2
    assert "Coder source not found" in capsys.readouterr().err


@pytest.mark.slow
def test_run_on_the_embedded_default_loads_the_model_once(tmp_path, loads, capsys):
    args = [
        "run",
        str(tmp_path / "run"),
        *SMALL,
        "--coders",
        "topk-neurons@model.layers.3.mlp",
        "--latents",
        "sample:2",
        "--max-new-tokens",
        "8",
        "--explain-batch",
        "2",
        "--scorers",
        "embedding",
        "surprisal",
    ]
    assert main(args) == 0  # the embedded model is the subject, the explainer and the surprisal scorer's LM
    assert "explanations (short): " in capsys.readouterr().out  # the default explainer, made for small models
    assert len(loads) == 1


@pytest.mark.slow  # a fresh Python process
def test_python_dash_m_interp_shows_help():
    out = subprocess.run(
        [sys.executable, "-m", "interp", "run", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--num-tokens" in out and "Tokens to cache in total" in out


def first_marked_span(content: str) -> str:
    """What a diligent explainer would say: the first marked token of the last example."""
    return content.rsplit("Example 1:", 1)[1].split("<<", 1)[1].split(">>", 1)[0]


@pytest.mark.slow
def test_explain_over_an_openai_server_resumes_and_records_failures(tmp_path, server, capsys):
    run_dir = str(tmp_path / "run")
    base = ["--run-dir", run_dir, *SMALL, "--coders", "topk-neurons@model.layers.3.mlp"]
    assert main(["cache", *base]) == 0
    server.reply = lambda content: f'Thinking...\n[EXPLANATION]: The token "{first_marked_span(content)}"'
    server.fail_contents = set()
    llm = [
        "--explainer",
        "default",
        "--llm",
        server.base_url,
        "--llm-model",
        "scripted-model",
        "--latents",
        "sample:6",
    ]
    assert main(["explain", *base, *llm]) == 0
    rows = explanation_lines(run_dir)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    assert all(r["explanation"].startswith('The token "') and r["model"] == "scripted-model" for r in rows)
    sent = len(server.requests)
    assert main(["explain", *base, *llm]) == 0  # done: nothing is asked again
    assert len(server.requests) == sent
    assert main(["explain", *base, *llm[:-1], "sample:9"]) == 0  # three more, and only three
    assert len(server.requests) == sent + 3

    server.script = ["400"] * 1000  # the server refuses everything: failures are recorded, the run goes on
    before = len(rows) + 3
    assert main(["explain", *base, *llm[:-1], "0-20", "--max-retries", "1"]) == 2  # every one failed: loud, not exit 0
    new = explanation_lines(run_dir)[before:]
    asked = [r for r in new if r["status"] not in ("dead", "rare")]
    assert asked and all(r["status"] == "failed" and "400" in r["note"] and r["attempts"] == 2 for r in asked)
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"error: All {len(asked)} latents sent to the LLM failed (")
        and "400" in err
        and "\n" not in err
    )

    server.script = []  # the server recovers: a resumed run fills in exactly the failures
    assert main(["explain", *base, *llm[:-1], "0-20"]) == 0
    rows = explanation_lines(run_dir)
    refilled = rows[before + len(new) :]
    assert sorted(r["latent"] for r in refilled) == sorted(r["latent"] for r in asked)
    assert {r["status"] for r in refilled} == {"ok"}


@pytest.mark.slow
def test_explain_with_the_embedded_llm_and_the_token_baseline(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    base = ["--run-dir", run_dir, *SMALL, "--coders", "topk-neurons@model.layers.3.mlp", "--latents", "sample:2"]
    assert main(["run", *base, "--explainer", "tokens", "--scorers", "embedding"]) == 0
    assert "explanations (tokens): 2 ok" in capsys.readouterr().out
    assert (
        main(
            ["explain", run_dir, "--explainer", "default", "--max-new-tokens", "12", "--explain-batch", "2", "--quiet"]
        )
        == 0
    )
    rows = explanation_lines(run_dir)
    assert [r["explainer"] for r in rows] == ["tokens", "tokens", "default", "default"]
    llm_rows = rows[2:]
    assert {r["latent"] for r in llm_rows} == {r["latent"] for r in rows[:2]}
    assert all(r["model"] == "embedded" and r["attempts"] >= 1 for r in llm_rows)
    assert all(r["status"] in ("ok", "flagged", "failed") for r in llm_rows)
    assert RunDir(tmp_path / "run").results_db().count_replies() >= 2


@pytest.mark.slow
def test_score_stage_appends_resumes_and_summarises_against_the_baseline(tmp_path, server, capsys):
    run_dir = tmp_path / "run"
    base = ["--run-dir", str(run_dir), *SMALL, "--coders", "topk-neurons@model.layers.3.mlp", "--latents", "sample:4"]
    assert main(["run", *base, "--explainer", "tokens", "--scorers", "embedding"]) == 0
    out = capsys.readouterr().out
    assert "embedding" in out and "auroc" in out
    rows = score_lines(run_dir)
    assert len(rows) == 8 and sum(r["baseline"] for r in rows) == 4
    explanations = {r["latent"]: r["explanation"] for r in rows if not r["baseline"]}
    for r in rows:
        if r["baseline"]:  # another latent's explanation, on this latent's examples
            assert r["explanation"] in explanations.values() and r["explanation"] != explanations[r["latent"]]
    assert all(len(r["examples"]) >= 10 for r in rows)
    assert (run_dir / "plots" / "scores_model.layers.3.mlp.topk-neurons_embedding.png").stat().st_size > 1000

    server.reply = lambda content: "[" + ", ".join("0" for _ in re.findall(r"Text \d+:", content)) + "]"
    llm = ["--llm", server.base_url, "--llm-model", "scripted-model", "--explainer", "tokens"]
    scorers = ["--scorers", "embedding", "detection", "--score-mode", "generative"]
    assert main(["score", *base, *llm, *scorers]) == 0
    rows = score_lines(run_dir)
    assert len(rows) == 16  # embedding was done already: only detection ran
    assert {r["scorer"] for r in rows[8:]} == {"detection"}
    detection = [r for r in rows if r["scorer"] == "detection"]
    assert all(r["metrics"]["recall"] == 0.0 and r["metrics"]["failed"] == 0 for r in detection)
    assert main(["summary", str(run_dir)]) == 0
    assert "detection            balanced_accuracy  0.500  [0.500]  n=4" in capsys.readouterr().out
