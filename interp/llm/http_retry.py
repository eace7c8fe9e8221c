"""One JSON POST with retries: which failures are worth another try, and how long to wait.

Transient: connection errors, timeouts, HTTP 429 and 5xx, and a 200 whose body cannot be
parsed. Any other HTTP error (400, 401, 404, ...) would fail the same way again and is
returned at once.
"""

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_RETRY_AFTER = 60.0
"""Longest server-requested wait (``Retry-After``) honoured, in seconds."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long one try may take and how often, and how far apart, to try again."""

    timeout: float = 60.0
    """Seconds one try may take (connect, and each read)."""

    max_retries: int = 4
    """Tries after the first one."""

    backoff: float = 0.5
    """Wait before the first retry; doubled before each further one."""

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        return self.backoff * 2**retry


@dataclass
class Outcome:
    """The parsed reply of one request, or why it failed after all its tries."""

    value: Any = None
    error: str | None = None
    unreachable: bool = False
    """True when no try ever connected (connection refused or unknown host)."""


def post_json(
    url: str, payload: dict, headers: dict[str, str], policy: RetryPolicy, parse: Callable[[Any], Any]
) -> Outcome:
    """POST ``payload`` as JSON and return ``parse(reply)``, retrying transient failures.

    ``parse`` raising ValueError, KeyError, IndexError, TypeError or AttributeError (a reply of
    the wrong shape) marks the reply as malformed (retried); any other exception from it propagates.
    The credentials in ``headers`` (the key of ``Bearer <key>``) are replaced by ``***`` in every error,
    before a long server message is cut short, so not even part of a key can leak.
    """
    body = json.dumps(payload).encode()
    secrets = _secrets(headers)
    error, unreachable = "no try made", True
    for attempt in range(policy.max_retries + 1):
        wait = policy.delay(attempt)
        try:
            raw = _post(url, body, headers, policy.timeout)
        except urllib.error.HTTPError as e:
            unreachable = False
            error = f"HTTP {e.code}: {_snippet(e, secrets)}"
            if e.code != 429 and e.code < 500:
                return Outcome(error=_redact(error, secrets))
            wait = max(wait, _retry_after(e))
        except (OSError, http.client.HTTPException) as e:
            unreachable = unreachable and _is_unreachable(e)
            error = _describe(e, policy.timeout)
        else:
            unreachable = False
            try:
                return Outcome(value=parse(json.loads(raw)))
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
                error = f"malformed reply ({type(e).__name__}: {e})"
        if attempt < policy.max_retries:
            time.sleep(wait)
    tries = policy.max_retries + 1
    gave_up = f"gave up after {tries} {'try' if tries == 1 else 'tries'}"
    return Outcome(error=_redact(f"{error} ({gave_up})", secrets), unreachable=unreachable)


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> bytes:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def _reason(e: BaseException) -> BaseException:
    reason = getattr(e, "reason", None)
    return reason if isinstance(reason, BaseException) else e


def _is_unreachable(e: BaseException) -> bool:
    return isinstance(_reason(e), (ConnectionRefusedError, socket.gaierror))


def _describe(e: BaseException, timeout: float) -> str:
    reason = _reason(e)
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout:g} s"
    return f"{type(reason).__name__}: {reason}"


def _secrets(headers: dict[str, str]) -> list[str]:
    """The credential of each header value (its last word: the key of ``Bearer <key>``), longest first."""
    return sorted({value.split()[-1] for value in headers.values() if value.split()}, key=len, reverse=True)


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _snippet(e: urllib.error.HTTPError, secrets: list[str], limit: int = 200) -> str:
    try:
        text = e.read().decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException):
        text = ""
    text = _redact(" ".join(text.split()), secrets)
    return (text[:limit] + "...") if len(text) > limit else (text or str(e.reason))


def _retry_after(e: urllib.error.HTTPError) -> float:
    try:
        return min(float(e.headers.get("Retry-After", 0)), MAX_RETRY_AFTER)
    except (TypeError, ValueError):
        return 0.0
