"""Intervention explanations and scoring: a latent whose meaning is in what it makes the model say.

The planted latent (see ``test_steer.planted_word_coder``) writes the embedding of " cat" into
SmolLM2's residual stream at layer 24 and never fires on any text, so only its output can
explain it. Pipeline plumbing runs on a tiny random Llama saved to disk.
"""

import json
import re
from collections import Counter

import pytest

from interp.cli import main
from interp.errors import InterpError
from interp.explain import TokenText, explain_batch, explain_prompt
from interp.llm import GenerationParams, OpenAIClient
from interp.prompts import render
from interp.records import LatentStats
from interp.scoring.intervention import InterventionScorer, statement_parts
from interp.steer_effects import latent_effects, load_steer_prompts
from interp.views import ExplainerView, HeldOut
from tests.helpers.coders import planted_word_coder
from tests.helpers.results import explanation_lines, score_lines

PROMPTS = 4
TRUE, RANDOM = "cats", "legal contracts and court cases"


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def record(coder_name: str, latent: int) -> HeldOut:
    """A test split with no examples: the intervention scorer reads none."""
    return HeldOut(coder_name, latent, "ok", "test")


def seen(coder_name: str, latent: int) -> ExplainerView:
    """An explainer's view with no examples: the intervention explainer reads its steering effects instead."""
    return ExplainerView(coder_name, latent, "ok", LatentStats(0, 0.0, 0.0, 0.0, [0] * 20, 0))


def test_the_statement_is_split_around_the_explanation():
    before, rest = statement_parts("cats")
    assert before == "\n\n" + render("intervention_statement", explanation="X").split("X")[0]
    assert before.endswith('amplified amount of "') and rest == 'cats"'


def test_the_scorer_separates_a_planted_latents_true_explanation_from_a_random_one(smollm):
    coder = planted_word_coder(smollm)
    scorer = InterventionScorer(
        smollm, {"planted": coder}, load_steer_prompts(None, PROMPTS), target_kl=1.0, max_new_tokens=10
    )
    r = record("planted", 0)
    (true, true_examples), (random, random_examples) = scorer.score([(r, TRUE), (r, RANDOM)])

    # both explanations were judged on the same steered continuations
    assert true["strength"] == random["strength"] and true["kl"] == random["kl"]
    assert true["reached_target"] and abs(true["kl"] - 1.0) <= 0.1
    assert true["changed"] == PROMPTS and true["prompts"] == PROMPTS
    steered = [smollm.tokenizer.decode(ids) for ids in scorer.steered("planted", 0)[1]]
    assert sum("cat" in s for s in steered) >= PROMPTS - 1

    # steered passages make "cats" likelier than clean ones; the random explanation gains nothing
    assert true["auroc"] >= 0.75 and true["logprob_gain"] > 2.0
    assert random["auroc"] <= 0.5 and abs(random["logprob_gain"]) < 1.0
    assert true["score"] > random["score"] + 2.0
    assert true["score"] == pytest.approx(true["logprob_gain"] / true["kl"])
    assert [(e.kind, e.label) for e in true_examples] == [("steered", True)] * PROMPTS + [("clean", False)] * PROMPTS
    gains = [s.score - c.score for s, c in zip(true_examples[:PROMPTS], true_examples[PROMPTS:], strict=True)]
    assert sum(gains) / PROMPTS == pytest.approx(true["logprob_gain"])


def test_the_scorer_needs_the_coder_the_record_names(tiny_lm):
    scorer = InterventionScorer(tiny_lm, {}, ["Hello"], max_new_tokens=2)
    with pytest.raises(InterpError, match="no coder named 'sae'"):
        scorer.score([(record("sae", 1), "anything")])


# --------------------------------------------------------------------------- the explainer


def consensus_reply(content: str) -> str:
    """What a careful explainer would answer: the token promoted after most prompts."""
    firsts = re.findall(r"More likely next tokens: '([^']*)'", content)
    return f'Thinking it over.\n[EXPLANATION]: The word "{Counter(firsts).most_common(1)[0][0].strip()}"'


def test_the_intervention_explainer_sees_what_steering_promotes_and_names_it(smollm, server):
    coder = planted_word_coder(smollm)
    prompts = load_steer_prompts(None, PROMPTS)
    cal, effects = latent_effects(smollm, coder, 0, prompts, target_kl=1.0, k=5)
    assert cal.reached and [e.prompt for e in effects] == prompts
    assert sum(e.changes[0].token == " cat" for e in effects) >= PROMPTS - 1  # the largest rise, after most prompts
    assert all(c.steered > c.clean for e in effects for c in e.changes)

    text = TokenText(smollm.tokenizer)
    system, user = explain_prompt(seen("planted", 0), "intervention", text, effects)
    assert system["content"] == render("explain_intervention_system")
    assert f"Prompt 1: {prompts[0]!r}\nMore likely next tokens: ' cat' (+" in user["content"]
    with pytest.raises(ValueError, match="needs the latent's steering effects"):
        explain_prompt(seen("planted", 0), "intervention", text)

    server.reply = consensus_reply
    client = OpenAIClient(server.base_url, "scripted-model", concurrency=2, timeout=5, max_retries=1, backoff=0.01)
    [result] = explain_batch(
        [seen("planted", 0)], "intervention", text, client, GenerationParams(max_tokens=40), effects=[effects]
    )
    assert result.status == "ok" and result.explanation == 'The word "cat"' and result.explainer == "intervention"


# --------------------------------------------------------------------------- the pipeline


def test_explain_and_score_stages_run_the_intervention_explainer_and_scorer(tiny_lm, tmp_path, server, capsys):
    folder = tmp_path / "tiny"
    tiny_lm.model.save_pretrained(folder)
    tiny_lm.tokenizer.save_pretrained(folder)
    run_dir = tmp_path / "run"
    # a tiny random Llama's next token moves by at most ~0.01 nats, so the target is small
    steering = ["--target-kl", "0.003", "--num-steer-prompts", "3", "--steer-new-tokens", "5"]
    base = [
        "--run-dir",
        str(run_dir),
        "--model",
        str(folder),
        "--coders",
        "topk-neurons@model.layers.1.mlp",
        "--num-tokens",
        "2048",
        "--ctx-len",
        "32",
        "--shard-windows",
        "16",
        "--batch-size",
        "8",
        "--quiet",
        "--latents",
        "sample:2",
        *steering,
    ]
    assert main(["run", *base, "--explainer", "tokens", "--scorers", "intervention"]) == 0
    assert re.search(r"intervention\s+auroc\s+[\d.]+\s+\[[\d.]+\]\s+n=2", capsys.readouterr().out)
    rows = score_lines(run_dir)
    assert len(rows) == 4 and {r["scorer"] for r in rows} == {"intervention"} and sum(r["baseline"] for r in rows) == 2
    for r in rows:
        m = r["metrics"]
        assert m["prompts"] == 3 and len(r["examples"]) == 6 and abs(m["kl"] - 0.003) <= 0.0003
        assert m["score"] == pytest.approx(m["logprob_gain"] / m["kl"])
    by_latent = {}
    for r in rows:  # an explanation and its baseline share the latent's steering
        by_latent.setdefault(r["latent"], set()).add(r["metrics"]["strength"])
    assert all(len(s) == 1 for s in by_latent.values())

    assert main(["score", *base, "--explainer", "tokens", "--scorers", "intervention"]) == 0  # resumes: nothing to add
    assert score_lines(run_dir) == rows

    server.reply = consensus_reply
    llm = ["--llm", server.base_url, "--llm-model", "scripted-model", "--explainer", "intervention"]
    assert main(["explain", *base, *llm]) == 0
    explained = explanation_lines(run_dir)
    mine = [r for r in explained if r["explainer"] == "intervention"]
    assert len(mine) == 2 and all(r["status"] == "ok" and r["explanation"].startswith("The word") for r in mine)
    sent = [json.loads(q["body"])["messages"][1]["content"] for q in server.requests]
    assert all(c.count("More likely next tokens:") == 3 for c in sent)
    pool = load_steer_prompts()
    for c in sent:  # the explainer steers after prompts of its own, never after one the scorer scores
        assert all(f"{p!r}" in c for p in pool[3:6]) and not any(f"{p!r}" in c for p in pool[:3])
