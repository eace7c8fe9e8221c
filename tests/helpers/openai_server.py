"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests, scriptable to misbehave."""

import json
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOP = [(" Yes", -0.2), ("Yes", -1.9), ("No", -2.3), ("\n", -4.0)]
"""The first-token alternatives the server reports, best first."""


class ScriptedServer(ThreadingHTTPServer):
    """An OpenAI-compatible server on 127.0.0.1 that can be told how to misbehave.

    ``script`` holds behaviours for the next requests, consumed one per request: "ok", "500", "429",
    "400" (echoes the Authorization header back, as careless servers do), "truncated" (a 200
    with half a JSON body), "sleep" (answers after ``sleep`` seconds), "drop" (closes the
    connection without answering), "cut" (sends the headers and half the body, then closes) and
    "die" (stops listening and drops the connection: the server has crashed; requests already
    being answered still get their reply).
    Prompts listed in ``fail_contents`` always get a 500. ``logprob_shape`` is "chat" (OpenAI/vLLM),
    "completions" (the legacy ``/v1/completions`` shape) or "none"; the first ``top_logprobs``
    entries of ``top(content)`` are listed, and a request for more than ``max_top_logprobs``
    (when set) gets a 400, as OpenAI and vLLM answer more than 20. ``body``, when set, gives
    the raw text of a 200 reply instead (replies of any shape; None keeps the normal reply). ``request_reply``, when
    set, gives the reply's text from the whole request body (its seed and temperature too) instead of ``reply``.
    """

    def __init__(self, port: int = 0):
        super().__init__(("127.0.0.1", port), _Handler)
        self.base_url = f"http://127.0.0.1:{self.server_address[1]}/v1"
        self.script: list[str] = []
        self.fail_contents: set[str] = set()
        self.logprob_shape = "chat"
        self.sleep = 0.5
        self.jitter = 0.0
        self.requests: list[dict] = []
        self.reply = lambda content: f"echo: {content}"
        self.request_reply = None
        self.top = lambda content: TOP
        self.max_top_logprobs: int | None = None
        self.body = None
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()

    def handle_error(self, request, client_address):
        """A client that gave up (timeout) leaves a broken pipe behind: expected, not a failure."""

    def stop(self):
        """Stop serving and close the listening socket: new connections are refused."""
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def log_message(self, *args):
        """Keep the test output clean."""

    def do_POST(self):
        s = self.server
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        with s.lock:
            s.requests.append({"path": self.path, "headers": dict(self.headers), "body": raw.decode()})
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
            behaviour = s.script.pop(0) if s.script else "ok"
        self._in_flight = True
        try:
            self._answer(s, json.loads(raw), behaviour)
        finally:
            self._leave()

    def _leave(self) -> None:
        """Stop counting this request as in flight, once: before its reply is written, since the client may send
        its next request the moment it has read this one (counting until after the write overlaps the two)."""
        if self._in_flight:
            self._in_flight = False
            with self.server.lock:
                self.server.in_flight -= 1

    def _answer(self, s: ScriptedServer, body: dict, behaviour: str):
        asked = [m for m in body["messages"] if m["role"] != "assistant"] or body["messages"]
        content = asked[-1]["content"]  # a started reply (a last assistant message) is answered from the question
        time.sleep(random.Random(content).random() * s.jitter)
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": "not found"})
        if s.max_top_logprobs is not None and body.get("top_logprobs", 0) > s.max_top_logprobs:
            return self._send(400, {"error": f"top_logprobs must be at most {s.max_top_logprobs}"})
        if behaviour in ("500", "429") or content in s.fail_contents:
            return self._send(429 if behaviour == "429" else 500, {"error": "try again"})
        if behaviour == "400":
            return self._send(400, {"error": f"bad key {self.headers.get('Authorization')}"})
        if behaviour == "truncated":
            return self._send(200, '{"choices": [{"mess')
        if behaviour in ("drop", "die"):
            if behaviour == "die":
                s.stop()
            self.close_connection = True
            return self.connection.shutdown(socket.SHUT_RDWR)
        if behaviour == "sleep":
            time.sleep(s.sleep)
        raw = s.body(content) if s.body is not None else None
        if raw is not None:
            return self._send(200, raw)
        text = s.request_reply(body) if s.request_reply is not None else s.reply(content)
        reply = {
            "choices": [{"message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": len(content.split()), "completion_tokens": 2},
        }
        if body.get("logprobs") and s.logprob_shape != "none":
            reply["choices"][0]["logprobs"] = self._logprobs(s.top(content)[: body["top_logprobs"]], s.logprob_shape)
        self._send(200, reply, cut=behaviour == "cut")

    @staticmethod
    def _logprobs(ranked: list[tuple[str, float]], shape: str) -> dict:
        """The listed alternatives of the first reply token, in the chat or the legacy completions shape."""
        if shape == "chat":
            top = [{"token": t, "logprob": lp} for t, lp in ranked]
            return {"content": [{**top[0], "top_logprobs": top}]}
        return {"tokens": [ranked[0][0]], "top_logprobs": [dict(ranked)]}

    def _send(self, status: int, payload, cut: bool = False):
        data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        self._leave()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if cut:  # the connection dies halfway through the body
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return self.connection.shutdown(socket.SHUT_RDWR)
        self.wfile.write(data)


def serving(port: int = 0) -> ScriptedServer:
    """Start a ScriptedServer in a background thread, on ``port`` (default: a free one)."""
    srv = ScriptedServer(port)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv
