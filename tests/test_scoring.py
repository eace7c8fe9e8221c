"""Scorers on planted records whose meaning is known: cats fire the latent, money does not.

The record is the ``cat_record`` fixture (conftest.py), made of ``tests.helpers.scoring``'s texts.
"""

import re

import pytest
import torch

from interp.scoring.classify import DetectionScorer, FuzzingScorer, parse_labels
from interp.scoring.embedding import EmbeddingScorer
from tests.helpers.scoring import keyword, scripted


def judge_texts(content: str) -> str:
    """A diligent scorer: a text shows the feature if it contains the explanation's key word."""
    word = keyword(content)
    texts = re.findall(r"Text \d+: (.*)", content)
    return "Here you go: [" + ", ".join("1" if word in t.lower() else "0" for t in texts) + "]"


def judge_one(content: str) -> list[tuple[str, float]]:
    word = keyword(content)
    text = re.search(r"Text: (.*)", content).group(1).lower()
    return [("1", -0.1), ("0", -2.5)] if word in text else [("0", -0.2), ("1", -3.0)]


def judge_marks(content: str) -> str:
    word = keyword(content)
    texts = re.findall(r"Text \d+: (.*)", content)
    marked = [" ".join(re.findall(r"<<(.*?)>>", t)).lower() for t in texts]
    return "[" + ", ".join("1" if word in m else "0" for m in marked) + "]"


def test_parse_labels_reads_the_last_list_or_bare_digits():
    assert parse_labels("Sure! [1, 0, 1]", 3) == [True, False, True]
    assert parse_labels("[0, 0] no wait [1,1]", 2) == [True, True]
    assert parse_labels("1 0 1 1", 4) == [True, False, True, True]
    assert parse_labels("[1, 0]", 3) is None
    assert parse_labels("[1, 2, 0]", 3) is None
    assert parse_labels("", 1) is None


def test_detection_generative_separates_a_true_from_a_random_explanation(server, cat_record, smollm_tokenizer):
    server.reply = judge_texts
    scorer = DetectionScorer(scripted(server), smollm_tokenizer, batch_size=5)
    (true, outcomes), (wrong, _) = scorer.score(
        [(cat_record, "Mentions of a cat"), (cat_record, "Words about the weather")]
    )
    assert true["accuracy"] == 1.0 and true["balanced_accuracy"] == 1.0 and true["failed"] == 0
    assert wrong["balanced_accuracy"] == 0.5 and wrong["recall"] == 0.0
    assert len(outcomes) == 12 and {o.kind for o in outcomes} == {"test", "negative"}
    assert len(server.requests) == 2 * 3  # 12 texts, 5 per prompt
    assert scorer.name == "detection"


def test_logprob_mode_agrees_with_generative_on_easy_cases_and_gives_auroc(server, cat_record, smollm_tokenizer):
    server.reply, server.top = judge_texts, judge_one
    gen = DetectionScorer(scripted(server), smollm_tokenizer, mode="generative").score([(cat_record, "A cat")])[0]
    lp = DetectionScorer(scripted(server), smollm_tokenizer, mode="logprob").score([(cat_record, "A cat")])[0]
    assert [o.prediction for o in sorted(gen[1], key=lambda o: o.index)] == [
        o.prediction for o in sorted(lp[1], key=lambda o: o.index)
    ]
    assert lp[0]["auroc"] == 1.0 and gen[0]["auroc"] is None
    assert all(o.score is not None for o in lp[1])


def test_unparsable_replies_are_failures_not_wrong_answers(server, cat_record, smollm_tokenizer):
    server.reply = lambda content: "I am not sure what you mean."
    metrics, outcomes = DetectionScorer(scripted(server), smollm_tokenizer).score([(cat_record, "A cat")])[0]
    assert metrics["failed"] == 12 and metrics["accuracy"] is None
    assert all(o.prediction is None for o in outcomes)


def test_fuzzing_rewards_true_highlights_only(server, cat_record, smollm_tokenizer):
    server.reply = judge_marks
    scorer = FuzzingScorer(scripted(server), smollm_tokenizer, batch_size=4)
    metrics, outcomes = scorer.score([(cat_record, "The word cat")])[0]
    assert sum(o.label for o in outcomes) == 3  # half of the six activating texts keep their true marks
    assert metrics["recall"] == 1.0 and metrics["precision"] == 1.0
    texts = [r["body"] for r in server.requests]
    assert all("<<" in t for t in texts)


def test_embedding_scorer_ranks_cat_texts_above_money_for_a_cat_explanation(cat_record, smollm_tokenizer):
    scorer = EmbeddingScorer(smollm_tokenizer)
    (true, outcomes), (wrong, _) = scorer.score(
        [(cat_record, "cats and kittens"), (cat_record, "banking and finance")]
    )
    assert true["auroc"] == 1.0 and wrong["auroc"] < 0.2
    assert (true["positives"], true["negatives"]) == (6, 6)
    assert all(-1.0 <= o.score <= 1.0 for o in outcomes)


@pytest.mark.slow
def test_surprisal_favours_the_true_explanation(cat_record, smollm):
    from interp.scoring.surprisal import SurprisalScorer

    scorer = SurprisalScorer(smollm)
    (true, outcomes), (wrong, _) = scorer.score([(cat_record, "cats"), (cat_record, "banking and finance")])
    assert true["auroc"] > 0.8 and wrong["auroc"] < 0.2
    assert len(outcomes) == 12 and all(o.score is not None for o in outcomes)
    # the loss is transformers' own loss on the example's tokens, the prefix masked out
    prefix, body = scorer._prefix("About cats:"), cat_record.activating[0].tokens
    ids = torch.tensor([prefix + body])
    labels = ids.clone()
    labels[0, : len(prefix)] = -100
    want = float(smollm.model(input_ids=ids, labels=labels).loss)
    assert scorer.losses([prefix, prefix[:2]], [body, body[:3]])[0] == pytest.approx(want, rel=1e-4)


def judge_intruder(content: str) -> str:
    word = keyword(content)
    texts = re.findall(r"Text \d+: (.*)", content)
    odd = [i for i, t in enumerate(texts, 1) if word not in t.lower()]
    return f"The intruder is text {odd[0]}."


def test_intruder_finds_the_odd_text_with_the_true_explanation_only(server, cat_record, smollm_tokenizer):
    from interp.scoring.intruder import IntruderScorer, parse_choice

    assert (
        parse_choice("Text 3, no wait, 2", 5) == 1 and parse_choice("none", 5) is None and parse_choice("7", 5) is None
    )
    server.reply = judge_intruder
    scorer = IntruderScorer(scripted(server), smollm_tokenizer, group_size=3)
    (true, outcomes), (wrong, _) = scorer.score([(cat_record, "A cat"), (cat_record, "The weather")])
    assert true == {"accuracy": 1.0, "groups": 3, "failed": 0, "chance": 1 / 3}
    assert wrong["accuracy"] < 1.0  # every text lacks "weather": the judge always answers text 1
    assert {o.index for o in outcomes} <= {ex.index for ex in cat_record.negatives}

    server.top = lambda content: [(str(int(judge_intruder(content).split()[-1][:-1])), -0.1), ("1", -3.0)]
    lp = IntruderScorer(scripted(server), smollm_tokenizer, mode="logprob", group_size=3)
    assert lp.score([(cat_record, "A cat")])[0][0]["accuracy"] == 1.0 and lp.name == "intruder-logprob"
