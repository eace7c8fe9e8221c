"""Nothing that explains or chooses ever sees what a scorer scores, for every explainer and both searches.

Each case explains 4 latents of a tiny random Llama's cached run through the scripted server, with a spy on the
judge, and looks for every scored example's text (the exact window any prompt style would show) in every message
sent, for scored examples in what the judge was handed, and for the intervention scorer's prompts in the intervention
explainer's. The same case run with a deliberately leaking build (``tests.helpers.leaks``) must be caught.
"""

import json

import pytest

from interp.cli import main
from interp.rundir import RunDir
from interp.steer_effects import load_steer_prompts
from tests.helpers import leaks as mutants
from tests.helpers.leaks import leaks
from tests.helpers.results import explanation_lines
from tests.helpers.search import cache_tiny_run, copy_of, explain_args, explainer_reply, records_of, spy_on_judges

STEERING = "--target-kl 0.003 --num-steer-prompts 3 --steer-new-tokens 5"
CASES = {  # name: (explain arguments, the mutant that leaks the way this case could)
    "short": ("--explainer short", mutants.leak_test_examples),
    "default": ("--explainer default", mutants.leak_test_examples),
    "activations": ("--explainer activations", mutants.leak_test_examples),
    "logits": ("--explainer logits", mutants.leak_test_examples),
    "contrastive": ("--explainer contrastive", mutants.leak_scored_negatives),
    "intervention": (f"--explainer intervention {STEERING}", mutants.leak_steering_prompts),
    "best-of-k": ("--explainer short --search best-of-k --candidates 2", mutants.leak_to_the_judge),
    "refine": ("--explainer short --search refine --rounds 1 --candidates 2", mutants.leak_to_the_judge),
}


@pytest.fixture(scope="module")
def cached(tmp_path_factory, smollm_tokenizer):
    return cache_tiny_run(tmp_path_factory, smollm_tokenizer)


def reply(body: dict) -> str:
    """The short explainer's scripted reply to a started reply; an ``[EXPLANATION]:`` line to every other prompt."""
    if body["messages"][-1]["role"] == "assistant":
        return explainer_reply(body)
    return "[EXPLANATION]: words about the marked tokens"


@pytest.mark.parametrize("mutant", [False, True], ids=["as built", "leaking mutant"])
@pytest.mark.parametrize("case", CASES)
def test_nothing_scored_reaches_an_explainer_or_a_judge(
    case, mutant, cached, tmp_path, server, monkeypatch, smollm_tokenizer
):
    args, leak = CASES[case]
    if mutant:
        leak(monkeypatch)
    judged, _ = spy_on_judges(monkeypatch)
    run = copy_of(cached[1], tmp_path)
    server.request_reply = reply
    assert main(explain_args(run, server.base_url, *args.split())) == 0
    explainer = args.split()[1]
    lines = RunDir(run).explanations(explainer)
    assert len(lines) == 4 and all(r["status"] == "ok" for r in lines)
    records = records_of(run, smollm_tokenizer, contrast=True)  # the tiny model speaks SmolLM2's tokenizer
    prompts = [m["content"] for q in server.requests for m in json.loads(q["body"])["messages"]]
    steering = load_steer_prompts(None, 3) if explainer == "intervention" else []
    found = leaks([records[r["latent"]] for r in lines], prompts, judged, smollm_tokenizer, steering)
    assert bool(found) == mutant, found


def test_a_contrastive_run_made_before_says_its_scores_leaked_until_explained_again(cached, tmp_path, server, capsys):
    run = copy_of(cached[1], tmp_path)
    server.request_reply = reply
    assert main(explain_args(run, server.base_url, "--explainer", "contrastive")) == 0
    lines = explanation_lines(run)
    assert lines and all(r["separated"] for r in lines)
    old = [{k: v for k, v in r.items() if k != "separated"} for r in lines]  # as the previous version wrote them
    for path in run.glob("results.sqlite*"):  # a run made before the results database: its lines in the JSONL
        path.unlink()
    (run / "explanations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    score = ["score", str(run), "--quiet", "--explainer", "contrastive", "--scorers", "embedding"]
    capsys.readouterr()
    assert main(score) == 0
    warned = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "4 contrastive explanations were made with the old, leaking prompts" in warned[0]
    assert f"interp explain {run} --explainer contrastive --redo" in warned[0]

    assert main(explain_args(run, server.base_url, "--explainer", "contrastive", "--redo")) == 0
    capsys.readouterr()
    assert main(["summary", str(run), "--explainer", "contrastive"]) == 0
    out = capsys.readouterr().out
    assert "leaking" not in out and "embedding" in out
