"""The service's stores (SQLite and a real Redis) and what survives restarts: of the server
(SIGTERM and SIGKILL) and of Redis with AOF in the middle of a stream of runs."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis_server import RedisServer
from service_harness import ServiceProcess

import orchkit as ok
from orchkit.service import RedisStore, Service, SQLiteStore, open_store
from orchkit.testing import Ok, ScriptedAgent


@pytest.fixture(params=["sqlite", "redis"])
async def store(request, tmp_path):
    if request.param == "sqlite":
        s = SQLiteStore(tmp_path / "o.db", insights_kept=3)
    else:
        server = request.getfixturevalue("redis_server")
        s = RedisStore(server.url, prefix=f"t{uuid.uuid4().hex[:8]}:", insights_kept=3)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def run(rid, status, t, **extra):
    return {"runId": rid, "status": status, "createdMs": t, "planId": "p", **extra}


async def test_store_contract_runs_sessions_insights(store):
    for i, status in enumerate(["succeeded", "running", "failed", "running", "succeeded"]):
        await store.save_run(run(f"r{i}", status, 1000.0 + i, spans=[{"x": i}]))
    assert await store.get_run("nope") is None
    assert (await store.get_run("r2"))["spans"] == [{"x": 2}]
    assert [r["runId"] for r in await store.list_runs()] == ["r4", "r3", "r2", "r1", "r0"]
    assert [r["runId"] for r in await store.list_runs("succeeded")] == ["r4", "r0"]
    assert [r["runId"] for r in await store.list_runs(limit=2)] == ["r4", "r3"]
    await store.save_run(run("r3", "succeeded", 1003.0))  # a running run ends
    assert sorted(await store.interrupt_running(5000.0)) == ["r1"]
    r1 = await store.get_run("r1")
    assert r1["status"] == "interrupted" and r1["finishedMs"] == 5000.0 and "stopped" in r1["error"]
    assert await store.interrupt_running(6000.0) == []
    assert [r["runId"] for r in await store.list_runs("interrupted")] == ["r1"]

    await store.save_session({"learnerId": "a", "status": "active", "sessionId": "s1"})
    await store.save_session({"learnerId": "b", "status": "ended", "sessionId": "s2"})
    await store.save_session({"learnerId": "a", "status": "active", "sessionId": "s3"})
    assert (await store.get_session("a"))["sessionId"] == "s3"
    assert await store.get_session("zed") is None
    assert [s["learnerId"] for s in await store.list_sessions()] == ["a", "b"]
    assert [s["learnerId"] for s in await store.list_sessions("ended")] == ["b"]

    for i in range(5):
        await store.add_insight("a", {"type": "struggling_detected", "n": i})
    assert [x["n"] for x in await store.list_insights("a")] == [4, 3, 2]  # newest 3 kept
    assert [x["n"] for x in await store.list_insights("a", limit=1)] == [4]
    assert await store.list_insights("b") == []


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def test_sqlite_store_round_trips_any_json_record():
    loop = asyncio.new_event_loop()
    s = SQLiteStore(":memory:")
    loop.run_until_complete(s.open())

    @settings(max_examples=60, derandomize=True, deadline=None)
    @given(
        payload=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
        run_id=st.text(min_size=1, max_size=30),
    )
    def check(payload, run_id):
        rec = {**payload, **run(run_id, "succeeded", 1.0)}
        loop.run_until_complete(s.save_run(rec))
        assert loop.run_until_complete(s.get_run(run_id)) == rec

    try:
        check()
    finally:
        loop.run_until_complete(s.close())
        loop.close()


async def test_sqlite_write_ahead_log_stays_bounded_and_loses_nothing(tmp_path):
    """Writes commit on the loop; checkpoints keep the write-ahead log from growing with
    the data, and every write is there after a reopen."""
    s = SQLiteStore(tmp_path / "o.db")
    await s.open()
    blob = "x" * 4000
    n = 3000
    for i in range(n):
        await s.save_run(run(f"r{i}", "succeeded", float(i), blob=blob))
    wal = (tmp_path / "o.db-wal").stat().st_size
    assert wal < n * len(blob) / 2, f"WAL {wal} bytes after {n} writes of 4 kB"
    await s.close()
    s2 = SQLiteStore(tmp_path / "o.db")
    await s2.open()
    assert len(await s2.list_runs(limit=n + 1)) == n
    await s2.close()


def test_bad_store_urls_say_what_to_write():
    with pytest.raises(ok.ServiceError, match="sqlite:///FILE"):
        open_store("sqlite://")
    with pytest.raises(ok.ServiceError, match="unknown scheme 'postgres'"):
        open_store("postgres://x/y")


async def test_a_restarted_service_marks_sessions_and_runs_it_left_behind(tmp_path):
    def factory(kind, agent_id):
        return ScriptedAgent(agent_id, {}, default=Ok(1, data={"ok": True}))

    first = Service(SQLiteStore(tmp_path / "o.db"), agent_factory=factory)
    await first.start()
    out = await first.start_session("lia", {})
    assert out["status"] == "ready"
    await first.stop()  # without end_session
    second = Service(SQLiteStore(tmp_path / "o.db"), agent_factory=factory)
    await second.start()
    try:
        session = await second.store.get_session("lia")
        assert session["status"] == "interrupted" and session["sessionId"] == out["sessionId"]
        assert (await second.get_run(f"init_{out['sessionId']}"))["status"] == "succeeded"
        with pytest.raises(ok.NoSessionError, match="no active session"):
            await second.process_interaction("lia", {})
    finally:
        await second.stop()


async def test_idle_sessions_and_run_agents_are_released(tmp_path):
    def factory(kind, agent_id):
        return ScriptedAgent(agent_id, {}, default=Ok(1))

    svc = Service(SQLiteStore(tmp_path / "o.db"), agent_factory=factory, idle_ms=1000)
    await svc.start()
    try:
        await svc.start_session("idle-1", {})
        rid = await svc.submit_run(
            {"id": "p", "steps": [{"id": "a", "agentId": "tutor-agent-shared", "action": "x"}]}
        )
        while (await svc.get_run(rid))["status"] == "running":
            await asyncio.sleep(0.01)
        assert len(svc.agents()) == 3
        for _ in range(1000):  # the reaper runs every idle_ms / 4
            if not svc.agents():
                break
            await asyncio.sleep(0.01)
        assert svc.agents() == [] and svc.sessions_active() == 0
        assert (await svc.store.get_session("idle-1"))["status"] == "idle"
    finally:
        await svc.stop()


SLOW = {
    "id": "slow",
    "steps": [
        {"id": "nap", "agentId": "learning-agent-slow-r", "action": "sleep", "input": {"ms": 60000}}
    ],
}
FAST = {
    "id": "fast",
    "steps": [
        {"id": "nap", "agentId": "tutor-agent-slow-r", "action": "sleep", "input": {"ms": 20}}
    ],
}


def test_server_restarts_keep_finished_runs_and_interrupt_those_in_flight(tmp_path):
    srv = ServiceProcess(f"sqlite:///{tmp_path}/o.db", log=tmp_path / "server.log")
    try:
        with httpx.Client(base_url=srv.url, timeout=20) as http:
            fast = http.post("/api/runs", json=FAST).json()["runId"]
            assert srv.wait_run(http, fast)["status"] == "succeeded"
            term = http.post("/api/runs", json=SLOW).json()["runId"]
            srv.stop()  # SIGTERM: the shutdown records the run as interrupted
            srv.start()
            killed = http.post("/api/runs", json=SLOW).json()["runId"]
            assert http.get(f"/api/runs/{term}").json()["status"] == "interrupted"
            srv.stop(kill=True)  # SIGKILL: the next start-up finds it running and interrupts it
            srv.start()
            rec = http.get(f"/api/runs/{fast}").json()
            assert rec["status"] == "succeeded" and rec["spans"][0]["outcome"] == "succeeded"
            for rid in (term, killed):
                rec = http.get(f"/api/runs/{rid}").json()
                assert rec["status"] == "interrupted", rec
                assert "stopped" in rec["error"] and rec["plan"]["id"] == "slow"
            listed = {
                r["runId"]
                for r in http.get("/api/runs", params={"status": "interrupted"}).json()["runs"]
            }
            assert {term, killed} <= listed
            assert http.get("/api/runs", params={"status": "running"}).json()["runs"] == []
    finally:
        srv.stop()


def test_redis_restart_mid_stream_loses_nothing_acknowledged(tmp_path):
    redis = RedisServer(tmp_path / "redis", aof=True)
    srv = None
    try:
        srv = ServiceProcess(redis.url, log=tmp_path / "server.log")
        accepted, failures, restarted = [], [], threading.Event()
        after_restart = []

        def client():  # posts until 10 of its runs were accepted after the restart
            with httpx.Client(base_url=srv.url, timeout=30) as http:
                mine_after = 0
                for _ in range(500):
                    done = restarted.is_set()
                    r = http.post("/api/runs", json=FAST)
                    if r.status_code != 202:
                        failures.append(r.text)
                        continue
                    accepted.append(r.json()["runId"])
                    if done:
                        after_restart.append(r.json()["runId"])
                        mine_after += 1
                        if mine_after == 10:
                            return

        threads = [threading.Thread(target=client) for _ in range(3)]
        for t in threads:
            t.start()
        while len(accepted) < 20 and any(t.is_alive() for t in threads):
            time.sleep(0.005)
        redis.restart()  # mid-stream: writes meanwhile wait for it (retries), none is lost
        restarted.set()
        for t in threads:
            t.join(60)
        assert not failures, failures[:3]
        assert len(after_restart) == 30 and len(accepted) - len(after_restart) >= 20
        with httpx.Client(base_url=srv.url, timeout=20) as http:
            deadline = time.monotonic() + 20
            while http.get("/api/runs", params={"status": "running"}).json()["runs"]:
                assert time.monotonic() < deadline, "runs still running after 20 s"
                time.sleep(0.05)
        srv.stop(kill=True)
        redis.restart()  # the data now comes back from the append-only file alone
        srv.start()
        with httpx.Client(base_url=srv.url, timeout=20) as http:
            records = [http.get(f"/api/runs/{rid}").json() for rid in accepted]
        assert [r["status"] for r in records] == ["succeeded"] * len(accepted)
        assert all(r["spans"][0]["outcome"] == "succeeded" for r in records)
    finally:
        if srv is not None:
            srv.stop()
        redis.stop()


async def test_a_failing_agent_factory_leaves_no_half_made_session(tmp_path):
    def factory(kind, agent_id):
        if kind == "tutor":
            raise RuntimeError("no tutor today")
        return ScriptedAgent(agent_id, {}, default=Ok(1))

    svc = Service(SQLiteStore(tmp_path / "o.db"), agent_factory=factory)
    await svc.start()
    try:
        with pytest.raises(RuntimeError, match="no tutor today"):
            await svc.start_session("half", {})
        assert svc.agents() == [] and svc.sessions_active() == 0
        with pytest.raises(ValueError, match="data.gradeLevel"):
            await svc.start_session("half", {"gradeLevel": 13})
    finally:
        await svc.stop()
