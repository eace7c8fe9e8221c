"""A Neuronpedia upload-batch endpoint on 127.0.0.1 for tests, checking what the real route checks.

It follows ``apps/webapp/app/api/feature/upload-batch/route.tsx`` of hijohnnylin/neuronpedia: the
``X-Api-Key`` header; the yup schema (``modelId`` and ``source`` required and lowercased, 1 to 128
features, ``index`` an integer 0 to 10,000,000, ``density`` 0 to 1, at most 20 ``topLogits`` and
``bottomLogits`` of non-empty ``token`` and numeric ``value``, explanation ``text`` of 1 to 512
characters, at least one activation with 1 to 1,024 non-empty ``tokens`` and numeric ``values``,
quantile bounds at most 99,999,999 and ``quantileFraction`` 0 to 1) answered with 400
``{error, path}``; then, as thrown errors (HTTP 500), equal ``tokens`` and ``values`` lengths,
unique indices, a source set the key's user created, and ``methodName``/``modelName`` among the
types the database knows. ``fail_first`` answers the next requests with a status instead
(rate limits, outages) and ``down_after`` makes it go down halfway. Every request is recorded.
"""

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Refused(Exception):
    """A request the route refuses: its status, message and (for schema errors) path."""

    def __init__(self, status: int, message: str, path: str | None = None):
        super().__init__(message)
        self.status, self.message, self.path = status, message, path


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _string(v) -> bool:
    return isinstance(v, str) and v != ""  # yup's string().required() refuses ""


def _schema(body) -> None:
    def bad(path: str, why: str):
        raise Refused(400, f"{path} {why}", path)

    if not isinstance(body, dict) or not _string(body.get("modelId")) or not _string(body.get("source")):
        bad("modelId", "is a required field")
    features = body.get("features")
    if not isinstance(features, list) or not 1 <= len(features) <= 128:
        bad("features", "must have 1 to 128 items")
    for i, f in enumerate(features):
        at = f"features[{i}]"
        if not isinstance(f.get("index"), int) or not 0 <= f["index"] <= 10_000_000:
            bad(f"{at}.index", "must be an integer from 0 to 10000000")
        if f.get("density") is not None and (not _number(f["density"]) or not 0 <= f["density"] <= 1):
            bad(f"{at}.density", "must be from 0 to 1")
        for key in ("topLogits", "bottomLogits"):
            logits = f.get(key)
            if logits is None:
                continue
            if len(logits) > 20:
                bad(f"{at}.{key}", "must have at most 20 items")
            for j, logit in enumerate(logits):
                if not _string(logit.get("token")) or not _number(logit.get("value")):
                    bad(f"{at}.{key}[{j}]", "needs a token and a value")
        for j, e in enumerate(f.get("explanations") or []):
            if not _string(e.get("text")) or len(e["text"]) > 512:
                bad(f"{at}.explanations[{j}].text", "must be 1 to 512 characters")
        activations = f.get("activations")
        if not isinstance(activations, list) or not activations:
            bad(f"{at}.activations", "must have at least 1 item")
        for j, a in enumerate(activations):
            tokens, values = a.get("tokens"), a.get("values")
            if not isinstance(tokens, list) or not 1 <= len(tokens) <= 1024 or not all(map(_string, tokens)):
                bad(f"{at}.activations[{j}].tokens", "must hold 1 to 1024 tokens")
            if not isinstance(values, list) or not 1 <= len(values) <= 1024 or not all(map(_number, values)):
                bad(f"{at}.activations[{j}].values", "must hold 1 to 1024 numbers")
            for key in ("quantileMax", "quantileMin"):
                if a.get(key) is not None and (not _number(a[key]) or a[key] > 99_999_999):
                    bad(f"{at}.activations[{j}].{key}", "must be at most 99999999")
            fraction = a.get("quantileFraction")
            if fraction is not None and (not _number(fraction) or not 0 <= fraction <= 1):
                bad(f"{at}.activations[{j}].quantileFraction", "must be from 0 to 1")


@dataclass
class Request:
    """One request as received."""

    headers: dict
    body: bytes


@dataclass
class FakeNeuronpedia:
    """The service's state: the API key, the sources its user owns, the names it knows, what it stored."""

    key: str
    owned: set[tuple[str, str]]
    methods: set[str] = field(default_factory=lambda: {"oai_token-act-pair", "np_acts-logits-general"})
    models: set[str] = field(default_factory=lambda: {"gpt-4o-mini", "claude-3-5-haiku-20241022"})
    features: dict[tuple[str, str, int], dict] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    fail_first: list[int] = field(default_factory=list)
    url: str = ""
    echo_key: bool = False
    """Answer refusals with the key in the message, as careless servers do."""
    down_after: int | None = None
    """Answer 503 once this many batches have been stored (an outage halfway through an upload)."""
    stored_batches: int = 0

    def handle(self, headers: dict, raw: bytes) -> tuple[int, dict]:
        self.requests.append(Request(headers, raw))
        if self.fail_first:
            return self.fail_first.pop(0), {"error": "try again later"}
        if self.down_after is not None and self.stored_batches >= self.down_after:
            return 503, {"error": "service unavailable"}
        if headers.get("x-api-key") != self.key:
            said = f" (got {headers.get('x-api-key')})" if self.echo_key else ""
            return 401, {"error": f"This endpoint requires authorization.{said}"}
        try:
            body = json.loads(raw)
            _schema(body)
            self._store(body)
        except json.JSONDecodeError:
            return 400, {"error": "invalid JSON"}
        except Refused as e:
            extra = f" (key {self.key})" if self.echo_key else ""
            return e.status, {"error": e.message + extra, **({"path": e.path} if e.path else {})}
        return 200, {"message": f"{len(body['features'])} features created."}

    def _store(self, body: dict) -> None:
        model, source = body["modelId"].lower(), body["source"].lower()
        for f in body["features"]:
            for a in f["activations"]:
                if len(a["tokens"]) != len(a["values"]):
                    raise Refused(500, "One of the activations tokens lengths does not match its values length.")
        if len({f["index"] for f in body["features"]}) != len(body["features"]):
            raise Refused(500, "All indexes must be unique.")
        if (model, source) not in self.owned:
            raise Refused(500, "Source set not found.")
        explanations = [e for f in body["features"] for e in f.get("explanations") or []]
        methods = {e.get("methodName") for e in explanations} - {None} - self.methods
        if methods:
            raise Refused(500, f"Invalid Explanation Method Names: {', '.join(sorted(methods))}.")
        models = {e.get("modelName") for e in explanations} - {None} - self.models
        if models:
            raise Refused(500, f"Invalid Explanation Model Names: {', '.join(sorted(models))}.")
        for f in body["features"]:
            self.features.setdefault((model, source, f["index"]), f)  # createMany skipDuplicates
        self.stored_batches += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        """Keep the test output clean."""

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        service: FakeNeuronpedia = self.server.service
        if self.path != "/api/feature/upload-batch":
            status, payload = 404, {"error": "not found"}
        else:
            with self.server.lock:
                status, payload = service.handle({k.lower(): v for k, v in self.headers.items()}, raw)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serving(service: FakeNeuronpedia) -> ThreadingHTTPServer:
    """Serve ``service`` on 127.0.0.1 in a background thread (sets ``service.url``); ``shutdown()`` when done."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.service, server.lock = service, threading.Lock()
    service.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
