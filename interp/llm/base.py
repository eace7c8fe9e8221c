"""The LLM client protocol every explainer and scorer talks to.

Two calls cover all our uses: ``generate`` (free text: explanations, generative scoring) and
``answer_logprobs`` (how likely each candidate answer is as the start of the reply, read from
one forward pass with no decoding: log-prob scoring; from a server, a bound for answers it did
not list). Both take a batch: the local client turns it into batched forward passes, the HTTP
client into concurrent requests.
"""

import math
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

Message = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": ...}``."""

Prompt = tuple[Message, ...]
"""A chat conversation to be continued by the assistant."""


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings for one ``generate`` call; frozen so no caller can change another's."""

    max_tokens: int = 128
    """Most new tokens per reply."""

    temperature: float = 0.0
    """0 means greedy decoding."""

    top_p: float = 1.0
    """Nucleus sampling mass when temperature > 0."""

    seed: int = 0
    """Sampling seed, for servers and local sampling that honour one."""

    def to_dict(self) -> dict:
        """Plain dict, for cache keys and records."""
        return asdict(self)


@dataclass
class Completion:
    """One reply. A request that failed after all retries has ``error`` set and empty ``text``."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


class AnswerLogprobs(dict[str, float]):
    """Answer -> log-prob of the answer as the first reply token, and a bound for answers not listed.

    A server reports only its top alternatives for that token. An answer it did not list gets
    ``-inf`` (so ranking answers needs no special case) and ``ceiling`` is the most its
    log-prob can be: the lower of the least listed log-prob and the log of the probability left
    to the unlisted tokens. A log-odds that uses it stays on the scale of the listed answers,
    where a fixed floor (say -100) would dwarf every real difference. ``ceiling`` is None when
    no answer can be unlisted (a local model reads the whole vocabulary) or the request failed
    (an empty result).
    """

    def __init__(self, logprobs: dict[str, float] | None = None, ceiling: float | None = None):
        super().__init__(logprobs or {})
        self.ceiling = ceiling

    def __repr__(self) -> str:
        return f"AnswerLogprobs({dict(self)!r}, ceiling={self.ceiling!r})"

    def value(self, answer: str) -> tuple[float, bool]:
        """The answer's log-prob and False; for an unlisted answer, the ceiling and True (``-inf``
        and False without one).
        """
        logprob = self.get(answer, -math.inf)
        if logprob > -math.inf or self.ceiling is None:
            return logprob, False
        return self.ceiling, True


@runtime_checkable
class LLMClient(Protocol):
    """What explainers and scorers need from an LLM."""

    model: str
    """Identifies the model in cache keys and records (never contains a secret)."""

    def generate(self, prompts: list[Prompt], params: GenerationParams) -> list[Completion]:
        """One completion per prompt, in order. Failures are returned as ``Completion.error``, not raised."""

    def answer_logprobs(self, prompts: list[Prompt], answers: list[str]) -> list[AnswerLogprobs]:
        """For each prompt, the log-probability of each answer as the first token of the reply.

        Answers not among what the model or server reports get ``-inf``, and the result's
        ``ceiling`` bounds them; a failed request gives an empty result.
        """
