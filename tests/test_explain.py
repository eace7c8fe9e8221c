"""Explanation prompts, parsing and the LLM-free baseline."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from interp.explain import (
    EXPLAINERS,
    LLM_EXPLAINERS,
    TokenText,
    explain_prompt,
    flag,
    highlight,
    parse_explanation,
    token_list_explanation,
)
from interp.explain.short import REPLY_START, read_phrase, worked_examples
from interp.records import Example, LatentStats
from interp.views import ExplainerView
from tests.helpers.text import is_plain_line


def record(tokenizer, texts: list[tuple[str, str]], **extra) -> ExplainerView:
    """An explainer's view whose train examples fire exactly on the marked word of each (text, word) pair."""
    train = []
    for i, (text, word) in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces = tokenizer.batch_decode([[t] for t in ids])
        acts = [3.0 if p.strip() == word else 0.0 for p in pieces]
        assert any(acts), (text, word, pieces)
        train.append(Example(ids, acts, i))
    stats = LatentStats(
        count=len(train), frequency=0.01, max=3.0, mean=3.0, histogram=[0] * 20, num_examples=len(train)
    )
    return ExplainerView("sae", 7, "ok", stats, train=train, **extra)


def test_highlight_marks_runs_of_active_tokens():
    assert highlight([" The", " big", " cat", " sat"], [0, 1, 2, 0]) == " The <<big cat>> sat"
    assert highlight(["a", "b"], [1, 1]) == "<<ab>>"


@pytest.mark.parametrize("explainer", [e for e in LLM_EXPLAINERS if e != "short"])
def test_every_llm_explainer_builds_a_chat_prompt_with_marked_examples(explainer, smollm_tokenizer):
    neg = Example(smollm_tokenizer("A dog barked.", add_special_tokens=False)["input_ids"], [0.0] * 4, 9)
    r = record(
        smollm_tokenizer,
        [("The cat sat on the mat.", "cat"), ("My cat is old.", "cat")],
        contrast=[neg],
        promoted=[(smollm_tokenizer(" purr", add_special_tokens=False)["input_ids"][0], 2.0)],
        suppressed=[],
    )
    system, user = explain_prompt(r, explainer, TokenText(smollm_tokenizer))
    assert system["role"] == "system" and "[EXPLANATION]:" in system["content"]
    assert "Example 1: The <<cat>> sat on the mat." in user["content"]
    assert "Example 2: My <<cat>> is old." in user["content"]
    extra = {
        "activations": "'cat' (10)",
        "contrastive": "A dog barked.",
        "logits": "more likely to say: 'p",
        "default": "",
    }[explainer]
    assert extra in user["content"]
    assert "${" not in user["content"]


@pytest.mark.parametrize(
    "reply, want",
    [
        ('Some thinking.\n[EXPLANATION]: The word "cat" and other pets.', 'The word "cat" and other pets.'),
        ("[explanation]:  **Mentions of cats**<|im_end|>", "Mentions of cats"),
        ("Explanation: 'kings and queens'\nMore text", "kings and queens"),
        ("References to felines. They include cats.\nMore", "References to felines"),
        ('The word "tell". It detects speech', 'The word "tell"'),
        ("assistant: [EXPLANATION]: <numbers in code>", "numbers in code"),
        ("", None),
        ("[EXPLANATION]:   ", None),
    ],
)
def test_parse_explanation_finds_the_final_answer(reply, want):
    assert parse_explanation(reply) == want


@given(st.text(max_size=400))
@settings(max_examples=300, deadline=None)
@example("0\x1f_")
@example(" \x1e\u2029 ")
@example(' "sea\x00 and\u3000sky" (3')
def test_any_reply_parses_to_one_plain_line_or_none(reply):
    for parsed in (parse_explanation(reply), read_phrase(reply)):
        assert parsed is None or is_plain_line(parsed)
        if parsed is not None:
            flag(parsed)


def test_flag_catches_empty_long_and_echoed_explanations():
    assert flag("123 456") == "no words"
    assert "longer than" in flag("word " * 60)
    assert flag("<your one-sentence explanation>") == "echoes the prompt"
    assert (
        flag("You are a meticulous AI researcher studying one feature of a language model's neurons.")
        == "echoes the prompt"
    )
    assert flag("Mentions of cats") is None


def test_token_list_baseline_needs_no_llm(smollm_tokenizer):
    r = record(smollm_tokenizer, [("The cat sat.", "cat"), ("A cat ran.", "cat"), ("The dog ran.", "dog")])
    assert token_list_explanation(r, TokenText(smollm_tokenizer)) == 'The tokens "cat", "dog"'
    assert "tokens" in EXPLAINERS


def test_the_short_prompt_gives_counts_short_contexts_worked_turns_and_the_started_reply(smollm_tokenizer):
    long = "Once upon a time in a land far away there lived a very old cat near the sea shore today."
    r = record(smollm_tokenizer, [(long, "cat"), ("My cat is old.", "cat"), ("A dog barked.", "dog")])
    prompt = explain_prompt(r, "short", TokenText(smollm_tokenizer))
    assert [m["role"] for m in prompt] == ["system"] + ["user", "assistant"] * (len(worked_examples()) + 1)
    assert prompt[-1]["content"] == REPLY_START
    question = prompt[-2]["content"]
    assert "Tokens it fires on: ' cat' (2), ' dog' (1)" in question
    assert "1. away there lived a very old<<cat>> near the\n" in question.replace(
        " <<", "<<"
    )  # six tokens before, two after
    assert "Once upon" not in question  # a short context, not the whole example
    assert "2. My<<cat>> is old\n" in question.replace(" <<", "<<")
    assert "${" not in question


@pytest.mark.parametrize(
    "reply, want",
    [
        (' "the sea" and "the sky"\nFires on more', '"the sea" and "the sky"'),
        (" : 'pay' (10), 'money' (3)", "'pay', 'money'"),
        (" <<class>> keywords.", "class keywords"),
        ("Fires on: royal titles", "royal titles"),  # a server that answered afresh
        (' "sea and sky', '"sea and sky"'),
        (' the word sea"', "the word sea"),
        (' : "IL", "', '"IL"'),  # cut after an opening quote
        (' "def", "def", "def" (', '"def"'),  # repeated, and a count cut open
        (' "Cass", "Cass" (10', '"Cass"'),
        (" blood and the king, the king, the king", "blood, the king"),
        (' "sea" and "sky"', '"sea" and "sky"'),  # no repetition: left as written
        ("", None),
        ("  \n ", None),
    ],
)
def test_a_short_reply_is_read_as_the_phrase_that_continues_fires_on(reply, want):
    assert read_phrase(reply) == want


def test_copying_a_worked_example_is_flagged():
    copied = worked_examples()[-1][1]
    assert flag(copied + ".") == "copies a worked example"
    assert flag("royal titles in the plays") is None
    assert flag("Tokens it fires on: 'def', 'class'") == "echoes the prompt"  # a served model that answered afresh
