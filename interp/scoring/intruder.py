"""Intruder scorer: given the explanation, find the one non-activating text among activating ones.

Each prompt holds ``group_size - 1`` held-out activating texts and one non-activating text at
a random position. Accuracy is the fraction of groups whose intruder is found (chance is
``1 / group_size``). In log-prob mode the answer is the most likely text number, read from one
forward pass.
"""

import re

import numpy as np

from ..explain import TokenText
from ..llm.base import GenerationParams, LLMClient, Prompt
from ..prompts import render
from ..views import HeldOut
from .base import ScoredExample, Scorer
from .classify import MODES


def parse_choice(reply: str, n: int) -> int | None:
    """The last number in ``reply`` between 1 and ``n`` (0-based), or None."""
    numbers = [int(m) for m in re.findall(r"(?<!\d)(\d{1,2})(?!\d)", reply or "")]
    valid = [k for k in numbers if 1 <= k <= n]
    return valid[-1] - 1 if valid else None


class IntruderScorer(Scorer):
    """Can an LLM holding the explanation tell the odd text out?"""

    def __init__(self, client: LLMClient, tokenizer, *, mode: str = "generative", group_size: int = 5, seed: int = 0):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.client, self.text, self.mode = client, TokenText(tokenizer), mode
        self.group_size, self.seed = max(2, group_size), seed
        self.params = GenerationParams(max_tokens=8)

    @property
    def name(self) -> str:
        """``intruder`` or ``intruder-logprob``."""
        return "intruder" if self.mode == "generative" else "intruder-logprob"

    def groups(self, record: HeldOut) -> list[tuple[list, int]]:
        """(examples shown, position of the intruder) for as many groups as the record allows."""
        rng = np.random.default_rng([self.seed, record.latent])
        positives = [record.activating[i] for i in rng.permutation(len(record.activating))]
        negatives = record.hard_negatives + record.negatives
        n = min(len(negatives), len(positives) // (self.group_size - 1))
        out = []
        for g in range(n):
            shown = positives[g * (self.group_size - 1) : (g + 1) * (self.group_size - 1)]
            at = int(rng.integers(0, self.group_size))
            out.append((shown[:at] + [negatives[g]] + shown[at:], at))
        return out

    def _prompt(self, explanation: str, examples: list) -> Prompt:
        texts = "\n".join(
            f"Text {i}: {''.join(self.text(ex.tokens)).strip()}".replace("\n", " ") for i, ex in enumerate(examples, 1)
        )
        user = render("intruder_user", explanation=explanation, texts=texts, n=str(len(examples)))
        return ({"role": "system", "content": render("intruder_system")}, {"role": "user", "content": user})

    def score(self, items: list[tuple[HeldOut, str]]) -> list[tuple[dict, list[ScoredExample]]]:
        groups = [self.groups(r) for r, _ in items]
        prompts = [self._prompt(expl, shown) for (_, expl), gs in zip(items, groups, strict=True) for shown, _ in gs]
        answers = [str(k) for k in range(1, self.group_size + 1)]
        if self.mode == "logprob":
            picks = []
            for lp in self.client.answer_logprobs(prompts, answers):
                ranked = [(v, k) for k, v in enumerate(lp.get(a, float("-inf")) for a in answers) if v > float("-inf")]
                picks.append(max(ranked)[1] if ranked else None)
        else:
            picks = [
                None if r.error else parse_choice(r.text, self.group_size)
                for r in self.client.generate(prompts, self.params)
            ]
        picks_iter = iter(picks)
        out = []
        for gs in groups:
            outcomes = []
            for shown, at in gs:
                pick = next(picks_iter)
                intruder = shown[at]
                outcomes.append(
                    ScoredExample(intruder.index, True, None if pick is None else pick == at, None, "negative")
                )
            judged = [o.prediction for o in outcomes if o.prediction is not None]
            metrics = {
                "accuracy": sum(judged) / len(judged) if judged else None,
                "groups": len(outcomes),
                "failed": len(outcomes) - len(judged),
                "chance": 1 / self.group_size,
            }
            out.append((metrics, outcomes))
        return out
