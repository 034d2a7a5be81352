"""The live runtime (asyncio) against scripted agents, times scaled to tens of ms.

Upper time bounds leave ~25 ms for a busy 2-core machine; lower bounds are strict (a
timer never fires early by more than a clock tick).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

import orchkit as ok
from orchkit import AgentResponse, OrchkitError, Plan, PlanTimeoutError, PlanValidationError
from orchkit.testing import Crash, Fail, Garbage, Hang, Ok, ScriptedAgent

pytestmark = pytest.mark.timeout(15)  # a broken driver hangs: fail fast instead

ROOT = Path(__file__).resolve().parent.parent
PLANS = ROOT / "data" / "plans"
TOL = 25.0  # ms of slack for a loaded machine
EARLY = 2.0  # ms a timer may fire early (clock granularity)


def seed_plan(name: str, scale: float) -> Plan:
    """A seed plan with every time (timeouts, backoffs) multiplied by ``scale``."""

    def walk(node):
        if isinstance(node, dict):
            return {
                k: (v * scale if k in ("timeout", "backoffMs", "maxBackoffMs") else walk(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return Plan.model_validate(walk(json.loads((PLANS / f"{name}.json").read_text())))


def now_ms() -> float:
    return time.perf_counter() * 1000.0


class Probe(ok.Agent):
    """An agent that records every call (real start/end times, cancellation).

    ``behaviour``: action -> async function(agent, input, context) returning the response;
    the default succeeds at once.
    """

    def __init__(self, agent_id, behaviour=None, *, capacity=None):
        super().__init__(agent_id, capacity=capacity)
        self.behaviour = behaviour or {}
        self.calls: list[dict] = []
        self.initialized = self.shut_down = False

    async def initialize(self):
        self.initialized = True

    async def shutdown(self):
        self.shut_down = True

    async def process(self, action, input, context):
        rec = {
            "action": action,
            "step": context["step_id"],
            "attempt": context["attempt"],
            "run": context["run_id"],
            "t0": now_ms(),
            "t1": None,
            "cancelled": False,
            "context": context,
        }
        self.calls.append(rec)
        try:
            fn = self.behaviour.get(action) or self.behaviour.get("*") or ok_after(0)
            return await fn(self, input, context)
        except asyncio.CancelledError:
            rec["cancelled"] = True
            raise
        finally:
            rec["t1"] = now_ms()


def ok_after(ms):
    async def fn(agent, input, context):
        await asyncio.sleep(ms / 1000)
        return AgentResponse(action=context["step_id"], confidence=0.9, data={"by": agent.agent_id})

    return fn


async def hang(agent, input, context):
    await asyncio.Event().wait()


async def orchestrator(*agents, seed=0):
    orch = ok.Orchestrator(seed=seed)
    for agent in agents:
        await orch.register_agent(agent)
    return orch


def record(orch, *events):
    log: list[tuple[str, dict]] = []
    if events:
        for e in events:
            orch.on(e, lambda p, e=e: log.append((e, p)))
    else:
        orch.on("*", lambda e, p: log.append((e, p)))
    return log


def span(result, step_id, attempt=1):
    df = result.spans
    row = df[(df.step_id == step_id) & (df.attempt == attempt)]
    assert len(row) == 1, (step_id, attempt, df)
    return row.iloc[0]


# ------------------------------------------------------------------ seed plans


async def test_parallel_seed_plan_steps_overlap_and_the_join_starts_at_once():
    plan = seed_plan("parallel_analysis", 0.01)  # 600 ms deadline
    learning = ScriptedAgent(
        "learning-agent-123",
        {"analyze_learning_patterns": [Ok(40)], "generate_comprehensive_report": [Ok(5)]},
    )
    orch = await orchestrator(
        learning,
        ScriptedAgent("speech-agent-123", default=Ok(40)),
        ScriptedAgent("tutor-agent-123", default=Ok(40)),
    )
    result = await orch.orchestrate(plan)
    assert result.status == "succeeded" and result.success
    parts = [span(result, s) for s in ("learning_analysis", "speech_analysis", "tutor_analysis")]
    assert max(p.start_ms for p in parts) < min(p.end_ms for p in parts)  # they overlap
    assert all(p.start_ms < 10 for p in parts)
    join = span(result, "combine_insights")
    assert join.start_ms >= max(p.end_ms for p in parts)
    assert result.duration_ms < 45 + 3 * 5 + TOL  # not 3 x 40 ms in a row
    assert list(result.spans.columns[: len(ok.SPAN_COLUMNS)]) == ok.SPAN_COLUMNS
    assert result.raise_for_status() is result


async def test_sequential_seed_plan_does_not_overlap():
    plan = seed_plan("learning_activity", 0.01)
    orch = await orchestrator(
        ScriptedAgent("learning-agent-123", default=Ok(20)),
        ScriptedAgent("tutor-agent-123", default=Ok(20)),
    )
    result = await orch.orchestrate(plan)
    assert result.success
    rows = result.spans.sort_values("start_ms")
    assert list(rows.step_id) == [
        "present_question",
        "process_answer",
        "evaluate_performance",
        "provide_feedback",
    ]
    for prev, nxt in zip(rows.itertuples(), list(rows.itertuples())[1:]):
        assert nxt.start_ms >= prev.end_ms
    assert result.duration_ms >= 80 - EARLY


async def test_a_dependent_starts_within_a_few_ms_of_its_dependency_in_real_time():
    plan = seed_plan("learning_activity", 0.01)
    learning = Probe("learning-agent-123", {"*": ok_after(15)})
    tutor = Probe("tutor-agent-123", {"*": ok_after(15)})
    orch = await orchestrator(learning, tutor)
    result = await orch.orchestrate(plan)
    assert result.success
    calls = sorted(learning.calls + tutor.calls, key=lambda c: c["t0"])
    gaps = [b["t0"] - a["t1"] for a, b in zip(calls, calls[1:])]
    assert len(gaps) == 3 and all(0 <= g < 10 for g in gaps), gaps  # the seed polled every 100 ms
    # the spans agree: each step starts when the previous one ended
    rows = result.spans.sort_values("start_ms")
    assert (rows.start_ms.values[1:] - rows.end_ms.values[:-1] < 1).all()


async def test_dependents_see_the_results_of_their_dependencies():
    plan = seed_plan("session_initialization", 0.01)
    learning = Probe("learning-agent-123")
    tutor = Probe("tutor-agent-123")
    orch = await orchestrator(learning, tutor)
    result = await orch.orchestrate(plan)
    assert result.success
    ctx = tutor.calls[0]["context"]
    assert ctx["plan_id"] == "session_init_12345" and ctx["step_id"] == "init_tutor"
    assert ctx["results"]["init_learning"] == result.results["init_learning"]
    assert isinstance(result.results["init_tutor"], AgentResponse)


async def test_retries_happen_at_the_backoff_times():
    plan = seed_plan("retry_example", 0.03)  # linear, backoffMs 30 -> 30, 60, 90 ms
    agent = ScriptedAgent(
        "learning-agent-123", {"fetch_external_data": [Fail(10), Fail(10), Fail(10), Ok(10)]}
    )
    orch = await orchestrator(agent)
    retrying = record(orch, "step:retrying")
    result = await orch.orchestrate(plan)
    assert result.success
    df = result.spans
    assert list(df.attempt) == [1, 2, 3, 4]
    assert list(df.outcome) == ["error", "error", "error", "succeeded"]
    starts = list(df.start_ms)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    for gap, expected in zip(gaps, [40, 70, 100]):  # 10 ms attempt + backoff
        assert expected - EARLY <= gap <= expected + TOL, (gaps, expected)
    assert [p["delayMs"] for _, p in retrying] == pytest.approx([30, 60, 90])
    assert [c.attempt for c in agent.calls] == [1, 2, 3, 4]


async def test_plan_timeout_gives_timed_out_and_really_cancels_the_agent():
    plan = seed_plan("retry_example", 0.01)  # 150 ms deadline
    agent = Probe("learning-agent-123", {"fetch_external_data": hang})
    orch = await orchestrator(agent)
    log = record(orch)
    t0 = now_ms()
    result = await orch.orchestrate(plan)
    elapsed = now_ms() - t0
    assert result.status == "timed_out" and not result.success
    assert "timed out" in result.error
    assert 150 - EARLY <= result.duration_ms <= 150 + TOL
    assert elapsed <= 150 + TOL
    assert result.step_states == {"api_call": "cancelled"}
    assert "timed out" in result.errors["api_call"]
    with pytest.raises(PlanTimeoutError, match="Orchestration plan resilient_plan timed out"):
        result.raise_for_status()
    await asyncio.sleep(0)
    assert agent.calls[0]["cancelled"] is True  # CancelledError reached the agent
    assert span(result, "api_call").outcome == "cancelled"
    done = [p for e, p in log if e == "plan:completed"]
    assert done[0]["status"] == "timed_out"


async def test_plan_deadline_drops_a_waiting_retry():
    plan = Plan.model_validate(
        {
            "id": "p",
            "timeout": 60,
            "steps": [
                {
                    "id": "s",
                    "agentId": "a",
                    "action": "x",
                    "retryPolicy": {"maxRetries": 3, "backoffMs": 200},
                }
            ],
        }
    )
    agent = ScriptedAgent("a", default=Fail(5))
    orch = await orchestrator(agent)
    t0 = now_ms()
    result = await orch.orchestrate(plan)
    assert now_ms() - t0 < 60 + TOL  # did not wait for the 200 ms backoff
    assert result.status == "timed_out" and len(agent.calls) == 1
    assert result.step_states["s"] == "cancelled"


async def test_step_timeout_cancels_a_hanging_agent_then_retries():
    plan = Plan.model_validate(
        {
            "id": "p",
            "steps": [
                {
                    "id": "s",
                    "agentId": "a",
                    "action": "x",
                    "timeout": 30,
                    "retryPolicy": {"maxRetries": 1, "backoffMs": 10},
                }
            ],
        }
    )
    calls = 0

    async def hang_once(agent, input, context):
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()
        return AgentResponse(action="x", confidence=1.0)

    agent = Probe("a", {"x": hang_once})
    orch = await orchestrator(agent)
    result = await orch.orchestrate(plan)
    assert result.success
    first, second = agent.calls
    assert first["cancelled"] and not second["cancelled"]
    assert 30 - EARLY <= first["t1"] - first["t0"] <= 30 + TOL
    assert list(result.spans.outcome) == ["timeout", "succeeded"]
    assert "timed out after 30 ms" in span(result, "s").error
    assert 40 - EARLY <= span(result, "s", 2).start_ms <= 40 + TOL


async def test_step_timeout_without_retry_fails_the_step_and_the_run_goes_on():
    plan = Plan.model_validate(
        {
            "id": "p",
            "parallel": True,
            "steps": [
                {"id": "slow", "agentId": "a", "action": "x", "timeout": 20},
                {"id": "fine", "agentId": "a", "action": "y"},
            ],
        }
    )
    agent = ScriptedAgent("a", {"x": [Hang()], "y": [Ok(40)]})
    orch = await orchestrator(agent)
    result = await orch.orchestrate(plan)
    assert result.step_states == {"slow": "failed", "fine": "succeeded"}
    assert result.status == "failed"
    assert "slow" in result.error


async def test_fallback_runs_after_a_timeout_and_plan_fallback_is_emitted():
    plan = seed_plan("graceful_degradation", 0.02)  # deadline 100 ms, fallback's 40 ms
    agent = Probe(
        "learning-agent-123", {"predict_with_ml": hang, "predict_with_rules": ok_after(5)}
    )
    orch = await orchestrator(agent)
    log = record(orch)
    result = await orch.orchestrate(plan)
    assert result.success and result.plan_id == "rule_based_fallback"
    assert result.fallback_chain == [
        {"plan_id": "learning_recommendation", "status": "timed_out"},
        {"plan_id": "rule_based_fallback", "status": "succeeded"},
    ]
    fallback = [p for e, p in log if e == "plan:fallback"]
    assert len(fallback) == 1
    assert fallback[0]["planId"] == "learning_recommendation"
    assert fallback[0]["fallbackPlanId"] == "rule_based_fallback"
    assert 105 - EARLY <= result.duration_ms <= 105 + TOL  # the whole chain
    assert agent.calls[0]["cancelled"] and agent.calls[1]["action"] == "predict_with_rules"
    assert list(result.spans.plan_id) == ["learning_recommendation", "rule_based_fallback"]
    assert result.results["rule_based"].data == {"by": "learning-agent-123"}


async def test_fallback_after_a_non_retryable_failure():
    plan = seed_plan("ml_with_gpt4_fallback", 0.01)
    learning = ScriptedAgent(
        "learning-agent-123", {"predict_with_ml": [Fail(5, "model missing", retryable=False)]}
    )
    tutor = ScriptedAgent("tutor-agent-123", default=Ok(5))
    orch = await orchestrator(learning, tutor)
    log = record(orch, "plan:fallback", "agent:error")
    result = await orch.orchestrate(plan)
    assert result.success and result.plan_id == "fallback_plan"
    assert [p["fallbackPlanId"] for e, p in log if e == "plan:fallback"] == ["fallback_plan"]
    assert [p["error"] for e, p in log if e == "agent:error"] == ["model missing"]
    assert [c.action for c in tutor.calls] == ["predict_with_gpt4"]


async def test_fallback_with_its_own_deadline_times_out_too():
    plan = Plan.model_validate(
        {
            "id": "main",
            "timeout": 30,
            "steps": [{"id": "a", "agentId": "x", "action": "go"}],
            "fallbackPlan": {
                "id": "fb",
                "timeout": 30,
                "steps": [{"id": "b", "agentId": "x", "action": "go"}],
            },
        }
    )
    orch = await orchestrator(ScriptedAgent("x", default=Hang()))
    result = await orch.orchestrate(plan)
    assert result.status == "timed_out"
    assert [p["status"] for p in result.fallback_chain] == ["timed_out", "timed_out"]
    assert 60 - EARLY <= result.duration_ms <= 60 + TOL
    with pytest.raises(PlanTimeoutError, match="Orchestration plan fb timed out"):
        result.raise_for_status()


# ------------------------------------------------------------------ events


async def test_agent_insight_and_agent_error_reach_listeners():
    async def insightful(agent, input, context):
        agent.emit("insight", {"type": "struggling_detected", "learnerId": "l1"})
        agent.emit("error", "sensor glitch")
        return AgentResponse(action="x", confidence=0.5)

    class Listener(Probe):
        async def initialize(self):
            self.seen = []
            self.orchestrator.on("agent:insight", self.seen.append)

    emitter = Probe("emitter", {"x": insightful})
    listener = Listener("listener")
    failing = ScriptedAgent("failing", default=Fail(1, "no data", retryable=False))
    orch = await orchestrator(emitter, listener, failing)
    log = record(orch, "agent:insight", "agent:error")
    plan = Plan.model_validate(
        {
            "id": "p",
            "parallel": True,
            "steps": [
                {"id": "e", "agentId": "emitter", "action": "x"},
                {"id": "f", "agentId": "failing", "action": "y"},
            ],
        }
    )
    result = await orch.orchestrate(plan)
    assert result.step_states == {"e": "succeeded", "f": "failed"}
    insights = [p for e, p in log if e == "agent:insight"]
    assert insights and insights[0]["agentId"] == "emitter"
    assert insights[0]["insight"] == {"type": "struggling_detected", "learnerId": "l1"}
    assert listener.seen == insights  # another agent heard it through the orchestrator
    errors = [p for e, p in log if e == "agent:error"]
    assert {"agentId": "emitter", "error": "sensor glitch"}.items() <= errors[0].items()
    step_error = [p for p in errors if p.get("stepId") == "f"]
    assert step_error and step_error[0]["error"] == "no data"
    assert step_error[0]["planId"] == "p" and step_error[0]["agentId"] == "failing"


async def test_every_run_event_is_emitted_with_run_id_and_time():
    plan = seed_plan("session_initialization", 0.01)
    learning = ScriptedAgent("learning-agent-123", {"initialize_session": [Fail(1), Ok(1)]})
    orch = await orchestrator(learning, ScriptedAgent("tutor-agent-123"))
    log = record(orch)
    result = await orch.orchestrate(plan, run_id="run-7")
    assert result.success and result.run_id == "run-7"
    names = [e for e, _ in log]
    assert names[0] == "plan:started" and names[-1] == "plan:completed"
    for name in (
        "step:started",
        "step:completed",
        "step:retrying",
        "queue:completed",
        "queue:failed",
        "agent:error",
    ):
        assert name in names, name
    for e, p in log:
        assert p["runId"] == "run-7" and p["timeMs"] >= 0, (e, p)
    completed = [p for e, p in log if e == "step:completed"]
    assert {"planId", "stepId", "agentId", "jobId", "response"} <= set(completed[0])
    assert isinstance(completed[0]["response"], AgentResponse)


async def test_a_listener_that_raises_is_reported_and_the_run_succeeds():
    orch = await orchestrator(ScriptedAgent("a", default=Ok(2)))
    reports, after = [], []

    def bad(payload):
        raise RuntimeError("listener bug")

    async def bad_async(payload):
        raise KeyError("async listener bug")

    orch.on("step:completed", bad)
    orch.on("step:completed", bad_async)
    orch.on("step:completed", after.append)  # later listeners still run
    orch.on("listener:error", reports.append)
    plan = Plan.model_validate({"id": "p", "steps": [{"id": "s", "agentId": "a", "action": "x"}]})
    result = await orch.orchestrate(plan)
    await asyncio.sleep(0.01)  # let the async listener's task finish
    assert result.success and len(after) == 1
    assert {r["event"] for r in reports} == {"step:completed"}
    errors = sorted(r["error"] for r in reports)
    assert errors == ["KeyError: 'async listener bug'", "RuntimeError: listener bug"]


async def test_on_once_off_and_wildcard_listeners():
    orch = await orchestrator(ScriptedAgent("a"))
    every, first, removed, wild = [], [], [], []
    orch.on("step:completed", every.append)
    orch.once("step:completed", first.append)
    orch.on("step:completed", removed.append)
    orch.off("step:completed", removed.append)
    orch.on("*", lambda event, payload: wild.append(event))
    plan = Plan.model_validate(
        {
            "id": "p",
            "steps": [
                {"id": "s", "agentId": "a", "action": "x"},
                {"id": "t", "agentId": "a", "action": "x"},
            ],
        }
    )
    await orch.orchestrate(plan)
    assert [p["stepId"] for p in every] == ["s", "t"]
    assert [p["stepId"] for p in first] == ["s"]
    assert removed == []
    assert wild.count("step:completed") == 2 and wild[0] == "plan:started"


# ------------------------------------------------------------------ bad agents


async def test_an_agent_returning_garbage_is_an_error_naming_agent_action_and_value():
    agent = ScriptedAgent(
        "garbage-agent", {"score": [Garbage(1, 42)], "rate": [Garbage(1, {"confidence": 7})]}
    )
    orch = await orchestrator(agent)
    plan = Plan.model_validate(
        {
            "id": "p",
            "parallel": True,
            "steps": [
                {"id": "s1", "agentId": "garbage-agent", "action": "score"},
                {"id": "s2", "agentId": "garbage-agent", "action": "rate"},
            ],
        }
    )
    result = await orch.orchestrate(plan)
    assert result.step_states == {"s1": "failed", "s2": "failed"}
    e1, e2 = result.errors["s1"], result.errors["s2"]
    assert "'garbage-agent'" in e1 and "'score'" in e1 and "42" in e1 and "int" in e1
    assert "'garbage-agent'" in e2 and "'rate'" in e2 and "confidence" in e2 and "7" in e2
    assert list(result.spans.outcome) == ["error", "error"]


async def test_an_agent_returning_a_dict_of_the_right_shape_is_fine():
    async def as_dict(agent, input, context):
        return {"action": "x", "confidence": 0.7, "reasoning": "ok", "nextSteps": ["y"]}

    orch = await orchestrator(Probe("a", {"x": as_dict}))
    plan = Plan.model_validate({"id": "p", "steps": [{"id": "s", "agentId": "a", "action": "x"}]})
    result = await orch.orchestrate(plan)
    assert result.success and result.results["s"].next_steps == ["y"]


async def test_an_agent_raising_a_plain_exception_fails_the_attempt_and_the_run_goes_on():
    agent = ScriptedAgent("buggy", {"crash": [Crash(1, ValueError("bad number"))]}, default=Ok(5))
    orch = await orchestrator(agent)
    plan = Plan.model_validate(
        {
            "id": "p",
            "parallel": True,
            "steps": [
                {"id": "c", "agentId": "buggy", "action": "crash"},
                {"id": "d", "agentId": "buggy", "action": "fine"},
                {"id": "e", "agentId": "buggy", "action": "fine", "dependencies": ["d"]},
                {"id": "f", "agentId": "buggy", "action": "fine", "dependencies": ["c"]},
            ],
        }
    )
    result = await orch.orchestrate(plan)
    assert result.step_states == {"c": "failed", "d": "succeeded", "e": "succeeded", "f": "skipped"}
    err = result.errors["c"]
    assert "'buggy'" in err and "'crash'" in err and "ValueError" in err and "bad number" in err
    with pytest.raises(ok.PlanFailedError, match="bad number"):
        result.raise_for_status()


async def test_a_crash_is_retried_like_an_error():
    agent = ScriptedAgent("buggy", {"x": [Crash(1), Ok(1)]})
    orch = await orchestrator(agent)
    plan = Plan.model_validate(
        {
            "id": "p",
            "steps": [
                {
                    "id": "s",
                    "agentId": "buggy",
                    "action": "x",
                    "retryPolicy": {"maxRetries": 1, "backoffMs": 1},
                }
            ],
        }
    )
    result = await orch.orchestrate(plan)
    assert result.success and list(result.spans.outcome) == ["error", "succeeded"]


# ------------------------------------------------------------------ registration


async def test_unknown_agent_is_a_validation_error_naming_plan_step_and_agents():
    agent = ScriptedAgent("learning-agent-123")
    orch = await orchestrator(agent, ScriptedAgent("speech-agent-123"))
    with pytest.raises(PlanValidationError) as info:
        await orch.orchestrate(seed_plan("learning_activity", 0.01))
    msg = str(info.value)
    for word in (
        "learning_activity_789",
        "provide_feedback",
        "tutor-agent-123",
        "learning-agent-123, speech-agent-123",
        "register_agent",
    ):
        assert word in msg, word
    assert agent.calls == []  # nothing ran
    with pytest.raises(PlanValidationError, match="plan 'fallback_plan' step 'use_gpt4'"):
        await orch.orchestrate(seed_plan("ml_with_gpt4_fallback", 0.01))


async def test_registration_initializes_and_duplicates_are_rejected():
    agent = Probe("a")
    orch = ok.Orchestrator()
    registered = record(orch, "agent:registered")
    await orch.register_agent(agent)
    assert agent.initialized and agent.orchestrator is orch
    assert registered == [("agent:registered", {"agentId": "a"})]
    assert orch.get_agent("a") is agent and orch.get_agent("b") is None
    assert orch.all_agents() == [agent]
    with pytest.raises(OrchkitError, match="'a' is already registered"):
        await orch.register_agent(Probe("a"))
    assert orch.get_agent("a") is agent
    with pytest.raises(TypeError):
        await orch.register_agent(object())


async def test_shutdown_calls_every_agents_shutdown():
    a, b = Probe("a"), Probe("b")
    orch = await orchestrator(a, b)
    await orch.shutdown()
    assert a.shut_down and b.shut_down
    assert orch.all_agents() == []


# ------------------------------------------------------------------ concurrency, cancel


async def test_concurrent_runs_share_a_capacity_one_agent_fifo():
    agent = ScriptedAgent("one", default=Ok(20), capacity=1)
    orch = await orchestrator(agent)
    plan = Plan.model_validate({"id": "p", "steps": [{"id": "s", "agentId": "one", "action": "x"}]})
    results = await asyncio.gather(*(orch.orchestrate(plan, run_id=k) for k in range(3)))
    assert all(r.success for r in results)
    rows = [r.spans.iloc[0] for r in results]
    assert rows[0].start_ms == rows[0].queued_ms
    for k in (1, 2):
        assert rows[k].queued_ms < rows[k].start_ms
        assert 20 * k - EARLY <= rows[k].start_ms - rows[k].queued_ms <= 20 * k + TOL
    assert [c.step_id for c in agent.calls] == ["s", "s", "s"]
    assert [r.duration_ms for r in results] == sorted(r.duration_ms for r in results)


async def test_capacity_wait_counts_toward_the_step_timeout_live():
    agent = ScriptedAgent("one", {"long": [Ok(60)]}, default=Ok(5), capacity=1)
    orch = await orchestrator(agent)
    plan = Plan.model_validate(
        {
            "id": "p",
            "parallel": True,
            "steps": [
                {"id": "a", "agentId": "one", "action": "long"},
                {"id": "b", "agentId": "one", "action": "short", "timeout": 30},
            ],
        }
    )
    result = await orch.orchestrate(plan)
    assert result.step_states == {"a": "succeeded", "b": "failed"}
    b = span(result, "b")
    assert b.outcome == "timeout" and b.start_ms != b.start_ms  # NaN: never started
    assert "waiting for agent capacity" in b.error
    assert [c.action for c in agent.calls] == ["long"]


async def test_max_concurrency_live():
    agent = Probe("a", {"*": ok_after(20)})
    orch = await orchestrator(agent)
    plan = Plan.model_validate(
        {
            "id": "p",
            "parallel": True,
            "maxConcurrency": 2,
            "steps": [{"id": f"s{i}", "agentId": "a", "action": "x"} for i in range(4)],
        }
    )
    result = await orch.orchestrate(plan)
    assert result.success
    calls = agent.calls
    peak = max(sum(1 for c in calls if c["t0"] <= t < c["t1"]) for t in (c["t0"] for c in calls))
    assert peak == 2
    assert 40 - EARLY <= result.duration_ms <= 40 + TOL


async def test_cancelling_the_orchestrate_task_cancels_the_agents():
    agent = Probe("a", {"hang": hang, "quick": ok_after(1)}, capacity=1)
    orch = await orchestrator(agent)
    plan = Plan.model_validate(
        {"id": "p", "steps": [{"id": "s", "agentId": "a", "action": "hang"}]}
    )
    task = asyncio.create_task(orch.orchestrate(plan))
    await asyncio.sleep(0.02)
    assert agent.calls and agent.calls[0]["t1"] is None  # hanging
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert agent.calls[0]["cancelled"] is True
    # the agent's slot was freed: the next run is served at once
    quick = Plan.model_validate(
        {"id": "q", "steps": [{"id": "s", "agentId": "a", "action": "quick"}]}
    )
    result = await asyncio.wait_for(orch.orchestrate(quick), 1.0)
    assert result.success and result.spans.iloc[0].start_ms < 5


def test_works_from_a_script_with_asyncio_run_twice():
    orch = ok.Orchestrator()
    agent = ScriptedAgent("a", default=Ok(1))
    plan = Plan.model_validate({"id": "p", "steps": [{"id": "s", "agentId": "a", "action": "x"}]})

    async def first():
        await orch.register_agent(agent)
        return await orch.orchestrate(plan)

    assert asyncio.run(first()).success
    assert asyncio.run(orch.orchestrate(plan)).success  # a new event loop, same orchestrator
    assert len(agent.calls) == 2


async def test_orchestrate_accepts_a_camel_case_dict():
    orch = await orchestrator(ScriptedAgent("a"))
    result = await orch.orchestrate(
        {"id": "p", "steps": [{"id": "s", "agentId": "a", "action": "x"}]}
    )
    assert result.success
    with pytest.raises(PlanValidationError, match="dependecies"):
        await orch.orchestrate(
            {"id": "p", "steps": [{"id": "s", "agentId": "a", "action": "x", "dependecies": []}]}
        )


async def test_a_plain_def_process_is_accepted():
    class Sync(ok.Agent):
        def process(self, action, input, context):
            return ok.AgentResponse(action=action, confidence=0.5, data=context["step_id"])

    orch = ok.Orchestrator()
    await orch.register_agent(Sync("s"))
    result = await orch.orchestrate(
        {"id": "p", "steps": [{"id": "a", "agentId": "s", "action": "x"}]}
    )
    assert result.success and result.results["a"].data == "a"


def test_under_uvloop_times_keep_their_precision_and_timeouts_never_fire_early():
    """uvloop's own clock ticks in whole ms; the orchestrator's clock does not, and a timer
    the coarse loop clock wakes early is still told to the core at its due time."""
    uvloop = pytest.importorskip("uvloop")
    plan = {
        "id": "u",
        "steps": [
            {"id": "quick", "agentId": "a", "action": "x"},
            {
                "id": "stuck",
                "agentId": "b",
                "action": "x",
                "timeout": 5.5,
                "dependencies": ["quick"],
            },
        ],
    }

    async def main():
        orch = ok.Orchestrator()
        await orch.register_agent(ScriptedAgent("a", default=Ok(2.3)))
        await orch.register_agent(ScriptedAgent("b", default=Hang()))
        try:
            return [await orch.orchestrate(plan) for _ in range(5)]
        finally:
            await orch.shutdown()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results = runner.run(main())
    for result in results:
        quick, stuck = result.spans.itertuples()  # (the agent's own 2.3 ms sleep is uvloop's)
        assert stuck.outcome == "timeout" and stuck.end_ms - stuck.queued_ms >= 5.5
    times = [t for r in results for t in r.spans[["start_ms", "end_ms"]].to_numpy().ravel()]
    assert any(abs(t - round(t)) > 1e-6 for t in times), times
