"""A real OpenAI-compatible HTTP server on 127.0.0.1 for judge tests, with scriptable faults.

Speaks ``POST /v1/chat/completions`` and ``GET /v1/models``. Replies are deterministic: by default a rating derived
from a hash of the prompt (:func:`hash_rating`), or whatever ``reply(messages)`` returns. ``fault(n, k, messages)``
is called for every chat request with ``n`` the request number (1-based, all prompts) and ``k`` the request number
for this distinct prompt; it returns None (answer normally) or a dict:

- ``{"status": 429, "retry_after": 0.01}`` / ``{"status": 500}`` / ``{"status": 400, "message": "..."}``;
- ``{"sleep": 1.0}``: answer normally but only after sleeping (beyond the client's timeout);
- ``{"reply": "text"}``: answer with this text (e.g. an unparsable verdict);
- ``{"empty_choices": True}``: a 200 reply whose ``choices`` list is empty;
- ``{"body": "...", "content_type": "text/html"}``: a 200 reply with this raw body (an HTML page, invalid JSON);
- ``{"json": {...}}``: a 200 reply with this JSON body (a chat completion in a wrong shape);
- ``{"patch": fn}``: the normal reply body, passed through ``fn(body) -> body`` (e.g. a non-numeric usage).

``portal="<html>..."`` answers every request, on every path, with that page (a captive portal).

A request with ``logprobs``/``top_logprobs`` also gets the first token's top log-probabilities from
``top_logprobs(messages)`` (a list of (token, logprob); default :func:`hash_logprobs`), and its reply text is the
most likely of them. A model not in ``models`` gets a 404, as from vLLM. ``models_fault(n)`` may answer the n-th
``GET /models`` with ``{"status": 503}``. Counters: ``models_requests``, ``total``, ``per_prompt`` (requests per distinct
prompt), ``served`` (normal answers per prompt), ``max_in_flight``, ``auth_headers``.
"""
from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


def prompt_key(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


def hash_rating(messages: list[dict]) -> int:
    """A rating 1..10 that depends only on the prompt."""
    return int(prompt_key(messages), 16) % 10 + 1


def hash_p_m(messages: list[dict]) -> float:
    """P("m") / (P("m") + P("M")) in (0, 1) that depends only on the prompt (AlpacaEval-style judges)."""
    return (int(prompt_key(messages), 16) % 997 + 1) / 999


def hash_logprobs(messages: list[dict]) -> list[tuple[str, float]]:
    """Top-5 log-probabilities of a one-token m/M verdict, with P(m)/(P(m)+P(M)) = hash_p_m and 1 % elsewhere."""
    p = hash_p_m(messages)
    top = [("m", math.log(0.99 * p)), ("M", math.log(0.99 * (1 - p))), ("The", math.log(0.005)),
           ("Both", math.log(0.003)), ("Output", math.log(0.002))]
    return sorted(top, key=lambda t: -t[1])


def default_reply(messages: list[dict]) -> str:
    return f"The answer is fine. Rating: [[{hash_rating(messages)}]]"


class FakeOpenAIServer:
    def __init__(self, reply: Callable[[list[dict]], str] = default_reply,
                 fault: Callable[[int, int, list[dict]], dict | None] | None = None,
                 delay: float = 0.0, models: tuple[str, ...] = ("judge-model",),
                 top_logprobs: Callable[[list[dict]], list[tuple[str, float]]] = hash_logprobs,
                 models_fault: Callable[[int], dict | None] | None = None, portal: str | None = None):
        self.reply, self.fault, self.delay, self.models = reply, fault, delay, models
        self.portal = portal
        self.top_logprobs = top_logprobs
        self.logprob_requests = 0
        self.models_fault, self.models_requests = models_fault, 0
        self.total = 0
        self.per_prompt: Counter = Counter()
        self.served: Counter = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.auth_headers: list[str] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAIServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, body, headers: dict | None = None, content_type: str = "application/json"
                      ) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): expected in slow-reply tests

            def do_GET(self):
                if server.portal is not None:
                    self._send(200, server.portal, content_type="text/html")
                    return
                if self.path.rstrip("/").endswith("/models"):
                    with server._lock:
                        server.models_requests += 1
                        n = server.models_requests
                    fault = server.models_fault(n) if server.models_fault else None
                    if fault:
                        self._send(fault["status"], {"error": {"message": f"injected {fault['status']}"}})
                        return
                    self._send(200, {"object": "list", "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in server.models]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if server.portal is not None:
                    with server._lock:
                        server.total += 1
                    self._send(200, server.portal, content_type="text/html")
                    return
                messages = body.get("messages", [])
                if body.get("model") not in server.models:  # as vLLM does for a model it does not serve
                    self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
                    return
                key = prompt_key(messages)
                with server._lock:
                    server.total += 1
                    server.per_prompt[key] += 1
                    n, k = server.total, server.per_prompt[key]
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.auth_headers.append(self.headers.get("Authorization", ""))
                try:
                    fault = server.fault(n, k, messages) if server.fault else None
                    if server.delay:
                        time.sleep(server.delay)
                    fault = fault or {}
                    if "status" in fault:
                        headers = {"retry-after": str(fault["retry_after"])} if "retry_after" in fault else {}
                        msg = fault.get("message", f"injected {fault['status']}")
                        self._send(fault["status"], {"error": {"message": msg, "type": "test"}}, headers)
                        return
                    if fault.get("empty_choices"):
                        self._send(200, {"id": f"cmpl-{n}", "object": "chat.completion", "created": 0,
                                         "model": body.get("model"), "choices": [], "usage": None})
                        return
                    if "body" in fault:
                        self._send(200, fault["body"], content_type=fault.get("content_type", "text/html"))
                        return
                    if "json" in fault:
                        self._send(200, fault["json"])
                        return
                    if "sleep" in fault:
                        time.sleep(fault["sleep"])
                    text = fault["reply"] if "reply" in fault else server.reply(messages)
                    logprobs = None
                    if body.get("logprobs"):
                        top = server.top_logprobs(messages)[: int(body.get("top_logprobs") or 1)]
                        text = fault["reply"] if "reply" in fault else top[0][0]
                        entries = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top]
                        logprobs = {"content": [{**entries[0], "top_logprobs": entries}]}
                        with server._lock:
                            server.logprob_requests += 1
                    if not fault:
                        with server._lock:
                            server.served[key] += 1
                    prompt_tokens = sum(len(m.get("content", "").split()) for m in messages)
                    patch = fault.get("patch", lambda b: b)
                    self._send(200, patch({
                        "id": f"cmpl-{n}", "object": "chat.completion", "created": int(time.time()),
                        "model": body.get("model"),
                        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                                     "message": {"role": "assistant", "content": text}}],
                        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                                  "total_tokens": prompt_tokens + len(text.split())},
                    }))
                finally:
                    with server._lock:
                        server.in_flight -= 1

        return Handler
