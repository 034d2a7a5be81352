"""Issue 7, live half: a run always ends, on time, with the right status — whatever agents
and listeners do (raise anything, hang, ignore cancellation, block the loop, return
garbage), and whenever ``shutdown()`` is called. docs/guides/live.md, "Failure semantics".

Real asyncio agents; each test bounds its own waits (``asyncio.wait_for``) and
pytest-timeout bounds the file, so a regression is a failure, not a hung suite.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from core_harness import plan_of, step
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import orchkit as ok
from orchkit import AgentResponse, EventBus, Plan
from orchkit._engine.core import CancelAttempt, Scheduler, StartAttempt, StartTimer, compile_plan
from orchkit.testing import Hang, Ok, ScriptedAgent

pytestmark = pytest.mark.timeout(30)
SHUTDOWN = "cancelled: the orchestrator shut down"


# ------------------------------------------------------------------ the core's rules


def _started(actions):
    return [a.attempt for a in actions if isinstance(a, StartAttempt)]


def test_a_result_after_the_step_timeout_is_late_even_if_the_timer_has_not_fired_yet():
    core = Scheduler()
    run, actions = core.submit(compile_plan(plan_of("p", [step("a", timeout=50)])), 0.0, "r")
    (att,) = _started(actions)
    # the driver reports the result at 80 ms before it ran the 50 ms timer (loop blocked)
    out = core.attempt_succeeded(att, 80.0, "late")
    assert any(isinstance(a, CancelAttempt) and a.attempt is att for a in out)
    assert att.outcome == "timeout" and run.status == "failed"
    assert "timed out after 50 ms" in run.plans[0].errors["a"]


def test_a_result_after_the_plan_deadline_is_late():
    core = Scheduler()
    cp = compile_plan(plan_of("p", [step("a")], timeout=100))
    run, actions = core.submit(cp, 0.0, "r")
    (att,) = _started(actions)
    core.attempt_succeeded(att, 100.0, "on the deadline")  # a tie: the timer goes first
    assert run.status == "timed_out" and att.outcome == "cancelled"


def test_due_timers_fire_in_time_order_before_the_fact():
    core = Scheduler()
    plan = plan_of(
        "p", [step("a", timeout=30), step("b", timeout=20), step("c")], parallel=True, failFast=True
    )
    run, actions = core.submit(compile_plan(plan), 0.0, "r")
    a, b, c = _started(actions)
    core.attempt_succeeded(c, 40.0, "c")  # b's timer (20) then a's (30) are due first
    assert b.outcome == "timeout" and b.end_ms == 40.0
    assert a.outcome == "cancelled" and c.outcome == "cancelled"
    assert "step 'b' failed" in run.plans[0].errors["a"]


def test_with_hold_slots_a_cancelled_attempt_keeps_its_slot_until_it_exits():
    core = Scheduler(lambda agent_id: 1, hold_slots=True)
    _, actions = core.submit(compile_plan(plan_of("p", [step("a", timeout=10)])), 0.0, "r1")
    (first,) = _started(actions)
    timer = next(a.timer for a in actions if isinstance(a, StartTimer))
    _, actions = core.submit(compile_plan(plan_of("q", [step("b")])), 0.0, "r2")
    assert _started(actions) == []  # queued behind the first: capacity 1
    out = core.timer_fired(timer, 10.0)
    assert any(isinstance(a, CancelAttempt) for a in out) and _started(out) == []
    assert first.outcome == "timeout" and first.held  # cancelled, its coroutine still runs
    out = core.attempt_exited(first, 25.0)  # only now has it really stopped
    (second,) = _started(out)
    assert second.start_ms == 25.0 and not first.held
    assert core.attempt_exited(first, 30.0) == []  # a repeated exit is a stale fact
    assert core.busy_ms() == {"agent": 25.0}


def test_without_hold_slots_the_slot_is_free_at_the_cancel():
    core = Scheduler(lambda agent_id: 1)
    _, actions = core.submit(compile_plan(plan_of("p", [step("a", timeout=10)])), 0.0, "r1")
    timer = next(a.timer for a in actions if isinstance(a, StartTimer))
    core.submit(compile_plan(plan_of("q", [step("b")])), 0.0, "r2")
    assert [a.start_ms for a in _started(core.timer_fired(timer, 10.0))] == [10.0]


# ------------------------------------------------------------------ live helpers


def one_step(agent_id="a", action="x", **step_fields) -> Plan:
    return Plan.model_validate(
        {"id": "p", "steps": [{"id": "s", "agentId": agent_id, "action": action, **step_fields}]}
    )


async def orchestrator(*agents, **kw) -> ok.Orchestrator:
    orch = ok.Orchestrator(**kw)
    for agent in agents:
        await orch.register_agent(agent)
    return orch


async def run_bounded(orch, plan, seconds=5.0, **kw):
    """orchestrate(), failing the test (not hanging it) if it does not return in time."""
    return await asyncio.wait_for(orch.orchestrate(plan, **kw), seconds)


class Raising(ok.Agent):
    """Raises ``exc`` (an instance, or a factory called per attempt) from ``process``."""

    def __init__(self, agent_id, exc, **kw):
        super().__init__(agent_id, **kw)
        self.exc = exc

    async def process(self, action, input, context):
        await asyncio.sleep(0)
        raise self.exc() if callable(self.exc) else self.exc


class Custom(BaseException):
    """Not an Exception: a custom BaseException subclass."""


class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("__str__ is broken")


class BadStrBase(BaseException):
    def __str__(self):
        raise ValueError("so is this one")


class StrCancels(Exception):
    def __str__(self):
        raise asyncio.CancelledError


class BadRepr:
    def __repr__(self):
        raise RuntimeError("__repr__ is broken")


# ------------------------------------------------------------------ agents raising anything


@pytest.mark.parametrize(
    "exc, name",
    [
        (asyncio.CancelledError, "CancelledError"),
        (Custom, "Custom"),
        (BadStr, "BadStr"),
        (BadStrBase, "BadStrBase"),
        (GeneratorExit, "GeneratorExit"),
        (StrCancels, "StrCancels"),
    ],
)
async def test_an_agent_raising_anything_fails_the_attempt_with_an_error(exc, name):
    orch = await orchestrator(Raising("a", exc))
    # a step timeout far away: the attempt must end as an error at once, not as a timeout
    result = await run_bounded(
        orch,
        one_step(timeout=3000, retryPolicy={"maxRetries": 1, "backoffMs": 1, "retryOn": ["error"]}),
    )
    spans = result.spans
    assert list(spans.outcome) == ["error", "error"]  # retried as an ordinary error
    assert result.status == "failed" and result.duration_ms < 1000
    error = result.errors["s"]
    assert "agent 'a'" in error and "action 'x'" in error and name in error


async def test_an_agent_cancelling_its_own_task_fails_the_attempt():
    class SelfCancelling(ok.Agent):
        async def process(self, action, input, context):
            asyncio.current_task().cancel()
            await asyncio.sleep(1)

    orch = await orchestrator(SelfCancelling("a"))
    result = await run_bounded(orch, one_step(timeout=3000))
    assert result.status == "failed" and list(result.spans.outcome) == ["error"]
    assert result.errors["s"] == "agent 'a' action 'x' was cancelled, not by the orchestrator"


async def test_an_attempt_cancelled_before_its_coroutine_ran_frees_its_slot():
    """failFast: 'a' fails in the loop turn that started 'b', so 'b' is cancelled before its
    coroutine ever ran; its slot (capacity 1) must be free for the next run at once."""

    class Fatal(ok.Agent):
        async def process(self, action, input, context):
            raise ok.AgentError("no", retryable=False)

    class Counting(ok.Agent):
        calls = 0

        async def process(self, action, input, context):
            Counting.calls += 1
            return AgentResponse(action=action, confidence=1.0)

    orch = await orchestrator(Fatal("a"), Counting("b", capacity=1))
    plan = Plan.model_validate(
        {
            "id": "p",
            "parallel": True,
            "failFast": True,
            "steps": [
                {"id": "a", "agentId": "a", "action": "x"},
                {"id": "b", "agentId": "b", "action": "x"},
            ],
        }
    )
    first = await run_bounded(orch, plan)
    assert first.status == "failed" and first.step_states["b"] == "cancelled"
    assert Counting.calls == 0 and orch.agent_load("b") == (0, 0)
    second = await run_bounded(orch, one_step("b"), seconds=2.0)
    assert second.success and Counting.calls == 1
    await orch.shutdown()


async def test_an_agent_error_whose_str_raises_still_fails_the_attempt():
    class BadAgentError(ok.AgentError):
        def __str__(self):
            raise RuntimeError("broken")

    orch = await orchestrator(Raising("a", lambda: BadAgentError("x", retryable=False)))
    result = await run_bounded(orch, one_step())
    assert result.status == "failed" and list(result.spans.outcome) == ["error"]
    assert "unprintable BadAgentError" in result.errors["s"]


async def test_garbage_whose_repr_raises_is_reported_as_garbage():
    class Garbage(ok.Agent):
        async def process(self, action, input, context):
            return BadRepr()

    orch = await orchestrator(Garbage("a"))
    result = await run_bounded(orch, one_step())
    assert result.status == "failed"
    assert result.errors["s"].startswith("agent 'a' action 'x' returned BadRepr <unprintable")


# ------------------------------------------------------------------ shutdown mid-run


def attempt_tasks():
    """The orchestrator's attempt coroutines still pending in this loop."""
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and t.get_coro().__qualname__ == "Orchestrator._call"
    ]


async def test_shutdown_ends_the_runs_in_flight_as_failed_and_their_callers_return():
    hang = ScriptedAgent("a", default=Hang())
    orch = await orchestrator(hang, ScriptedAgent("b"))
    plan = Plan.model_validate(
        {
            "id": "p",
            "parallel": True,
            "steps": [
                {"id": "s", "agentId": "a", "action": "x"},
                {"id": "t", "agentId": "a", "action": "y", "dependencies": ["s"]},
            ],
            "fallbackPlan": {"id": "fb", "steps": [{"id": "u", "agentId": "b", "action": "z"}]},
        }
    )
    events = []
    orch.on("plan:completed", events.append)
    runs = [asyncio.ensure_future(orch.orchestrate(plan, run_id=k)) for k in range(3)]
    await asyncio.sleep(0.02)
    assert len(attempt_tasks()) == 3
    await asyncio.wait_for(orch.shutdown(), 5)
    results = await asyncio.wait_for(asyncio.gather(*runs), 1)
    for r in results:
        assert r.status == "failed" and r.plan_id == "p"  # no fallback after shutdown
        assert r.errors == {"s": SHUTDOWN, "t": SHUTDOWN}
        assert list(r.spans.outcome) == ["cancelled"]
    assert [e["status"] for e in events] == ["failed"] * 3  # listeners heard it first
    assert attempt_tasks() == [] and orch.all_agents() == []
    with pytest.raises(ok.PlanValidationError):  # its agents are gone
        await orch.orchestrate(plan)


# ------------------------------------------------------------------ listeners raising anything


@pytest.mark.parametrize(
    "raise_",
    [
        lambda: asyncio.CancelledError(),
        lambda: Custom("listener"),
        lambda: BadStrBase(),
        lambda: StrCancels(),
        lambda: RuntimeError("plain"),
    ],
)
@pytest.mark.parametrize("asynchronous", [False, True])
async def test_a_listener_raising_anything_never_breaks_runs_or_leaks_a_slot(raise_, asynchronous):
    agent = ScriptedAgent("a", default=Ok(1), capacity=1)
    orch = await orchestrator(agent)
    reports = []

    if asynchronous:

        async def bad(*args):
            raise raise_()
    else:

        def bad(*args):
            raise raise_()

    for event in (
        "plan:started",
        "step:started",
        "step:completed",
        "queue:completed",
        "plan:completed",
    ):
        orch.on(event, bad)
    orch.on("*", bad)
    orch.on("listener:error", reports.append)
    plan = Plan.model_validate(
        {
            "id": "p",
            "parallel": True,
            "steps": [{"id": f"s{i}", "agentId": "a", "action": "x"} for i in range(3)],
        }
    )
    for _ in range(2):  # a later run on the same orchestrator does not hang either
        results = await asyncio.wait_for(
            asyncio.gather(*(orch.orchestrate(plan) for _ in range(2))), 5
        )
        assert all(r.status == "succeeded" for r in results)
    await asyncio.sleep(0.01)  # let async listeners' tasks end
    assert len(agent.calls) == 12
    assert reports and {"plan:started", "step:started", "plan:completed"} <= {
        r["event"] for r in reports
    }
    assert type(raise_()).__name__ in reports[0]["error"]
    await orch.shutdown()


def test_keyboard_interrupt_in_a_listener_propagates():
    bus = EventBus()

    def interrupted(payload):
        raise KeyboardInterrupt

    bus.on("x", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bus.emit("x", {})


async def test_a_listener_whose_repr_raises_is_still_reported():
    class Weird:
        def __repr__(self):
            raise RuntimeError("no repr")

        def __call__(self, payload):
            raise BadStr()

    orch = await orchestrator(ScriptedAgent("a"))
    reports = []
    orch.on("step:completed", Weird())
    orch.on("listener:error", reports.append)
    assert (await run_bounded(orch, one_step())).success
    assert reports == [
        {
            "event": "step:completed",
            "listener": "<unprintable Weird>",
            "error": "<unprintable BadStr>",
        }
    ]


# ------------------------------------------------------------------ late results


class Blocking(ok.Agent):
    """A plain ``def process`` that blocks the event loop for ``block_ms``, then succeeds."""

    def __init__(self, agent_id, block_ms, **kw):
        super().__init__(agent_id, **kw)
        self.block_ms = block_ms

    def process(self, action, input, context):
        time.sleep(self.block_ms / 1000.0)
        return AgentResponse(action=action, confidence=1.0)


async def test_a_result_after_the_step_timeout_is_a_timeout_even_if_the_loop_was_blocked():
    orch = await orchestrator(Blocking("a", 150))
    result = await run_bounded(orch, one_step(timeout=50))
    assert result.status == "failed" and list(result.spans.outcome) == ["timeout"]
    assert "timed out after 50 ms" in result.errors["s"]


async def test_a_result_after_the_plan_deadline_is_late_even_if_the_loop_was_blocked():
    orch = await orchestrator(Blocking("a", 150))
    plan = Plan.model_validate(
        {"id": "p", "timeout": 50, "steps": [{"id": "s", "agentId": "a", "action": "x"}]}
    )
    result = await run_bounded(orch, plan)
    assert result.status == "timed_out" and list(result.spans.outcome) == ["cancelled"]


async def test_a_slow_synchronous_listener_cannot_make_a_late_result_a_success():
    orch = await orchestrator(ScriptedAgent("a", default=Ok(0)))
    orch.on("step:started", lambda payload: time.sleep(0.15))
    result = await run_bounded(orch, one_step(timeout=50))
    assert result.status == "failed" and list(result.spans.outcome) == ["timeout"]


# ------------------------------------------------------------------ agents ignoring cancellation


class Stubborn(ok.Agent):
    """Works ``input["work_ms"]`` (default: long), catching CancelledError ``swallow`` times
    and running on ``extra_ms`` after each; counts its coroutines running at once."""

    def __init__(self, agent_id, *, extra_ms=150, swallow=1, **kw):
        super().__init__(agent_id, **kw)
        self.extra_ms, self.swallow = extra_ms, swallow
        self.running = self.peak = 0
        self.release = asyncio.Event()  # set: stop swallowing

    async def process(self, action, input, context):
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            delay_ms, swallowed = (input or {}).get("work_ms", 10_000), 0
            while True:
                try:
                    await asyncio.sleep(delay_ms / 1000)
                    return AgentResponse(action=action, confidence=1.0)
                except asyncio.CancelledError:
                    swallowed += 1
                    if swallowed > self.swallow or self.release.is_set():
                        raise
                    delay_ms = self.extra_ms
        finally:
            self.running -= 1


async def test_an_agent_ignoring_cancellation_keeps_its_slot_and_is_reported(caplog):
    agent = Stubborn("stubborn", capacity=1, extra_ms=150)
    orch = await orchestrator(agent, grace_ms=50)
    plan = Plan.model_validate(
        {
            "id": "q",
            "parallel": True,
            "steps": [
                {"id": "a", "agentId": "stubborn", "action": "x", "timeout": 20},
                {"id": "b", "agentId": "stubborn", "action": "x", "input": {"work_ms": 1}},
            ],
        }
    )
    with caplog.at_level(logging.WARNING, logger="orchkit"):
        result = await run_bounded(orch, plan)
    assert result.step_states == {"a": "failed", "b": "succeeded"}
    rows = result.spans.set_index("step_id")
    # a swallowed its cancellation at 20 ms and ran 150 ms more: b waited for its slot
    assert rows.loc["a", "outcome"] == "timeout" and rows.loc["b", "start_ms"] >= 165
    assert agent.peak == 1
    warned = [r.getMessage() for r in caplog.records]
    assert any("agent 'stubborn' ignores cancellation: step 'a' attempt 1" in w for w in warned)
    await orch.shutdown()
    assert attempt_tasks() == []


async def test_shutdown_waits_a_bounded_time_for_stragglers_then_reports_them(caplog):
    forever, once = Stubborn("forever", swallow=10**9), Stubborn("once", extra_ms=10_000)
    orch = await orchestrator(forever, once, grace_ms=100)
    plan = Plan.model_validate(
        {
            "id": "p",
            "parallel": True,
            "steps": [
                {"id": "s", "agentId": "forever", "action": "x"},
                {"id": "t", "agentId": "once", "action": "x"},
            ],
        }
    )
    run = asyncio.ensure_future(orch.orchestrate(plan))
    await asyncio.sleep(0.02)
    t0 = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="orchkit"):
        await asyncio.wait_for(orch.shutdown(), 5)
    assert time.perf_counter() - t0 < 1.0  # bounded by grace_ms, not by the straggler
    assert (await asyncio.wait_for(run, 1)).status == "failed"
    # "once" gave in to the second cancel; "forever" is reported and left running
    assert (once.running, forever.running, len(attempt_tasks())) == (0, 1, 1)
    assert any(
        "agent 'forever' is still running step 's'" in r.getMessage() for r in caplog.records
    )
    forever.release.set()  # let it go, so that no task outlives the test
    for task in attempt_tasks():
        task.cancel()
    await asyncio.sleep(0.01)
    assert attempt_tasks() == [] and forever.running == 0


@pytest.mark.parametrize("bad", [-1, float("inf"), float("nan"), True, "100", None])
def test_grace_ms_must_be_a_finite_number_of_ms(bad):
    with pytest.raises(ValueError, match="grace_ms must be a finite number of ms >= 0"):
        ok.Orchestrator(grace_ms=bad)


# ------------------------------------------------------------------ forged events


async def test_an_agent_cannot_forge_orchestrator_events():
    class Forger(ok.Agent):
        async def process(self, action, input, context):
            for kind in ("registered", "insight", "progress"):
                self.emit(kind, {"agentId": "someone-else"})
            return AgentResponse(action=action, confidence=1.0)

    orch = ok.Orchestrator()
    log = []
    orch.on("*", lambda event, payload: log.append((event, payload)))
    await orch.register_agent(Forger("f"))
    await run_bounded(orch, one_step("f"))
    names = [e for e, _ in log]
    assert names.count("agent:registered") == 1  # the real one only
    assert "agent:insight" in names
    assert "agent:f:registered" in names and "agent:f:progress" in names
    assert all(p["agentId"] == "f" for e, p in log if e.startswith("agent:"))
    with pytest.raises(ValueError, match="kind must be a non-empty string"):
        Forger("g").emit(None, {})


# ------------------------------------------------------------------ everything at once


class Chaos(ok.Agent):
    """Plays ``script`` (one behaviour per call, then "ok"); counts coroutines at once."""

    def __init__(self, agent_id, script, **kw):
        super().__init__(agent_id, **kw)
        self.script, self.running, self.peak = list(script), 0, 0

    async def process(self, action, input, context):
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            kind = self.script.pop(0) if self.script else "ok"
            if kind == "block":
                time.sleep(0.004)
            elif kind == "hang":
                await asyncio.Event().wait()
            elif kind == "swallow":
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    await asyncio.sleep(0.01)
            else:
                await asyncio.sleep(0.002)
            raises = {
                "raise": RuntimeError("bug"),
                "cancel": asyncio.CancelledError(),
                "base": Custom(),
                "badstr": BadStr(),
            }
            if kind in raises:
                raise raises[kind]
            return BadRepr() if kind == "garbage" else AgentResponse(action=action, confidence=1)
        finally:
            self.running -= 1


BEHAVIOURS = ["ok", "block", "hang", "swallow", "raise", "cancel", "base", "badstr", "garbage"]
LISTENERS = ["raise", "cancel", "base", "async_raise", "async_cancel", "slow"]
EVENTS = [
    "plan:started",
    "step:started",
    "step:completed",
    "step:failed",
    "step:retrying",
    "queue:failed",
    "plan:completed",
    "agent:error",
    "*",
]


def _listener(kind):
    exc = {"raise": RuntimeError, "cancel": asyncio.CancelledError, "base": Custom}
    if kind == "slow":
        return lambda *args: time.sleep(0.002)
    if kind.startswith("async_"):

        async def raising(*args):
            raise exc[kind[6:]]()

        return raising

    def raising(*args):
        raise exc[kind]()

    return raising


@st.composite
def chaos(draw):
    n = draw(st.integers(1, 4))
    steps = []
    for i in range(n):
        s = {
            "id": f"s{i}",
            "agentId": draw(st.sampled_from(["A", "B"])),
            "action": "x",
            "dependencies": sorted(
                draw(st.sets(st.sampled_from([f"s{j}" for j in range(i)]), max_size=2))
            )
            if i
            else [],
        }
        timeout = draw(st.sampled_from([None, 15, 40]))
        if timeout:
            s["timeout"] = timeout
        retries = draw(st.integers(0, 2))
        if retries:
            s["retryPolicy"] = {
                "maxRetries": retries,
                "backoffMs": draw(st.integers(1, 5)),
                "retryOn": ["error", "timeout"],
            }
        steps.append(s)
    plan = {
        "id": "p",
        "steps": steps,
        "parallel": draw(st.booleans()),
        "failFast": draw(st.booleans()),
    }
    if draw(st.booleans()):
        plan["timeout"] = draw(st.sampled_from([30, 60]))
    behaviours = st.lists(st.sampled_from(BEHAVIOURS), max_size=6)
    return {
        "plan": plan,
        "agents": {a: (draw(st.sampled_from([None, 1, 2])), draw(behaviours)) for a in "AB"},
        "listeners": draw(
            st.lists(st.tuples(st.sampled_from(EVENTS), st.sampled_from(LISTENERS)), max_size=4)
        ),
        "runs": draw(st.integers(1, 3)),
        "shutdown_after_ms": draw(st.sampled_from([5, 30, 150])),
    }


@settings(
    max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(chaos())
def test_whatever_agents_and_listeners_do_runs_end_within_capacity_and_nothing_is_left(sc):
    asyncio.run(_play(sc))


async def _play(sc):
    agents = {a: Chaos(a, script, capacity=cap) for a, (cap, script) in sc["agents"].items()}
    orch = await orchestrator(*agents.values(), grace_ms=100)
    for event, kind in sc["listeners"]:
        orch.on(event, _listener(kind))
    plan = Plan.model_validate(sc["plan"])
    runs = [asyncio.ensure_future(orch.orchestrate(plan)) for _ in range(sc["runs"])]
    await asyncio.wait(runs, timeout=sc["shutdown_after_ms"] / 1000)
    await asyncio.wait_for(orch.shutdown(), 2)
    results = await asyncio.wait_for(asyncio.gather(*runs), 1)
    for r in results:
        assert r.status in ("succeeded", "failed", "timed_out")
        assert set(r.step_states.values()) <= {"succeeded", "failed", "skipped", "cancelled"}
        assert r.success == (r.status == "succeeded")
        assert all(o in ("succeeded", "error", "timeout", "cancelled") for o in r.spans.outcome)
    for agent in agents.values():
        assert agent.running == 0 and agent.peak <= (agent.capacity or 99)
    assert asyncio.all_tasks() == {asyncio.current_task()}
