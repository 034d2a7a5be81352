"""Hardening, round 2 (issue 19): the service under races and store outages, with real
concurrent clients against a real `orchkit serve` process.

The rules tested here (docs/guides/service.md, "Failure semantics in the service and on queues"):
- every operation on one learner (start_session, process_interaction, an agent action,
  end_session, the tutor's follow-up to an insight, the idle release) runs alone, in
  arrival order: end_session waits for the learner's calls in flight, and no answer is a
  500 or leaves an agent registered after the learner's last end_session;
- a request refused as invalid (422) leaves nothing behind;
- every DELETE /api/runs/{id} of a run in flight answers 200 with the run's final record
  (one cancellation, however many ask); once the run has ended, 409;
- a run's outcome reaches the store even when the store is down for longer than its retry
  window: it is kept and retried until written, GET answers it meanwhile, and /healthz
  says "degraded" until the store has it.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import signal
import time
import uuid

import httpx
import pytest
from redis_server import RedisServer
from service_harness import ServiceProcess

pytestmark = pytest.mark.timeout(120)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def client(srv: ServiceProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=srv.url,
        headers=srv.headers,
        timeout=60,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
    )


def agents_of(agents: list[dict], learner: str) -> list[str]:
    return [a["id"] for a in agents if a["learnerId"] == learner or f"-{learner}-" in a["id"]]


def is_json(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith("application/json")


# ------------------------------------------------------------------ sessions


async def test_concurrent_starts_calls_and_ends_for_one_learner_never_500_nor_leak(
    service_server,
):
    """200 requests for one learner from 10 concurrent clients (a quarter end_session, some
    calls, the rest start_session): every answer is 200 or 409 (no session), in JSON;
    after a last end_session none of the learner's agents is registered."""
    learner = uid("race")
    rng = random.Random(19)
    actions = [
        "end_session" if i % 4 == 3 else "process_interaction" if i % 8 == 1 else "start_session"
        for i in range(200)
    ]
    rng.shuffle(actions)
    answers: list[tuple[str, httpx.Response]] = []

    async def one_client(c: httpx.AsyncClient, mine: list[str]) -> None:
        for action in mine:
            data = (
                {"activityId": "addition-d1-01", "response": {"answer": "wrong"}}
                if action == "process_interaction"
                else {"subject": "mathematics", "gradeLevel": 5}
                if action == "start_session"
                else {}
            )
            body = {"action": action, "learnerId": learner, "data": data}
            answers.append((action, await c.post("/api/agents", json=body)))

    async with client(service_server) as c:
        await asyncio.gather(*(one_client(c, actions[k::10]) for k in range(10)))
        bad = [
            (action, r.status_code, r.text[:200])
            for action, r in answers
            if r.status_code not in (200, 409) or not is_json(r)
        ]
        assert bad == []
        for action, r in answers:
            if r.status_code == 409:
                assert action != "start_session" and "no active session" in r.json()["detail"]
        ends = sum(1 for a, r in answers if a == "end_session" and r.status_code == 200)
        starts = sum(1 for a, r in answers if a == "start_session" and r.status_code == 200)
        assert 1 <= ends <= starts
        last = await c.post(
            "/api/agents", json={"action": "end_session", "learnerId": learner, "data": {}}
        )
        assert last.status_code in (200, 409), last.text
        agents = (await c.get("/api/agents")).json()["agents"]
        assert agents_of(agents, learner) == []


async def test_end_session_waits_for_the_learners_call_in_flight(service_server):
    """end_session sent while an agent call of the learner runs (800 ms) answers after it,
    and the call succeeds: a release never cuts a call short."""
    learner = uid("slow")  # the test factory gives this learner SleepyAgents
    async with client(service_server) as c:
        start = await c.post(
            "/api/agents", json={"action": "start_session", "learnerId": learner, "data": {}}
        )
        assert start.status_code == 200, start.text
        done: dict[str, float] = {}

        async def post(name: str, body: dict) -> httpx.Response:
            r = await c.post("/api/agents", json=body)
            done[name] = time.monotonic()
            return r

        call = asyncio.ensure_future(
            post(
                "call",
                {
                    "action": "sleep",
                    "agent": "learning",
                    "learnerId": learner,
                    "data": {"ms": 800},
                },
            )
        )
        await asyncio.sleep(0.2)
        end = await post("end", {"action": "end_session", "learnerId": learner, "data": {}})
        first = await call
        assert first.status_code == 200 and first.json()["response"]["data"]["sleptMs"] == 800
        assert end.status_code == 200, end.text
        assert done["end"] >= done["call"], "end_session answered before the call ended"
        after = await c.post(
            "/api/agents",
            json={"action": "process_interaction", "learnerId": learner, "data": {}},
        )
        assert after.status_code == 409
        assert agents_of((await c.get("/api/agents")).json()["agents"], learner) == []


NAN_BODY = '{"action": "%s", "learnerId": "%s", "data": {"subject": "maths", "score": NaN}}'


async def test_a_request_refused_as_invalid_leaves_nothing_behind(service_server):
    """start_session with a NaN in data is a 422 naming the field, and no agent or session
    of the learner exists afterwards; a call with a NaN is refused before any agent runs."""
    learner = uid("nan")
    async with client(service_server) as c:
        r = await c.post(
            "/api/agents",
            content=NAN_BODY % ("start_session", learner),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422, r.text
        assert "data" in r.json()["detail"] and "score" in r.json()["detail"], r.text
        assert agents_of((await c.get("/api/agents")).json()["agents"], learner) == []
        later = await c.post(
            "/api/agents",
            json={"action": "process_interaction", "learnerId": learner, "data": {}},
        )
        assert later.status_code == 409, later.text
        state = (await c.get(f"/api/learners/{learner}")).json()
        assert state["session"] is None and state["insights"] == []

        ok = await c.post(
            "/api/agents", json={"action": "start_session", "learnerId": learner, "data": {}}
        )
        assert ok.status_code == 200, ok.text
        for action in ("process_interaction",):
            r = await c.post(
                "/api/agents",
                content=NAN_BODY % (action, learner),
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 422 and "score" in r.json()["detail"], r.text
        assert (await c.get(f"/api/learners/{learner}")).json()["insights"] == []
        end = await c.post(
            "/api/agents", json={"action": "end_session", "learnerId": learner, "data": {}}
        )
        assert end.status_code == 200, end.text


# ------------------------------------------------------------------ cancelling runs


def slow_plan(ms: float = 5000) -> dict:
    agent = f"learning-agent-slow-{uuid.uuid4().hex[:6]}"
    return {
        "id": "slow",
        "steps": [{"id": "s", "agentId": agent, "action": "sleep", "input": {"ms": ms}}],
    }


async def wait_started(c: httpx.AsyncClient, run_id: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rec = (await c.get(f"/api/runs/{run_id}")).json()
        if any(e["event"] == "step:started" for e in rec["events"]):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {run_id} did not start")


async def test_twenty_simultaneous_deletes_of_one_run_all_answer_its_final_record(tmp_path):
    """20 DELETEs of one running run, spread over the time its record takes to reach the
    store (a Redis store, paused with SIGSTOP for 1 s, makes that time long): every
    answer is 200 with the final record (status cancelled), in JSON; a later DELETE, 409."""
    server = RedisServer(tmp_path / "redis")
    srv = None
    try:
        srv = ServiceProcess(server.url, log=tmp_path / "server.log")
        async with client(srv) as c:
            for _ in range(2):
                run_id = (await c.post("/api/runs", json=slow_plan())).json()["runId"]
                await wait_started(c, run_id)

                async def delete(i: int, run_id: str = run_id) -> httpx.Response:
                    await asyncio.sleep(0.01 * i)  # over the first one's clean-up
                    return await c.delete(f"/api/runs/{run_id}")

                os.kill(server.proc.pid, signal.SIGSTOP)
                try:
                    answers = asyncio.gather(*(delete(i) for i in range(20)))
                    await asyncio.sleep(1.0)
                finally:
                    os.kill(server.proc.pid, signal.SIGCONT)
                answers = await answers
                assert all(is_json(r) for r in answers), [r.text[:100] for r in answers]
                codes = [r.status_code for r in answers]
                assert codes == [200] * 20, codes
                for r in answers:
                    assert r.json()["status"] == "cancelled" and r.json()["runId"] == run_id
                rec = (await c.get(f"/api/runs/{run_id}")).json()
                assert rec["status"] == "cancelled" and rec["finishedAt"]
                again = await c.delete(f"/api/runs/{run_id}")
                assert again.status_code == 409 and "already ended (cancelled)" in again.text
    finally:
        if srv is not None:
            srv.stop()
        if server.proc is not None and server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


# ------------------------------------------------------------------ store outage


def test_a_run_that_ends_while_the_redis_store_is_down_reaches_it_when_it_returns(tmp_path):
    """The Redis store (retry window 1 s here) goes away while a run is in flight and stays
    away for 4 windows: the run's outcome is answered from memory, /healthz says degraded,
    and once Redis is back the record is written (the server restarted later answers it
    succeeded, not interrupted)."""
    import redis

    server = RedisServer(tmp_path / "redis", aof=True)
    srv = None
    try:
        srv = ServiceProcess(
            f"{server.url}?retry_ms=1000", log=tmp_path / "server.log", api_key="k"
        )
        h = srv.headers
        health = httpx.get(srv.url + "/healthz").json()
        assert health["status"] == "ok" and health["unsavedRecords"] == 0
        run_id = httpx.post(srv.url + "/api/runs", json=slow_plan(1500), headers=h).json()["runId"]
        server.stop()  # Redis goes away mid-run
        t0 = time.monotonic()
        degraded = None
        while time.monotonic() - t0 < 15:
            health = httpx.get(srv.url + "/healthz", timeout=10).json()
            if health["status"] == "degraded" and health["unsavedRecords"] >= 1:
                degraded = health
                break
            time.sleep(0.1)
        assert degraded is not None, health
        assert degraded["storeError"]
        rec = httpx.get(f"{srv.url}/api/runs/{run_id}", headers=h, timeout=10).json()
        assert rec["status"] == "succeeded", rec
        time.sleep(max(0.0, 4.0 - (time.monotonic() - t0)))  # 4 retry windows down
        server.start()
        t1 = time.monotonic()
        while time.monotonic() - t1 < 15:
            health = httpx.get(srv.url + "/healthz", timeout=10).json()
            if health["status"] == "ok":
                break
            time.sleep(0.1)
        assert health["status"] == "ok" and health["unsavedRecords"] == 0, health
        stored = json.loads(redis.Redis.from_url(server.url).get(f"orchkit:run:{run_id}"))
        assert stored["status"] == "succeeded" and stored["result"]["success"] is True
        srv.stop()
        srv.start()
        rec = httpx.get(f"{srv.url}/api/runs/{run_id}", headers=h).json()
        assert rec["status"] == "succeeded", rec
    finally:
        if srv is not None:
            srv.stop()
        server.stop()


def test_healthz_stays_ok_and_json_when_the_store_is_fine(service_server):
    health = httpx.get(service_server.url + "/healthz").json()
    assert health["status"] == "ok" and health["unsavedRecords"] == 0
    assert health["storeError"] is None and math.isfinite(health["uptimeMs"])
