"""Explainers: turn a latent record into a one-sentence explanation.

LLM explainers (prompts in ``interp/prompts/``):
  short        for small models (the embedded default): the top firing tokens as facts, short
               contexts, worked examples, the reply started as "Fires on" (``explain_short``)
  default      activating examples with the firing tokens marked <<like this>>
  activations  the same, plus the strongest tokens with activations scaled 0-10
  contrastive  activating examples beside non-activating ones drawn for it alone (hard ones first: they contain
               the same tokens), never the negatives a scorer scores
  logits       the same examples, plus the tokens the latent promotes and suppresses
  intervention no examples: the next tokens that steering the latent made more likely after
               a few prompts (``steer_effects.latent_effects``), for latents whose meaning is in their output;
               the prompts are never the intervention scorer's (``steer_effects.explainer_steer_prompts``)
Every explainer reads an ``ExplainerView`` (``interp.views``): no split that a scorer or a judge scores.
The ``tokens`` explainer needs no LLM: it lists the tokens the latent fires on most, so the
pipeline runs end to end without a model and scorers have a floor to beat.
"""

import hashlib
import json
import logging
import time
import typing
from collections import Counter
from dataclasses import asdict, dataclass, replace

from ..config import Explainer
from ..llm.base import Completion, GenerationParams, LLMClient, Prompt
from ..prompts import render
from ..records import Example
from ..steer_effects import PromptEffect
from ..views import ExplainerView
from .parse import flag, parse_explanation
from .short import firing_counts, read_phrase, short_prompt

log = logging.getLogger(__name__)

LLM_EXPLAINERS = ("short", "default", "activations", "contrastive", "logits")
"""LLM explainers that read the latent's activating examples."""
STEERING_EXPLAINERS = ("intervention",)
"""LLM explainers that read what steering the latent does instead (they need the model and coder)."""
EXPLAINERS: tuple[Explainer, ...] = typing.get_args(Explainer)
"""Every explainer: the LLM ones, the steering one, and ``tokens`` (no LLM)."""


class TokenText:
    """Token id -> its text, decoded one token at a time and remembered."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._text: dict[int, str] = {}

    def __call__(self, ids: list[int]) -> list[str]:
        missing = [i for i in dict.fromkeys(ids) if i not in self._text]
        if missing:
            for i, text in zip(missing, self.tokenizer.batch_decode([[i] for i in missing]), strict=True):
                self._text[i] = text
        return [self._text[i] for i in ids]


def highlight(pieces: list[str], acts: list[float]) -> str:
    """Join token texts, wrapping each run of active tokens in << >>."""
    out, inside = [], False
    for piece, act in zip(pieces, acts, strict=True):
        if act > 0 and not inside:
            lead = len(piece) - len(piece.lstrip())
            out.append(piece[:lead] + "<<" + piece[lead:])
            inside = True
        elif act <= 0 and inside:
            out.append(">>" + piece)
            inside = False
        else:
            out.append(piece)
    return "".join(out) + (">>" if inside else "")


def _examples_block(examples: list[Example], text: TokenText, marked: bool = True) -> str:
    lines = []
    for i, ex in enumerate(examples, 1):
        pieces = text(ex.tokens)
        body = highlight(pieces, ex.acts) if marked else "".join(pieces)
        lines.append(f"Example {i}: {body.strip()}".replace("\n", " "))
    return "\n".join(lines)


def _activations_block(examples: list[Example], text: TokenText, limit: int = 20) -> str:
    top = max((ex.max_act for ex in examples), default=0.0) or 1.0
    pairs = sorted(
        ((a, t) for ex in examples for t, a in zip(ex.tokens, ex.acts, strict=True) if a > 0), reverse=True
    )[:limit]
    return ", ".join(f"{text([t])[0].strip()!r} ({round(10 * a / top)})" for a, t in pairs)


def _token_list(pairs: list[tuple[int, float]], text: TokenText) -> str:
    return ", ".join(repr(s.strip()) for s in text([t for t, _ in pairs])) or "(none)"


def _effects_block(effects: list[PromptEffect]) -> str:
    lines = []
    for i, effect in enumerate(effects, 1):
        rises = ", ".join(f"{c.token!r} (+{c.delta:.2f})" for c in effect.changes) or "(none)"
        lines.append(f"Prompt {i}: {effect.prompt!r}\nMore likely next tokens: {rises}")
    return "\n\n".join(lines)


def explain_prompt(
    record: ExplainerView, explainer: str, text: TokenText, effects: list[PromptEffect] | None = None
) -> Prompt:
    """The chat prompt that asks an LLM to explain the latent seen through ``record`` in the style of ``explainer``.

    The intervention explainer needs ``effects``: what steering the latent did after each prompt.
    """
    if explainer == "short":
        return short_prompt(record, text)
    examples = _examples_block(record.train, text)
    values = {"examples": examples}
    system = "explain_system"
    if explainer == "intervention":
        if effects is None:
            raise ValueError("The intervention explainer needs the latent's steering effects.")
        values["effects"] = _effects_block(effects)
        system = "explain_intervention_system"
    elif explainer == "activations":
        values["activations"] = _activations_block(record.train, text)
    elif explainer == "contrastive":
        values["negatives"] = _examples_block(record.contrast, text, marked=False) or "(none)"
    elif explainer == "logits":
        values["promoted"] = _token_list(record.promoted, text)
        values["suppressed"] = _token_list(record.suppressed, text)
    elif explainer != "default":
        raise ValueError(
            f"{explainer!r} is not an LLM explainer; use one of {', '.join(LLM_EXPLAINERS + STEERING_EXPLAINERS)}"
        )
    # No worked example: SmolLM2-135M copied one verbatim for 8 latents of 8.
    return (
        {"role": "system", "content": render(system)},
        {"role": "user", "content": render(f"explain_{explainer}", **values)},
    )


def token_list_explanation(record: ExplainerView, text: TokenText, n: int = 5) -> str:
    """The baseline explanation: the tokens the latent fires on most often in its train examples."""
    counts = firing_counts(record)
    words = [w.strip() or repr(w) for w in text([t for t, _ in counts.most_common(n)])]
    return "The tokens " + ", ".join(f'"{w}"' for w in words) if words else "(no activating tokens)"


@dataclass
class Explanation:
    """One explainer's result for one latent; a line of ``explanations.jsonl``."""

    coder: str
    latent: int
    explainer: str
    explanation: str | None
    status: str
    """ok, flagged (not worth scoring: see ``note``), failed (no parsable reply), dead or rare."""
    note: str | None = None
    raw: str | None = None
    """The last raw reply, kept when parsing failed or the explanation was flagged."""
    attempts: int = 0
    model: str | None = None
    params: dict | None = None
    prompt_sha: str | None = None
    batch_seconds_per_latent: float = 0.0
    """Wall time of the batch this latent was explained in, divided by its latents: a batch is one request
    (local) or requests in flight together (server), so no latent has a time of its own."""
    search: dict | None = None
    """A search's settings (``explain.search``); None when the explanation is the explainer's one reply."""
    judge: dict | None = None
    """The scorer that chose among the candidates, its metric and the chosen one's validation score."""
    candidates: list[dict] | None = None
    """Every candidate of a search: text, status, validation score, round."""
    separated: bool = True
    """Made from the explainer's own view (``interp.views``), apart from everything scored. Lines made before have
    none: the contrastive and intervention explainers' prompts then held what their scorers score."""

    def to_dict(self) -> dict:
        """JSON-ready form; a line without a search has no search keys, as lines had before there was one."""
        out = asdict(self)
        if self.search is None:
            for key in ("search", "judge", "candidates"):
                del out[key]
        return out


def prompt_sha(prompt: Prompt) -> str:
    """A short hash identifying a prompt's exact text."""
    return hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()[:16]


def read_reply(reply: Completion, explainer: str) -> tuple[str | None, str, str | None]:
    """(explanation, status, note) of one reply: failed when the request failed or nothing parses, flagged when the
    explanation is not worth scoring (``flag``), else ok."""
    if reply.error:
        return None, "failed", reply.error
    parsed = read_phrase(reply.text) if explainer == "short" else parse_explanation(reply.text)
    if parsed is None:
        return None, "failed", "no explanation found in the reply"
    reason = flag(parsed)
    return parsed, ("flagged" if reason else "ok"), reason


def explain_batch(
    records: list[ExplainerView],
    explainer: str,
    text: TokenText,
    client: LLMClient | None,
    params: GenerationParams,
    max_retries: int = 2,
    effects: list[list[PromptEffect] | None] | None = None,
) -> list[Explanation]:
    """Explain ``records`` together: one batched ``generate`` per attempt, retrying only the failures.

    ``effects`` (one entry per record; the intervention explainer needs it) are passed to
    ``explain_prompt``.

    Retries sample (temperature 0.7, a new seed) since a greedy retry would repeat the reply.
    """
    start = time.perf_counter()
    out: list[Explanation] = []
    todo: list[int] = []
    for r in records:
        if r.status != "ok":
            out.append(Explanation(r.coder, r.latent, explainer, None, r.status))
        elif explainer == "tokens":
            out.append(Explanation(r.coder, r.latent, explainer, token_list_explanation(r, text), "ok"))
        else:
            out.append(
                Explanation(r.coder, r.latent, explainer, None, "failed", model=client.model, params=params.to_dict())
            )
            todo.append(len(out) - 1)
    prompts = {i: explain_prompt(records[i], explainer, text, effects[i] if effects else None) for i in todo}
    for attempt in range(1 + max_retries):
        if not todo:
            break
        p = params if attempt == 0 else replace(params, temperature=0.7, seed=params.seed + attempt)
        replies = client.generate([prompts[i] for i in todo], p)
        still = []
        for i, reply in zip(todo, replies, strict=True):
            parsed, status, note = read_reply(reply, explainer)
            e = out[i]
            e.explanation, e.status, e.note, e.attempts = parsed, status, note, attempt + 1
            e.prompt_sha, e.params = prompt_sha(prompts[i]), p.to_dict()
            e.raw = reply.text if status != "ok" else None
            if status == "failed":
                still.append(i)
        todo = still
    elapsed = (time.perf_counter() - start) / max(len(records), 1)
    for e in out:
        e.batch_seconds_per_latent = elapsed
    return out


def note_other_models(explainer: str, model: str | None, explained: list[dict], redo: bool) -> None:
    """Say (one line) when chosen latents keep explanations by another LLM than this command's: they are not redone
    silently."""
    others = Counter(r.get("model") for r in explained if r.get("model") != model and r.get("status") == "ok")
    if not others or model is None:
        return
    by = ", ".join(f"{n} by {m}" for m, n in others.items())
    if redo:
        log.info("explaining again with %s the latents that have %s explanations %s", model, explainer, by)
    else:
        log.warning(
            "%d chosen latents already have %s explanations (%s), kept; to explain them again with %s, add --redo.",
            sum(others.values()),
            explainer,
            by,
            model,
        )
