"""Learning analytics in the service (SPEC §18) against real `orchkit serve` processes: every
scored answer is a response row in the store (SQLite, Redis), the learner and cohort
reports read them, tutor outcomes come from the runs that served them, the mastery gauge
is exported, and a restarted server answers the same."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import httpx
import pytest
from service_harness import ServiceProcess

from orchkit.service import RedisStore, SQLiteStore

ROOT = Path(__file__).resolve().parents[1]
CURRICULUM = json.loads((ROOT / "data" / "learners" / "curriculum.json").read_text())
ANSWER = {a["activityId"]: a["answer"] for a in CURRICULUM["activities"]}


# -- the store --------------------------------------------------------------------------------


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


def row(learner, ts, correct=True, skill="addition", run=None):
    return {
        "learnerId": learner,
        "skill": skill,
        "correct": correct,
        "tsMs": ts,
        "runId": run,
        "activityId": None,
        "responseTimeMs": None,
        "source": "call",
    }


async def test_the_store_keeps_responses_in_time_order_by_learner_and_since(store):
    assert await store.count_responses() == 0 and await store.list_responses() == []
    await store.add_responses([row("a", 30.0), row("b", 10.0, run="r1")])
    await store.add_responses([row("a", 20.0, correct=False), row("a", 30.0, skill="sub")])
    await store.add_responses([])
    assert await store.count_responses() == 4
    everything = await store.list_responses()
    assert [(r["learnerId"], r["tsMs"], r["skill"]) for r in everything] == [
        ("b", 10.0, "addition"),
        ("a", 20.0, "addition"),
        ("a", 30.0, "addition"),  # equal times: in the order they were added
        ("a", 30.0, "sub"),
    ]
    assert everything[0] == row("b", 10.0, run="r1")
    assert [r["tsMs"] for r in await store.list_responses(learner_id="a")] == [20.0, 30.0, 30.0]
    assert [r["learnerId"] for r in await store.list_responses(since_ms=20.0)] == ["a"] * 3
    assert await store.list_responses(learner_id="a", since_ms=31.0) == []


# -- the service ------------------------------------------------------------------------------

LESSON_ITEMS = ["addition-d1-01", "addition-d1-02", "addition-d1-03", "addition-d1-04"]


def lesson(learner: str, item: str, answered: bool) -> dict:
    """A plan run serving one answer: the learning agent scores it, then the tutor gives
    feedback: in 10 ms (answered), or not within the step's 100 ms (a timeout)."""
    return {
        "id": "lesson",
        "steps": [
            {
                "id": "answer",
                "agentId": "learning-agent-lab",
                "action": "process_interaction",
                "input": {
                    "learnerId": learner,
                    "activityId": item,
                    "response": {"answer": ANSWER[item]},
                },
            },
            {
                "id": "feedback",
                "agentId": "tutor-agent-slow-lab",
                "action": "sleep",
                "input": {"ms": 10 if answered else 400},
                "dependencies": ["answer"],
                "timeout": 100 if not answered else 2000,
            },
        ],
    }


def act(c, learner, action, agent=None, **data):
    body = {"action": action, "learnerId": learner, "data": data}
    if agent:
        body["agent"] = agent
    r = c.post("/api/agents", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_answers_become_mastery_reports_with_tutor_outcomes_and_a_gauge(tmp_path):
    srv = ServiceProcess(f"sqlite:///{tmp_path}/o.db", api_key="k", log=tmp_path / "server.log")
    try:
        c = httpx.Client(base_url=srv.url, headers=srv.headers, timeout=30)
        # ana answers six items directly (REST session calls), every third one wrong
        act(c, "ana", "start_session", gradeLevel=4)
        item = act(c, "ana", "get_next_activity", agent="learning")["response"]["data"]
        item = item["activity"]["activityId"]
        sent = []
        for i in range(6):
            right = i % 3 != 2
            body = act(
                c,
                "ana",
                "process_interaction",
                activityId=item,
                response={"answer": ANSWER[item] if right else "no", "responseTimeMs": 900},
            )
            sent.append((item.split("-d")[0], right))
            item = body["response"]["nextActivity"]["activityId"]
        # a direct call may name the run that served it (here: the tutor's feedback)
        feedback = {
            "id": "feedback",
            "steps": [
                {
                    "id": "hint",
                    "agentId": "tutor-agent-slow-lab",
                    "action": "sleep",
                    "input": {"ms": 10},
                }
            ],
        }
        ana_run = c.post("/api/runs", json=feedback).json()["runId"]
        assert srv.wait_run(c, ana_run)["status"] == "succeeded"
        act(
            c,
            "ana",
            "process_interaction",
            activityId=item,
            response={"answer": "no"},
            runId=ana_run,
        )
        sent.append((item.split("-d")[0], False))
        # bo and cy are served by plan runs: tutor answered, timed out, answered, timed out
        runs = {}
        for learner in ("bo", "cy"):
            for k, item in enumerate(LESSON_ITEMS):
                rid = c.post("/api/runs", json=lesson(learner, item, k % 2 == 0)).json()["runId"]
                assert srv.wait_run(c, rid)["status"] == ("succeeded" if k % 2 == 0 else "failed")
                runs.setdefault(learner, []).append(rid)

        ana = c.get("/api/analytics/learners/ana").json()
        assert ana["responses"] == 7 and ana["masteryThreshold"] == 0.95
        got = sorted(
            (skill, t["correct"]) for skill, s in ana["skills"].items() for t in s["trajectory"]
        )
        assert got == sorted(sent)
        for s in ana["skills"].values():
            assert s["opportunities"] == len(s["trajectory"]) and 0 <= s["mastery"] <= 1
            assert s["mastery"] == s["trajectory"][-1]["mastery"]
            assert s["params"]["source"] == "shipped"  # a curriculum concept, few answers
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT.*Z", s["trajectory"][0]["at"])
        run_ids = [t["runId"] for s in ana["skills"].values() for t in s["trajectory"]]
        assert run_ids.count(None) == 6 and ana_run in run_ids
        bo = c.get("/api/analytics/learners/bo").json()
        steps = bo["skills"]["addition"]["trajectory"]
        assert [t["runId"] for t in steps] == runs["bo"] and all(t["correct"] for t in steps)
        assert [t["mastery"] for t in steps] == sorted(t["mastery"] for t in steps)  # all right
        nobody = c.get("/api/analytics/learners/nobody").json()
        assert nobody["responses"] == 0 and nobody["skills"] == {}

        cohort = c.get("/api/analytics/cohort").json()
        assert cohort["learners"] == 3 and cohort["responses"] == 15
        assert cohort["servedResponses"] == 9  # the runs' 8 and ana's last
        out = cohort["byOutcome"]
        # interactions with a next answer on the skill: runs 1, 2, 3 of each learner
        assert out["ok"]["interactions"] == 4 and out["timeout"]["interactions"] == 2
        assert out["ok"]["learners"] == out["timeout"]["learners"] == 2
        assert out["ok"]["nextCorrect"] == 1.0 and out["ok"]["gainVsOk"] == [0.0, 0.0, 0.0]
        assert out["unknown"]["interactions"] >= 1  # ana's direct calls name no run
        assert 95 <= cohort["tutorLatencyP95Ms"] <= 1000
        assert 0 <= cohort["masteryRate"] <= 1 and cohort["wheelSpinRate"] == 0.0
        assert cohort["skills"]["addition"]["learners"] == 3 - ("addition" not in ana["skills"])
        later = c.get("/api/analytics/cohort", params={"since": "2999-01-01T00:00:00Z"}).json()
        assert later["learners"] == 0 and later["masteryRate"] is None
        bad = c.get("/api/analytics/cohort", params={"since": "yesterday"})
        assert bad.status_code in (400, 422) and "since" in bad.text
        assert httpx.get(srv.url + "/api/analytics/cohort").status_code == 401  # the key

        metrics = c.get("/metrics").text
        rate = re.search(r'orchkit_mastery_rate\{skill="addition"\} ([0-9.e+-]+)', metrics)
        assert rate and float(rate.group(1)) == cohort["skills"]["addition"]["masteryRate"]

        srv.stop()  # a restarted server answers from the store alone
        srv.start()
        assert c.get("/api/analytics/learners/bo").json() == bo
        assert c.get("/api/analytics/cohort").json() == cohort
    finally:
        srv.stop()


def test_the_redis_store_serves_the_same_reports(redis_server, tmp_path):
    srv = ServiceProcess(redis_server.url[: -len("/0")] + "/5", log=tmp_path / "server.log")
    try:
        c = httpx.Client(base_url=srv.url, timeout=30)
        learner = f"r{uuid.uuid4().hex[:6]}"
        act(c, learner, "start_session")
        for item in LESSON_ITEMS[:3]:
            act(c, learner, "process_interaction", activityId=item, response={"answer": "x"})
        report = c.get(f"/api/analytics/learners/{learner}").json()
        steps = report["skills"]["addition"]["trajectory"]
        assert len(steps) == 3 and not any(t["correct"] for t in steps)
        assert steps[0]["mastery"] > steps[1]["mastery"] > steps[2]["mastery"]
        deadline = time.monotonic() + 5
        while c.get("/api/analytics/cohort").json()["learners"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        srv.stop()
