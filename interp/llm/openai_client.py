"""An LLM client for any OpenAI-compatible server (vLLM, llama.cpp, SGLang, OpenAI, ...).

Each prompt is one ``POST {base_url}/chat/completions``; a batch runs ``concurrency`` requests
at a time. The API key is read from an environment variable when a batch starts and sent only
in the ``Authorization`` header; it is kept out of ``repr``, ``model`` and every error message.
"""

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .base import AnswerLogprobs, Completion, GenerationParams, Prompt
from .errors import LLMError
from .http_retry import Breaker, Outcome, RetryPolicy, post_json

WIDE_TOP_LOGPROBS = 200
"""Alternatives asked for first in log-prob mode. llama.cpp's servers (llama-server and
llama-cpp-python) list that many, so an answer the model ranks low (SmolLM2's "0" ranks 9th to
34th on detection and fuzzing prompts) still gets its exact log-prob; a reply stays ~12 KB."""

TOP_LOGPROBS = 20
"""Alternatives asked for once a server refuses the wide list: the most OpenAI and vLLM (without
``--max-logprobs``) allow."""

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
            raise LLMError("OpenAIClient needs concurrency >= 1, max_retries >= 0, timeout > 0 and backoff >= 0.")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.policy = RetryPolicy(timeout=timeout, max_retries=max_retries, backoff=backoff)
        self.breaker = Breaker(self.base_url)
        self.top_logprobs = WIDE_TOP_LOGPROBS
        """Alternatives asked for in log-prob mode; lowered to 20 when the server refuses more."""

    def __repr__(self) -> str:
        return (
            f"OpenAIClient(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r}, concurrency={self.concurrency})"
        )

    def generate(self, prompts: list[Prompt], params: GenerationParams) -> list[Completion]:
        """One chat completion per prompt, in order; failures come back as ``Completion.error``.

        A prompt that ends with an assistant message asks the server to continue it (vLLM's and
        SGLang's ``continue_final_message``); a server that ignores the field answers in a new turn.
        """
        payloads = [
            {
                "model": self.model,
                "messages": list(prompt),
                "max_tokens": params.max_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "seed": params.seed,
                **(
                    {"continue_final_message": True, "add_generation_prompt": False}
                    if prompt[-1]["role"] == "assistant"
                    else {}
                ),
            }
            for prompt in prompts
        ]
        outcomes = self._post_all(payloads, lambda payload: self._post(payload, _parse_completion))
        return [o.value if o.error is None else Completion(text="", error=o.error) for o in outcomes]

    def answer_logprobs(self, prompts: list[Prompt], answers: list[str]) -> list[AnswerLogprobs]:
        """Log-prob of each answer as the first reply token, from the server's top alternatives.

        Tokens are compared with surrounding whitespace stripped, so " Yes" counts for "Yes";
        when several listed tokens match, the highest log-prob is kept. Answers should therefore
        be single tokens; answers not listed (or empty) get ``-inf`` and the result's ceiling
        bounds them. A failed request gives an empty result. Raises ``LLMError`` when the server
        does not return logprobs.
        """
        outcomes = self._post_all(prompts, self._alternatives)
        return [_match(o.value, answers) if o.error is None else AnswerLogprobs() for o in outcomes]

    def _alternatives(self, prompt: Prompt) -> Outcome:
        """The first reply token's top alternatives: ``top_logprobs`` of them, or 20 from a server that refuses more.

        The first refusal (an HTTP 4xx) lowers ``top_logprobs`` for the client's later requests.
        """
        wide = self.top_logprobs
        outcome = self._post(self._logprob_payload(prompt, wide), _parse_top_logprobs)
        if outcome.rejected and wide > TOP_LOGPROBS:
            self.top_logprobs = TOP_LOGPROBS
            outcome = self._post(self._logprob_payload(prompt, TOP_LOGPROBS), _parse_top_logprobs)
        return outcome

    def _logprob_payload(self, prompt: Prompt, top: int) -> dict:
        return {
            "model": self.model,
            "messages": list(prompt),
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": top,
        }

    def _post(self, payload: dict, parse: Callable[[Any], Any]) -> Outcome:
        """One chat-completions request, with the client's retries, key and breaker."""
        key = os.environ.get(self.api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return post_json(f"{self.base_url}/chat/completions", payload, headers, self.policy, parse, self.breaker)

    def _post_all(self, items: list, send: Callable[[Any], Outcome]) -> list[Outcome]:
        """``send`` each item, ``concurrency`` at a time, in order.

        Raises when no request of this client has ever reached the server (it is not running, or
        the URL is wrong): nothing can work. Once it has been reached, a server that goes down
        trips the breaker instead, and the rest of the batch comes back as failures at once, to
        be recorded and asked again by the next command.
        """
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            outcomes = list(pool.map(send, items))
        finally:
            pool.shutdown(cancel_futures=True)
        if outcomes and not self.breaker.reached and all(o.unreachable for o in outcomes):
            raise LLMError(f"cannot reach {self.base_url}: is the server running?")
        return outcomes


def _parse_completion(body: dict) -> Completion:
    """The reply text: a string, or a list of content parts whose text parts are joined; usage when
    the server sends it.
    """
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

    Reads the chat shape (``logprobs.content[0].top_logprobs``, OpenAI, vLLM and llama.cpp) and
    the legacy completions shape (``logprobs.top_logprobs[0]``, a token -> log-prob dict) some
    servers send. A log-prob that is NaN or above 0 makes the reply malformed.
    """
    logprobs = body["choices"][0].get("logprobs") or {}
    if logprobs.get("content"):
        first = logprobs["content"][0]
        entries = [first, *(first.get("top_logprobs") or [])]
        return [(_text(e["token"]), _logprob(e["logprob"])) for e in entries]
    if logprobs.get("top_logprobs"):
        return [(_text(token), _logprob(lp)) for token, lp in logprobs["top_logprobs"][0].items()]
    raise LLMError(NO_LOGPROBS)


def _text(token) -> str:
    if not isinstance(token, str):
        raise TypeError(f"a token is a {type(token).__name__}, not text")
    return token


def _logprob(value) -> float:
    """``value`` as a log-prob; a ValueError (a malformed reply) unless it is a number <= 0."""
    logprob = float(value)
    if not logprob <= 0:
        raise ValueError(f"log-prob {logprob} is not a log-probability")
    return logprob


def _match(alternatives: list[tuple[str, float]], answers: list[str]) -> AnswerLogprobs:
    """Each answer's best listed log-prob (``-inf`` if unlisted), with the ceiling of the unlisted ones."""
    best = {answer: -math.inf for answer in answers}
    for token, logprob in alternatives:
        for answer in answers:
            if answer.strip() and token.strip() == answer.strip():
                best[answer] = max(best[answer], logprob)
    return AnswerLogprobs(best, ceiling=_ceiling(alternatives))


def _ceiling(alternatives: list[tuple[str, float]]) -> float | None:
    """The most an unlisted token's log-prob can be, given the server's top alternatives.

    Below the least listed one (the list is the top of the ranking; 0 when nothing is listed)
    and below the log of the probability the listed tokens leave over. A token listed twice
    (the chat shape repeats the chosen one) is counted once; the rest may come out negative when
    the listed probabilities are rounded, and then the least listed log-prob alone bounds it.
    None when the bound is ``-inf``: an unlisted token's ``-inf`` is then exact, not a bound.
    """
    listed = dict(alternatives)
    rest = 1.0 - math.fsum(math.exp(lp) for lp in listed.values())
    least = min(listed.values(), default=0.0)
    bound = min(least, math.log(rest)) if rest > 0 else least
    return bound if bound > -math.inf else None
