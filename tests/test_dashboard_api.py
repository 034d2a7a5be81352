"""The JSON behind the dashboard (SPEC §15.4) and its pages' plumbing, without a browser:
run pages with filters and keyset cursors in both stores (checked against a brute-force
answer, ties on createdMs included), the SQLite page query on its indexes, the agents'
5-minute figures, and the app's routes: `/` redirects, the pages and their hooks, `/docs`
and every script served from this machine."""

from __future__ import annotations

import asyncio
import random
import re
import uuid

import httpx
import pytest
from asgi_lifespan import LifespanManager

from orchkit.service import RedisStore, Service, SQLiteStore, create_app
from orchkit.testing import Fail, Ok, ScriptedAgent

STATUSES = ["running", "succeeded", "failed", "timed_out", "cancelled", "interrupted"]


@pytest.fixture(params=["sqlite", "redis"])
async def store(request, tmp_path):
    if request.param == "sqlite":
        s = SQLiteStore(tmp_path / "o.db")
    else:
        server = request.getfixturevalue("redis_server")
        s = RedisStore(server.url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def _record(i: int, rng: random.Random) -> dict:
    t = 1_000_000.0 + rng.randrange(60) * 10.0  # many ties on createdMs
    return {
        "runId": f"r{i:04d}",
        "planId": rng.choice(["alpha", "beta", "gamma"]),
        "status": rng.choice(STATUSES),
        "kind": rng.choice(["api", "session"]),
        "learnerId": rng.choice([None, "ana", "bo"]),
        "createdMs": t,
        "createdAt": "2026-01-01T00:00:00.000Z",
        "error": None,
        "spans": [{"big": "x" * 50}],
        "events": [],
    }


async def _all_pages(store, limit, **filters):
    out, cursor, pages = [], None, 0
    while True:
        page, cursor = await store.page_runs(limit=limit, cursor=cursor, **filters)
        assert len(page) <= limit
        out += page
        pages += 1
        if cursor is None:
            return out, pages
        assert pages < 1000


async def test_pages_of_runs_are_newest_first_filtered_and_cursors_lose_nothing(store):
    rng = random.Random(7)
    recs = [_record(i, rng) for i in range(300)]
    for r in recs:
        await store.save_run(r)
    expected_order = sorted(recs, key=lambda r: (r["createdMs"], r["runId"]), reverse=True)
    cases = [
        {},
        {"status": "failed"},
        {"plan_id": "beta"},
        {"learner_id": "ana"},
        {"status": "succeeded", "plan_id": "alpha", "learner_id": "bo"},
        {"since_ms": 1_000_300.0},
        {"plan_id": "nope"},
    ]
    for filters in cases:
        want = [
            r["runId"]
            for r in expected_order
            if r["status"] == filters.get("status", r["status"])
            and r["planId"] == filters.get("plan_id", r["planId"])
            and r["learnerId"] == filters.get("learner_id", r["learnerId"])
            and r["createdMs"] >= filters.get("since_ms", 0)
        ]
        for limit in (1, 7, 100, 1000):
            got, pages = await _all_pages(store, limit, **filters)
            assert [r["runId"] for r in got] == want, (filters, limit)
            assert pages == max(1, -(-len(want) // limit)), (filters, limit)  # no empty last page
    first, cursor = await store.page_runs(limit=2)
    assert set(first[0]) == {
        "runId",
        "planId",
        "status",
        "kind",
        "learnerId",
        "createdAt",
        "createdMs",
        "finishedAt",
        "durationMs",
        "error",
    }  # summaries: never the spans or events
    with pytest.raises(ValueError, match="parameter 'cursor'"):
        await store.page_runs(cursor="not-a-cursor")


async def test_a_run_that_ends_keeps_its_place_and_a_new_one_goes_first(store):
    for i in range(5):
        await store.save_run({**_record(i, random.Random(i)), "createdMs": 100.0 + i})
    page, cursor = await store.page_runs(limit=2)
    assert [r["runId"] for r in page] == ["r0004", "r0003"]
    await store.save_run({**_record(9, random.Random(9)), "createdMs": 500.0})  # newer
    await store.save_run({**page[1], "status": "failed", "spans": []})  # r0003 ends
    rest, _ = await store.page_runs(limit=10, cursor=cursor)
    assert [r["runId"] for r in rest] == ["r0002", "r0001", "r0000"]  # the cursor holds
    top, _ = await store.page_runs(limit=2)
    assert [r["runId"] for r in top] == ["r0009", "r0004"]


async def test_the_sqlite_page_query_reads_an_index_not_every_run(tmp_path):
    s = SQLiteStore(tmp_path / "o.db")
    await s.open()
    try:
        db = s._db  # the store's own page queries, as SQLite plans them
        seen: list[str] = []
        db.set_trace_callback(seen.append)
        cursor = "WzEwMDAuMCwicjEiXQ"  # [1000.0, "r1"]
        for filters, index in [
            ({}, "runs_by_time"),
            ({"cursor": cursor, "since_ms": 5.0}, "runs_by_time"),
            ({"status": "failed"}, "runs_by_status"),
            ({"plan_id": "p", "cursor": cursor}, "runs_by_plan"),
            ({"learner_id": "a"}, "runs_by_learner"),
        ]:
            seen.clear()
            await s.page_runs(limit=100, **filters)
            (sql,) = [q for q in seen if q.startswith("SELECT")]
            plan = " ".join(str(r[-1]) for r in db.execute("EXPLAIN QUERY PLAN " + sql))
            assert index in plan and not re.search(r"SCAN runs(?! USING)", plan), (sql, plan)
    finally:
        await s.close()


def test_agent_stats_keep_five_minutes_and_take_the_nearest_rank_p95():
    from orchkit.service import AgentStats

    st = AgentStats(window_ms=300_000.0)
    for i in range(1, 101):  # 1..100 ms, every 10th failed, at t = 0..99 s
        st.observe("a", float(i), "error" if i % 10 == 0 else "succeeded", at_ms=i * 1000.0)
    p95, err = st.window("a", now_ms=100_000.0)
    assert p95 == 95.0 and err == pytest.approx(0.1)
    p95, err = st.window("a", now_ms=350_500.0)  # only t >= 50.5 s are left: 51..100 ms
    assert p95 == 98.0 and err == pytest.approx(5 / 50)
    assert st.window("a", now_ms=10_000_000.0) == (None, 0.0)
    assert st.window("never", now_ms=0.0) == (None, 0.0)
    # plan attempts come from the bus: started -> completed / failed, by job id
    st.on_event("step:started", {"jobId": "r:p:s:1", "agentId": "b", "timeMs": 10.0})
    st.on_event("queue:failed", {"jobId": "r:p:s:1", "agentId": "b", "timeMs": 35.0})
    st.on_event("step:started", {"jobId": "r:p:s:2", "agentId": "b", "timeMs": 40.0})
    st.on_event("step:completed", {"jobId": "r:p:s:2", "agentId": "b", "timeMs": 45.0})
    st.on_event("queue:failed", {"jobId": "r:p:t:1", "agentId": "b", "timeMs": 50.0})  # rejected
    p95, err = st.window("b")
    assert p95 == 25.0 and err == 0.5


def test_since_takes_ms_or_iso_8601_with_a_zone():
    from orchkit.service import parse_since

    assert parse_since(None) is None and parse_since("") is None
    assert parse_since("1500") == 1500.0 and parse_since(2.5) == 2.5
    assert parse_since("1970-01-01T00:00:01Z") == 1000.0
    for bad in ("yesterday", "2026-01-01T00:00:00", "nan", "inf"):
        with pytest.raises(ValueError, match="parameter 'since'"):
            parse_since(bad)


def _factory(kind, agent_id):
    if "down" in agent_id:
        return ScriptedAgent(agent_id, {}, default=Fail(2, "disk full", retryable=False))
    return ScriptedAgent(agent_id, {}, default=Ok(5), capacity=3)


async def _client(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_the_api_pages_runs_and_reports_agent_health(tmp_path):
    svc = Service(SQLiteStore(tmp_path / "o.db"), agent_factory=_factory)
    app = create_app(svc, api_key="k")
    auth = {"Authorization": "Bearer k"}
    plan = {"id": "p", "steps": [{"id": "a", "agentId": "tutor-agent-x", "action": "x"}]}
    bad = {"id": "q", "steps": [{"id": "a", "agentId": "tutor-agent-down", "action": "x"}]}
    async with LifespanManager(app), await _client(app) as c:
        ids = []
        for body in (plan, bad, plan):
            ids.append((await c.post("/api/runs", json=body, headers=auth)).json()["runId"])
            while (await c.get(f"/api/runs/{ids[-1]}", headers=auth)).json()["status"] == "running":
                await asyncio.sleep(0.01)
        assert (await c.get("/api/runs")).status_code == 401
        page = (await c.get("/api/runs?limit=2", headers=auth)).json()
        assert [r["runId"] for r in page["runs"]] == ids[::-1][:2] and page["nextCursor"]
        rest = (await c.get(f"/api/runs?limit=2&cursor={page['nextCursor']}", headers=auth)).json()
        assert [r["runId"] for r in rest["runs"]] == [ids[0]] and rest["nextCursor"] is None
        failed = (await c.get("/api/runs?status=failed&planId=q", headers=auth)).json()
        assert [r["runId"] for r in failed["runs"]] == [ids[1]]
        assert (await c.get("/api/runs?planId=p&since=2999-01-01T00:00:00Z", headers=auth)).json()[
            "runs"
        ] == []
        for query, field in [
            ("cursor=zzz", "cursor"),
            ("since=soon", "since"),
            ("limit=1001", "limit"),
            ("status=done", "status"),
        ]:
            r = await c.get(f"/api/runs?{query}", headers=auth)
            assert r.status_code == 422 and field in r.json()["detail"], r.text
        health = (await c.get("/api/agents/health", headers=auth)).json()
        by_id = {a["agentId"]: a for a in health}
        assert set(by_id) == {"tutor-agent-x", "tutor-agent-down"}
        x, down = by_id["tutor-agent-x"], by_id["tutor-agent-down"]
        assert x["kind"] == "tutor" and x["capacity"] == 3 and x["inFlight"] == 0
        assert x["errorRate5m"] == 0.0 and 4.0 <= x["p95Ms5m"] < 200.0
        assert down["errorRate5m"] == 1.0 and down["breaker"] is None
        assert (
            x["workers"][0]["id"].startswith("in-process") and x["workers"][0]["concurrency"] == 3
        )
        assert (await c.get("/api/agents/health")).status_code == 401


async def test_pages_hooks_docs_and_scripts_are_all_served_from_here(tmp_path):
    svc = Service(SQLiteStore(tmp_path / "o.db"), agent_factory=_factory)
    for key in (None, "k"):
        app = create_app(svc, api_key=key)
        async with LifespanManager(app), await _client(app) as c:
            root = await c.get("/", follow_redirects=False)
            assert 300 <= root.status_code < 400 and root.headers["location"] == "/ui/runs"
            pages = {p: (await c.get(p)).text for p in ("/ui/runs", "/ui/runs/r1", "/ui/agents")}
            for hook in ("runs-table", "status-filter", "next-page"):
                assert f'data-testid="{hook}"' in pages["/ui/runs"]
            for hook in ("gantt", "dag", "attempts-table"):
                assert f'data-testid="{hook}"' in pages["/ui/runs/r1"]
            assert 'data-testid="agents-table"' in pages["/ui/agents"]
            for text in pages.values():  # the key input only when a key is needed
                assert ('data-testid="api-key"' in text) == (key is not None)
            docs = (await c.get("/docs")).text
            assert "/ui/vendor/swagger/swagger-ui-bundle.js" in docs
            assert (await c.get("/redoc")).status_code == 404  # it would need a CDN
            schema = (await c.get("/openapi.json")).json()
            assert "/api/agents/health" in schema["paths"] and "/ui/runs" not in schema["paths"]
            sources = set()
            for text in [*pages.values(), docs]:
                sources |= set(re.findall(r'(?:src|href)="([^"]+)"', text))
            external = [s for s in sources if "//" in s]
            assert external == [], external
            for src in sorted(sources):
                if src.startswith("/ui/") and not src.startswith("/ui/runs"):
                    r = await c.get(src)
                    assert r.status_code == 200 and len(r.content) > 200, src
                    assert b"https://cdn" not in r.content[:100_000], src
            plotly = await c.get("/ui/vendor/plotly.min.js")
            assert plotly.status_code == 200 and len(plotly.content) > 3_000_000
            sio = (await c.get("/ui/static/vendor/socket.io.min.js")).text
            assert sio.startswith("/*!\n * Socket.IO v4") and "MIT License" in sio[:200]


async def test_agent_health_names_the_workers_on_a_remote_agents_queue(redis_server, tmp_path):
    import time

    import bullmq

    import orchkit as ok
    from orchkit.service import agent_health

    queue = f"q-{uuid.uuid4().hex[:8]}"
    svc = Service(SQLiteStore(tmp_path / "o.db"), agent_factory=_factory)
    await svc.start()
    worker = None
    try:
        await svc.orch.register_agent(
            ok.RemoteAgent("tutor-agent-far", redis_server.url, queue=queue)
        )
        (row,) = await agent_health(svc)
        assert row["agentId"] == "tutor-agent-far" and row["workers"] == []

        async def work(job, token):
            return {"action": job.name, "confidence": 1.0}

        worker = bullmq.Worker(queue, work, {"connection": redis_server.url, "name": "w1"})
        deadline = time.monotonic() + 10
        while not row["workers"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            (row,) = await agent_health(svc)
        (w,) = row["workers"]  # its two connections are one worker
        assert w["id"] == "127.0.0.1 w1" and w["concurrency"] is None
        assert abs(time.time() * 1000.0 - w["lastSeenMs"]) < 5000
    finally:
        if worker is not None:
            await worker.close()
        await svc.stop()


async def test_agent_health_shows_the_capacity_in_force_and_the_admission_limit(tmp_path):
    """With overload policies (SPEC §17) each agent's row has ``capacityNow`` (an
    autoscaled agent: the capacity in force, here its own 3 raised to the autoscaler's
    min 4) and ``admissionLimit`` (the usable limit); an agent without rules shows its
    capacity and no limit."""
    policies = {
        "admission": {"tutor-agent-*": {"limit": {"kind": "fixed", "limit": 2}}},
        "autoscale": {"tutor-agent-*": {"target": 1, "min": 4, "max": 6, "pollMs": 600_000}},
    }
    svc = Service(SQLiteStore(tmp_path / "o.db"), agent_factory=_factory, policies=policies)
    app = create_app(svc, api_key="k")
    auth = {"Authorization": "Bearer k"}
    plan = {
        "id": "p",
        "steps": [
            {"id": "a", "agentId": "tutor-agent-x", "action": "x"},
            {"id": "b", "agentId": "learning-agent-y", "action": "x"},
        ],
    }
    async with LifespanManager(app), await _client(app) as c:
        rid = (await c.post("/api/runs", json=plan, headers=auth)).json()["runId"]
        while (await c.get(f"/api/runs/{rid}", headers=auth)).json()["status"] == "running":
            await asyncio.sleep(0.01)
        health = (await c.get("/api/agents/health", headers=auth)).json()
        by_id = {a["agentId"]: a for a in health}
        tutor, other = by_id["tutor-agent-x"], by_id["learning-agent-y"]
        assert (tutor["capacity"], tutor["capacityNow"], tutor["admissionLimit"]) == (3, 4, 2)
        assert (other["capacity"], other["capacityNow"], other["admissionLimit"]) == (3, 3, None)
        page = (await c.get("/ui/agents", headers=auth)).text
        assert "Capacity now" in page and "Admission limit" in page
