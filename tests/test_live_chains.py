"""The live driver's hand-off (issue 27): when an attempt's end starts exactly one attempt (a
dependent step, a retry without backoff), the ending task runs it instead of a new task.
What must not change: cancellation (timeouts, failFast, shutdown, a cancel before the
attempt began), slots, the order of events, fairness to the rest of the event loop.
"""

from __future__ import annotations

import asyncio
import gc
import time
import weakref

import pytest

import orchkit as ok
from orchkit import AgentResponse, Plan

pytestmark = pytest.mark.timeout(30)
SHUTDOWN = "cancelled: the orchestrator shut down"


def chain_plan(ids, *, extra=(), **plan_fields) -> Plan:
    """Steps ``ids`` in a chain (each depends on the one before), on agent "w", plus the
    independent steps ``extra``; step fields by id in ``plan_fields["fields"]``."""
    fields = plan_fields.pop("fields", {})
    steps = [
        {
            "id": sid,
            "agentId": "w",
            "action": "x",
            "dependencies": [ids[k - 1]] if k else [],
            **fields.get(sid, {}),
        }
        for k, sid in enumerate(ids)
    ]
    steps += [{"id": sid, "agentId": "w", "action": "x", **fields.get(sid, {})} for sid in extra]
    return Plan.model_validate({"id": "c", "parallel": True, "steps": steps, **plan_fields})


class Worker(ok.Agent):
    """Records each call (step, attempt, the task it ran in, whether it was cancelled);
    ``behaviour[step_id]`` (async fn(attempt) -> response or None) overrides the default
    of answering at once."""

    def __init__(self, agent_id="w", behaviour=None, probe=None, **kw):
        super().__init__(agent_id, **kw)
        self.behaviour = behaviour or {}
        self.probe = probe  # called at each call, its value recorded
        self.calls: list[dict] = []
        self.called = asyncio.Event()

    async def process(self, action, input, context):
        rec = {
            "step": context["step_id"],
            "attempt": context["attempt"],
            "task": asyncio.current_task(),
            "cancelled": False,
            "seen": set(context["results"]),
            "probe": self.probe() if self.probe else None,
        }
        self.calls.append(rec)
        self.called.set()
        try:
            fn = self.behaviour.get(context["step_id"])
            out = await fn(context["attempt"]) if fn else None
            return out or AgentResponse(action=action, confidence=1.0)
        except asyncio.CancelledError:
            rec["cancelled"] = True
            raise

    def tasks(self, *steps):
        return [c["task"] for c in self.calls if not steps or c["step"] in steps]


async def hang(attempt):
    await asyncio.Event().wait()


async def orchestrator(*agents, **kw) -> ok.Orchestrator:
    orch = ok.Orchestrator(**kw)
    for agent in agents:
        await orch.register_agent(agent)
    return orch


def attempt_tasks():
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and t.get_coro().__qualname__ == "Orchestrator._call"
    ]


async def settled(orch, agent_id="w"):
    """Nothing of the orchestrator's is left running (a loop turn for the last exits)."""
    await asyncio.sleep(0.01)
    assert orch.agent_load(agent_id) == (0, 0)
    assert attempt_tasks() == []


async def test_a_chain_runs_in_one_task_in_order_and_yields_to_the_loop():
    ids = [f"s{k}" for k in range(300)]
    ticks, stop = 0, False
    agent = Worker(probe=lambda: ticks)
    orch = await orchestrator(agent)
    log: list[tuple[str, str | None]] = []
    orch.on("*", lambda e, p: log.append((e, p.get("stepId"))))

    async def ticker():
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0)

    other = asyncio.ensure_future(ticker())
    result = await asyncio.wait_for(orch.orchestrate(chain_plan(ids)), 10)
    stop = True
    await other
    assert result.success
    assert [c["step"] for c in agent.calls] == ids
    assert all(c["seen"] == set(ids[:k]) for k, c in enumerate(agent.calls))
    assert len(set(agent.tasks())) == 1  # one task for the whole chain, not one per step
    # another task ran while the chain did: it yielded to the loop every 64 steps at least
    assert agent.calls[-1]["probe"] - agent.calls[0]["probe"] >= (len(ids) - 1) // 64
    expected = [("plan:started", None), ("step:started", "s0")]
    for k, sid in enumerate(ids):
        expected += [("step:completed", sid), ("queue:completed", sid)]
        if k + 1 < len(ids):
            expected.append(("step:started", ids[k + 1]))
    assert log == [*expected, ("plan:completed", None)]
    await settled(orch)
    await orch.shutdown()


@pytest.mark.parametrize("retry", [False, True])
async def test_a_timeout_in_the_middle_of_a_chain_cancels_that_attempt(retry):
    """b runs in the task a0..a4 handed it; its timeout must cancel b's agent (the task of
    the whole chain), then the retry (or the skipped rest) goes on."""
    ids = ["a0", "a1", "a2", "a3", "a4", "b", "c"]

    async def b(attempt):
        if attempt == 1:
            await hang(attempt)

    fields = {"b": {"timeout": 30}}
    if retry:
        fields["b"]["retryPolicy"] = {"maxRetries": 1, "backoffMs": 0}
    agent = Worker(behaviour={"b": b})
    orch = await orchestrator(agent)
    result = await asyncio.wait_for(orch.orchestrate(chain_plan(ids, fields=fields)), 5)
    first_b = agent.calls[5]
    assert (first_b["step"], first_b["attempt"], first_b["cancelled"]) == ("b", 1, True)
    assert len(set(agent.tasks("a0", "a1", "a2", "a3", "a4"))) == 1
    assert first_b["task"] is agent.calls[0]["task"]  # b#1 was handed off, then cancelled
    outcomes = list(result.spans[result.spans.step_id == "b"].outcome)
    if retry:
        assert result.success and outcomes == ["timeout", "succeeded"]
        b2, c = agent.calls[6], agent.calls[7]
        assert (b2["attempt"], c["step"], c["task"]) == (2, "c", b2["task"])
    else:
        assert result.status == "failed" and outcomes == ["timeout"]
        assert result.step_states["c"] == "skipped" and len(agent.calls) == 6
    await settled(orch)
    await orch.shutdown()


async def test_fail_fast_mid_chain_cancels_the_parallel_branch():
    ids = ["c0", "c1", "c2", "c3"]

    async def fatal(attempt):
        raise ok.AgentError("no", retryable=False)

    async def slow(attempt):  # p's agent is called (and hangs) meanwhile
        await asyncio.sleep(0.01)

    agent = Worker(behaviour={"c0": slow, "c2": fatal, "p": hang})
    orch = await orchestrator(agent)
    plan = chain_plan(ids, extra=["p"], failFast=True)
    result = await asyncio.wait_for(orch.orchestrate(plan), 5)
    assert result.status == "failed"
    assert result.step_states == {
        "c0": "succeeded",
        "c1": "succeeded",
        "c2": "failed",
        "c3": "cancelled",
        "p": "cancelled",
    }
    assert len(set(agent.tasks("c0", "c1", "c2"))) == 1
    assert [c["cancelled"] for c in agent.calls if c["step"] == "p"] == [True]
    await settled(orch)
    await orch.shutdown()


async def test_an_attempt_handed_off_then_cancelled_before_it_began_never_runs():
    """a's success starts b (the one attempt started: handed off) and c, whose open breaker
    rejects it; failFast then cancels b in the same answer. b's agent is never called and
    its slot (capacity 1) is free for the next run at once."""
    x = Worker("x", capacity=1)

    async def fails(attempt):
        raise ok.AgentError("down", retryable=False)

    y = Worker("y", behaviour={"open": fails})
    breaker = {"window": 1, "minCalls": 1, "failureRate": 1.0, "openMs": 60_000}
    orch = await orchestrator(x, y, policies={"breakers": {"y": breaker}})
    opening = Plan.model_validate(
        {"id": "o", "steps": [{"id": "open", "agentId": "y", "action": "x"}]}
    )
    assert (await orch.orchestrate(opening)).status == "failed"
    assert orch.breaker_states()["y"] == "open"
    plan = Plan.model_validate(
        {
            "id": "p",
            "parallel": True,
            "failFast": True,
            "steps": [
                {"id": "a", "agentId": "x", "action": "x"},
                {"id": "b", "agentId": "x", "action": "x", "dependencies": ["a"]},
                {"id": "c", "agentId": "y", "action": "x", "dependencies": ["a"]},
            ],
        }
    )
    result = await asyncio.wait_for(orch.orchestrate(plan), 5)
    assert result.status == "failed"
    assert result.step_states == {"a": "succeeded", "b": "cancelled", "c": "failed"}
    assert [c["step"] for c in x.calls] == ["a"]  # b never called its agent
    assert orch.agent_load("x") == (0, 0)
    again = Plan.model_validate({"id": "q", "steps": [{"id": "b", "agentId": "x", "action": "x"}]})
    assert (await asyncio.wait_for(orch.orchestrate(again), 2)).success
    await settled(orch, "x")
    await orch.shutdown()


async def test_shutdown_mid_chain_cancels_the_handed_off_attempt():
    ids = [f"s{k}" for k in range(10)] + ["h", "t"]
    agent = Worker(behaviour={"h": hang})
    orch = await orchestrator(agent)
    run = asyncio.ensure_future(orch.orchestrate(chain_plan(ids)))
    while not any(c["step"] == "h" for c in agent.calls):
        await asyncio.wait_for(agent.called.wait(), 5)
        agent.called.clear()
    await asyncio.wait_for(orch.shutdown(), 5)
    result = await asyncio.wait_for(run, 1)
    assert result.status == "failed" and result.errors["h"] == SHUTDOWN
    h = agent.calls[-1]
    assert h["step"] == "h" and h["cancelled"] and h["task"] is agent.calls[0]["task"]
    assert attempt_tasks() == []


async def test_an_error_retried_at_once_is_handed_off_too():
    async def flaky(attempt):
        if attempt < 3:
            raise ok.AgentError("again")

    agent = Worker(behaviour={"b": flaky})
    orch = await orchestrator(agent)
    plan = chain_plan(
        ["a", "b", "c"], fields={"b": {"retryPolicy": {"maxRetries": 2, "backoffMs": 0}}}
    )
    result = await asyncio.wait_for(orch.orchestrate(plan), 5)
    assert result.success
    assert [(c["step"], c["attempt"]) for c in agent.calls] == [
        ("a", 1),
        ("b", 1),
        ("b", 2),
        ("b", 3),
        ("c", 1),
    ]
    assert len(set(agent.tasks())) == 1
    await settled(orch)
    await orch.shutdown()


async def test_an_attempt_started_by_a_task_that_swallowed_its_cancel_gets_a_fresh_task():
    """b#1 swallows the cancel of its timeout and blocks the loop past its retry's backoff:
    its late answer fires the retry timer, which starts b#2 (the one attempt started). b#2
    must not run in b#1's task, whose cancel is still counted: there, a CancelledError b#2
    raises itself would pass for the orchestrator's own cancel."""

    async def b(attempt):
        if attempt == 1:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                time.sleep(0.06)  # ignores the cancel and blocks the loop
            return None
        raise asyncio.CancelledError  # raised by the agent itself

    agent = Worker(behaviour={"b": b})
    orch = await orchestrator(agent)
    fields = {"b": {"timeout": 20, "retryPolicy": {"maxRetries": 1, "backoffMs": 30}}}
    result = await asyncio.wait_for(orch.orchestrate(chain_plan(["b"], fields=fields)), 5)
    assert result.status == "failed"
    assert list(result.spans.outcome) == ["timeout", "error"]
    assert (
        result.errors["b"] == "agent 'w' action 'x' raised CancelledError without being cancelled"
    )
    assert agent.calls[0]["task"] is not agent.calls[1]["task"]
    await settled(orch)
    await orch.shutdown()


async def test_a_finished_run_is_freed_as_soon_as_its_result_is_dropped():
    """Nothing of the orchestrator's (nor of the core's: its last actions) keeps a finished
    run alive: reference counting frees it with its result, not the next run."""

    class Token:
        pass

    class Giving(ok.Agent):
        async def process(self, action, input, context):
            self.token = Token()
            return AgentResponse(action=action, confidence=1.0, data={"token": self.token})

    agent = Giving("w")
    orch = await orchestrator(agent)
    result = await orch.orchestrate(chain_plan(["a", "b"]))
    token = weakref.ref(agent.token)
    del agent.token
    gc.disable()
    try:
        assert token() is not None
        del result
        assert token() is None
    finally:
        gc.enable()
    await orch.shutdown()
