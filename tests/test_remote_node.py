"""A Node worker (Node's bullmq, examples/node-worker/worker.js) serving a Python
orchestrator's RemoteAgent (SPEC §9 interop): the seed's response shape, non-retryable
UnrecoverableError, cancellation of an active job over the orchkit:cancel channel."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

import pytest
from test_remote import ROOT, orchestrate, spawn, step, uid  # noqa: F401 - spawn is a fixture

from orchkit import RemoteAgent

NODE_MODULES = ROOT / "tests" / "node" / "node_modules"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def node_worker(spawn, redis_server):  # noqa: F811
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node is not installed: the Node interop test needs Node >= 18 "
            "(apt-get install nodejs npm; then `npm ci` in tests/node)"
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    assert int(version.strip().lstrip("v").split(".")[0]) >= 18, f"Node {version} is too old"
    if not (NODE_MODULES / "bullmq").is_dir():
        pytest.fail("tests/node/node_modules has no bullmq: run `npm ci` in tests/node")

    def start(queue: str):
        return spawn(
            [node, "worker.js"],
            cwd=ROOT / "examples" / "node-worker",
            env={"NODE_PATH": str(NODE_MODULES), "REDIS_URL": redis_server.url, "QUEUE": queue},
        ).wait_ready()

    return start


def test_a_node_worker_serves_a_python_orchestrator(node_worker, redis_server):
    queue = uid("tutor-node")
    worker = node_worker(queue)
    agent = "tutor-agent-node-1"
    retry = {"maxRetries": 2, "backoffMs": 0}
    plan = {
        "id": "node",
        "parallel": True,
        "steps": [
            step("hint", agent, "generate_hint", {"topic": "fractions"}),
            step("invalid", agent, "generate_hint", {}, retryPolicy=retry),
            step("slow", agent, "slow_hint", {"ms": 5000}, timeout=500),
        ],
    }
    events = []
    t0 = time.monotonic()
    result = asyncio.run(
        orchestrate(
            plan, redis_server.url, RemoteAgent(agent, redis_server.url, queue=queue), events=events
        )
    )
    assert time.monotonic() - t0 < 3
    hint = result.results["hint"]
    assert hint.action == "generate_hint" and hint.confidence == 0.8
    assert hint.next_steps == ["try_again"]
    assert hint.data["worker"] == "node" and hint.data["agentId"] == agent
    assert hint.data["step"] == "hint"
    attempts = result.spans.groupby("step_id").attempt.max().to_dict()
    assert attempts["invalid"] == 1  # UnrecoverableError: not retried despite maxRetries 2
    assert "needs input.topic" in result.errors["invalid"]
    assert result.spans.set_index("step_id").outcome["slow"] == "timeout"
    slow_id = next(
        p["bullJobId"] for e, p in events if e == "queue:failed" and p["stepId"] == "slow"
    )
    deadline = time.monotonic() + 5
    while f"cancelled {slow_id}" not in worker.lines and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"cancelled {slow_id}" in worker.lines
