"""Explainers: turn a latent record into a one-sentence explanation.

The package's rooms: ``explainers`` (the prompts of every explainer and the batched explaining),
``short`` (the prompt a 135M-parameter model can answer, and the reading of its reply) and ``parse``
(reading an explanation out of a reply, flagging one not worth scoring). The names other modules use
are re-exported here.
"""

from .explainers import (
    EXPLAINERS,
    LLM_EXPLAINERS,
    STEERING_EXPLAINERS,
    Explanation,
    TokenText,
    explain_batch,
    explain_prompt,
    highlight,
    note_other_models,
    prompt_sha,
    token_list_explanation,
)
from .parse import flag, parse_explanation

__all__ = [
    "EXPLAINERS",
    "LLM_EXPLAINERS",
    "STEERING_EXPLAINERS",
    "Explanation",
    "TokenText",
    "explain_batch",
    "explain_prompt",
    "flag",
    "highlight",
    "note_other_models",
    "parse_explanation",
    "prompt_sha",
    "token_list_explanation",
]
