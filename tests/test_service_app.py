"""The service app in-process (httpx over ASGI, lifespan run): CORS for a browser origin,
and circuit-breaker state in GET /api/agents."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from asgi_lifespan import LifespanManager

from orchkit.service import Service, SQLiteStore, create_app
from orchkit.testing import Fail, ScriptedAgent


def failing(kind, agent_id):
    return ScriptedAgent(agent_id, {}, default=Fail(0, "down", retryable=False))


async def test_breakers_show_in_the_agent_list_and_cors_lets_the_front_end_in(tmp_path):
    svc = Service(
        SQLiteStore(tmp_path / "o.db"),
        agent_factory=failing,
        policies={"breakers": {"tutor-agent-*": {"window": 2, "minCalls": 2, "failureRate": 0.5}}},
    )
    app = create_app(svc, api_key=None, cors_origins=["http://localhost:3000"])
    plan = {"id": "p", "steps": [{"id": "a", "agentId": "tutor-agent-b", "action": "x"}]}
    async with LifespanManager(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            for _ in range(2):
                rid = (await c.post("/api/runs", json=plan)).json()["runId"]
                while (await c.get(f"/api/runs/{rid}")).json()["status"] == "running":
                    await asyncio.sleep(0.01)  # let the run's task go on
            agents = (await c.get("/api/agents")).json()["agents"]
            assert [(a["id"], a["breaker"]) for a in agents] == [("tutor-agent-b", "open")]
            pre = await c.options(
                "/api/agents",
                headers={
                    "Origin": "http://localhost:3000",
                    "Access-Control-Request-Method": "POST",
                },
            )
            assert pre.headers["access-control-allow-origin"] == "http://localhost:3000"
            other = await c.options(
                "/api/agents",
                headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
            )
            assert "access-control-allow-origin" not in other.headers


def test_orchkit_serve_policies_file_puts_breakers_on_plan_runs(tmp_path):
    from service_harness import ServiceProcess

    (tmp_path / "pol.yaml").write_text(
        "breakers:\n  speech-agent-*: {window: 2, minCalls: 2, failureRate: 0.5, openMs: 60000}\n"
    )
    srv = ServiceProcess(
        f"sqlite:///{tmp_path}/o.db",
        extra=["--policies", str(tmp_path / "pol.yaml")],
        log=tmp_path / "server.log",
    )
    plan = {"id": "p", "steps": [{"id": "a", "agentId": "speech-agent-slow-p", "action": "dance"}]}
    try:
        with httpx.Client(base_url=srv.url, timeout=20) as http:
            outcomes = []
            for _ in range(3):  # two failed calls open it; the third is rejected uncalled
                rid = http.post("/api/runs", json={"plan": plan}).json()["runId"]
                outcomes.append(srv.wait_run(http, rid)["spans"][0]["outcome"])
            assert outcomes == ["error", "error", "rejected"]
            (agent,) = [
                a
                for a in http.get("/api/agents").json()["agents"]
                if a["id"] == "speech-agent-slow-p"
            ]
            assert agent["breaker"] == "open"
    finally:
        srv.stop()


def hanging(kind, agent_id):
    from orchkit.testing import Hang

    return ScriptedAgent(agent_id, {}, default=Hang())


async def test_a_request_never_hangs_on_an_agent_that_does_not_answer(tmp_path):
    """call_timeout_ms bounds direct agent calls (503, naming agent and action) and is the
    session-initialisation plan's deadline: the request answers, the session is not ready."""
    svc = Service(SQLiteStore(tmp_path / "o.db"), agent_factory=hanging, call_timeout_ms=300)
    app = create_app(svc, api_key=None)
    async with LifespanManager(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            start = await asyncio.wait_for(
                c.post(
                    "/api/agents", json={"action": "start_session", "learnerId": "l1", "data": {}}
                ),
                10,
            )
            assert start.status_code == 200, start.text
            body = start.json()
            assert body["status"] != "ready" and body["orchestration"]["success"] is False
            call = await asyncio.wait_for(
                c.post(
                    "/api/agents",
                    json={
                        "action": "process_interaction",
                        "learnerId": "l1",
                        "data": {"activityId": "a1", "correct": True},
                    },
                ),
                10,
            )
            assert call.status_code == 503, call.text
            assert "did not answer within 300 ms" in call.json()["detail"]
    with pytest.raises(ValueError, match="call_timeout_ms"):
        Service(SQLiteStore(tmp_path / "p.db"), call_timeout_ms=0)
