"""The run directory is the source of truth: a user's own run (a tiny random Llama folder, a SAELens SAE and
top-k neurons, a served LLM) re-runs every stage from the run directory alone, with the run's model and coders."""

import shutil
from pathlib import Path

import pytest
import torch

from interp.app import explain_score
from interp.app.session import Runs
from interp.app.workspace import Workspace
from interp.cli import main
from interp.errors import InterpError
from interp.rundir import RunDir
from tests.helpers.coders import random_dense_weights, write_saelens
from tests.helpers.models import D_MODEL, save_tiny_model
from tests.helpers.openai_server import serving
from tests.helpers.pipeline import scripted_reply
from tests.helpers.results import explanation_lines, score_lines

NEURONS, SAE = "model.layers.1.mlp.topk-neurons", "model.layers.2"
SMALL = ["--num-tokens", "1024", "--ctx-len", "32", "--shard-windows", "8", "--batch-size", "8", "--quiet"]


@pytest.fixture(scope="module")
def llm():
    srv = serving()
    srv.reply = scripted_reply
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, smollm_tokenizer) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"), smollm_tokenizer)


@pytest.fixture(scope="module")
def saelens_dir(tmp_path_factory) -> Path:
    return write_saelens(tmp_path_factory.mktemp("sae") / "sae", random_dense_weights(torch.ones(1, D_MODEL)))


def users_run(run_dir: Path, model: Path, sae: Path) -> list[str]:
    """``interp run`` as a user with their own model and SAE would type it (no LLM: the tokens explainer)."""
    return [
        "run",
        str(run_dir),
        "--model",
        str(model),
        *SMALL,
        "--coders",
        "topk-neurons@model.layers.1.mlp",
        f"saelens:{sae}",
        "--neuron-k",
        "4",
        "--latents",
        "sample:3",
        "--explainer",
        "tokens",
        "--scorers",
        "embedding",
    ]


@pytest.fixture(scope="module")
def made_run(tmp_path_factory, tiny_model, saelens_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("made") / "run"
    assert main(users_run(run_dir, tiny_model, saelens_dir)) == 0
    return run_dir


@pytest.mark.slow  # every stage end to end
def test_a_users_run_loads_its_model_once_and_resumes_from_the_run_directory_alone(
    tmp_path, tiny_model, saelens_dir, loads
):
    run_dir = tmp_path / "run"
    assert main(users_run(run_dir, tiny_model, saelens_dir)) == 0
    assert loads == [str(tiny_model)]  # cache, explain and score share one model
    lines = explanation_lines(run_dir), score_lines(run_dir)
    assert all(lines)
    assert main(["run", str(run_dir), "--quiet"]) == 0  # the run's own settings, from its config.json
    assert (explanation_lines(run_dir), score_lines(run_dir)) == lines  # resumed: not a line written again
    assert loads == [str(tiny_model)] * 2


@pytest.mark.slow  # every stage end to end
def test_every_stage_on_an_existing_run_takes_the_run_directory_alone(
    tmp_path, made_run, tiny_model, llm, loads, capsys
):
    run_dir = tmp_path / "run"
    shutil.copytree(made_run, run_dir)
    run = RunDir(run_dir)
    served = ["--llm", llm.base_url, "--llm-model", "scripted", "--explainer", "default"]

    assert main(["explain", str(run_dir), *served]) == 0
    assert loads == [str(tiny_model)]
    explained = run.usable_explanations("default")
    assert {r["coder"] for r in explained} == {NEURONS, SAE} and all(r["model"] == "scripted" for r in explained)

    assert main(["score", str(run_dir), *served, "--scorers", "detection", "--score-mode", "generative"]) == 0
    assert loads == [str(tiny_model)] * 2
    scored = [r for r in run.scores() if r["explainer"] == "default"]
    assert {(r["scorer"], r["coder"]) for r in scored} == {("detection", NEURONS), ("detection", SAE)}
    assert main(["summary", str(run_dir), "--explainer", "default"]) == 0
    assert "scores for model.layers.2 of the default explanations" in capsys.readouterr().out

    assert main(["publish", str(run_dir), "someone/features", "--dry-run", "--quiet"]) == 0
    assert {p.name for p in (run.publish_dir / "data").iterdir()} == {NEURONS, SAE}
    assert main(["compare", f"{run_dir}:{NEURONS}", f"{run_dir}:{SAE}", "--explainer", "default", "--quiet"]) == 0
    assert "decoder" in capsys.readouterr().out  # decoders of the run's own coders, loaded through its own model
    assert (
        main(
            [
                "steer",
                "To be or not",
                "--run-dir",
                str(run_dir),
                "--latent",
                "0",
                "--hookpoint",
                SAE,
                "--strength",
                "4",
                "--max-new-tokens",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    assert "model.layers.2 latent 0: add 4" in capsys.readouterr().out
    assert loads == [str(tiny_model)] * 5

    subject = Runs(Workspace(tmp_path)).get("run").model()  # the app's open-run
    assert subject.lm.name == str(tiny_model) and list(subject.coders) == [NEURONS, SAE]
    assert subject.coders[SAE].kind == "saelens" and subject.coders[NEURONS].kind == "topk-neurons"


def drop_scores(run: RunDir) -> None:
    """Leave ``run`` with its current explanations and no score line (as deleting its scores.jsonl did): its results
    database made again from the explanations alone."""
    kept = run.explanations()
    for path in run.path.glob("results.sqlite*"):
        path.unlink()
    run.add_explanations(kept)
    assert run.explanations() == kept and not run.scores()


def test_a_stage_started_from_the_app_touches_only_the_chosen_coder(tmp_path, made_run):
    shutil.copytree(made_run, tmp_path / "run")
    run, lines = Runs(Workspace(tmp_path)).get("run"), RunDir(tmp_path / "run")
    explained = len(lines.explanations())
    explain_score.explain(run, SAE, "tokens", explain_score.LLMChoice("local"), "0-9", progress=False)
    new = lines.explanations()[explained:]
    assert len(new) == 10 and {r["coder"] for r in new} == {SAE}
    drop_scores(lines)
    explain_score.score(run, SAE, "tokens", ["embedding"], "logprob", explain_score.LLMChoice("local"), progress=False)
    assert {r["coder"] for r in lines.scores()} == {SAE}
    with pytest.raises(InterpError, match="no finished coder 'model.layers.3'"):
        explain_score.explain(run, "model.layers.3", "tokens", explain_score.LLMChoice("local"), "0-9", progress=False)


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--model", "embedded"], "model.model {model!r}, not 'embedded' (--model)"),
        (["--coders", "neurons@model.layers.1.mlp"], "coders.coders ["),
        (["--ctx-len", "64"], "corpus.ctx_len 32, not 64 (--ctx-len)"),
        (["--n-train", "5"], "records.n_train 20, not 5 (--n-train)"),
    ],
)
def test_a_flag_that_contradicts_the_run_is_refused_in_one_line(made_run, tiny_model, loads, capsys, flags, says):
    before = {p: p.read_bytes() for p in made_run.rglob("*") if p.is_file()}
    assert main(["score", str(made_run), "--scorers", "embedding", "--quiet", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert says.format(model=str(tiny_model)) in err and "--run-dir" in err
    assert loads == []  # refused before anything loads
    assert {p: p.read_bytes() for p in made_run.rglob("*") if p.is_file()} == before


def test_a_flag_that_agrees_with_the_run_is_accepted(made_run, tiny_model):
    assert main(["summary", str(made_run)]) == 0
    assert (
        main(
            [
                "score",
                str(made_run),
                "--ctx-len",
                "32",
                "--model",
                str(tiny_model),
                "--scorers",
                "embedding",
                "--quiet",
            ]
        )
        == 0
    )


def test_a_stage_on_a_folder_that_is_no_run_says_so(tmp_path, capsys):
    assert main(["score", str(tmp_path / "nothing"), "--quiet"]) == 2
    assert f"{tmp_path / 'nothing'} is not a run directory (it has no config.json)" in capsys.readouterr().err
    assert main(["explain", str(tmp_path), "--run-dir", str(tmp_path / "other")]) == 2
    assert "Two run directories given" in capsys.readouterr().err


@pytest.mark.slow  # every stage end to end
def test_a_failed_first_command_leaves_nothing_that_blocks_the_corrected_one(
    tmp_path, tiny_model, saelens_dir, capsys
):
    run_dir = tmp_path / "run"
    wrong = [
        a.replace(str(saelens_dir), str(tmp_path / "no-such-sae")) for a in users_run(run_dir, tiny_model, saelens_dir)
    ]
    assert main(wrong) == 2
    assert "Coder source not found" in capsys.readouterr().err
    assert not RunDir(run_dir).is_run()

    assert (
        main(["cache", str(run_dir), "--model", str(tiny_model), *SMALL, "--coders", "neurons@model.layers.9.mlp"])
        == 2
    )
    assert "Unknown hookpoint 'model.layers.9.mlp'" in capsys.readouterr().err
    assert not RunDir(run_dir).is_run()

    assert main(users_run(run_dir, tiny_model, saelens_dir)) == 0
    assert RunDir(run_dir).read_config().coders.coders[1] == f"saelens:{saelens_dir}"


def test_the_readme_draws_the_run_directory_as_its_owning_module_does():
    import interp.rundir

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    drawn = readme.split("## The run directory", 1)[1].split("```\nRUN/", 1)[1].split("```", 1)[0]
    owned = "\n".join(line.removeprefix("    ") for line in interp.rundir.__doc__.split("    RUN/", 1)[1].splitlines())
    assert drawn.strip() == owned.split("\nEvery write", 1)[0].strip()


@pytest.mark.slow  # every stage end to end
def test_another_llm_neither_silently_keeps_nor_mixes_explanations(tmp_path, made_run, llm, capsys, caplog):
    run_dir = tmp_path / "run"
    shutil.copytree(made_run, run_dir)
    run = RunDir(run_dir)
    served = [str(run_dir), "--llm", llm.base_url, "--explainer", "default", "--quiet"]
    detect = ["score", *served, "--llm-model", "scripted", "--scorers", "detection", "--score-mode", "generative"]
    llm.reply, llm.script = scripted_reply, []
    assert main(["explain", *served, "--llm-model", "scripted"]) == 0
    assert main(detect) == 0
    first = {r["latent"]: r["explanation"] for r in run.scores() if r["explainer"] == "default" and not r["baseline"]}

    sent = len(llm.requests)
    assert main(["explain", *served, "--llm-model", "bigger"]) == 0
    assert (
        "already have default explanations (5 by scripted), kept; to explain them again with bigger, add --redo"
        in caplog.text
    )
    assert len(llm.requests) == sent and {r["model"] for r in run.explanations("default")} == {"scripted"}

    llm.reply = lambda content: "[EXPLANATION]: Words of kings" if "Example 1:" in content else scripted_reply(content)
    assert main(["explain", *served, "--llm-model", "bigger", "--redo"]) == 0
    assert {(r["model"], r["explanation"]) for r in run.explanations("default")} == {("bigger", "Words of kings")}
    assert main(detect) == 0  # the new explanations are scored; the old scores are replaced, not kept beside them
    rescored = [r for r in run.scores() if r["explainer"] == "default" and not r["baseline"]]
    assert sorted(r["latent"] for r in rescored) == sorted(first) and {r["explanation"] for r in rescored} == {
        "Words of kings"
    }

    llm.script = ["400"] * 1000
    assert main([*detect, "--no-baseline", "--scorers", "fuzzing"]) == 2
    assert "Every score of this command failed" in capsys.readouterr().err
    llm.script = ["400"]  # one request of five fails: exit 0, with a count
    assert main(["explain", *served, "--llm-model", "third", "--redo", "--max-retries", "0"]) == 0  # not cached
    assert "1 failed this time" in capsys.readouterr().out
    llm.script = []
