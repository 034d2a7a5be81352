"""Agents on other machines (SPEC §9): RemoteAgent + `orchkit worker` processes on a real
redis-server; kill -9 of a worker mid-job; cancellation across the process boundary."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from remote_agents import read

import orchkit as ok
from orchkit import RemoteAgent

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)


class Proc:
    """A process started in its own group; lines of its stdout+stderr kept in ``lines``."""

    def __init__(
        self, args: list[str], env: dict | None = None, ready: str = "ready", cwd: Path = ROOT
    ):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self._seen = threading.Event()
        self._ready = ready
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if self._ready in line:
                self._seen.set()
        self._seen.set()

    def wait_ready(self, timeout: float = 30) -> Proc:
        if not self._seen.wait(timeout) or self.proc.poll() is not None:
            self.kill()
            raise AssertionError("process did not get ready:\n" + "\n".join(self.lines))
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGKILL:
            self.proc.wait(10)


@pytest.fixture
def spawn():
    """spawn(args, env=..., ready=...) -> Proc; every process is killed at teardown."""
    procs: list[Proc] = []

    def start(args, **kw) -> Proc:
        procs.append(Proc(args, **kw))
        return procs[-1]

    try:
        yield start
    finally:
        for p in procs:
            p.kill()


PYENV = {"PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture
def worker(spawn, redis_server):
    """worker(agents, *flags) -> a ready `orchkit worker` process serving scripted agents."""

    def start(agents: str, *flags: str, wait: bool = True) -> Proc:
        p = spawn(
            [
                sys.executable,
                "-m",
                "orchkit",
                "worker",
                "--redis",
                redis_server.url,
                "--agents",
                agents,
                "--factory",
                "remote_agents:make",
                *flags,
            ],
            env=PYENV,
        )
        return p.wait_ready() if wait else p

    return start


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def step(sid, agent, action, input=None, **extra):
    return {"id": sid, "agentId": agent, "action": action, "input": input or {}, **extra}


async def orchestrate(plan: dict, redis: str, *agents: RemoteAgent, events=None):
    orch = ok.Orchestrator(seed=0)
    if events is not None:
        orch.on("*", lambda event, payload: events.append((event, dict(payload))))
    ids = {s["agentId"] for s in plan["steps"]}
    for agent in agents or [RemoteAgent(a, redis) for a in sorted(ids)]:
        await orch.register_agent(agent)
    try:
        return await orch.orchestrate(plan)
    finally:
        await orch.shutdown()


def spans(result):
    return result.spans.sort_values(["step_id", "attempt"])


def test_a_plan_runs_on_a_worker_process_with_context_and_bull_job_ids(worker, redis_server):
    agent = uid("py")
    worker(agent, "--concurrency", "4")
    plan = {
        "id": "remote",
        "parallel": True,
        "steps": [
            step("a", agent, "echo", {"x": 1}),
            step("b", agent, "echo", {"y": 2}, dependencies=["a"]),
        ],
    }
    events = []
    result = asyncio.run(orchestrate(plan, redis_server.url, events=events))
    assert result.status == "succeeded", result.errors
    a, b = result.results["a"].data, result.results["b"].data
    assert a["pid"] != os.getpid() and a["input"] == {"x": 1}
    assert b["seen"] == {"a": a}  # the earlier result crossed as JSON and came back
    done = [p for e, p in events if e == "queue:completed"]
    assert [p["stepId"] for p in done] == ["a", "b"]
    assert all(p["bullJobId"].startswith("ok-") for p in done)
    assert done[0]["bullJobId"] != done[1]["bullJobId"]


def test_errors_keep_their_message_and_retryability_across_the_boundary(worker, redis_server):
    agent = uid("py")
    worker(agent, "--concurrency", "4")
    retry = {"maxRetries": 2, "backoffMs": 0}
    plan = {
        "id": "errors",
        "parallel": True,
        "steps": [
            step("soft", agent, "fail", {"message": "busy, try later"}, retryPolicy=retry),
            step(
                "hard",
                agent,
                "fail",
                {"message": "bad input", "retryable": False},
                retryPolicy=retry,
            ),
            step("bug", agent, "crash", retryPolicy={"maxRetries": 0, "backoffMs": 0}),
            step("unknown", agent, "nope", retryPolicy=retry),
        ],
    }
    events = []
    result = asyncio.run(orchestrate(plan, redis_server.url, events=events))
    attempts = result.spans.groupby("step_id").attempt.max().to_dict()
    assert attempts == {"soft": 3, "hard": 1, "bug": 1, "unknown": 1}
    assert result.errors["soft"] == "busy, try later"
    assert result.errors["hard"] == "bad input"
    assert "raised ValueError: scripted bug" in result.errors["bug"]
    failed = [p for e, p in events if e == "queue:failed"]
    assert len(failed) == 6 and all(p["bullJobId"].startswith("ok-") for p in failed)


def test_a_timeout_removes_a_waiting_job_and_cancels_the_active_one(worker, redis_server, tmp_path):
    agent = uid("py")
    worker(agent, "--concurrency", "1")
    busy, queued = tmp_path / "busy", tmp_path / "queued"
    plan = {
        "id": "cancel",
        "parallel": True,
        "steps": [
            step("busy", agent, "sleep", {"ms": 3000, "marker": str(busy)}, timeout=800),
            step("queued", agent, "sleep", {"ms": 10, "marker": str(queued)}, timeout=300),
        ],
    }
    events = []
    t0 = time.monotonic()
    result = asyncio.run(orchestrate(plan, redis_server.url, events=events))
    assert time.monotonic() - t0 < 2.5
    assert result.spans.set_index("step_id").outcome.to_dict() == {
        "busy": "timeout",
        "queued": "timeout",
    }
    deadline = time.monotonic() + 5
    while "cancelled" not in read(busy) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert read(busy)[0].startswith("started") and read(busy)[1:] == ["cancelled"]
    time.sleep(0.5)  # the worker is free again: a removed job must not run now
    assert read(queued) == []

    async def leftovers():
        from bullmq import Queue

        q = Queue(agent, {"connection": redis_server.url})
        try:
            return await q.getJobCounts("waiting", "active", "delayed")
        finally:
            await q.close()

    assert asyncio.run(leftovers()) == {"waiting": 0, "active": 0, "delayed": 0}


def test_a_late_result_of_a_timed_out_attempt_is_ignored(worker, redis_server):
    agent = uid("py")
    worker(agent, "--concurrency", "4")
    plan = {
        "id": "late",
        "steps": [
            step(
                "s",
                agent,
                "stubborn",
                {"ms": 700},
                timeout=200,
                retryPolicy={"maxRetries": 1, "backoffMs": 0},
            )
        ],
    }
    events = []

    async def go():
        result = await orchestrate(plan, redis_server.url, events=events)
        await asyncio.sleep(0.8)  # the first attempt's result arrives meanwhile
        return result

    result = asyncio.run(go())
    assert result.status == "succeeded"
    assert spans(result).outcome.tolist() == ["timeout", "succeeded"]
    assert result.results["s"].data["attempt"] == 2
    assert [e for e, _ in events].count("queue:completed") == 1


def test_kill_9_mid_job_the_step_timeout_retries_on_another_worker(worker, redis_server, tmp_path):
    agent, marker = uid("py"), tmp_path / "marker"
    first = worker(agent)
    plan = {
        "id": "kill",
        "steps": [
            step(
                "s",
                agent,
                "sleep",
                {"ms": 60_000, "marker": str(marker)},
                timeout=4000,
                retryPolicy={"maxRetries": 2, "backoffMs": 0},
            )
        ],
    }

    async def go():
        run = asyncio.ensure_future(orchestrate(plan, redis_server.url))
        while not read(marker):
            await asyncio.sleep(0.02)
        first.kill()  # SIGKILL: no clean-up of any kind
        second = worker(agent, wait=False)
        result = await run
        return result, second

    result, second = asyncio.run(go())
    assert result.status == "succeeded", result.errors
    assert spans(result).outcome.tolist() == ["timeout", "succeeded"]
    assert read(marker)[0].startswith(f"started {first.proc.pid} attempt 1")
    assert result.results["s"].data["pid"] == second.proc.pid


def test_kill_9_mid_job_the_stall_check_fails_the_job_and_the_retry_recovers(
    worker, redis_server, tmp_path
):
    """No step timeout: BullMQ's stall check (lock 1 s) fails the dead worker's job."""
    agent, marker = uid("py"), tmp_path / "marker"
    fast = ("--lock-ms", "1000", "--stalled-interval-ms", "500")
    first = worker(agent, *fast)
    plan = {
        "id": "stall",
        "steps": [
            step(
                "s",
                agent,
                "sleep",
                {"ms": 60_000, "marker": str(marker)},
                retryPolicy={"maxRetries": 1, "backoffMs": 0},
            )
        ],
    }

    async def go():
        run = asyncio.ensure_future(orchestrate(plan, redis_server.url))
        while not read(marker):
            await asyncio.sleep(0.02)
        second = worker(agent, *fast)
        first.kill()
        return await asyncio.wait_for(run, 20), second

    result, second = asyncio.run(go())
    assert result.status == "succeeded", result.errors
    s = spans(result)
    assert s.outcome.tolist() == ["error", "succeeded"]
    assert "stalled" in s.error.iloc[0]
    assert result.results["s"].data["pid"] == second.proc.pid


def test_a_pool_queue_creates_one_agent_per_id_on_first_use(worker, redis_server):
    pool, kind = uid("pool"), uid("learner")
    worker(f"{kind}-*", "--queue", pool, "--concurrency", "4")
    a1, a2, other = f"{kind}-1", f"{kind}-2", uid("tutor")
    plan = {
        "id": "pool",
        "parallel": True,
        "steps": [
            step("one", a1, "echo"),
            step("two", a2, "echo"),
            step("again", a1, "echo", dependencies=["one"]),
            step("foreign", other, "echo", retryPolicy={"maxRetries": 3, "backoffMs": 0}),
        ],
    }
    agents = [RemoteAgent(a, redis_server.url, queue=pool) for a in (a1, a2, other)]
    result = asyncio.run(orchestrate(plan, redis_server.url, *agents))
    data = {sid: r.data for sid, r in result.results.items()}
    assert data["one"]["agentId"] == a1 and data["two"]["agentId"] == a2
    assert data["one"]["serial"] == data["again"]["serial"] != data["two"]["serial"]
    assert result.spans.set_index("step_id").attempt.to_dict()["foreign"] == 1
    assert f"not agent '{other}'" in result.errors["foreign"]


def test_a_pool_releases_an_agent_idle_for_idle_ms_and_makes_a_fresh_one(worker, redis_server):
    pool, kind = uid("pool"), uid("learner")
    worker(f"{kind}-*", "--queue", pool, "--idle-ms", "400")
    a1 = f"{kind}-1"

    def serial() -> int:
        plan = {"id": "idle", "steps": [step("s", a1, "echo")]}
        result = asyncio.run(
            orchestrate(plan, redis_server.url, RemoteAgent(a1, redis_server.url, queue=pool))
        )
        return result.results["s"].data["serial"]

    first = serial()
    assert serial() == first  # used again within 400 ms: the same agent
    time.sleep(1.0)  # idle for 2.5 x idle-ms: released
    assert serial() != first


def test_insights_emitted_in_the_worker_reach_the_orchestrators_bus(worker, redis_server):
    agent = uid("py")
    worker(agent)
    events = []
    plan = {"id": "insight", "steps": [step("s", agent, "insight")]}
    result = asyncio.run(orchestrate(plan, redis_server.url, events=events))
    assert result.success
    insights = [p for e, p in events if e == "agent:insight"]
    assert insights and insights[0]["agentId"] == agent
    assert insights[0]["insight"] == {"type": "struggling_detected", "learnerId": "l-1"}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_finishes_short_jobs_and_fails_long_ones_then_exits(
    worker, redis_server, tmp_path, sig
):
    agent = uid("py")
    w = worker(agent, "--concurrency", "2", "--grace-ms", "1000")
    short, long = tmp_path / "short", tmp_path / "long"
    plan = {
        "id": "term",
        "parallel": True,
        "steps": [
            step("short", agent, "sleep", {"ms": 400, "marker": str(short)}),
            step("long", agent, "sleep", {"ms": 30_000, "marker": str(long)}),
        ],
    }

    async def go():
        run = asyncio.ensure_future(orchestrate(plan, redis_server.url))
        while not (read(short) and read(long)):
            await asyncio.sleep(0.02)
        t0 = time.monotonic()
        w.kill(sig)
        result = await asyncio.wait_for(run, 15)
        return result, time.monotonic() - t0

    result, took = asyncio.run(go())
    assert w.proc.wait(10) == 0
    assert took < 6
    assert result.spans.set_index("step_id").outcome.to_dict() == {
        "short": "succeeded",
        "long": "error",
    }
    assert result.errors["long"] == "the worker is shutting down"
    assert read(long)[-1] == "cancelled"
    assert any("stopped after 1 job(s)" in line for line in w.lines)


def test_orchkit_run_redis_runs_a_plan_file_against_workers(worker, redis_server, tmp_path):
    agent = uid("py")
    worker(agent)
    plan = ok.Plan.model_validate({"id": "cli", "steps": [step("s", agent, "echo")]})
    plan.save(tmp_path / "plan.json")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchkit",
            "run",
            str(tmp_path / "plan.json"),
            "--redis",
            redis_server.url,
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **PYENV},
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "plan 'cli': succeeded" in proc.stdout


def test_runs_go_on_after_redis_restarts(spawn, tmp_path):
    """Redis (with AOF) restarts between two runs: the orchestrator's events reader and the
    worker reconnect, and the second run succeeds on the same RemoteAgent."""
    from redis_server import RedisServer

    server = RedisServer(tmp_path / "redis", aof=True)
    try:
        agent = uid("py")
        spawn(
            [
                sys.executable,
                "-m",
                "orchkit",
                "worker",
                "--redis",
                server.url,
                "--agents",
                agent,
                "--factory",
                "remote_agents:make",
            ],
            env=PYENV,
        ).wait_ready()
        plan = {
            "id": "restart",
            "steps": [
                step(
                    "s",
                    agent,
                    "echo",
                    timeout=3000,
                    retryPolicy={"maxRetries": 5, "backoffMs": 500},
                )
            ],
        }

        async def go():
            orch = ok.Orchestrator()
            await orch.register_agent(RemoteAgent(agent, server.url))
            try:
                first = await orch.orchestrate(plan)
                await asyncio.to_thread(server.restart)
                second = await asyncio.wait_for(orch.orchestrate(plan), 30)
                return first, second
            finally:
                await orch.shutdown()

        first, second = asyncio.run(go())
        assert first.success and second.success, second.errors
    finally:
        server.stop()
