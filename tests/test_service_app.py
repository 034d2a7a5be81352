"""The service app in-process (httpx over ASGI, lifespan run): CORS for a browser origin,
and circuit-breaker state in GET /api/agents."""

from __future__ import annotations

import asyncio

import httpx
from asgi_lifespan import LifespanManager

from orchkit.service import Service, SQLiteStore, create_app
from orchkit.testing import Fail, ScriptedAgent


def failing(kind, agent_id):
    return ScriptedAgent(agent_id, {}, default=Fail(0, "down", retryable=False))


async def test_breakers_show_in_the_agent_list_and_cors_lets_the_front_end_in(tmp_path):
    svc = Service(SQLiteStore(tmp_path / "o.db"), agent_factory=failing,
                  policies={"breakers": {"tutor-agent-*": {"window": 2, "minCalls": 2,
                                                           "failureRate": 0.5}}})
    app = create_app(svc, api_key=None, cors_origins=["http://localhost:3000"])
    plan = {"id": "p", "steps": [{"id": "a", "agentId": "tutor-agent-b", "action": "x"}]}
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            for _ in range(2):
                rid = (await c.post("/api/runs", json=plan)).json()["runId"]
                while (await c.get(f"/api/runs/{rid}")).json()["status"] == "running":
                    await asyncio.sleep(0.01)  # let the run's task go on
            agents = (await c.get("/api/agents")).json()["agents"]
            assert [(a["id"], a["breaker"]) for a in agents] == [("tutor-agent-b", "open")]
            pre = await c.options("/api/agents", headers={
                "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"})
            assert pre.headers["access-control-allow-origin"] == "http://localhost:3000"
            other = await c.options("/api/agents", headers={
                "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
            assert "access-control-allow-origin" not in other.headers
