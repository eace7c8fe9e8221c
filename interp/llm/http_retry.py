"""One JSON POST with retries: which failures are worth another try, and how long to wait.

Transient: connection errors, timeouts, HTTP 429 and 5xx, and a 200 whose body cannot be
parsed. Any other HTTP error (400, 401, 404, ...) would fail the same way again and is
returned at once. A ``Breaker`` shared by a client's requests stops them all once the server
stops taking connections: a server that is down fails the rest of a batch at once instead of
each request retrying on its own.
"""

import http.client
import json
import socket
import threading
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


class Breaker:
    """Whether a server still takes connections, as seen by all the requests of one client.

    ``limit`` tries in a row that failed to connect or lost their connection (refused, reset,
    unknown host), at least one of them refused or unresolved, trip it: the server has stopped
    taking connections. A server that accepts connections and drops them is alive and keeps
    being retried. From then on every request of the client fails at once with ``reason``. Any
    answer, even an HTTP error, resets the count; a timeout leaves it as it is. A tripped
    breaker stays tripped: the client's remaining requests fail fast, and the next command,
    with a new client, asks again.
    """

    def __init__(self, url: str, limit: int = 3):
        if limit < 1:
            raise ValueError(f"a breaker needs limit >= 1, got {limit}")
        self.url, self.limit = url, limit
        self.reached = False
        """True once any request of the client got an answer from the server."""
        self._failures = self._refusals = 0
        self._down = threading.Event()
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        """True once the server has stopped taking connections."""
        return self._down.is_set()

    @property
    def reason(self) -> str:
        """Why a request was not sent, for its recorded failure."""
        return (
            f"the server at {self.url} is unreachable: it stopped taking connections, so this client "
            "stopped asking (the next command asks again)"
        )

    def answered(self) -> None:
        """A try got an answer: the server is up."""
        with self._lock:
            self.reached, self._failures, self._refusals = True, 0, 0

    def connection_failed(self, refused: bool) -> None:
        """A try could not connect (``refused``: nothing listens, or the host is unknown) or lost its connection."""
        with self._lock:
            self._failures += 1
            self._refusals += refused
            if self._failures >= self.limit and self._refusals:
                self._down.set()

    def sleep(self, seconds: float) -> None:
        """Wait before a retry, waking early when the breaker trips."""
        self._down.wait(seconds)


@dataclass
class Outcome:
    """The parsed reply of one request, or why it failed after all its tries."""

    value: Any = None
    error: str | None = None
    unreachable: bool = False
    """True when no try ever connected (connection refused or unknown host)."""
    rejected: bool = False
    """True when the server refused the request itself (an HTTP 4xx other than 429)."""


def post_json(
    url: str,
    payload: dict,
    headers: dict[str, str],
    policy: RetryPolicy,
    parse: Callable[[Any], Any],
    breaker: Breaker,
) -> Outcome:
    """POST ``payload`` as JSON and return ``parse(reply)``, retrying transient failures.

    Every try is reported to ``breaker``; once it has tripped no further try is made and the
    outcome is a failure giving its reason. ``parse`` raising ValueError, KeyError, IndexError,
    TypeError or AttributeError (a reply of the wrong shape) marks the reply as malformed
    (retried); any other exception from it propagates.
    The credentials in ``headers`` (the key of ``Bearer <key>``) are replaced by ``***`` in every error,
    before a long server message is cut short, so not even part of a key can leak.
    """
    body = json.dumps(payload).encode()
    secrets = _secrets(headers)
    error, unreachable = "no try made", True
    for attempt in range(policy.max_retries + 1):
        if breaker.down:
            return Outcome(error=breaker.reason, unreachable=unreachable)
        wait = policy.delay(attempt)
        try:
            raw = _post(url, body, headers, policy.timeout)
        except urllib.error.HTTPError as e:
            unreachable = False
            breaker.answered()
            error = f"HTTP {e.code}: {_snippet(e, secrets)}"
            if e.code != 429 and e.code < 500:
                return Outcome(error=_redact(error, secrets), rejected=True)
            wait = max(wait, _retry_after(e))
        except (OSError, http.client.HTTPException) as e:
            refused = _is_unreachable(e)
            if refused or isinstance(_reason(e), ConnectionError):
                breaker.connection_failed(refused)
            unreachable = unreachable and refused
            error = _describe(e, policy.timeout)
        else:
            unreachable = False
            breaker.answered()
            try:
                return Outcome(value=parse(json.loads(raw)))
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
                error = f"malformed reply ({type(e).__name__}: {e})"
        if attempt < policy.max_retries:
            breaker.sleep(wait)
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
