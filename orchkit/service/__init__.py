"""The service (SPEC §8): ``orchkit serve`` — FastAPI + python-socketio on one ASGI app under
uvicorn, per-learner agents on one shared orchestrator, run records in SQLite or Redis.

Needs the ``server`` extra (``pip install 'orchkit[server]'``). Layers, top-down:
``_app`` (ASGI app, auth, body limit, error table) -> ``_routes`` / ``_sockets`` (thin
handlers) -> ``_service`` (the work, no HTTP) -> ``_store`` / ``_metrics``.
"""

from __future__ import annotations

import sys
from typing import Any

from .._base.deps import require
from .._spec.deployment import Deployment

for _module in ("fastapi", "socketio", "uvicorn", "prometheus_client"):
    require(_module, "the service (orchkit serve)")

from ._app import MAX_BODY_BYTES, create_app  # noqa: E402
from ._dashboard import AgentStats, agent_health, parse_since, run_page  # noqa: E402
from ._service import (  # noqa: E402
    ANSWERS_WRITE_MS,
    DEFAULT_CALL_TIMEOUT_MS,
    DEFAULT_IDLE_MS,
    AgentFactory,
    Service,
    default_agent_factory,  # noqa: E402
    load_factory,
)
from ._store import RedisStore, SQLiteStore, Store, open_store  # noqa: E402

__all__ = [
    "ANSWERS_WRITE_MS",
    "AgentFactory",
    "AgentStats",
    "DEFAULT_CALL_TIMEOUT_MS",
    "DEFAULT_IDLE_MS",
    "MAX_BODY_BYTES",
    "RedisStore",
    "SQLiteStore",
    "Service",
    "Store",
    "agent_health",
    "create_app",
    "default_agent_factory",
    "load_factory",
    "open_store",
    "parse_since",
    "run_page",
    "serve",
]


def deployment_notes(bundle: Deployment) -> list[str]:
    """What ``orchkit serve`` says at start-up about a bundle: which of its plans it runs,
    the built-in plan it falls back to, the capacities it gives."""
    notes = []
    if "session_initialization" in bundle.plans:
        notes.append(
            f"deployment {bundle.source}: start_session runs its session_initialization plan "
            f"'{bundle.plans['session_initialization'].id}'"
        )
    else:
        notes.append(
            f"deployment {bundle.source} has no session_initialization plan: start_session "
            "runs the built-in one"
        )
    if "process_interaction" in bundle.plans:
        notes.append(
            "its process_interaction plan is kept (GET /api/deployment) but interactions are "
            "direct calls on the learner's agent; it is not run"
        )
    caps = ", ".join(f"{p}={s['capacity']}" for p, s in bundle.agents.items()) or "none"
    notes.append(f"capacities: {caps}")
    return notes


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    store: str = "sqlite:///orchkit.db",
    idle_ms: float = DEFAULT_IDLE_MS,
    api_key: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    agent_factory: AgentFactory | str | None = None,
    policies: Any = None,
    cors_origins: list[str] | None = None,
    call_timeout_ms: float = DEFAULT_CALL_TIMEOUT_MS,
    log_level: str = "info",
    deployment: Any = None,
) -> None:
    """Run the service under uvicorn until interrupted (Ctrl-C / SIGTERM stop it cleanly:
    runs in flight are recorded ``interrupted``). ``store`` is ``sqlite:///FILE`` or
    ``redis://HOST:PORT/DB``; ``agent_factory(kind, agent_id)`` makes the agents (or
    ``"module:function"`` naming one); ``policies`` (a file, dict or ``ok.Policies``) puts
    circuit breakers on the agents of plan runs; browsers on ``cors_origins`` may call it;
    ``call_timeout_ms`` bounds every request that waits for agents (``Service``);
    ``deployment`` (an ``ok.Deployment`` or its file) gives the session-initialisation plan,
    the agents' capacities and the policies (SPEC §14)."""
    import asyncio
    import gc

    import uvicorn

    from ._service import _warm_up

    if isinstance(agent_factory, str):
        agent_factory = load_factory(agent_factory)
    probe = open_store(store)  # a bad URL or an unreachable store fails here, in one line

    async def check() -> None:
        await probe.open()
        await probe.close()

    asyncio.run(check())
    if deployment is not None and not isinstance(deployment, Deployment):
        deployment = Deployment.load(deployment)
    if deployment is not None:
        for line in deployment_notes(deployment):
            print(f"orchkit serve: {line}", file=sys.stderr)
    service = Service(
        open_store(store),
        agent_factory=agent_factory,
        idle_ms=idle_ms,
        policies=policies,
        call_timeout_ms=call_timeout_ms,
        deployment=deployment,
    )
    app = create_app(
        service, api_key=api_key, max_body_bytes=max_body_bytes, cors_origins=cors_origins
    )
    if service.agent_factory is default_agent_factory:
        _warm_up()  # train the learning agents' model before the port opens (~1-4 s)
    # What start-up made (libraries, the trained model) lives as long as the process: moved
    # out of the GC's sight, a full collection no longer walks it (~190k objects, 126 ms per
    # collection here, which showed as 200 ms p99 spikes under load).
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app, host=host, port=port, log_level=log_level, lifespan="on", timeout_keep_alive=30
    )
