"""Reading an explanation out of an LLM reply, and flagging one not worth scoring."""

import re

from ..plain_text import plain_line
from ..prompts import render
from .short import copies_a_worked_example, echoes_the_question

MARKER = re.compile(r"\[?\s*explanation\s*\]?\s*:", re.IGNORECASE)
ARTEFACTS = re.compile(r"<\|[^|>]*\|>|</?s>|^(assistant|answer)\s*:?\s*", re.IGNORECASE)
MAX_WORDS = 40
QUOTES = "\"'“”‘’"


def parse_explanation(reply: str) -> str | None:
    """The explanation in an LLM reply, or None when there is none to find.

    Takes the first line after the last ``[EXPLANATION]:`` marker, or, when there is no marker
    (small models often forget it), the first sentence of the reply; then strips chat
    artefacts, markdown and stray quotes. Control characters and odd spaces become plain spaces
    (``plain_text.plain_line``): the text goes on to prompts and published datasets.
    """
    text = ARTEFACTS.sub("", reply or "").strip()
    parts = MARKER.split(text)
    candidate = parts[-1] if len(parts) > 1 else text
    lines = [line.strip() for line in candidate.splitlines() if line.strip()]
    if not lines:
        return None
    line = lines[0] if len(parts) > 1 else re.split(r"(?<=[a-z0-9\)\"'])\. ", lines[0])[0]
    line = ARTEFACTS.sub("", line).strip().lstrip(">").strip()
    if line.startswith("<") and line.endswith(">"):
        line = line[1:-1]
    line = plain_line(line).strip("*_`# ")
    while len(line) >= 2 and line[0] in QUOTES and line[-1] in QUOTES:
        line = line[1:-1].strip()
    return line or None


def flag(explanation: str) -> str | None:
    """Why an explanation is not worth scoring (empty, no words, too long, the template echoed), or None."""
    if not explanation or not re.search(r"[A-Za-z]{2,}", explanation):
        return "no words"
    if len(explanation.split()) > MAX_WORDS:
        return f"longer than {MAX_WORDS} words"
    lowered = explanation.lower().rstrip(".")
    if copies_a_worked_example(explanation):
        return "copies a worked example"
    if echoes_the_question(explanation):
        return "echoes the prompt"
    if "your one-sentence explanation" in lowered or (
        len(lowered) > 20 and lowered in render("explain_system").lower()
    ):
        return "echoes the prompt"
    if echoes_the_refinement(explanation):
        return "echoes the prompt"
    return None


def echoes_the_refinement(explanation: str) -> bool:
    """Whether an explanation repeats a line of the refinement request (``The feature does not fire anywhere here,
    but your explanation suggests it would``), as a small model served without a started reply does (seen against
    a llama.cpp server: half of SmolLM2-135M's refinement replies were one)."""
    said = " ".join(explanation.lower().split()).strip(" .:")
    fixed = render("explain_refine", current="", missed="", false_alarms="").replace("<<", "").replace(">>", "")
    lines = [" ".join(line.lower().split()).strip(" .:") for line in fixed.splitlines()]
    return len(said) > 20 and any(len(line) > 20 and (said in line or line in said) for line in lines)
