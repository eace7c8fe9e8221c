"""Simulation scorer (OpenAI's method): predict each token's activation from the explanation.

The scorer LLM reads the explanation and an example's tokens and predicts an activation per
token on a 0-9 scale; the score is the Pearson correlation between simulated and true
activations, pooled over every token of every held-out example (activating and not). Two modes:

* ``logprob`` ("all at once"): the reply ``token<TAB>n`` per line is teacher-forced and the
  distribution over the digits 0-9 is read at every ``n`` in one forward pass; the simulated
  activation is its expected value. Needs a local model (``reply_logprobs``).
* ``generative``: the LLM writes a list of integers, parsed; works with any chat server.

The scale is 0-9 rather than OpenAI's 0-10 so that every value is a single token in any
tokenizer and its probability is read at one position; correlation does not depend on the scale.
"""

import re

import numpy as np

from ..errors import InterpError
from ..explain import TokenText
from ..llm.base import GenerationParams, LLMClient, Prompt
from ..prompts import render
from ..records import Example
from ..views import HeldOut
from .base import ScoredExample, Scorer, labelled_examples
from .classify import LIST, MODES
from .metrics import auroc, correlation

SCALE = [str(d) for d in range(10)]


def parse_activations(reply: str, n: int) -> list[float] | None:
    """The list of ``n`` integers 0-9 in ``reply`` (the last bracketed list that fits), or None."""
    for body in reversed(LIST.findall(reply or "")):
        values = re.findall(r"-?\d+(?:\.\d+)?", body)
        if len(values) == n and all(v in SCALE for v in values):
            return [float(v) for v in values]
    return None


def expected_value(logprobs: dict[str, float]) -> float | None:
    """Mean of 0-9 under the (renormalised) probabilities of the digits; None if none was ranked."""
    lp = np.array([logprobs.get(d, -np.inf) for d in SCALE], dtype=float)
    if not np.isfinite(lp).any():
        return None
    p = np.exp(lp - lp[np.isfinite(lp)].max())
    return float((p * np.arange(10)).sum() / p.sum())


def show(piece: str) -> str:
    """A token as one visible line: whitespace spelled out."""
    return piece.replace("\n", "\\n").replace("\t", "\\t") or "\\0"


def simulation_metrics(outcomes: list[ScoredExample], truths: list[list[float]]) -> dict:
    """Pooled correlation over every token, over activating examples only, and per-example AUROC."""
    ok = [(o, t) for o, t in zip(outcomes, truths, strict=True) if o.values is not None]
    sim = [v for o, _ in ok for v in o.values]
    true = [v for _, t in ok for v in t]
    sim_active = [v for o, _ in ok if o.label for v in o.values]
    true_active = [v for o, t in ok if o.label for v in t]
    pooled = correlation(true, sim)
    return {
        "n": len(outcomes),
        "tokens": len(true),
        "failed": len(outcomes) - len(ok),
        "correlation": pooled["pearson"],
        "spearman": pooled["spearman"],
        "correlation_activating": correlation(true_active, sim_active)["pearson"],
        "auroc": auroc([o.label for o, _ in ok], [o.score for o, _ in ok]),
    }


class SimulationScorer(Scorer):
    """Correlation of simulated and true per-token activations."""

    def __init__(self, client: LLMClient, tokenizer, *, mode: str = "logprob"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        inner = getattr(client, "client", client)
        if mode == "logprob" and not callable(getattr(inner, "reply_logprobs", None)):
            raise InterpError(
                "The simulation scorer's log-prob mode reads log-probs inside a reply, which needs a "
                "local model (--llm local or local:<model>); with a server use --score-mode generative."
            )
        self.client, self.text, self.mode = client, TokenText(tokenizer), mode

    @property
    def name(self) -> str:
        """``simulation`` or ``simulation-logprob``."""
        return "simulation" if self.mode == "generative" else "simulation-logprob"

    def _prompt(self, explanation: str, pieces: list[str]) -> Prompt:
        instruction = render(f"simulation_{self.mode}", n=str(len(pieces)))
        tokens = "\n".join(show(p) for p in pieces)
        user = render("simulation_user", explanation=explanation, tokens=tokens, instruction=instruction)
        return ({"role": "system", "content": render("simulation_system")}, {"role": "user", "content": user})

    def score(self, items: list[tuple[HeldOut, str]]) -> list[tuple[dict, list[ScoredExample]]]:
        cases = [
            (expl, ex, ScoredExample(ex.index, label, None, None, kind, q))
            for record, expl in items
            for ex, label, kind, q in labelled_examples(record)
        ]
        simulated = self._simulate([(expl, ex) for expl, ex, _ in cases])
        for (_, _, outcome), values in zip(cases, simulated, strict=True):
            if values is not None:
                outcome.values = values
                outcome.score = max(values)
                outcome.prediction = outcome.score >= 1.0
        out, k = [], 0
        for record, _ in items:
            n = len(labelled_examples(record))
            outcomes = [o for _, _, o in cases[k : k + n]]
            truths = [ex.acts for _, ex, _ in cases[k : k + n]]
            out.append((simulation_metrics(outcomes, truths), outcomes))
            k += n
        return out

    def _simulate(self, pairs: list[tuple[str, Example]]) -> list[list[float] | None]:
        pieces = [self.text(ex.tokens) for _, ex in pairs]
        prompts = [self._prompt(expl, p) for (expl, _), p in zip(pairs, pieces, strict=True)]
        if self.mode == "generative":
            params = GenerationParams(max_tokens=4 * max(len(p) for p in pieces) + 8)
            replies = self.client.generate(prompts, params)
            return [
                None if r.error else parse_activations(r.text, len(p)) for r, p in zip(replies, pieces, strict=True)
            ]
        # The filler 0 after each slot stands for "unknown": the reply read back is always the same shape.
        replies = [[f"{show(p[0])}\t"] + [f"0\n{show(t)}\t" for t in p[1:]] for p in pieces]
        slots = self.client.reply_logprobs(prompts, replies, SCALE)
        out = []
        for row in slots:
            values = [expected_value(lp) for lp in row] if row else None
            out.append(None if not values or any(v is None for v in values) else values)
        return out
