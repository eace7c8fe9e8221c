"""Posting Neuronpedia upload batches (written by ``publish.neuronpedia``), batch by batch, retrying and resuming.

The key comes from ``$NEURONPEDIA_API_KEY`` (or another variable named by ``key_env``) and only ever
travels in the ``X-Api-Key`` header, as Neuronpedia's own client sends it: it is never written, logged
or shown in an error (a server that echoes it back has it replaced by ``***``). Each batch that the
service accepts is recorded in ``OUT/pushed.json`` with the hash of its body, so running again posts
only what is not there yet (or what changed since).
"""

import hashlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from interp.atomic import write_atomic

from .neuronpedia import NeuronpediaError, check_batch

log = logging.getLogger(__name__)

KEY_ENV = "NEURONPEDIA_API_KEY"
DEFAULT_URL = "https://www.neuronpedia.org"
UPLOAD_PATH = "/api/feature/upload-batch"
PUSHED_FILE = "pushed.json"
RETRIED = {429, 500, 502, 503, 504}
"""Statuses worth another try: rate limits and server errors."""


def _key(key_env: str) -> str:
    key = os.environ.get(key_env)
    if not key:
        raise NeuronpediaError(f"--push needs a Neuronpedia API key in ${key_env} (neuronpedia.org, Settings).")
    return key


def _redact(text: str, key: str) -> str:
    return " ".join(text.replace(key, "***").split())[:300]


def _post(url: str, body: bytes, key: str, timeout: float) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", "X-Api-Key": key}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def _message(text: str) -> str:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text
    return str(data.get("error") or data.get("message") or data) if isinstance(data, dict) else text


def push_batches(
    out_dir: str | Path,
    *,
    url: str = DEFAULT_URL,
    key_env: str = KEY_ENV,
    retries: int = 4,
    backoff: float = 2.0,
    timeout: float = 120.0,
) -> dict[str, int]:
    """Post every batch file under ``out_dir`` not yet recorded as pushed; returns {"pushed": n, "skipped": m}.

    A connection error, a rate limit or a server error is retried ``retries`` times, waiting
    ``backoff`` seconds, doubled each time; a refusal (4xx) stops at once with the service's reason.
    """
    key = _key(key_env)
    out = Path(out_dir)
    state_file = out / PUSHED_FILE
    pushed = json.loads(state_file.read_text()) if state_file.is_file() else {}
    files = sorted(p for p in out.glob("*/batch-*.json"))
    if not files:
        raise NeuronpediaError(f"No Neuronpedia batches under {out}: write them first with --neuronpedia {out}.")
    endpoint = url.rstrip("/") + UPLOAD_PATH
    done = {"pushed": 0, "skipped": 0}
    for path in files:
        rel = path.relative_to(out).as_posix()
        body = path.read_bytes()
        digest = hashlib.sha256(body).hexdigest()
        if pushed.get(rel) == digest:
            done["skipped"] += 1
            continue
        check_batch(json.loads(body))
        for attempt in range(retries + 1):
            try:
                status, text = _post(endpoint, body, key, timeout)
            except (urllib.error.URLError, OSError) as e:
                status, text = None, f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            if status is not None and 200 <= status < 300:
                break
            reason = _redact(_message(text), key)
            if (status is not None and status not in RETRIED) or attempt == retries:
                raise NeuronpediaError(
                    f"Neuronpedia refused {rel} ({'HTTP ' + str(status) if status else 'no answer'}: {reason}); "
                    f"{done['pushed']} batches went up this time, and the same command resumes after them."
                )
            log.info("Neuronpedia: %s got %s (%s); retrying in %.0f s", rel, status or "no answer", reason, backoff)
            time.sleep(backoff * 2**attempt)
        pushed[rel] = digest
        write_atomic(state_file, lambda p: p.write_text(json.dumps(pushed, indent=1, sort_keys=True)))
        done["pushed"] += 1
        log.info("Neuronpedia: %s posted (%d of %d)", rel, files.index(path) + 1, len(files))
    return done
