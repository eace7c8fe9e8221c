"""LLM clients for explaining and scoring latents: a local transformers model or an
OpenAI-compatible server, optionally behind a response cache. ``make_client`` picks one."""

from .base import AnswerLogprobs, Completion, GenerationParams, LLMClient, Message, Prompt
from .errors import LLMError
from .factory import make_client, run_client, runs_locally
from .local import TransformersClient
from .openai_client import OpenAIClient
from .response_cache import CachedClient

__all__ = [
    "AnswerLogprobs",
    "CachedClient",
    "Completion",
    "GenerationParams",
    "LLMClient",
    "LLMError",
    "Message",
    "OpenAIClient",
    "Prompt",
    "TransformersClient",
    "make_client",
    "run_client",
    "runs_locally",
]
