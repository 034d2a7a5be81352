"""Hardening, round 2 (issue 19): the queue under outages and odd names.

- A RemoteAgent whose Redis goes away fails the attempt with a retryable AgentError once
  Redis has not answered for ``redis_timeout_ms`` (default 10,000 ms), whether or not the
  step has a timeout; the step's retry policy decides what follows.
- A queue name is printable ASCII without spaces or ':' (Redis refuses other worker
  connection names; Node's BullMQ refuses ':'): `orchkit worker` refuses another at start
  (exit 2, one line naming it), and so does RemoteAgent.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from redis_server import RedisServer

import orchkit as ok

pytestmark = pytest.mark.timeout(90)


def plan(agent: str, **step) -> dict:
    return {"id": "gone", "steps": [{"id": "s", "agentId": agent, "action": "echo", **step}]}


@pytest.mark.parametrize("when", ["mid-wait", "before the attempt"])
def test_a_remote_agent_whose_redis_is_gone_fails_the_attempt_within_its_redis_timeout(
    tmp_path, when
):
    """No worker serves the queue, so the job waits; Redis is killed (while the job waits,
    or before the attempt adds it). The step has no timeout, yet each attempt fails after
    about redis_timeout_ms (1,000 ms here) with an AgentError naming Redis and the setting,
    and the retry policy runs its second attempt the same way."""
    server = RedisServer(tmp_path / "redis")

    async def go() -> tuple[ok.RunResult, float]:
        orch = ok.Orchestrator()
        agent = ok.RemoteAgent("gone-agent", server.url, redis_timeout_ms=1000)
        await orch.register_agent(agent)
        try:
            if when == "before the attempt":
                server.stop()
            else:
                asyncio.get_running_loop().call_later(0.5, server.stop)
            t0 = time.monotonic()
            result = await asyncio.wait_for(
                orch.orchestrate(plan("gone-agent", retryPolicy={"maxRetries": 1, "backoffMs": 0})),
                30,
            )
            return result, time.monotonic() - t0
        finally:
            await asyncio.wait_for(orch.shutdown(), 30)

    try:
        result, took = asyncio.run(go())
    finally:
        server.stop()
    assert result.status == "failed"
    error = result.errors["s"]
    assert "did not answer for 1000 ms" in error and "redis_timeout_ms" in error, error
    assert server.url in error
    spans = result.spans
    assert list(spans["outcome"]) == ["error", "error"]  # retryable: the retry ran too
    assert 1.5 < took < 2 * (1.0 + 2.0) + 1.0, took  # each attempt: limit + at most 2 s


def test_redis_timeout_ms_is_checked():
    for bad in (0, -1, float("inf"), float("nan"), True, "1000"):
        with pytest.raises(ValueError, match="redis_timeout_ms"):
            ok.RemoteAgent("a", "redis://127.0.0.1:1/0", redis_timeout_ms=bad)
    assert ok.RemoteAgent("a", "redis://127.0.0.1:1/0").redis_timeout_ms == 10_000.0


BAD_NAMES = ["my queue", "café", "tutor:1", "tab\tname", "日本"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_worker_refuses_a_queue_name_redis_or_bullmq_refuse_naming_it(capsys, name):
    from orchkit.cli import main

    for args in (["--agents", name], ["--agents", "learning-agent-*", "--queue", name]):
        code = main(["worker", "--redis", "redis://127.0.0.1:1/0", *args])
        err = capsys.readouterr().err
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1, err
        assert repr(name) in err and "cannot name a queue" in err, err


@pytest.mark.parametrize("name", BAD_NAMES)
def test_remote_agent_refuses_the_same_queue_names(name):
    with pytest.raises(ValueError, match="cannot name a queue") as err:
        ok.RemoteAgent("agent-1", "redis://127.0.0.1:1/0", queue=name)
    assert repr(name) in str(err.value)
    with pytest.raises(ValueError, match="cannot name a queue"):
        ok.RemoteAgent(name, "redis://127.0.0.1:1/0")  # the agent id is the queue
    ok.RemoteAgent(name, "redis://127.0.0.1:1/0", queue="a-valid.queue_name@1")


def test_names_of_printable_ascii_work_end_to_end(tmp_path):
    """A queue name with the allowed punctuation is served by a real worker."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    server = RedisServer(tmp_path / "redis")
    name = "q.odd_name@1+x~"
    env = {
        **os.environ,
        "PYTHONPATH": f"{root}{os.pathsep}{root / 'tests'}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchkit",
            "worker",
            "--redis",
            server.url,
            "--agents",
            "*",
            "--queue",
            name,
            "--factory",
            "remote_agents:make",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        async def go() -> ok.RunResult:
            orch = ok.Orchestrator()
            await orch.register_agent(ok.RemoteAgent("odd-1", server.url, queue=name))
            try:
                return await asyncio.wait_for(orch.orchestrate(plan("odd-1", timeout=20_000)), 30)
            finally:
                await orch.shutdown()

        result = asyncio.run(go())
        assert result.success, result.errors
    finally:
        worker.terminate()
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)
        server.stop()
