"""`orchkit serve --redis`: the service's per-learner agents are RemoteAgents on pool queues
per kind (orchkit-learning, orchkit-tutor), served by `orchkit worker` processes; a
struggling learner's insight crosses the boundary and reaches the service."""

from __future__ import annotations

import sys
import time

import httpx
import pytest
from redis_server import free_port
from test_remote import PYENV, spawn  # noqa: F401, F811 - spawn is a fixture

pytestmark = pytest.mark.timeout(90)


def act(client, learner, action, agent=None, **data):
    body = {"action": action, "learnerId": learner, "data": data}
    if agent:
        body["agent"] = agent
    return client.post("/api/agents", json=body)


def test_serve_redis_runs_the_learners_agents_on_pool_workers(
    spawn,  # noqa: F811
    redis_server,  # noqa: F811
    tmp_path,
):
    def worker(kind):
        return spawn(
            [
                sys.executable,
                "-m",
                "orchkit",
                "worker",
                "--redis",
                redis_server.url,
                "--queue",
                f"orchkit-{kind}",
                "--agents",
                f"{kind}-agent-*",
                "-v",
            ],
            env=PYENV,
        )

    workers = {kind: worker(kind) for kind in ("learning", "tutor")}
    port = free_port()
    server = spawn(
        [
            sys.executable,
            "-m",
            "orchkit",
            "serve",
            "--port",
            str(port),
            "--store",
            f"sqlite:///{tmp_path}/o.db",
            "--redis",
            redis_server.url,
            "--log-level",
            "warning",
        ],
        env=PYENV,
        ready="never printed",
    )
    for w in workers.values():
        w.wait_ready(60)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 40
    while True:
        assert server.proc.poll() is None, "\n".join(server.lines)
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "orchkit serve did not answer /healthz"
        time.sleep(0.1)

    with httpx.Client(base_url=url, timeout=30) as http:
        r = act(http, "ana", "start_session", subject="mathematics", gradeLevel=4)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ready" and body["orchestration"]["success"] is True
        learning, tutor = body["agents"]["learning"], body["agents"]["tutor"]
        first = act(http, "ana", "get_next_activity", agent="learning").json()
        activity = first["response"]["data"]["activity"]["activityId"]
        for _ in range(4):
            r = act(
                http,
                "ana",
                "process_interaction",
                activityId=activity,
                response={"answer": "definitely wrong", "responseTimeMs": 900},
            )
            assert r.status_code == 200, r.text
            activity = r.json()["response"]["nextActivity"]["activityId"]
        deadline = time.monotonic() + 10
        while not (insights := http.get("/api/learners/ana").json()["insights"]):
            assert time.monotonic() < deadline, "the struggling insight never arrived"
            time.sleep(0.05)
        assert insights[0]["type"] == "struggling_detected"

    served = {kind: " ".join(w.lines) for kind, w in workers.items()}
    assert f"{learning}/" in served["learning"] and f"{tutor}/" not in served["learning"]
    assert f"{tutor}/" in served["tutor"] and f"{learning}/" not in served["tutor"]
    assert served["learning"].count(f"{learning}/process_interaction completed") == 4
