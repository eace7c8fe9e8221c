"""A response cache in front of any LLM client, so an interrupted or repeated run pays once.

Each successful response is a row of the run's results database (``interp.results.db``), keyed by the sha256 of
``[method, model, prompt, params or answers]``; a batch's new replies are one transaction. Only the keys a batch asks
for are looked up: nothing is read whole, so a command starts as fast with millions of cached replies as with none.
Failed requests are not stored, so a re-run retries exactly those. ``legacy_replies`` reads the ``llm_cache.jsonl``
of runs made before the database, for their one import.
"""

import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import CorruptFileError
from ..results.db import ResultsDB
from .base import AnswerLogprobs, Completion, GenerationParams, LLMClient, Prompt

log = logging.getLogger(__name__)


def cache_key(method: str, model: str, prompt: Prompt, extra: Any) -> str:
    """The cache key of one request: sha256 of its canonical JSON."""
    text = json.dumps([method, model, list(prompt), extra], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class CachedClient:
    """Wraps ``client``; answers from the results database ``db`` when it can and sends only the rest."""

    def __init__(self, client: LLMClient, db: ResultsDB):
        self.client = client
        self.model = client.model
        self.db = db

    def __repr__(self) -> str:
        return f"CachedClient({self.client!r}, db={str(self.db.path)!r})"

    def __len__(self) -> int:
        """Responses stored (a count over the table)."""
        return self.db.count_replies()

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
        stored = self.db.replies(list(dict.fromkeys(keys)))
        todo = {k: p for k, p in zip(keys, prompts, strict=True) if k not in stored}
        fresh = dict(zip(todo, call(list(todo.values())), strict=True)) if todo else {}
        rows = []
        for key, response in fresh.items():
            value = to_json(response)
            if value is not None:
                stored[key] = value
                rows.append((key, method, value))
        self.db.add_replies(rows)
        return [from_json(stored[k]) if k in stored else fresh[k] for k in keys]


def _nulls(logprobs: dict[str, float]) -> dict[str, float | None]:
    """``-inf`` (an answer never given) as ``null``, which strict JSON can hold."""
    return {a: None if v == -math.inf else v for a, v in logprobs.items()}


def _infs(stored: dict[str, float | None]) -> dict[str, float]:
    """The inverse of ``_nulls``."""
    return {a: -math.inf if v is None else v for a, v in stored.items()}


def legacy_replies(path: Path) -> Iterator[tuple[str, str, Any]]:
    """(key, method, reply) of each line of a run's ``llm_cache.jsonl`` (made before the results database), read line
    by line and left as it is; a torn last line (an interrupted write) is skipped, another unreadable line named."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                log.warning("%s: skipped a torn last line (an interrupted write); it will be asked again", path)
                return
            try:
                record = json.loads(line)
                yield record["key"], record.get("method", ""), record["value"]
            except (ValueError, KeyError, TypeError):
                raise CorruptFileError(
                    f"Response cache {path} line {number} is not a cache record; delete the file to start the cache "
                    "afresh (it holds only LLM replies)."
                ) from None
