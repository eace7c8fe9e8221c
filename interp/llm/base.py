"""The LLM client protocol every explainer and scorer talks to.

Two calls cover all our uses: ``generate`` (free text: explanations, generative scoring) and
``answer_logprobs`` (how likely each candidate answer is as the start of the reply, read from
one forward pass with no decoding: log-prob scoring). Both take a batch: the local client
turns it into batched forward passes, the HTTP client into concurrent requests.
"""

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


@runtime_checkable
class LLMClient(Protocol):
    """What explainers and scorers need from an LLM."""

    model: str
    """Identifies the model in cache keys and records (never contains a secret)."""

    def generate(self, prompts: list[Prompt], params: GenerationParams) -> list[Completion]:
        """One completion per prompt, in order. Failures are returned as ``Completion.error``, not raised."""

    def answer_logprobs(self, prompts: list[Prompt], answers: list[str]) -> list[dict[str, float]]:
        """For each prompt, the log-probability of each answer as the first token of the reply.

        Answers not among what the model or server reports get ``-inf``; a failed request gives
        an empty dict.
        """
