"""An LLM client for any OpenAI-compatible server (vLLM, llama.cpp, SGLang, OpenAI, ...).

Each prompt is one ``POST {base_url}/chat/completions``; a batch runs ``concurrency`` requests
at a time. The API key is read from an environment variable when a batch starts and sent only
in the ``Authorization`` header; it is kept out of ``repr``, ``model`` and every error message.
"""

import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .base import Completion, GenerationParams, Prompt
from .errors import LLMError
from .http_retry import Outcome, RetryPolicy, post_json

TOP_LOGPROBS = 20
"""Alternatives asked for in log-prob mode: the most OpenAI and vLLM (by default) allow."""

NO_LOGPROBS = (
    "Log-prob mode needs a server that returns logprobs (vLLM, SGLang, llama.cpp's server or "
    "OpenAI); this one sent none. Use a generative scorer or another server."
)
"""Raised, not returned per prompt: every later request to the same server would lack them too."""


class OpenAIClient:
    """Talks to an OpenAI-compatible chat-completions endpoint.

    >>> client = OpenAIClient("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-7B-Instruct")
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 60,
        max_retries: int = 4,
        backoff: float = 0.5,
    ):
        if concurrency < 1 or max_retries < 0 or timeout <= 0 or backoff < 0:
            raise LLMError(
                "OpenAIClient needs concurrency >= 1, max_retries >= 0, timeout > 0 and backoff >= 0."
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.policy = RetryPolicy(timeout=timeout, max_retries=max_retries, backoff=backoff)

    def __repr__(self) -> str:
        return (
            f"OpenAIClient(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r}, concurrency={self.concurrency})"
        )

    def generate(self, prompts: list[Prompt], params: GenerationParams) -> list[Completion]:
        """One chat completion per prompt, in order; failures come back as ``Completion.error``."""
        payloads = [
            {
                "model": self.model,
                "messages": list(prompt),
                "max_tokens": params.max_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "seed": params.seed,
            }
            for prompt in prompts
        ]
        outcomes = self._post_all(payloads, _parse_completion)
        return [o.value if o.error is None else Completion(text="", error=o.error) for o in outcomes]

    def answer_logprobs(self, prompts: list[Prompt], answers: list[str]) -> list[dict[str, float]]:
        """Log-prob of each answer as the first reply token, from the server's top 20.

        Tokens are compared with surrounding whitespace stripped, so " Yes" counts for "Yes";
        when several listed tokens match, the highest log-prob is kept. Answers should therefore
        be single tokens; answers not listed (or empty) get ``-inf``, a failed request an empty
        dict. Raises ``LLMError`` when the server does not return logprobs.
        """
        payloads = [
            {
                "model": self.model,
                "messages": list(prompt),
                "max_tokens": 1,
                "temperature": 0,
                "logprobs": True,
                "top_logprobs": TOP_LOGPROBS,
            }
            for prompt in prompts
        ]
        outcomes = self._post_all(payloads, _parse_top_logprobs)
        return [_match(o.value, answers) if o.error is None else {} for o in outcomes]

    def _post_all(self, payloads: list[dict], parse: Callable[[Any], Any]) -> list[Outcome]:
        """Run all requests, ``concurrency`` at a time; raise if the server could not be reached at all.

        Once one request has given up without ever connecting, and none has connected yet,
        requests not yet started are skipped rather than each retrying for nothing.
        """
        url = f"{self.base_url}/chat/completions"
        key = os.environ.get(self.api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        gave_up, reached = threading.Event(), threading.Event()

        def one(payload: dict) -> Outcome:
            if gave_up.is_set() and not reached.is_set():
                return Outcome(error=f"not sent: {self.base_url} is unreachable", unreachable=True)
            outcome = post_json(url, payload, headers, self.policy, parse)
            (gave_up if outcome.unreachable else reached).set()
            return outcome

        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            outcomes = list(pool.map(one, payloads))
        finally:
            pool.shutdown(cancel_futures=True)
        if outcomes and all(o.unreachable for o in outcomes):
            raise LLMError(f"cannot reach {self.base_url}: is the server running?")
        return outcomes


def _parse_completion(body: dict) -> Completion:
    """The reply text: a string, or a list of content parts whose text parts are joined; usage when the server sends it."""
    content = body["choices"][0]["message"].get("content") or ""
    if isinstance(content, list):
        content = "".join(part["text"] for part in content if part.get("type") == "text")
    if not isinstance(content, str):
        raise TypeError(f"message content is a {type(content).__name__}, not text")
    usage = body.get("usage") or {}
    return Completion(
        text=content,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )


def _parse_top_logprobs(body: dict) -> list[tuple[str, float]]:
    """(token, log-prob) alternatives for the first reply token.

    Reads the chat shape (``logprobs.content[0].top_logprobs``, OpenAI and vLLM) and the legacy
    completions shape (``logprobs.top_logprobs[0]``, a token -> log-prob dict) some servers send.
    """
    logprobs = body["choices"][0].get("logprobs") or {}
    if logprobs.get("content"):
        first = logprobs["content"][0]
        entries = [first, *(first.get("top_logprobs") or [])]
        return [(_text(e["token"]), float(e["logprob"])) for e in entries]
    if logprobs.get("top_logprobs"):
        return [(_text(token), float(lp)) for token, lp in logprobs["top_logprobs"][0].items()]
    raise LLMError(NO_LOGPROBS)


def _text(token) -> str:
    if not isinstance(token, str):
        raise TypeError(f"a token is a {type(token).__name__}, not text")
    return token


def _match(alternatives: list[tuple[str, float]], answers: list[str]) -> dict[str, float]:
    best = {answer: -math.inf for answer in answers}
    for token, logprob in alternatives:
        for answer in answers:
            if answer.strip() and token.strip() == answer.strip():
                best[answer] = max(best[answer], logprob)
    return best
