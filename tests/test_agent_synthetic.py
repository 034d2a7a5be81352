"""SyntheticAgent: a live agent that really sleeps, fails and hangs as its model says."""

from __future__ import annotations

import asyncio
import gc
import math
from pathlib import Path

import numpy as np
import pytest

import orchkit as ok
from orchkit._spec.models import AgentModels
from orchkit.agents import SyntheticAgent

DEFAULT = Path(__file__).resolve().parents[1] / "data" / "agents" / "default.yaml"
Z = 5.0


def models(**entry) -> AgentModels:
    return AgentModels.from_dict({"agents": {"syn-*": entry}})


def ctx(attempt: int = 1) -> dict:
    return {"plan_id": "p", "step_id": "s", "attempt": attempt, "run_id": 1, "results": {}}


async def test_ok_response_is_valid_and_reports_the_drawn_latency():
    agent = SyntheticAgent(
        "syn-1", models(latency={"dist": "constant", "value": 30}), time_scale=0.5
    )
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    resp = await agent.process("anything", {"x": 1}, ctx(2))
    elapsed_ms = (loop.time() - t0) * 1000
    assert isinstance(resp, ok.AgentResponse)
    assert resp.action == "anything" and resp.confidence == 1.0
    assert resp.data == {"synthetic": True, "latencyMs": 30.0, "attempt": 2}
    assert 14.0 <= elapsed_ms < 200.0  # 30 ms scaled by 0.5


async def test_error_rate_matches_and_errors_are_retryable():
    agent = SyntheticAgent(
        "syn-1", models(latency={"dist": "constant", "value": 1}, error=0.3), seed=4, time_scale=0.0
    )
    n, errors = 3000, 0
    for _ in range(n):
        try:
            await agent.process("a", {}, ctx())
        except ok.AgentError as exc:
            errors += 1
            assert exc.retryable
            assert "agent 'syn-1' action 'a'" in str(exc) and "0.3" in str(exc)
    assert abs(errors / n - 0.3) < Z * math.sqrt(0.3 * 0.7 / n)


async def test_latency_distribution_matches_and_sleeps_are_real():
    m = models(latency={"dist": "lognormal", "median": 40, "p95": 120})
    dist = m.resolve("syn-1", "a").latency
    agent = SyntheticAgent("syn-1", m, seed=8, time_scale=0.5)
    loop = asyncio.get_running_loop()

    async def timed():
        t0 = loop.time()
        resp = await agent.process("a", {}, ctx())
        return resp.data["latencyMs"], (loop.time() - t0) * 1000

    gc.collect()
    gc.disable()  # a full collection of the suite's heap (~0.5 s) would delay every sleep
    try:
        out = np.array(await asyncio.gather(*(timed() for _ in range(400))))
    finally:
        gc.enable()
    drawn, wall = out[:, 0], out[:, 1] / 0.5  # wall time back in model ms
    n = len(drawn)
    for q in (0.1, 0.5, 0.95):
        tol = Z * math.sqrt(q * (1 - q) / n)
        assert abs(np.mean(drawn <= dist.quantile(q)) - q) < tol
        # the real sleeps follow the model too, give or take scheduler overhead
        assert np.mean(wall <= dist.quantile(q)) < q + tol
        assert np.mean(wall <= dist.quantile(q) + 10.0) > q - tol
    # each call really slept its own draw (asyncio may wake up to ~1 ms early)
    overhead_ms = (wall - drawn) * 0.5
    assert overhead_ms.min() > -1.5
    assert np.median(overhead_ms) < 5.0


async def test_hang_is_only_ended_by_cancellation():
    agent = SyntheticAgent("syn-1", models(latency={"dist": "constant", "value": 1}, hang=1.0))
    task = asyncio.ensure_future(agent.process("a", {}, ctx()))
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert not done  # far beyond its 1 ms latency
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await agent.process("b", {}, ctx())


async def test_same_seed_same_behaviour():
    m = models(latency={"dist": "exponential", "mean": 50}, error=0.4)

    async def trace(seed):
        agent = SyntheticAgent("syn-1", m, seed=seed, time_scale=0.0)
        out = []
        for _ in range(40):
            try:
                out.append((await agent.process("a", {}, ctx())).data["latencyMs"])
            except ok.AgentError:
                out.append("error")
        return out

    assert await trace(1) == await trace(1)
    assert await trace(1) != await trace(2)


def test_construction_capacity_and_bad_arguments(tmp_path):
    agent = SyntheticAgent("tutor-agent-123", str(DEFAULT))
    assert agent.capacity == 4 and agent.agent_id == "tutor-agent-123"
    assert SyntheticAgent("tutor-agent-123", DEFAULT, capacity=1).capacity == 1
    assert SyntheticAgent("agent1", DEFAULT).capacity is None
    with pytest.raises(ok.PlanValidationError, match="no agent model matches agent 'robot-1'"):
        SyntheticAgent("robot-1", DEFAULT)
    with pytest.raises(ValueError, match="time_scale"):
        SyntheticAgent("agent1", DEFAULT, time_scale=-1)
    with pytest.raises(ok.PlanValidationError, match="cannot read agent models file"):
        SyntheticAgent("agent1", tmp_path / "nope.yaml")


# ---------------------------------------------------------------- through the orchestrator


class Probe(SyntheticAgent):
    """Counts how often the orchestrator really cancelled a call."""

    cancelled = 0

    async def process(self, action, input, context):
        try:
            return await super().process(action, input, context)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def test_live_plan_with_hangs_errors_and_capacity():
    m = AgentModels.from_dict(
        {
            "agents": {
                "stuck-*": {"latency": {"dist": "constant", "value": 5}, "hang": 1.0},
                "busy-*": {"capacity": 1, "latency": {"dist": "constant", "value": 40}},
                "flaky-*": {"latency": {"dist": "constant", "value": 5}, "error": 1.0},
            }
        }
    )
    stuck, busy, flaky = (
        Probe("stuck-1", m),
        SyntheticAgent("busy-1", m),
        SyntheticAgent("flaky-1", m),
    )
    plan = ok.Plan.model_validate(
        {
            "id": "live",
            "parallel": True,
            "steps": [
                {
                    "id": "hang",
                    "agentId": "stuck-1",
                    "action": "a",
                    "timeout": 60,
                    "retryPolicy": {"maxRetries": 1, "backoffMs": 10},
                },
                {"id": "b1", "agentId": "busy-1", "action": "a"},
                {"id": "b2", "agentId": "busy-1", "action": "a"},
                {
                    "id": "err",
                    "agentId": "flaky-1",
                    "action": "a",
                    "retryPolicy": {"maxRetries": 2, "backoffMs": 5},
                },
            ],
        }
    )
    m.check_plan(plan)
    orch = ok.Orchestrator()
    for agent in (stuck, busy, flaky):
        await orch.register_agent(agent)
    result = await orch.orchestrate(plan)
    await orch.shutdown()

    assert result.status == "failed"
    assert result.step_states == {
        "hang": "failed",
        "b1": "succeeded",
        "b2": "succeeded",
        "err": "failed",
    }
    spans = result.spans.set_index(["step_id", "attempt"])
    assert list(spans.loc["hang", "outcome"]) == ["timeout", "timeout"]
    assert stuck.cancelled == 2  # each hanging call was really cancelled by its step timeout
    assert list(spans.loc["err", "outcome"]) == ["error"] * 3
    assert "synthetic error" in result.errors["err"]
    # capacity 1 from the model: b2 waited FIFO for b1
    b2 = spans.loc[("b2", 1)]
    assert b2["start_ms"] - b2["queued_ms"] >= 35.0
    assert result.results["b1"].data["latencyMs"] == 40.0
