"""The raw-ASGI lane of ``POST /api/agents``, the request a learner sends on every answer.

A valid JSON request (with the key, when the server has one, and from the same origin when
the server lets other origins in) is answered here: the body is validated by the route's own
model, the answer by the route's response model, and refusals by the app's error table, so
the answer is the one FastAPI's route gives, without its routing and dependency layers. Any
other request (invalid, unauthorised, a browser's cross-origin call, another route) goes on
to the FastAPI app unchanged, its body replayed."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ._schemas import AgentRequest, AgentResponseBody
from ._service import AGENT_MS, Service

log = logging.getLogger("orchkit.service")
_ANSWER: TypeAdapter[Any] = TypeAdapter(AgentResponseBody)
_JSON = (b"content-type", b"application/json")


class AgentsLane:
    """ASGI middleware answering valid ``POST /api/agents`` requests itself; ``refusal(exc,
    method, path)`` is the app's error table: (status, JSON body) for an exception."""

    def __init__(
        self,
        app: Any,
        service: Service,
        refusal: Callable[[BaseException, str, str], tuple[int, dict[str, Any]]],
        *,
        api_key: str | None,
        cors: bool,
    ):
        self.app, self.service, self.refusal, self.cors = app, service, refusal, cors
        self.auth = None if api_key is None else b"Bearer " + api_key.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != "/api/agents"
            or scope["method"] != "POST"
            or not self._ours(scope["headers"])
        ):
            return await self.app(scope, receive, send)
        body, message = b"", {"more_body": True}
        while message.get("more_body", False):
            message = await receive()
            if message["type"] != "http.request":  # the client left: nothing to answer
                return
            body += message.get("body", b"")
        try:
            req = AgentRequest.model_validate_json(body)
        except ValidationError:  # FastAPI's route says what is wrong, as it always has
            return await self.app(scope, _replay(body, receive), send)
        acc = [0.0]
        token = AGENT_MS.set(acc)
        try:
            out = await self.service.handle(req.action, req.learnerId, req.agent, req.data)
        except Exception as exc:  # the app's error table, as FastAPI's handlers use it
            status, detail = self.refusal(exc, "POST", "/api/agents")
            payload = json.dumps(detail, ensure_ascii=False, separators=(",", ":")).encode()
            headers = []
        else:  # an answer that breaks the response model is the server's bug: a 500
            status, payload = 200, _ANSWER.dump_json(_ANSWER.validate_python(out))
            headers = [(b"server-timing", f"agent;dur={acc[0]:.3f}".encode())]
        finally:
            AGENT_MS.reset(token)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(payload)).encode()),
                    _JSON,
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _ours(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """A JSON body, the key (if any) and no cross-origin caller (if CORS is on)."""
        json_body = authorised = False
        for name, value in headers:
            if name == b"content-type":
                json_body = value.split(b";", 1)[0].strip().lower() == b"application/json"
            elif name == b"authorization":
                authorised = self.auth is not None and hmac.compare_digest(value, self.auth)
            elif name == b"origin" and self.cors:
                return False
        return json_body and (authorised or self.auth is None)


def _replay(body: bytes, receive: Any) -> Callable[[], Any]:
    """A ``receive`` that gives ``body`` once, then what the client sends next."""
    sent = False

    async def again() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again
