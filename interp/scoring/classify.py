"""Detection and fuzzing: an LLM classifies held-out examples given the explanation.

Detection asks whether each text (activating, from the test set over quantiles, or not)
shows the feature. Fuzzing marks tokens in each text and asks whether the marks fit the
explanation: half the activating texts carry their true marks, the other half and every
non-activating text carry marks on random tokens.

Two modes. ``generative`` puts ``batch_size`` texts in one prompt and parses a list of 0/1
from the reply: works with any chat server. ``logprob`` puts one text per prompt and reads
log P("1") - log P("0") for the first reply token from one forward pass, with no decoding:
far cheaper per example, and a continuous score, so AUROC is defined. A server lists only its
top alternatives; when one answer is not among them its log-prob is taken at the most it can
be (``AnswerLogprobs.ceiling``), which keeps the score on one scale, and the example is
flagged as ``bound`` (counted in the ``bounded`` metric).
"""

import math
import re
import typing
from abc import abstractmethod
from dataclasses import dataclass

import numpy as np

from ..config import ScoreMode
from ..explain import TokenText, highlight
from ..llm.base import AnswerLogprobs, GenerationParams, LLMClient, Prompt
from ..prompts import render
from ..records import Example
from ..views import HeldOut
from .base import ScoredExample, Scorer, labelled_examples
from .metrics import classification

MODES: tuple[ScoreMode, ...] = typing.get_args(ScoreMode)
LIST = re.compile(r"\[([^\[\]]*)\]")


@dataclass
class ClassifiedExample(ScoredExample):
    """A held-out example as detection or fuzzing judged it."""

    bound: bool = False
    """True when ``score`` is a bound on the log-odds, not its value: the server did not list
    one of the two answers, whose ceiling stood in for its log-prob. The log-odds is then at
    least ``score`` when "0" was the unlisted answer, at most ``score`` when "1" was; either way
    the prediction (the sign) is right."""


def log_odds(logprobs: AnswerLogprobs) -> tuple[float | None, bool]:
    """log P("1") - log P("0"), and whether it is a bound; None when the request failed or neither
    answer was listed.
    """
    (yes, yes_bound), (no, no_bound) = logprobs.value("1"), logprobs.value("0")
    if (yes_bound and no_bound) or not math.isfinite(yes - no):
        return None, False
    return yes - no, yes_bound or no_bound


def parse_labels(reply: str, n: int) -> list[bool] | None:
    """The list of ``n`` 0/1 answers in ``reply`` (the last bracketed list, else bare digits), or None."""
    for body in reversed(LIST.findall(reply or "")):
        values = re.findall(r"-?\d+(?:\.\d+)?", body)
        if len(values) == n and all(v in ("0", "1") for v in values):
            return [v == "1" for v in values]
    values = re.findall(r"(?<![\d.])[01](?![\d.])", reply or "")
    return [v == "1" for v in values] if len(values) == n else None


class ClassifierScorer(Scorer):
    """Shared machinery of detection and fuzzing: cases, prompts, both modes, metrics."""

    prompt: str

    def __init__(
        self,
        client: LLMClient,
        tokenizer,
        *,
        mode: str = "generative",
        batch_size: int = 5,
        seed: int = 0,
        max_tokens: int = 32,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.client, self.text, self.mode = client, TokenText(tokenizer), mode
        self.batch_size, self.seed = max(1, batch_size), seed
        self.params = GenerationParams(max_tokens=max_tokens)

    @property
    def name(self) -> str:
        """Scorer name as it appears in results, e.g. ``detection`` or ``fuzzing-logprob``."""
        return self.prompt if self.mode == "generative" else f"{self.prompt}-logprob"

    @abstractmethod
    def cases(self, record: HeldOut, rng) -> list[tuple[str, ClassifiedExample]]:
        """(text shown to the LLM, outcome to fill in) for each held-out example, shuffled."""

    def _system(self) -> dict:
        return {"role": "system", "content": render(f"{self.prompt}_system")}

    def _single(self, explanation: str, text: str) -> Prompt:
        user = render(f"{self.prompt}_single", explanation=explanation, text=text)
        return (self._system(), {"role": "user", "content": user})

    def _batch(self, explanation: str, texts: list[str]) -> Prompt:
        body = "\n".join(f"Text {i}: {t}" for i, t in enumerate(texts, 1))
        example = ", ".join("1" if i % 2 == 0 else "0" for i in range(len(texts)))
        user = render(f"{self.prompt}_batch", explanation=explanation, texts=body, n=str(len(texts)), example=example)
        return (self._system(), {"role": "user", "content": user})

    def score(self, items: list[tuple[HeldOut, str]]) -> list[tuple[dict, list[ScoredExample]]]:
        all_cases = [self.cases(r, np.random.default_rng([self.seed, r.latent])) for r, _ in items]
        if self.mode == "logprob":
            self._logprob(items, all_cases)
        else:
            self._generative(items, all_cases)
        out = []
        for cases in all_cases:
            outcomes = [o for _, o in cases]
            m = classification(
                [o.label for o in outcomes],
                [o.prediction for o in outcomes],
                [o.score for o in outcomes] if self.mode == "logprob" else None,
            )
            metrics = m.to_dict()
            if self.mode == "logprob":
                metrics["bounded"] = sum(o.bound for o in outcomes)
            out.append((metrics, outcomes))
        return out

    def _logprob(self, items, all_cases) -> None:
        prompts = [
            self._single(expl, text) for (_, expl), cases in zip(items, all_cases, strict=True) for text, _ in cases
        ]
        answers = iter(self.client.answer_logprobs(prompts, ["1", "0"]))
        for cases in all_cases:
            for _, outcome in cases:
                outcome.score, outcome.bound = log_odds(next(answers))
                outcome.prediction = None if outcome.score is None else outcome.score > 0

    def _generative(self, items, all_cases) -> None:
        groups = []
        for (_, expl), cases in zip(items, all_cases, strict=True):
            for i in range(0, len(cases), self.batch_size):
                groups.append((expl, cases[i : i + self.batch_size]))
        replies = self.client.generate(
            [self._batch(expl, [t for t, _ in group]) for expl, group in groups], self.params
        )
        for (_, group), reply in zip(groups, replies, strict=True):
            labels = None if reply.error else parse_labels(reply.text, len(group))
            for k, (_, outcome) in enumerate(group):
                outcome.prediction = None if labels is None else labels[k]

    def _plain(self, ex: Example) -> str:
        return "".join(self.text(ex.tokens)).strip().replace("\n", " ")

    def _marked(self, ex: Example, acts: list[float]) -> str:
        return highlight(self.text(ex.tokens), acts).strip().replace("\n", " ")


class DetectionScorer(ClassifierScorer):
    """Which texts show the feature the explanation describes?"""

    prompt = "detection"

    def cases(self, record: HeldOut, rng) -> list[tuple[str, ClassifiedExample]]:
        cases = [
            (self._plain(ex), ClassifiedExample(ex.index, label, None, None, kind, q))
            for ex, label, kind, q in labelled_examples(record)
        ]
        return [cases[i] for i in rng.permutation(len(cases))]


class FuzzingScorer(ClassifierScorer):
    """Are the marked tokens the ones the explanation describes?"""

    prompt = "fuzzing"

    def cases(self, record: HeldOut, rng) -> list[tuple[str, ClassifiedExample]]:
        labelled = labelled_examples(record)
        active_counts = [sum(a > 0 for a in ex.acts) for ex, label, *_ in labelled if label]
        n_marks = max(1, int(np.median(active_counts))) if active_counts else 1
        true_half = set(rng.permutation(len(active_counts))[: (len(active_counts) + 1) // 2].tolist())
        cases, k = [], 0
        for ex, fires, kind, q in labelled:
            correct = fires and k in true_half
            k += fires
            if correct:
                marks = ex.acts
            else:
                true = {i for i, a in enumerate(ex.acts) if a > 0}
                pool = [i for i in range(len(ex.tokens)) if i not in true] or list(range(len(ex.tokens)))
                chosen = set(rng.choice(pool, size=min(len(true) or n_marks, len(pool)), replace=False).tolist())
                marks = [1.0 if i in chosen else 0.0 for i in range(len(ex.tokens))]
            cases.append((self._marked(ex, marks), ClassifiedExample(ex.index, correct, None, None, kind, q)))
        return [cases[i] for i in rng.permutation(len(cases))]
