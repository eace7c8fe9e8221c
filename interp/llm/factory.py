"""Turning a client spec from the command line or a config file into a client."""

from dataclasses import replace

from ..config import ExplainConfig, ModelConfig, RunConfig
from ..models import EMBEDDED, LoadedModel, loads_alike
from ..results.db import ResultsDB
from .base import LLMClient
from .errors import LLMError
from .local import TransformersClient
from .openai_client import OpenAIClient
from .response_cache import CachedClient


def runs_locally(spec: str) -> bool:
    """Whether the client ``spec`` names runs its model in this process (``local``, ``local:...``), not on a server."""
    return spec == "local" or spec.startswith("local:")


def _local_name(spec: str, model: str | None) -> str:
    return spec.partition(":")[2] or model or EMBEDDED


def local_settings(e: ExplainConfig) -> ModelConfig:
    """How a local explainer/scorer LLM (``--llm local[:MODEL]``) loads: its model and the ``--llm-dtype``,
    ``--llm-quantization`` and ``--llm-device-map`` settings; Hub model code never runs for it."""
    return ModelConfig(
        model=_local_name(e.llm, e.llm_model),
        dtype=e.llm_dtype,
        quantization=e.llm_quantization,
        device_map=e.llm_device_map,
    )


def make_client(
    spec: str,
    model: str | None = None,
    *,
    cache: ResultsDB | None = None,
    local: ModelConfig | None = None,
    **options,
) -> LLMClient:
    """The client ``spec`` names, wrapped in a ``CachedClient`` over the results database ``cache`` when given.

    - ``"local"``: the embedded SmolLM2 (or ``model``) run in this process;
    - ``"local:<hub id, folder or .gguf>"``: that model run in this process;
    - ``"http://..."`` or ``"https://..."``: an OpenAI-compatible server's base URL (ending in
      ``/v1``), serving ``model``.

    ``local`` holds a local model's load settings (dtype, quantization, device map; its ``model`` is
    the one the spec names). ``options`` go to the client's constructor (``lm``, ``batch_size``;
    ``concurrency``, ``timeout``, ``api_key_env``, ...).

    >>> make_client("local")
    >>> make_client("local:meta-llama/Llama-3.1-8B-Instruct", local=ModelConfig(quantization="4bit"))
    >>> make_client("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-7B-Instruct", concurrency=32)
    """
    if runs_locally(spec):
        settings = replace(local or ModelConfig(), model=_local_name(spec, model))
        client: LLMClient = TransformersClient(settings, **options)
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
    return CachedClient(client, cache) if cache is not None else client


def run_client(cfg: RunConfig, lm: LoadedModel | None, cache: ResultsDB | None) -> LLMClient:
    """The explainer/scorer LLM that ``cfg.explain`` names, behind the response cache in ``cache`` (a run's results
    database, ``RunDir.results_db``).

    When that LLM is the run's own subject model loaded the same way (the embedded default with
    default settings, say), it is ``lm`` itself: the model is not loaded a second time.
    """
    e = cfg.explain
    if runs_locally(e.llm):
        local = local_settings(e)
        same = lm is not None and loads_alike(local, cfg.model)
        options = {"batch_size": e.explain_batch, "local": local, **({"lm": lm} if same else {})}
    else:
        options = {"concurrency": e.concurrency, "api_key_env": e.api_key_env}
    return make_client(e.llm, e.llm_model, cache=cache, **options)
