"""Socket.IO against a real `orchkit serve`: the python-socketio AsyncClient and Node's
socket.io-client (the seed's front-end client): auth, acks, the struggling-learner flow to
that learner only, and `subscribe {runId}` streaming a run's events."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
import socketio
from service_harness import API_KEY

NODE_DIR = Path(__file__).resolve().parent / "node"


async def connect(server, learner, token=API_KEY):
    sio = socketio.AsyncClient(reconnection=False)
    seen = defaultdict(list)

    @sio.on("*")
    async def any_event(event, data):
        seen[event].append(data)

    await sio.connect(
        server.url,
        auth={"learnerId": learner, "token": token},
        transports=["websocket"],
        wait_timeout=10,
    )
    return sio, seen


async def wait_for(cond, timeout_s=10.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not cond():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.02)
    return True


@pytest.mark.parametrize(
    "auth",
    [
        None,
        {"token": API_KEY},
        {"learnerId": "a b", "token": API_KEY},
        {"learnerId": "eve"},
        {"learnerId": "eve", "token": "nope"},
    ],
)
async def test_connections_without_valid_auth_are_refused(service_server, auth):
    sio = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(service_server.url, auth=auth, transports=["websocket"], wait_timeout=5)
    await sio.disconnect()


async def test_struggling_learner_gets_the_intervention_and_no_one_else(service_server):
    srv = service_server
    async with httpx.AsyncClient(base_url=srv.url, headers=srv.headers, timeout=20) as http:
        for learner in ("sock-a", "sock-b"):
            r = await http.post(
                "/api/agents", json={"action": "start_session", "learnerId": learner}
            )
            assert r.status_code == 200, r.text
    a, seen_a = await connect(srv, "sock-a")
    b, seen_b = await connect(srv, "sock-b")
    try:
        ack = await a.call(
            "agent:learning", {"action": "get_next_activity", "data": {}}, timeout=10
        )
        assert ack["success"] is True and ack["agent"] == "learning" and ack["agentMs"] >= 0
        activity = ack["response"]["data"]["activity"]
        for _ in range(5):
            ack = await a.call(
                "agent:learning",
                {
                    "action": "process_interaction",
                    "data": {"activityId": activity["activityId"], "response": {"answer": "wrong"}},
                },
                timeout=10,
            )
            assert ack["success"] is True and ack["response"]["data"]["correct"] is False
            if await wait_for(lambda: seen_a["content:adapted"], 0.3):
                break
        assert await wait_for(lambda: seen_a["content:adapted"])
        required = seen_a["tutor:intervention:required"]
        assert len(required) == 1 and required[0]["reason"] == "struggling_detected"
        assert required[0]["context"]["learnerId"] == "sock-a"
        assert required[0]["context"]["concept"] == activity["concept"]
        adapted = seen_a["content:adapted"][0]
        assert adapted["concept"] == activity["concept"] and len(adapted["hints"]) == 3
        assert adapted["intervention"]["learnerId"] == "sock-a"
        # B does its own work meanwhile and hears nothing of A's
        ack = await b.call(
            "agent:tutor", {"action": "prepare_hints", "data": {"concept": "addition"}}, timeout=10
        )
        assert ack["success"] is True and "intervention" not in ack["response"]["data"]
        await asyncio.sleep(0.2)
        assert not seen_b  # no event at all reached B
        bad = await a.call("agent:tutor", {"action": "dance"}, timeout=10)
        assert (
            bad == {"success": False, "status": 400, "error": bad["error"]}
            and "prepare_hints" in bad["error"]
        )
        bad = await a.call("agent:learning", "not an object", timeout=10)
        assert bad["success"] is False and bad["status"] == 422 and "action" in bad["error"]
    finally:
        await a.disconnect()
        await b.disconnect()


async def test_answers_over_rest_reach_the_learners_socket_as_an_intervention(service_server):
    """The flow is the same whichever route carried the answers: the learner's browser
    hears the tutor on its socket while the answers go over REST."""
    srv = service_server
    sock, seen = await connect_after_start(srv, "rest-to-sock")
    try:
        async with httpx.AsyncClient(base_url=srv.url, headers=srv.headers, timeout=20) as http:

            def body(action, **data):
                return {"action": action, "learnerId": "rest-to-sock", "data": data}

            r = await http.post(
                "/api/agents", json={**body("get_next_activity"), "agent": "learning"}
            )
            activity = r.json()["response"]["data"]["activity"]
            for _ in range(5):
                r = await http.post(
                    "/api/agents",
                    json=body(
                        "process_interaction",
                        activityId=activity["activityId"],
                        response={"answer": "wrong"},
                    ),
                )
                assert r.status_code == 200, r.text
                if await wait_for(lambda: seen["tutor:intervention:required"], 0.3):
                    break
        assert await wait_for(lambda: seen["content:adapted"])
        (required,) = seen["tutor:intervention:required"]
        assert required["context"]["learnerId"] == "rest-to-sock"
        assert required["context"]["concept"] == activity["concept"]
    finally:
        await sock.disconnect()


async def connect_after_start(srv, learner):
    async with httpx.AsyncClient(base_url=srv.url, headers=srv.headers, timeout=20) as http:
        r = await http.post("/api/agents", json={"action": "start_session", "learnerId": learner})
        assert r.status_code == 200, r.text
    return await connect(srv, learner)


async def test_subscribe_streams_a_runs_events_to_subscribers_only(service_server):
    srv = service_server
    plan = {
        "id": "watched",
        "steps": [
            {
                "id": "one",
                "agentId": "speech-agent-slow-s",
                "action": "sleep",
                "input": {"ms": 300},
            },
            {
                "id": "two",
                "agentId": "speech-agent-slow-s",
                "action": "sleep",
                "input": {"ms": 10},
                "dependencies": ["one"],
            },
        ],
    }
    watcher, seen = await connect(srv, "watcher")
    other, seen_other = await connect(srv, "bystander")
    try:
        async with httpx.AsyncClient(base_url=srv.url, headers=srv.headers, timeout=20) as http:
            run_id = (await http.post("/api/runs", json=plan)).json()["runId"]
            ack = await watcher.call("subscribe", {"runId": run_id}, timeout=10)
            assert ack["success"] is True and ack["status"] == "running"
            assert await wait_for(lambda: seen["run:finished"])
            assert seen["run:finished"][0] == {
                "runId": run_id,
                "status": "succeeded",
                "seq": seen["run:finished"][0]["seq"],
            }
            streamed = {e["seq"]: e for name in seen for e in seen[name] if name != "run:finished"}
            streamed.update({e["seq"]: e for e in ack["events"]})
            stored = (await http.get(f"/api/runs/{run_id}")).json()["events"]
            assert [streamed[k]["event"] for k in sorted(streamed)] == [e["event"] for e in stored]
            assert all(e["runId"] == run_id for e in streamed.values())
            assert {"step:started", "step:completed", "plan:completed"} <= set(seen)
            done = await watcher.call("subscribe", {"runId": run_id}, timeout=10)
            assert done["status"] == "succeeded" and len(done["events"]) == len(stored)
            missing = await watcher.call("subscribe", {"runId": "no-such-run"}, timeout=10)
            assert missing["success"] is False and missing["status"] == 404
        assert not seen_other
    finally:
        await watcher.disconnect()
        await other.disconnect()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_node_socket_io_client_sees_the_seeds_flow(service_server):
    proc = subprocess.run(
        ["node", str(NODE_DIR / "service_client.mjs"), service_server.url, "node-learner", API_KEY],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=NODE_DIR,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["startStatus"] == 200 and out["session"]["status"] == "ready"
    assert out["refused"] and "unauthorized" in out["refused"]
    assert out["firstAck"]["success"] is True
    assert all(a["correct"] is False and a["agentMs"] >= 0 for a in out["answers"])
    assert out["answers"][-1]["struggling"] is True
    assert out["intervention"]["reason"] == "struggling_detected"
    assert out["intervention"]["context"]["learnerId"] == "node-learner"
    assert out["adapted"]["concept"] == out["intervention"]["context"]["concept"]
    assert out["badAck"]["success"] is False and out["badAck"]["status"] == 400
