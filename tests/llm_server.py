"""A real OpenAI-compatible HTTP server for tests (stdlib only, 127.0.0.1, a free port).

    with LLMServer() as server:                    # default: every request answered 200
        server.script(500, 200)                    # next two requests: HTTP 500, then 200
        server.script(Reply(429, retry_after_s=2)) # 429 with a Retry-After header
        server.script(Reply(delay_ms=2000))        # answer late, to force a client timeout
        client = AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        ...
        server.requests    # what it got: [{"path", "headers" (lower-case names), "json"}]

It serves ``POST /v1/chat/completions`` with the full ``chat.completion`` JSON shape
(id, object, created, model, choices[{index, message{role, content}, finish_reason}],
usage), errors with OpenAI's ``{"error": {...}}`` shape. Scripted replies are used in
order, one per request; when the script is empty the server answers with ``default``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Content = str | Callable[[dict[str, Any]], str]


def echo_content(request: dict[str, Any]) -> str:
    """Default reply text: names the model and quotes the last user message."""
    users = [m.get("content", "") for m in request.get("messages", []) if m.get("role") == "user"]
    last = users[-1] if users else ""
    return f"[{request.get('model')}] reply to: {last[:200]}"


@dataclass
class Reply:
    """One scripted answer. Times in ms; ``retry_after_s`` is the Retry-After header (s).

    ``content`` is the assistant's text (or a function of the request's JSON body);
    ``body`` replaces the whole JSON body (e.g. ``{"choices": []}``); ``raw`` replaces the
    response bytes entirely (e.g. ``b"not json"``).
    """

    status: int = 200
    content: Content = echo_content
    delay_ms: float = 0.0
    retry_after_s: float | None = None
    body: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_exceeded",
}


class LLMServer:
    """Threaded chat-completions server; ``base_url`` ends in ``/v1``. Use as a context manager."""

    def __init__(self, default: Reply | None = None):
        self.default = default or Reply()
        self.requests: list[dict[str, Any]] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._counter = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Reply | int) -> None:
        """Queue replies for the next requests; an int is a status code with default content."""
        with self._lock:
            self._script.extend(r if isinstance(r, Reply) else Reply(status=r) for r in replies)

    def start(self) -> LLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers that are sleeping out a delay
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_reply(self) -> tuple[int, Reply]:
        with self._lock:
            self._counter += 1
            return self._counter, (self._script.popleft() if self._script else self.default)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    payload = json.loads(raw or b"null")
                except ValueError:
                    payload = None
                with server._lock:
                    server.requests.append(
                        {
                            "path": self.path,
                            "json": payload,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                        }
                    )
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, _error(404, f"no route {self.path}"), {})
                    return
                n, reply = server._next_reply()
                if reply.delay_ms and server._stopping.wait(reply.delay_ms / 1000):
                    return
                headers = dict(reply.headers)
                if reply.retry_after_s is not None:
                    headers["Retry-After"] = f"{reply.retry_after_s:g}"
                if reply.raw is not None:
                    self._send(reply.status, reply.raw, headers)
                elif reply.body is not None:
                    self._send(reply.status, json.dumps(reply.body).encode(), headers)
                elif reply.status >= 400:
                    self._send(
                        reply.status, _error(reply.status, f"scripted HTTP {reply.status}"), headers
                    )
                else:
                    text = (
                        reply.content(payload or {}) if callable(reply.content) else reply.content
                    )
                    body = _completion(n, (payload or {}).get("model", "test-model"), text)
                    self._send(reply.status, json.dumps(body).encode(), headers)

            def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    self.send_header(
                        "Content-Type", headers.pop("Content-Type", "application/json")
                    )
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (e.g. its timeout passed)

        return Handler


def _completion(n: int, model: str, text: str) -> dict[str, Any]:
    prompt_tokens, completion_tokens = 10, len(text.split())
    return {
        "id": f"chatcmpl-test-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_test",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _error(status: int, message: str) -> bytes:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": None, "code": None}}
    ).encode()
