"""The one ASGI app: FastAPI (REST, /docs) and python-socketio on the same port, behind a
request-body size limit; the error table turns every refusal into a 4xx naming the field."""

from __future__ import annotations

import hmac
import json
import logging
import os
import sqlite3
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .._base.errors import OrchkitError
from ._lane import AgentsLane
from ._routes import build_router
from ._schemas import error_status
from ._service import Service
from ._sockets import build_sockets
from ._twin import TwinService, build_twin_router
from ._ui import mount_ui

log = logging.getLogger("orchkit.service")
MAX_BODY_BYTES = 1 << 20


def create_app(
    service: Service,
    *,
    api_key: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    cors_origins: list[str] | None = None,
) -> Any:
    """The ASGI app serving ``service``: REST under /api, /healthz, /metrics, /docs and
    Socket.IO at /socket.io. ``api_key`` (default: ``$ORCHKIT_API_KEY``) guards /api,
    /metrics and sockets; request bodies over ``max_body_bytes`` get 413; browsers on
    ``cors_origins`` (default: the same origin only) may call the API and open sockets. The
    service is started and stopped by the app's lifespan."""
    import socketio

    if api_key is None:
        api_key = os.environ.get("ORCHKIT_API_KEY") or None
    if not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be an int >= 1, got {max_body_bytes!r}")

    twin = TwinService(service)  # the digital twin's predictions (SPEC §16.3)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        await twin.start()
        try:
            yield
        finally:
            await twin.stop()
            await service.stop()

    bearer = HTTPBearer(auto_error=False, description="the server's ORCHKIT_API_KEY")

    async def check_key(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if cred is None or not hmac.compare_digest(cred.credentials.encode(), api_key.encode()):
            raise _Unauthorized()

    async def open_door() -> None:
        return None

    auth = check_key if api_key is not None else open_door

    api = FastAPI(
        title="orchkit service",
        version=_version(),
        lifespan=lifespan,
        description="Per-learner agents, runs and their records (SPEC §8). Times in "
        "ms; timestamps ISO-8601 UTC. Socket.IO on the same port.",
        docs_url=None,  # /docs is served offline by the dashboard (_ui)
        redoc_url=None,
    )
    api.state.service = service
    api.state.twin = twin
    api.include_router(build_router(auth))
    api.include_router(build_twin_router(auth))
    mount_ui(api, service, api_key=api_key)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        api.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
        )

    @api.exception_handler(_Unauthorized)
    async def unauthorized(request: Request, exc: _Unauthorized) -> JSONResponse:
        return JSONResponse(
            {"detail": "unauthorized: send Authorization: Bearer <ORCHKIT_API_KEY>"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @api.exception_handler(_TooLarge)
    async def too_large(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": _too_large(max_body_bytes)}, status_code=413)

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            return JSONResponse(
                {
                    "detail": "malformed JSON body: " + "; ".join(e["msg"] for e in errors),
                    "errors": errors,
                },
                status_code=400,
            )
        return JSONResponse(
            {"detail": "; ".join(_describe(e) for e in errors), "errors": errors}, status_code=422
        )

    @api.exception_handler(OrchkitError)
    @api.exception_handler(ValueError)
    @api.exception_handler(Exception)
    async def refused(request: Request, exc: Exception) -> JSONResponse:
        status, body = refusal(exc, request.method, request.url.path)
        return JSONResponse(body, status_code=status)

    sio = build_sockets(
        service, api_key=api_key, max_bytes=max_body_bytes, cors_origins=cors_origins
    )
    app = socketio.ASGIApp(sio, other_asgi_app=api)
    lane = AgentsLane(app, service, refusal, api_key=api_key, cors=bool(cors_origins))
    return BodyLimit(lane, max_body_bytes)


def refusal(exc: BaseException, method: str, path: str) -> tuple[int, dict[str, Any]]:
    """The error table: (status, JSON body) answering ``exc`` raised by a request
    (``OrchkitError``: its status; ``ValueError``: 422; the store down: 503; else 500)."""
    if isinstance(exc, OrchkitError):
        return error_status(exc), {"detail": str(exc)}
    if isinstance(exc, ValueError):
        return 422, {"detail": str(exc)}
    if isinstance(exc, (OSError, sqlite3.Error)) or type(exc).__module__.startswith("redis"):
        log.warning("store unavailable on %s %s: %s", method, path, exc)
        detail = f"the store is unavailable ({type(exc).__name__}: {exc}); retry later"
        return 503, {"detail": detail}
    log.exception("unexpected error on %s %s", method, path, exc_info=exc)
    return 500, {"detail": f"internal error ({type(exc).__name__}); see the server log"}


class _Unauthorized(Exception):
    pass


def _describe(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    where = (
        ".".join(loc[1:])
        if loc and loc[0] in ("body", "query", "path", "header")
        else ".".join(loc)
    )
    kind = {"query": "parameter", "path": "path parameter", "header": "header"}.get(
        loc[0] if loc else "", "field"
    )
    return f"{kind} '{where or 'body'}': {err['msg']}"


def _version() -> str:
    from .. import __version__

    return __version__


class BodyLimit:
    """ASGI middleware: HTTP request bodies larger than ``limit`` bytes get 413 (by the
    Content-Length header, or while streaming when there is none). Every answer carries
    ``Server-Timing: app;dur=MS``, the time from the request reaching the app to its answer."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.strip().isdigit():
                    return await _reply(send, 400, "header 'Content-Length' is not a number")
                if int(value) > self.limit:
                    return await _reply(send, 413, _too_large(self.limit))
        seen, started, t0 = 0, False, time.perf_counter()

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        async def watch(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                ms = (time.perf_counter() - t0) * 1000.0
                message = {
                    **message,
                    "headers": [
                        *message.get("headers", ()),
                        (b"server-timing", f"app;dur={ms:.3f}".encode()),
                    ],
                }
            await send(message)

        try:
            await self.app(scope, limited, watch)
        except _TooLarge:
            if not started:
                await _reply(send, 413, _too_large(self.limit))


def _too_large(limit: int) -> str:
    return f"request body larger than {limit} bytes (the server's --max-body-bytes); send less"


class _TooLarge(HTTPException):  # an HTTPException, so FastAPI's body parsing lets it through
    def __init__(self) -> None:
        super().__init__(413)


async def _reply(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
