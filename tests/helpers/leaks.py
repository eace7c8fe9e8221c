"""Finding leaks, and builds that leak on purpose.

A leak is anything a scorer scores that reached an explainer or a judge: a test or scored negative example's text in a
prompt sent to the LLM, one of those examples in what a judge was handed, or a steering prompt of the intervention
scorer in the intervention explainer's prompt. The mutants are deliberately leaking builds, one per way an explainer
or a search could leak; the leak test must find each of them.
"""

from dataclasses import replace

from interp import stages
from interp.explain.short import AFTER, BEFORE
from interp.records import Example, LatentRecord
from interp.steer_effects import load_steer_prompts
from interp.views import HeldOut, explainer_view, scored_view

WINDOW = BEFORE + AFTER + 1
"""Tokens of the smallest window of an example that any prompt shows (the short explainer's context)."""
MIN_TOKENS = 4
"""Shorter windows (a peak at an example's very start) are too common a text to call a leak."""


def squeeze(text: str) -> str:
    """``text`` without markers and whitespace: how each prompt style lays out a window differs only in those."""
    return "".join(text.replace("<<", "").replace(">>", "").split())


def windows(ex: Example, tokenizer) -> list[str]:
    """The squeezed texts a prompt could show of ``ex``: the context around its peak for an activating example (the
    smallest window any style shows; every longer one holds it), every window of that length for another."""
    special = set(tokenizer.all_special_ids)
    if ex.max_act > 0:
        peak = ex.acts.index(ex.max_act)
        spans = [(max(0, peak - BEFORE), peak + AFTER + 1)]
    else:
        spans = [(i, i + WINDOW) for i in range(max(1, len(ex.tokens) - WINDOW + 1))]
    out = []
    for a, b in spans:
        ids = [t for t in ex.tokens[a:b] if t not in special]
        if len(ids) >= MIN_TOKENS:
            out.append(squeeze(tokenizer.decode(ids)))
    return out


def _texts(examples: list[Example], tokenizer) -> str:
    return "\0".join(squeeze(tokenizer.decode(ex.tokens)) for ex in examples)


def leaks(
    records: list[LatentRecord], prompts: list[str], judged: list[HeldOut], tokenizer, steering: list[str] = ()
) -> list[str]:
    """Each way what the scorers of ``records`` score reached ``prompts`` (every message sent to the LLM) or
    ``judged`` (every (split, explanation) a judge was handed), or a scorer's ``steering`` prompt reached ``prompts``.

    A scored window whose text is also in an example some explainer or judge may see (a repeated passage) is not
    counted: its text is not the scored example's alone."""
    sent = [squeeze(p) for p in prompts]
    allowed = "\0".join(
        _texts(view.train + view.contrast, tokenizer) for view in (explainer_view(r) for r in records)
    ) + "\0".join(_texts(r.valid + r.valid_negatives + r.valid_hard_negatives, tokenizer) for r in records)
    found = []
    for r in records:
        held = scored_view(r)
        for ex in held.activating + held.negatives + held.hard_negatives:
            shown = [w for w in windows(ex, tokenizer) if w not in allowed and any(w in p for p in sent)]
            if shown:
                found.append(f"scored example {ex.index} of latent {r.latent} in a prompt: {shown[0]!r}")
        scored = {ex.index for ex in held.activating + held.negatives + held.hard_negatives}
        for h, _ in judged:
            given = {ex.index for ex in h.activating + h.negatives + h.hard_negatives}
            if h.latent == r.latent and (h.split != "validation" or given & scored):
                found.append(f"the judge was handed scored examples of latent {r.latent}")
    found += [f"scorer's steering prompt {p!r} in a prompt" for p in steering if any(squeeze(p) in m for m in sent)]
    return found


def leak_test_examples(monkeypatch) -> None:
    """Mutant: the explainer is shown the test examples as its train examples."""
    monkeypatch.setattr(stages, "explainer_view", lambda r: replace(explainer_view(r), train=r.test))


def leak_scored_negatives(monkeypatch) -> None:
    """Mutant: the contrastive explainer is shown the scored negatives (what it was shown before it had its own)."""
    monkeypatch.setattr(
        stages, "explainer_view", lambda r: replace(explainer_view(r), contrast=r.hard_negatives or r.negatives)
    )


def leak_steering_prompts(monkeypatch) -> None:
    """Mutant: the intervention explainer steers after the scorer's prompts (as it did before)."""
    monkeypatch.setattr(stages, "explainer_steer_prompts", load_steer_prompts)


def leak_to_the_judge(monkeypatch) -> None:
    """Mutant: a search's judge is handed the test split, labelled as validation."""
    monkeypatch.setattr(stages, "validation_view", lambda r: replace(scored_view(r), split="validation"))
