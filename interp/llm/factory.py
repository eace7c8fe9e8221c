"""Turning a client spec from the command line or a config file into a client."""

from pathlib import Path

from ..config import ModelConfig
from ..models import EMBEDDED
from .base import LLMClient
from .errors import LLMError
from .local import TransformersClient
from .openai_client import OpenAIClient
from .response_cache import CachedClient


def make_client(
    spec: str, model: str | None = None, *, cache_path: str | Path | None = None, **options
) -> LLMClient:
    """The client ``spec`` names, wrapped in a ``CachedClient`` when ``cache_path`` is given.

    - ``"local"``: the embedded SmolLM2 (or ``model``) run in this process;
    - ``"local:<hub id, folder or .gguf>"``: that model run in this process;
    - ``"http://..."`` or ``"https://..."``: an OpenAI-compatible server's base URL (ending in
      ``/v1``), serving ``model``.

    ``options`` go to the client's constructor (``lm``, ``batch_size``; ``concurrency``,
    ``timeout``, ``api_key_env``, ...).

    >>> make_client("local")
    >>> make_client("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-7B-Instruct", concurrency=32)
    """
    if spec == "local" or spec.startswith("local:"):
        name = spec.partition(":")[2] or model or EMBEDDED
        client: LLMClient = TransformersClient(ModelConfig(model=name), **options)
    elif spec.startswith(("http://", "https://")):
        if not model:
            raise LLMError(
                f"An LLM server URL needs a model name too: the one {spec} serves, "
                "e.g. Qwen/Qwen2.5-7B-Instruct."
            )
        client = OpenAIClient(spec, model, **options)
    else:
        raise LLMError(
            f"Unknown LLM client {spec!r}: use 'local', 'local:<model id or path>' or an "
            "OpenAI-compatible base URL such as http://127.0.0.1:8000/v1."
        )
    return CachedClient(client, cache_path) if cache_path is not None else client
