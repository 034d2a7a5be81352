"""Socket.IO (SPEC §8.2): thin handlers over the ``Service``.

A client connects with ``auth {learnerId[, token]}`` and joins the room
``learner:<learnerId>``; it hears only its own learner's events and those of the runs it
subscribed to (room ``run:<runId>``). Client -> server, each with an ack:

- ``agent:learning`` / ``agent:tutor`` / ``agent:speech`` ``{action, data}`` -> ack
  ``{success, agent, agentId, response, timestamp, agentMs, serverMs}`` (the agents' own
  time and the handler's, in ms) or ``{success: false, status, error}``
- ``subscribe {runId}`` -> ack ``{success, runId, status, events}`` (the events so far); the
  run's later events follow under their bus names (``step:completed`` …, each with ``seq``),
  then ``run:finished {runId, status}``. ``unsubscribe {runId}``.

Server -> client: ``tutor:intervention:required {reason, context}`` and ``content:adapted``.
"""

from __future__ import annotations

import hmac
import re
import time
from typing import Any

import socketio

from .._base.errors import OrchkitError
from ._schemas import LEARNER_ID, error_status
from ._service import AGENT_MS, KINDS, Service

_LEARNER = re.compile(LEARNER_ID)


def _fail(exc: BaseException) -> dict[str, Any]:
    return {"success": False, "status": error_status(exc), "error": str(exc)}


def build_sockets(
    service: Service,
    *,
    api_key: str | None,
    max_bytes: int,
    cors_origins: list[str] | str | None = None,
) -> socketio.AsyncServer:
    """The Socket.IO server, wired to ``service`` (it installs ``service.publish``)."""
    sio = socketio.AsyncServer(
        async_mode="asgi", max_http_buffer_size=max_bytes, cors_allowed_origins=cors_origins
    )  # None: same origin only

    async def publish(room: str, event: str, payload: dict[str, Any]) -> None:
        await sio.emit(event, payload, room=room)

    def listening(room: str) -> bool:
        return next(sio.manager.get_participants("/", room), None) is not None

    service.publish, service.listening = publish, listening

    @sio.event
    async def connect(sid: str, environ: dict, auth: Any = None) -> None:
        if not isinstance(auth, dict):
            raise socketio.exceptions.ConnectionRefusedError(
                "connect with auth {learnerId[, token]}"
            )
        learner = auth.get("learnerId")
        if not isinstance(learner, str) or not _LEARNER.match(learner):
            raise socketio.exceptions.ConnectionRefusedError(
                "auth.learnerId must be 1-128 characters of A-Z a-z 0-9 _ . @ : -, "
                f"got {learner!r:.60}"
            )
        if api_key is not None:
            token = auth.get("token")
            if not isinstance(token, str) or not hmac.compare_digest(
                token.encode(), api_key.encode()
            ):
                raise socketio.exceptions.ConnectionRefusedError(
                    "unauthorized: auth.token must be the server's ORCHKIT_API_KEY"
                )
        await sio.save_session(sid, {"learnerId": learner})
        await sio.enter_room(sid, f"learner:{learner}")

    def agent_handler(kind: str):
        async def handler(sid: str, data: Any = None) -> dict[str, Any]:
            learner = (await sio.get_session(sid))["learnerId"]
            if not isinstance(data, dict) or not isinstance(data.get("action"), str):
                return _fail(
                    ValueError(
                        f"agent:{kind} takes {{action, data}}; field 'action' must "
                        f"be a string, got {data!r:.80}"
                    )
                )
            payload = data.get("data", {})
            if not isinstance(payload, dict):
                return _fail(ValueError(f"field 'data' must be an object, got {payload!r:.80}"))
            acc, t0 = [0.0], time.perf_counter()
            token = AGENT_MS.set(acc)
            try:
                out = await service.agent_action(learner, kind, data["action"], payload)
            except (OrchkitError, ValueError, TypeError) as exc:
                return _fail(exc)
            finally:
                AGENT_MS.reset(token)
            return {**out, "agentMs": acc[0], "serverMs": (time.perf_counter() - t0) * 1000.0}

        return handler

    for kind in KINDS:
        sio.on(f"agent:{kind}", agent_handler(kind))

    @sio.on("subscribe")
    async def subscribe(sid: str, data: Any = None) -> dict[str, Any]:
        run_id = data.get("runId") if isinstance(data, dict) else None
        if not isinstance(run_id, str):
            return _fail(ValueError(f"subscribe takes {{runId}}; got {data!r:.80}"))
        try:
            rec = await service.get_run(run_id)
        except OrchkitError as exc:
            return _fail(exc)
        events = service.run_events(run_id)
        if events is not None:  # still in flight: later events come to the room
            await sio.enter_room(sid, f"run:{run_id}")
        return {
            "success": True,
            "runId": run_id,
            "status": rec["status"],
            "events": rec["events"] if events is None else events,
        }

    @sio.on("unsubscribe")
    async def unsubscribe(sid: str, data: Any = None) -> dict[str, Any]:
        run_id = data.get("runId") if isinstance(data, dict) else None
        if isinstance(run_id, str):
            await sio.leave_room(sid, f"run:{run_id}")
        return {"success": isinstance(run_id, str)}

    return sio
