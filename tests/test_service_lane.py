"""The hot path of the service, in-process (httpx over ASGI, lifespan run):

- the raw-ASGI lane of POST /api/agents answers exactly what FastAPI's route answers (status,
  body, headers), for answers and for every kind of refusal, and takes only what it should;
- scored answers are written together (one transaction per ANSWERS_WRITE_MS), yet every
  read sees them at once, and stopping the service writes what is kept."""

from __future__ import annotations

import asyncio
import re

import httpx
from asgi_lifespan import LifespanManager

import orchkit as ok
from orchkit.service import ANSWERS_WRITE_MS, Service, SQLiteStore, create_app

KEY = "sesame"
FASTAPI_JSON = "application/vnd.orchkit+json"  # JSON to FastAPI's route; the lane declines it


class Instant(ok.Agent):
    """Answers at once, deterministically: ``answer == "2"`` is correct."""

    async def process(self, action, input, context):
        if action == "explode":
            raise RuntimeError("boom")
        if action == "fail":
            raise ok.AgentError("flaky", retryable=True)
        answer = ((input or {}).get("response") or {}).get("answer")
        data = {
            "learnerId": (input or {}).get("learnerId"),
            "correct": answer == "2",
            "activity": {"activityId": "addition-d1-01", "concept": "addition", "difficulty": 1},
            "concept": "addition",
            "difficultyLevel": 1,
            "difficultyChange": "same",
            "mastery": 0.5,
            "struggling": False,
        }
        return ok.AgentResponse(action=action, confidence=0.75, reasoning="instant", data=data)


def factory(kind, agent_id):
    return Instant(agent_id)


def answer(learner, value="2"):
    return {
        "action": "process_interaction",
        "learnerId": learner,
        "data": {"activityId": "addition-d1-01", "response": {"answer": value}},
    }


# (body, headers): every outcome of POST /api/agents, in order, on one fresh service
SCRIPT = [
    ({"action": "start_session", "learnerId": "l1", "data": {"gradeLevel": 5}}, {}),
    (answer("l1"), {}),
    (answer("l1", "3"), {}),
    (answer("nobody"), {}),  # 409: no session
    ({"action": "dance", "learnerId": "l1"}, {}),  # 400: not a session action
    ({"action": "prepare_hints", "agent": "tutor", "learnerId": "l1", "data": {}}, {}),
    ({"action": "fail", "agent": "tutor", "learnerId": "l1", "data": {}}, {}),  # 503
    ({"action": "explode", "agent": "tutor", "learnerId": "l1", "data": {}}, {}),  # 503
    ({"action": "start_session", "learnerId": "l1", "data": {"gradeLevel": "x"}}, {}),  # 422
    ({"action": "start_session", "learnerId": "bad id!"}, {}),  # 422: the model refuses
    ({"action": "start_session", "learnerId": "l2", "extra": 1}, {}),  # 422: extra field
    (b'{"action": "start_session", "learnerId": ', {}),  # 400: malformed JSON
    ({"action": "end_session", "learnerId": "l1"}, {}),
    (answer("l1"), {}),  # 409: ended
    ({"action": "start_session", "learnerId": "l3"}, {"authorization": "Bearer wrong"}),
    ({"action": "start_session", "learnerId": "l3"}, {"authorization": "bearer " + KEY}),
]


def _masked(text: str) -> str:
    """Times and time-stamped ids vary between two runs of the script: mask them."""
    text = re.sub(r'"timestamp":"[^"]*"', '"timestamp":"T"', text)
    text = re.sub(r'"(duration|durationMs)":[0-9.e+-]+', r'"\1":0', text)
    return re.sub(r"(session_[\w-]+?_|agent-[\w-]+?-)\d{10,}", r"\1MS", text)


async def _play(tmp_path, name, content_type, counted):
    svc = Service(SQLiteStore(tmp_path / f"{name}.db"), agent_factory=factory)
    app = create_app(svc, api_key=KEY)
    lane = app.app
    inner, seen = lane.app, []

    async def counting(scope, receive, send):  # what goes past the lane to FastAPI
        if scope["type"] == "http":
            seen.append(scope["path"])
        await inner(scope, receive, send)

    lane.app = counting
    out = []
    async with LifespanManager(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            for body, headers in SCRIPT:
                raw = body if isinstance(body, bytes) else ok_json(body)
                hdr = {"content-type": content_type, "authorization": "Bearer " + KEY, **headers}
                r = await c.post("/api/agents", content=raw, headers=hdr)
                timing = r.headers.get("server-timing", "")
                out.append(
                    (
                        r.status_code,
                        _masked(r.text),
                        r.headers["content-type"],
                        "agent;dur=" in timing,
                        "app;dur=" in timing,
                    )
                )
    counted.extend(seen)
    return out


def ok_json(body):
    import json

    return json.dumps(body).encode()


async def test_the_lane_answers_what_fastapis_route_answers(tmp_path):
    through_lane, through_fastapi = [], []
    lane = await _play(tmp_path, "lane", "application/json", through_lane)
    route = await _play(tmp_path, "route", FASTAPI_JSON, through_fastapi)
    assert [s for s, *_ in lane] == [s for s, *_ in route]
    assert [s for s, *_ in route] == [
        200, 200, 200, 409, 400, 200, 503, 503, 422, 422, 422, 400, 200, 409, 401, 200,
    ]  # fmt: skip
    for i, (a, b) in enumerate(zip(lane, route, strict=True)):
        assert a == b, (SCRIPT[i][0], a, b)
    assert 'correct":true' in lane[1][1] and 'correct":false' in lane[2][1]
    # the lane answered the valid ones; FastAPI saw the invalid and unauthorised ones only
    assert len(through_fastapi) == len(SCRIPT)
    # past the lane: two bodies the model refuses, malformed JSON, a wrong key, "bearer"
    assert len(through_lane) == 5


async def test_the_lane_leaves_cross_origin_calls_to_the_cors_layer(tmp_path):
    svc = Service(SQLiteStore(tmp_path / "o.db"), agent_factory=factory)
    app = create_app(svc, api_key=None, cors_origins=["http://localhost:3000"])
    async with LifespanManager(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            start = {"action": "start_session", "learnerId": "l1"}
            r = await c.post("/api/agents", json=start, headers={"origin": "http://localhost:3000"})
            assert r.status_code == 200, r.text
            assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
            r = await c.post("/api/agents", json=answer("l1"))  # same origin: the lane
            assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


class CountingStore(SQLiteStore):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []

    async def add_responses(self, rows):
        self.batches.append(len(rows))
        await super().add_responses(rows)


async def test_scored_answers_are_written_together_and_read_at_once(tmp_path):
    store = CountingStore(tmp_path / "o.db")
    svc = Service(store, agent_factory=factory)
    app = create_app(svc, api_key=None)
    async with LifespanManager(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            for learner in ("a", "b"):
                r = await c.post(
                    "/api/agents", json={"action": "start_session", "learnerId": learner}
                )
                assert r.status_code == 200
            # read-your-writes: the learner's report counts the answer just given
            for n in (1, 2, 3):
                assert (await c.post("/api/agents", json=answer("a"))).status_code == 200
                report = (await c.get("/api/analytics/learners/a")).json()
                assert report["responses"] == n
            # ten answers at once are one transaction, within ANSWERS_WRITE_MS
            store.batches.clear()
            calls = [c.post("/api/agents", json=answer(x)) for x in "ab" * 5]
            assert all(r.status_code == 200 for r in await asyncio.gather(*calls))
            assert store.batches == []
            await asyncio.sleep(ANSWERS_WRITE_MS / 1000.0 + 0.2)
            assert store.batches == [10]
            assert await store.count_responses() == 13
            # kept answers are written when the service stops
            assert (await c.post("/api/agents", json=answer("b", "3"))).status_code == 200
            assert await store.count_responses() == 13
    assert store.batches == [10, 1]
    reopened = SQLiteStore(tmp_path / "o.db")
    await reopened.open()
    try:
        rows = await reopened.list_responses(learner_id="b")
        assert [r["correct"] for r in rows] == [True] * 5 + [False]
    finally:
        await reopened.close()
