"""The service's REST API against a real `orchkit serve` process (SQLite store, API key set)."""

from __future__ import annotations

import re
import time

import httpx
import pytest

SLOW_PLAN = {
    "id": "slow",
    "steps": [
        {"id": "nap", "agentId": "learning-agent-slow-1", "action": "sleep", "input": {"ms": 5000}}
    ],
}


@pytest.fixture
def server(service_server):
    return service_server


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=20) as c:
        yield c


def act(http, learner, action, agent=None, **data):
    body = {"action": action, "learnerId": learner, "data": data}
    if agent:
        body["agent"] = agent
    return http.post("/api/agents", json=body)


def test_the_api_key_guards_rest_but_not_healthz(server):
    with httpx.Client(base_url=server.url, timeout=10) as anon:
        r = anon.post("/api/agents", json={"action": "start_session", "learnerId": "x"})
        assert r.status_code == 401 and "Bearer" in r.json()["detail"]
        assert r.headers["www-authenticate"] == "Bearer"
        assert anon.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert anon.get("/metrics").status_code == 401
        assert anon.get("/healthz").json()["status"] == "ok"
        assert anon.get("/openapi.json").status_code == 200


def test_start_session_answers_the_seeds_shape_and_registers_the_agents(http):
    r = act(http, "ana", "start_session", subject="mathematics", gradeLevel=4)
    assert r.status_code == 200, r.text
    body = r.json()
    ms = re.fullmatch(r"session_ana_(\d+)", body["sessionId"]).group(1)
    assert body["agents"] == {
        "learning": f"learning-agent-ana-{ms}",
        "tutor": f"tutor-agent-ana-{ms}",
    }
    assert body["status"] == "ready"
    orch = body["orchestration"]
    assert orch["success"] is True and orch["duration"] > 0
    assert set(orch["results"]) == {"init_learning", "init_tutor"}
    assert orch["results"]["init_learning"]["data"]["sessionId"] == body["sessionId"]
    assert orch["results"]["init_learning"]["data"]["gradeLevel"] == 4
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["timestamp"])
    agents = {a["id"]: a for a in http.get("/api/agents").json()["agents"]}
    assert agents[body["agents"]["learning"]]["learnerId"] == "ana"
    assert agents[body["agents"]["tutor"]]["kind"] == "tutor"
    # the session-initialisation run is recorded, with spans of both steps
    run = http.get(f"/api/runs/init_{body['sessionId']}").json()
    assert run["status"] == "succeeded" and run["kind"] == "session"
    assert [s["step_id"] for s in run["spans"]] == ["init_learning", "init_tutor"]
    # a second start_session reuses the learner's agents
    again = act(http, "ana", "start_session").json()
    assert again["agents"] == body["agents"] and again["status"] == "ready"


def test_process_interaction_scores_adapts_and_records_the_struggling_insight(http):
    assert act(http, "ben", "start_session", gradeLevel=5).status_code == 200
    first = act(http, "ben", "get_next_activity", agent="learning").json()
    activity = first["response"]["data"]["activity"]["activityId"]
    struggled = []
    for _ in range(4):
        r = act(
            http,
            "ben",
            "process_interaction",
            activityId=activity,
            response={"answer": "definitely wrong", "responseTimeMs": 900},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["success"] is True and body["response"]["correct"] is False
        assert body["response"]["nextActivity"]["activityId"]
        assert "Server-Timing" in r.headers or "server-timing" in r.headers
        struggled.append(body["response"]["adaptations"]["struggling"])
        activity = body["response"]["nextActivity"]["activityId"]
    assert True in struggled
    deadline = time.monotonic() + 5
    while True:
        insights = http.get("/api/learners/ben").json()["insights"]
        if insights or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert insights and insights[0]["type"] == "struggling_detected"
    assert insights[0]["learnerId"] == "ben" and insights[0]["data"]["concept"]


def test_unknown_actions_and_missing_sessions_are_refused_clearly(http):
    r = act(http, "cleo", "dance")
    assert r.status_code == 400
    assert all(
        a in r.json()["detail"] for a in ("start_session", "process_interaction", "end_session")
    )
    r = act(http, "cleo", "process_interaction", activityId="a", response={"answer": 1})
    assert r.status_code == 409 and "no active session" in r.json()["detail"]
    assert act(http, "cleo", "start_session").status_code == 200
    r = act(http, "cleo", "dance", agent="tutor")
    assert r.status_code == 400 and "prepare_hints" in r.json()["detail"]
    r = act(http, "cleo", "prepare_hints", agent="tutor")  # the agent names the missing field
    assert r.status_code == 422 and "concept" in r.json()["detail"]
    r = act(http, "cleo", "end_session")
    assert r.status_code == 200 and r.json()["status"] == "ended"
    ids = [a["id"] for a in http.get("/api/agents").json()["agents"]]
    assert not any("-cleo-" in i for i in ids)
    assert act(http, "cleo", "end_session").status_code == 409
    assert http.get("/api/learners/cleo").json()["session"]["status"] == "ended"


def test_an_agent_whose_extra_is_missing_is_501_naming_the_extra(http):
    assert act(http, "ed-no-extra", "start_session").status_code == 200
    r = act(http, "ed-no-extra", "analyze_speech", agent="speech")
    assert r.status_code == 501 and "orchkit[speech]" in r.json()["detail"]
    plan = {
        "id": "talk",
        "steps": [{"id": "s", "agentId": "speech-agent-no-extra-1", "action": "analyze_speech"}],
    }
    r = http.post("/api/runs", json={"plan": plan})
    assert r.status_code == 501 and "orchkit[speech]" in r.json()["detail"]
    assert act(http, "ed-no-extra", "end_session").status_code == 200


@pytest.mark.parametrize(
    "body, status, field",
    [
        ('{"action": "start_session",', 400, "JSON"),
        ('{"action": "start_session", "learnerId": 7}', 422, "learnerId"),
        ('{"action": "start_session"}', 422, "learnerId"),
        ('{"action": "x", "learnerId": "a b"}', 422, "learnerId"),
        ('{"action": "x", "learnerId": "a", "agent": "robot"}', 422, "agent"),
        ('{"action": "x", "learnerId": "a", "data": []}', 422, "data"),
        ('{"action": "x", "learnerId": "a", "extra": 1}', 422, "extra"),
        ("[1, 2]", 422, "body"),
        (
            '{"action": "start_session", "learnerId": "a", "data": {"gradeLevel": "five"}}',
            422,
            "data.gradeLevel",
        ),
        (
            '{"action": "start_session", "learnerId": "a", "data": {"subject": 3}}',
            422,
            "data.subject",
        ),
    ],
)
def test_malformed_requests_are_4xx_naming_the_field(http, body, status, field):
    r = http.post("/api/agents", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert field in r.json()["detail"]


def test_bodies_over_the_limit_are_413(http):
    big = '{"action": "x", "learnerId": "a", "data": {"pad": "' + "x" * (1 << 20) + '"}}'
    assert (
        http.post(
            "/api/agents", content=big, headers={"content-type": "application/json"}
        ).status_code
        == 413
    )

    def chunks():  # no Content-Length: counted while streaming
        yield b'{"id": "p", "steps": [], "pad": "'
        for _ in range(20):
            yield b"y" * 65536
        yield b'"}'

    assert (
        http.post(
            "/api/runs", content=chunks(), headers={"content-type": "application/json"}
        ).status_code
        == 413
    )


def test_runs_are_accepted_recorded_listed_and_cancelled(server, http):
    plan = {
        "id": "two",
        "steps": [
            {
                "id": "src",
                "agentId": "learning-agent-7",
                "action": "fetch_external_data",
                "input": {"source": "curriculum_api"},
            },
            {
                "id": "nap",
                "agentId": "tutor-agent-slow-7",
                "action": "sleep",
                "input": {"ms": 30},
                "dependencies": ["src"],
            },
        ],
    }
    r = http.post("/api/runs", json={"plan": plan, "runId": "mine-1"})
    assert r.status_code == 202 and r.json() == {"runId": "mine-1"}
    assert http.post("/api/runs", json={"plan": plan, "runId": "mine-1"}).status_code == 409
    rec = server.wait_run(http, "mine-1")
    assert rec["status"] == "succeeded" and rec["result"]["success"] is True
    assert rec["result"]["stepStates"] == {"src": "succeeded", "nap": "succeeded"}
    assert [(s["step_id"], s["outcome"]) for s in rec["spans"]] == [
        ("src", "succeeded"),
        ("nap", "succeeded"),
    ]
    events = [e["event"] for e in rec["events"]]
    assert events[0] == "plan:started" and events[-1] == "plan:completed"
    assert [e["seq"] for e in rec["events"]] == list(range(1, len(events) + 1))
    assert {"step:started", "step:completed"} <= set(events)
    # recorded times keep sub-millisecond precision (traces are fitted from them)
    times = [t for sp in rec["spans"] for t in (sp["start_ms"], sp["end_ms"])]
    assert any(abs(t - round(t)) > 1e-6 for t in times), times

    slow = http.post("/api/runs", json=SLOW_PLAN).json()["runId"]
    assert http.get(f"/api/runs/{slow}").json()["status"] == "running"
    assert slow in [
        x["runId"] for x in http.get("/api/runs", params={"status": "running"}).json()["runs"]
    ]
    done = http.delete(f"/api/runs/{slow}")
    assert done.status_code == 200 and done.json()["status"] == "cancelled"
    assert http.get(f"/api/runs/{slow}").json()["status"] == "cancelled"
    assert http.delete(f"/api/runs/{slow}").status_code == 409
    assert http.delete("/api/runs/nope").status_code == 404
    assert http.get("/api/runs/nope").status_code == 404
    listed = http.get("/api/runs", params={"status": "succeeded", "limit": 1}).json()["runs"]
    assert len(listed) == 1 and listed[0]["status"] == "succeeded"
    assert http.get("/api/runs", params={"status": "bogus"}).status_code == 422
    assert http.get("/api/runs", params={"limit": 0}).status_code == 422


def test_plans_are_validated_with_the_plan_error_text(http):
    good = {"id": "p", "steps": [{"id": "a", "agentId": "learning-agent-1", "action": "x"}]}
    r = http.post("/api/plans/validate", json=good)
    assert r.status_code == 200 and r.json() == {
        "valid": True,
        "planId": "p",
        "plans": 1,
        "steps": 1,
    }
    bad = {"id": "p", "steps": [{"id": "a", "agentId": "x", "action": "y", "dependencies": ["b"]}]}
    r = http.post("/api/plans/validate", json=bad)
    assert r.status_code == 422 and "depends on 'b'" in r.json()["detail"]
    r = http.post(
        "/api/runs", json={"id": "q", "steps": [{"id": "a", "agentId": "robot-1", "action": "x"}]}
    )
    assert r.status_code == 422 and "robot-1" in r.json()["detail"]
    r = http.post("/api/runs", json={"plan": good, "runId": "bad id!"})
    assert r.status_code == 422 and "runId" in r.json()["detail"]


def test_metrics_count_runs_and_agent_latency(http):
    act(http, "dina", "start_session")
    text = http.get("/metrics").text
    assert re.search(r'^orchkit_runs_total\{status="succeeded"\} [1-9]', text, re.M)
    assert re.search(
        r'^orchkit_step_latency_ms_count\{agent="learning",outcome="succeeded"\} [1-9]', text, re.M
    )
    for name in (
        "orchkit_runs_in_flight",
        "orchkit_queue_depth",
        "orchkit_agent_calls_in_flight",
        "orchkit_sessions_active",
    ):
        assert re.search(rf"^{name} \d", text, re.M), name
