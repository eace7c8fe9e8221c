"""A response cache in front of any LLM client, so an interrupted or repeated run pays once.

Each successful response is one line of an append-only JSONL file, keyed by the sha256 of
``[method, model, prompt, params or answers]``. Lines are flushed and fsynced once per batch;
a crash can only tear the last line, which is dropped (with a warning) when the file is
next opened. Failed requests are not stored, so a re-run retries exactly those.
"""

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..jsonl import append_jsonl, drop_torn_tail
from .base import AnswerLogprobs, Completion, GenerationParams, LLMClient, Prompt
from .errors import LLMError

log = logging.getLogger(__name__)


def cache_key(method: str, model: str, prompt: Prompt, extra: Any) -> str:
    """The cache key of one request: sha256 of its canonical JSON."""
    text = json.dumps([method, model, list(prompt), extra], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class CachedClient:
    """Wraps ``client``; answers from ``path`` when it can and sends only the rest.

    Not safe to share between threads or processes writing the same file.
    """

    def __init__(self, client: LLMClient, path: str | Path):
        self.client = client
        self.model = client.model
        self.path = Path(path)
        self._store: dict[str, Any] = _load(self.path)

    def __repr__(self) -> str:
        return f"CachedClient({self.client!r}, path={str(self.path)!r})"

    def __len__(self) -> int:
        """Responses stored."""
        return len(self._store)

    def generate(self, prompts: list[Prompt], params: GenerationParams) -> list[Completion]:
        """``client.generate`` for the prompts not cached yet; failed completions are not stored."""
        return self._through(
            "generate",
            prompts,
            params.to_dict(),
            lambda todo: self.client.generate(todo, params),
            to_json=lambda c: None if c.error else asdict(c),
            from_json=lambda v: Completion(**v),
        )

    def answer_logprobs(self, prompts: list[Prompt], answers: list[str]) -> list[AnswerLogprobs]:
        """``client.answer_logprobs`` for the prompts not cached yet; empty (failed) results are not stored.

        Stored as ``{"logprobs": ..., "ceiling": ...}`` with ``-inf`` as ``null`` to keep the
        file strict JSON. The key names the ceiling, so entries written before there was one
        (a server's unlisted answers stored as ``-inf`` with no bound) are asked again, not mixed in.
        """
        return self._through(
            "answer_logprobs",
            prompts,
            {"answers": list(answers), "unlisted": "ceiling"},
            lambda todo: self.client.answer_logprobs(todo, answers),
            to_json=lambda r: {"logprobs": _nulls(r), "ceiling": r.ceiling} if r else None,
            from_json=lambda v: AnswerLogprobs(_infs(v["logprobs"]), v["ceiling"]),
        )

    def reply_logprobs(
        self, prompts: list[Prompt], replies: list[list[str]], answers: list[str]
    ) -> list[list[dict[str, float]]]:
        """``client.reply_logprobs`` (local clients only) for the (prompt, reply) pairs not cached yet.

        The reply is keyed as a last assistant message holding its segments as a JSON list.
        """
        keyed = [p + ({"role": "assistant", "content": json.dumps(r)},) for p, r in zip(prompts, replies, strict=True)]
        return self._through(
            "reply_logprobs",
            keyed,
            list(answers),
            lambda todo: self.client.reply_logprobs(
                [p[:-1] for p in todo], [json.loads(p[-1]["content"]) for p in todo], answers
            ),
            to_json=lambda slots: [_nulls(d) for d in slots],
            from_json=lambda v: [_infs(d) for d in v],
        )

    def _through(
        self,
        method: str,
        prompts: list[Prompt],
        extra: Any,
        call: Callable[[list[Prompt]], list],
        to_json: Callable[[Any], Any],
        from_json: Callable[[Any], Any],
    ) -> list:
        """Answer each prompt from the store or, once per distinct key, from ``call``.

        ``to_json`` returns None for a response that must not be stored (a failure).
        """
        keys = [cache_key(method, self.model, p, extra) for p in prompts]
        todo = {k: p for k, p in zip(keys, prompts, strict=True) if k not in self._store}
        fresh = dict(zip(todo, call(list(todo.values())), strict=True)) if todo else {}
        lines = []
        for key, response in fresh.items():
            value = to_json(response)
            if value is not None:
                self._store[key] = value
                lines.append({"key": key, "method": method, "value": value})
        append_jsonl(self.path, lines)
        return [from_json(self._store[k]) if k in self._store else fresh[k] for k in keys]


def _nulls(logprobs: dict[str, float]) -> dict[str, float | None]:
    """``-inf`` (an answer never given) as ``null``, which strict JSON can hold."""
    return {a: None if v == -math.inf else v for a, v in logprobs.items()}


def _infs(stored: dict[str, float | None]) -> dict[str, float]:
    """The inverse of ``_nulls``."""
    return {a: -math.inf if v is None else v for a, v in stored.items()}


def _load(path: Path) -> dict[str, Any]:
    """Key -> stored value; a torn last line (no newline) is cut off the file with a warning."""
    if not path.is_file():
        return {}
    drop_torn_tail(path)
    store = {}
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            record = json.loads(line)
            store[record["key"]] = record["value"]
        except (ValueError, KeyError, TypeError):
            raise LLMError(
                f"Response cache {path} line {number} is not a cache record; "
                "delete the file to start the cache afresh."
            ) from None
    return store
