"""Turning a client spec from the command line or a config file into a client."""

from pathlib import Path

from ..config import ModelConfig, RunConfig
from ..models import EMBEDDED, LoadedModel
from .base import LLMClient
from .errors import LLMError
from .local import TransformersClient
from .openai_client import OpenAIClient
from .response_cache import CachedClient


def runs_locally(spec: str) -> bool:
    """Whether the client ``spec`` names runs its model in this process (``local``, ``local:...``), not on a server."""
    return spec == "local" or spec.startswith("local:")


def make_client(spec: str, model: str | None = None, *, cache_path: str | Path | None = None, **options) -> LLMClient:
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
    if runs_locally(spec):
        name = spec.partition(":")[2] or model or EMBEDDED
        client: LLMClient = TransformersClient(ModelConfig(model=name), **options)
    elif spec.startswith(("http://", "https://")):
        if not model:
            raise LLMError(
                f"An LLM server URL needs a model name too: the one {spec} serves, e.g. Qwen/Qwen2.5-7B-Instruct."
            )
        client = OpenAIClient(spec, model, **options)
    else:
        raise LLMError(
            f"Unknown LLM client {spec!r}: use 'local', 'local:<model id or path>' or an "
            "OpenAI-compatible base URL such as http://127.0.0.1:8000/v1."
        )
    return CachedClient(client, cache_path) if cache_path is not None else client


def run_client(cfg: RunConfig, lm: LoadedModel | None, cache_path: str | Path | None) -> LLMClient:
    """The explainer/scorer LLM that ``cfg.explain`` names, behind the response cache at ``cache_path``.

    When that LLM is the run's own subject model (the embedded default, unquantized), it is
    ``lm`` itself: the model is not loaded a second time.
    """
    e = cfg.explain
    if runs_locally(e.llm):
        same = e.llm == "local" and cfg.model.model == EMBEDDED and cfg.model.quantization == "none" and lm is not None
        options = {"batch_size": e.explain_batch, **({"lm": lm} if same else {})}
    else:
        options = {"concurrency": e.concurrency, "api_key_env": e.api_key_env}
    return make_client(e.llm, e.llm_model, cache_path=cache_path, **options)
