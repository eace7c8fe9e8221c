"""The ``short`` explainer: a prompt a 135M-parameter model can answer, and the reading of its reply.

Small models (the embedded SmolLM2-135M) lose the thread in twenty 32-token examples and answer
``default``'s prompt with boilerplate ("The feature is active and ..."). This prompt gives them
what they can use: the tokens the latent fires on most, with counts, as facts; a short context
around each example's peak token; three worked examples as earlier chat turns; and the reply
already started (``Fires on``), so the model only completes one phrase, cut at its first line.
On the demo run it beats delphi's prompt but only draws level with the token list (README:
Explanation quality); a served model answers it too.
"""

import re
from collections import Counter
from collections.abc import Callable
from functools import cache

from ..llm.base import Prompt
from ..plain_text import plain_line
from ..prompts import render, template
from ..records import Example
from ..views import ExplainerView

REPLY_START = "Fires on"
"""The start of the assistant's reply, given in the prompt; the model continues it."""
N_TOKENS = 5
"""Most frequent firing tokens given as facts."""
N_CONTEXTS = 8
"""Examples shown, as short contexts around their peak token."""
BEFORE, AFTER = 6, 2
"""Tokens of context shown before and after the peak token."""
COUNTS = re.compile(r"\s*\(\d+\)")
DANGLING = re.compile(r"\s*\(\d*$")
"""A count the reply's cut left open: ``"Cass" (10``."""
LIST_SEPARATOR = re.compile(r"\s*,\s*|\s+and\s+")
STARTED = re.compile(rf"^\s*(?:{REPLY_START})?\s*:?\s*", re.IGNORECASE)

TokenTexts = Callable[[list[int]], list[str]]
"""Token ids -> their texts (``explain.explainers.TokenText``)."""


def firing_counts(record: ExplainerView) -> Counter:
    """Token id -> how often the latent fires on it in its train examples."""
    return Counter(t for ex in record.train for t, a in zip(ex.tokens, ex.acts, strict=True) if a > 0)


def firing_tokens(record: ExplainerView, text: TokenTexts, n: int = N_TOKENS) -> str:
    """The tokens the latent fires on most often in its train examples, with counts: ``' king' (9), ' queen' (3)``."""
    top = firing_counts(record).most_common(n)
    return (
        ", ".join(f"{piece!r} ({k})" for piece, (_, k) in zip(text([t for t, _ in top]), top, strict=True)) or "(none)"
    )


def context(ex: Example, text: TokenTexts) -> str:
    """A short context around the example's peak token, marked <<like this>>, on one line."""
    peak = max(range(len(ex.acts)), key=ex.acts.__getitem__)
    start = max(0, peak - BEFORE)
    pieces = text(ex.tokens[start : peak + AFTER + 1])
    at = peak - start
    line = "".join(pieces[:at]) + "<<" + pieces[at].strip() + ">>" + "".join(pieces[at + 1 :])
    return " ".join(line.split())


def contexts(record: ExplainerView, text: TokenTexts, n: int = N_CONTEXTS) -> str:
    """Numbered short contexts, one per train example, each around its peak token, marked <<like this>>."""
    return "\n".join(f"{i}. {context(ex, text)}" for i, ex in enumerate(record.train[:n], 1))


@cache
def worked_examples() -> tuple[tuple[str, str], ...]:
    """(question, answer) pairs of ``prompts/explain_short_shots.txt``: blocks split by ``---``, the answer last."""
    blocks = template("explain_short_shots").template.strip().split("\n---\n")
    return tuple(tuple(part.strip() for part in block.rsplit("\n=> ", 1)) for block in blocks)


def short_prompt(record: ExplainerView, text: TokenTexts) -> Prompt:
    """The chat prompt: the task, the worked examples as earlier turns, this latent's facts, the reply's start."""
    messages = [{"role": "system", "content": render("explain_short_system")}]
    for question, answer in worked_examples():
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    question = render("explain_short", tokens=firing_tokens(record, text), contexts=contexts(record, text))
    messages += [{"role": "user", "content": question}, {"role": "assistant", "content": REPLY_START}]
    return tuple(messages)


def read_phrase(reply: str) -> str | None:
    """The phrase that continues ``Fires on``, or None: its first line, without the prompt's counts and markers.

    A server that cannot continue a started reply answers afresh; a repeated ``Fires on`` is dropped.
    """
    lines = [line for line in (reply or "").splitlines() if line.strip()]
    if not lines:
        return None
    phrase = COUNTS.sub("", STARTED.sub("", plain_line(lines[0]))).replace("<<", "").replace(">>", "")
    phrase = DANGLING.sub("", " ".join(phrase.split())).strip(" .,:;")
    items = [item for item in LIST_SEPARATOR.split(phrase) if item]
    if len(set(items)) < len(items):  # a small model repeats itself: "def", "def", "def"
        phrase = ", ".join(dict.fromkeys(items))
    if phrase.count('"') % 2:  # a quote the reply's cut left open, or one it closed without opening
        phrase = phrase[:-1] if phrase.endswith('"') else phrase + '"'
    return phrase.strip(" .,:;") or None


def copies_a_worked_example(explanation: str) -> bool:
    """Whether an explanation is one of the worked examples' answers (a small model sometimes copies one)."""
    return explanation.lower().strip(" .") in {answer.lower() for _, answer in worked_examples()}


def echoes_the_question(explanation: str) -> bool:
    """Whether an explanation repeats the question's first line (``Tokens it fires on: ...``), as a small model served
    without support for a started reply may."""
    start = render("explain_short", tokens="", contexts="").split(":", 1)[0]
    return explanation.lower().startswith(start.lower())
