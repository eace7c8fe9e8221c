"""The simulation scorer: per-token predictions, pooled correlation, both modes, bad replies."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from interp.errors import InterpError
from interp.llm import CachedClient, TransformersClient
from interp.results.db import ResultsDB
from interp.scoring.simulation import SimulationScorer, expected_value, parse_activations
from tests.helpers.scoring import keyword, scripted


def simulate_tokens(content: str) -> str:
    """A diligent simulator: 9 on each token that is the explanation's key word, else 0."""
    word = keyword(content)
    tokens = content.split("Tokens, one per line:\n", 1)[1].split("\n\nReply with", 1)[0].split("\n")
    return "Predictions: [" + ", ".join("9" if t.strip().lower() == word else "0" for t in tokens) + "]"


def test_parse_activations_reads_the_last_list_of_the_right_length():
    assert parse_activations("[0, 3, 9]", 3) == [0.0, 3.0, 9.0]
    assert parse_activations("[1, 2] then [0,0,7]", 3) == [0.0, 0.0, 7.0]
    assert parse_activations("[0, 10, 1]", 3) is None  # off the 0-9 scale
    assert parse_activations("0 3 9", 3) is None
    assert parse_activations("", 1) is None


@settings(max_examples=200, deadline=None)
@given(st.text(), st.integers(min_value=1, max_value=40))
def test_parse_activations_never_crashes(reply, n):
    values = parse_activations(reply, n)
    assert values is None or (len(values) == n and all(0 <= v <= 9 for v in values))


def test_expected_value_is_the_mean_of_the_digit_distribution():
    assert expected_value({"0": math.log(0.5), "9": math.log(0.5)}) == 4.5
    assert math.isclose(expected_value({"2": math.log(0.2), "4": math.log(0.6)}), (2 * 0.2 + 4 * 0.6) / 0.8)
    assert expected_value({"0": -math.inf}) is None
    assert expected_value({}) is None


def test_generative_simulation_correlates_for_the_true_explanation_only(server, cat_record, smollm_tokenizer):
    server.reply = simulate_tokens
    scorer = SimulationScorer(scripted(server), smollm_tokenizer, mode="generative")
    (true_m, outcomes), (random_m, _) = scorer.score([(cat_record, "the word cat"), (cat_record, "money")])
    assert scorer.name == "simulation"
    assert true_m["correlation"] == 1.0 and true_m["auroc"] == 1.0 and true_m["failed"] == 0
    assert true_m["tokens"] == sum(len(ex.tokens) for ex in cat_record.activating + cat_record.negatives)
    assert random_m["correlation"] is None  # a constant simulation has no correlation, not a zero one
    cat = next(o for o in outcomes if o.label)
    ex = next(e for e in cat_record.activating if e.index == cat.index)
    assert cat.values == [9.0 if a > 0 else 0.0 for a in ex.acts]


def test_unparsable_simulations_are_failures(server, cat_record, smollm_tokenizer):
    server.reply = lambda content: "I think the first token is quite active."
    scorer = SimulationScorer(scripted(server), smollm_tokenizer, mode="generative")
    [(m, outcomes)] = scorer.score([(cat_record, "the word cat")])
    assert m["failed"] == len(outcomes) == 12 and m["correlation"] is None
    assert all(o.values is None and o.prediction is None for o in outcomes)


def test_logprob_mode_needs_a_local_model(server, smollm_tokenizer):
    with pytest.raises(InterpError, match="score-mode generative"):
        SimulationScorer(scripted(server), smollm_tokenizer, mode="logprob")


def test_reply_logprobs_match_one_forward_pass_per_slot(tiny_lm):
    client = TransformersClient(lm=tiny_lm, batch_size=8)
    prompts = [
        ({"role": "user", "content": text},) for text in ("alpha beta", "a much longer prompt than the other one")
    ]
    replies = [["x\t", "0\ny\t"], ["one\t", "0\ntwo\t", "0\nthree\t"]]
    got = client.reply_logprobs(prompts, replies, ["0", "7"])
    assert [len(r) for r in got] == [2, 3]
    tok = tiny_lm.tokenizer
    for prompt, segments, rows in zip(prompts, replies, got, strict=True):
        ids = client.render(prompt)
        for segment, row in zip(segments, rows, strict=True):
            ids = ids + tok.encode(segment, add_special_tokens=False)
            logprobs = tiny_lm.model(torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)
            for answer, value in row.items():
                expected = max(logprobs[t].item() for t in client._first_tokens(answer))
                assert math.isclose(value, expected, abs_tol=1e-4)


def test_logprob_simulation_with_the_embedded_model_is_cached_and_well_formed(smollm, cat_record, tmp_path):
    client = CachedClient(TransformersClient(lm=smollm), ResultsDB(tmp_path / "results.sqlite"))
    scorer = SimulationScorer(client, smollm.tokenizer, mode="logprob")
    [(m, outcomes)] = scorer.score([(cat_record, "the word cat")])
    assert scorer.name == "simulation-logprob" and m["failed"] == 0
    lengths = {ex.index: len(ex.tokens) for ex in cat_record.activating + cat_record.negatives}
    assert [len(o.values) for o in outcomes] == [lengths[o.index] for o in outcomes]
    for o in outcomes:
        assert all(0 <= v <= 9 for v in o.values) and o.score == max(o.values)
    again = SimulationScorer(client, smollm.tokenizer, mode="logprob").score([(cat_record, "the word cat")])
    assert again[0][0] == m  # answered from the response cache, identically
    print("simulation-logprob on the cat record:", m)
