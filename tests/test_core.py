"""The scheduling core alone, fed facts on a virtual clock (no event loop): SPEC §3."""

from __future__ import annotations

import random

import pytest
from core_harness import Harness, plan_of, run_plan, state_names, step

from orchkit import RetryPolicy, RunResult
from orchkit._engine.core import (
    CancelAttempt,
    Emit,
    FinishRun,
    Scheduler,
    StartAttempt,
    StartTimer,
    compile_plan,
)
from orchkit.testing import Crash, Fail, Garbage, Hang, Ok


def attempts_of(run, step_id):
    return [a for a in run.attempts if a.step_id == step_id]


# ------------------------------------------------------------------ §3.1 / §3.2 ordering


def test_sequential_runs_a_dependency_listed_after_its_dependent_first():
    plan = plan_of("seq", [step("c", deps=["b"]), step("b", deps=["a"]), step("a"), step("z")])
    h, run = run_plan(plan, default=Ok(10))
    order = [r.attempt.step_id for r in h.starts]
    # ready at 0 ms: "a" and "z"; "a" comes first in plan order. Then "b", then "c"
    # become ready, and each precedes "z" in plan order.
    assert order == ["a", "b", "c", "z"]
    assert [r.at_ms for r in h.starts] == [0, 10, 20, 30]
    assert h.peak_plan[id(run.plans[0])] == 1
    assert run.status == "succeeded" and run.end_ms == 40


def test_sequential_plan_order_breaks_ties():
    plan = plan_of("seq", [step("x"), step("y"), step("w")])
    h, run = run_plan(plan, default=Ok(5))
    assert [r.attempt.step_id for r in h.starts] == ["x", "y", "w"]
    assert [r.at_ms for r in h.starts] == [0, 5, 10]


def test_parallel_starts_every_ready_step_at_once_and_dependents_at_the_instant():
    plan = plan_of(
        "par",
        [step("a"), step("b"), step("c", deps=["a", "b"]), step("d", deps=["a"])],
        parallel=True,
    )
    h, run = run_plan(plan, script={"a": [Ok(10)], "b": [Ok(30)], "c": [Ok(5)], "d": [Ok(1)]})
    assert h.start_times("a") == [0] and h.start_times("b") == [0]
    assert h.start_times("d") == [10]  # the moment its only dependency succeeded
    assert h.start_times("c") == [30]  # the moment its last dependency succeeded
    assert run.end_ms == 35 and run.status == "succeeded"
    assert all(r.dep_states == () or set(r.dep_states) == {3} for r in h.starts)


def test_max_concurrency_caps_attempts_in_flight_in_plan_order():
    plan = plan_of("mc", [step(f"s{i}") for i in range(5)], parallel=True, maxConcurrency=2)
    h, run = run_plan(plan, default=Ok(10))
    assert [(r.attempt.step_id, r.at_ms) for r in h.starts] == [
        ("s0", 0),
        ("s1", 0),
        ("s2", 10),
        ("s3", 10),
        ("s4", 20),
    ]
    assert h.peak_plan[id(run.plans[0])] == 2
    assert run.end_ms == 30


def test_a_step_backing_off_holds_its_sequential_slot():
    plan = plan_of("seq", [step("a", retry={"maxRetries": 1, "backoffMs": 50}), step("b")])
    h, run = run_plan(plan, script={"a": [Fail(10), Ok(10)]}, default=Ok(10))
    assert h.start_times("a") == [0, 60]
    assert h.start_times("b") == [70]  # not during a's backoff


# ------------------------------------------------------------------ §3.5 skip


@pytest.mark.parametrize("parallel", [True, False])
def test_failed_step_skips_transitive_dependents_and_independent_steps_go_on(parallel):
    plan = plan_of(
        "skip",
        [
            step("a"),
            step("b", deps=["a"]),
            step("c", deps=["b"]),
            step("d"),
            step("e", deps=["d"]),
            step("f", deps=["c", "e"]),
        ],
        parallel=parallel,
    )
    h, run = run_plan(plan, script={"a": [Fail(10, "boom")]}, default=Ok(20))
    assert state_names(run) == {
        "a": "failed",
        "b": "skipped",
        "c": "skipped",
        "d": "succeeded",
        "e": "succeeded",
        "f": "skipped",
    }
    started = {r.attempt.step_id for r in h.starts}
    assert started == {"a", "d", "e"}
    assert run.status == "failed"
    skipped = h.named("step:skipped")
    assert sorted(p["stepId"] for p in skipped) == ["b", "c", "f"]
    assert {p["stepId"]: p["dependencyId"] for p in skipped}["b"] == "a"
    pr = run.plans[0]
    assert pr.errors["a"] == "boom"
    assert "skipped" in pr.errors["b"] and "'a'" in pr.errors["b"]
    assert set(pr.results) == {"d", "e"}
    assert len(h.named("step:failed")) == 1


def test_skipped_steps_emit_once_even_with_two_failed_dependencies():
    plan = plan_of("p", [step("a"), step("b"), step("c", deps=["a", "b"])], parallel=True)
    h, run = run_plan(plan, script={"a": [Fail(5)], "b": [Fail(10)]})
    assert [p["stepId"] for p in h.named("step:skipped")] == ["c"]
    assert state_names(run)["c"] == "skipped"


# ------------------------------------------------------------------ §3.6 failFast


def test_fail_fast_cancels_in_flight_attempts_and_marks_the_rest_cancelled():
    plan = plan_of(
        "ff",
        [step("a"), step("b"), step("c"), step("d", deps=["a"]), step("e", deps=["c"])],
        parallel=True,
        failFast=True,
    )
    h, run = run_plan(
        plan, script={"a": [Fail(10)], "b": [Hang()], "c": [Ok(100)]}, deliver_stale=True
    )  # c's completion at 100 ms must be ignored
    assert run.status == "failed" and run.end_ms == 10
    assert {a.step_id for a in h.cancelled} == {"b", "c"}
    assert state_names(run) == {
        "a": "failed",
        "b": "cancelled",
        "c": "cancelled",
        "d": "cancelled",
        "e": "cancelled",
    }
    assert {r.attempt.step_id for r in h.starts} == {"a", "b", "c"}
    assert [a.outcome for a in run.attempts] == ["error", "cancelled", "cancelled"]
    assert "failFast" in run.plans[0].errors["d"]
    assert not h.named("step:skipped")
    assert len(h.finished) == 1  # the stale completion did not finish the run again


def test_without_fail_fast_the_same_plan_goes_on():
    plan = plan_of("ff", [step("a"), step("b"), step("c")], parallel=True)
    h, run = run_plan(plan, script={"a": [Fail(10)], "b": [Ok(50)], "c": [Ok(100)]})
    assert state_names(run) == {"a": "failed", "b": "succeeded", "c": "succeeded"}
    assert run.end_ms == 100 and run.status == "failed" and not h.cancelled


# ------------------------------------------------------------------ §3.4 retries


def _retry_plan(**retry):
    return plan_of("r", [step("a", retry=retry)])


@pytest.mark.parametrize(
    "strategy, delays",
    [
        ("linear", [100, 200, 300]),
        ("exponential", [100, 200, 400]),
        ("fixed", [100, 100, 100]),
    ],
)
def test_backoff_strategies_give_exact_retry_times(strategy, delays):
    h, run = run_plan(_retry_plan(maxRetries=3, backoffMs=100, strategy=strategy), default=Fail(10))
    starts = [0]  # each attempt fails after 10 ms, then waits its backoff
    for d in delays:
        starts.append(starts[-1] + 10 + d)
    assert h.start_times("a") == starts
    assert h.retry_timers() == starts[1:]  # StartTimer.at_ms of each retry
    assert [p["delayMs"] for p in h.named("step:retrying")] == delays
    assert [p["attempt"] for p in h.named("step:retrying")] == [2, 3, 4]
    assert len(run.attempts) == 4 and run.retries == 3
    assert run.status == "failed" and run.end_ms == starts[-1] + 10


def test_seed_rule_one_two_three_seconds():
    h, run = run_plan(_retry_plan(maxRetries=3, backoffMs=1000), default=Fail(0))
    assert [p["delayMs"] for p in h.named("step:retrying")] == [1000, 2000, 3000]


def test_max_backoff_caps_the_delay():
    h, _ = run_plan(
        _retry_plan(maxRetries=5, backoffMs=100, strategy="exponential", maxBackoffMs=250),
        default=Fail(0),
    )
    assert [p["delayMs"] for p in h.named("step:retrying")] == [100, 200, 250, 250, 250]


def test_jitter_is_drawn_from_the_seeded_rng_after_the_cap():
    retry = dict(maxRetries=4, backoffMs=100, strategy="exponential", maxBackoffMs=300, jitter=0.5)
    h, _ = run_plan(_retry_plan(**retry), default=Fail(0), seed=7)
    rng = random.Random(7)
    expected = [min(100 * 2**k, 300) * (0.5 + rng.random()) for k in range(4)]
    got = [p["delayMs"] for p in h.named("step:retrying")]
    assert got == pytest.approx(expected, rel=1e-12)
    # timers are set at exactly the jittered delays
    assert h.retry_timers() == pytest.approx(list(_cumsum(expected)), rel=1e-12)
    # same seed, same delays; another seed, other delays, all within [1-j, 1+j]
    h2, _ = run_plan(_retry_plan(**retry), default=Fail(0), seed=7)
    assert [p["delayMs"] for p in h2.named("step:retrying")] == got
    h3, _ = run_plan(_retry_plan(**retry), default=Fail(0), seed=8)
    got3 = [p["delayMs"] for p in h3.named("step:retrying")]
    assert got3 != got
    for d, base in zip(got3, [100, 200, 300, 300]):
        assert 0.5 * base <= d <= 1.5 * base


def _cumsum(xs):
    total = 0.0
    for x in xs:
        total += x
        yield total


@pytest.mark.parametrize("strategy", ["linear", "exponential", "fixed"])
def test_core_delays_match_retry_policy_delay_ms(strategy):
    rp = RetryPolicy(max_retries=4, backoff_ms=70, strategy=strategy, max_backoff_ms=400)
    h, _ = run_plan(_retry_plan(**rp.model_dump(by_alias=True)), default=Fail(0))
    assert [p["delayMs"] for p in h.named("step:retrying")] == [rp.delay_ms(k) for k in range(1, 5)]


def test_zero_backoff_retries_at_the_same_instant():
    h, run = run_plan(
        _retry_plan(maxRetries=2, backoffMs=0), script={"a": [Fail(10), Fail(10), Ok(10)]}
    )
    assert h.start_times("a") == [0, 10, 20]
    assert run.status == "succeeded"


def test_success_after_retries_is_success():
    h, run = run_plan(
        _retry_plan(maxRetries=3, backoffMs=20), script={"a": [Fail(5), Garbage(5), Ok(5)]}
    )
    assert run.status == "succeeded"
    assert [a.outcome for a in run.attempts] == ["error", "error", "succeeded"]
    assert h.start_times("a") == [0, 25, 70]


def test_non_retryable_error_fails_the_step_at_once():
    h, run = run_plan(
        _retry_plan(maxRetries=5, backoffMs=10), default=Fail(3, "invalid input", retryable=False)
    )
    assert len(run.attempts) == 1 and run.end_ms == 3
    assert not h.named("step:retrying") and not h.retry_timers()
    assert h.named("step:failed")[0]["error"] == "invalid input"


def test_retry_on_timeout_only_does_not_retry_errors():
    plan = plan_of(
        "r",
        [step("a", timeout=50, retry={"maxRetries": 2, "backoffMs": 10, "retryOn": ["timeout"]})],
    )
    _, run = run_plan(plan, default=Fail(5))
    assert len(run.attempts) == 1
    _, run = run_plan(plan, script={"a": [Hang(), Hang(), Ok(5)]})
    assert [a.outcome for a in run.attempts] == ["timeout", "timeout", "succeeded"]
    assert run.status == "succeeded"


def test_retry_on_error_only_does_not_retry_timeouts():
    plan = plan_of(
        "r", [step("a", timeout=50, retry={"maxRetries": 2, "backoffMs": 10, "retryOn": ["error"]})]
    )
    _, run = run_plan(plan, default=Hang())
    assert [a.outcome for a in run.attempts] == ["timeout"] and run.status == "failed"
    _, run = run_plan(plan, script={"a": [Crash(5), Ok(5)]})
    assert [a.outcome for a in run.attempts] == ["error", "succeeded"]


# ------------------------------------------------------------------ §3.3 step timeout


def test_step_timeout_cancels_the_attempt_then_retries():
    plan = plan_of("t", [step("a", timeout=50, retry={"maxRetries": 1, "backoffMs": 10})])
    h, run = run_plan(plan, default=Hang())
    assert [(a.step_id, a.number) for a in h.cancelled] == [("a", 1), ("a", 2)]
    assert h.start_times("a") == [0, 60]
    assert [a.outcome for a in run.attempts] == ["timeout", "timeout"]
    assert "timed out after 50 ms" in run.attempts[0].error
    assert run.timeouts == 2 and run.status == "failed" and run.end_ms == 110


def test_step_timeout_counts_time_queued_at_a_busy_agent():
    plan = plan_of("q", [step("a", agent="one"), step("b", agent="one", timeout=50)], parallel=True)
    h, run = run_plan(plan, capacity={"one": 1}, script={"a": [Ok(80)], "b": [Ok(10)]})
    # b waited from 0 ms, timed out at 50 ms without ever starting
    assert h.start_times("b") == []
    b = attempts_of(run, "b")[0]
    assert b.queued_ms == 0 and b.start_ms is None and b.end_ms == 50
    assert b.outcome == "timeout" and "waiting for agent capacity" in b.error
    assert not h.cancelled  # nothing was running for b, so nothing to cancel
    assert state_names(run) == {"a": "succeeded", "b": "failed"}
    assert run.end_ms == 80
    assert h.peak_agent["one"] == 1


def test_a_queued_attempt_that_gets_capacity_in_time_keeps_its_deadline():
    plan = plan_of(
        "q", [step("a", agent="one"), step("b", agent="one", timeout=100)], parallel=True
    )
    h, run = run_plan(plan, capacity={"one": 1}, script={"a": [Ok(80)], "b": [Ok(30)]})
    b = attempts_of(run, "b")[0]
    assert (b.queued_ms, b.start_ms) == (0, 80)
    # queued at 0 with a 100 ms limit: running from 80, it times out at 100
    assert b.outcome == "timeout" and b.end_ms == 100
    assert [a.step_id for a in h.cancelled] == ["b"]


def test_an_attempt_finishing_in_time_cancels_its_timer():
    plan = plan_of("t", [step("a", timeout=100)])
    h, run = run_plan(plan, default=Ok(30))
    timer = [t for t in h.timers if t.at_ms == 100][0]
    assert id(timer) in h.cancelled_timers
    assert run.status == "succeeded" and run.end_ms == 30


# ------------------------------------------------------------------ §3.7 plan deadline


def test_plan_deadline_cancels_in_flight_work_and_drops_waiting_retries():
    plan = plan_of(
        "dl",
        [
            step("a"),
            step("b", retry={"maxRetries": 3, "backoffMs": 1000}),
            step("c", deps=["a"]),
            step("d"),
        ],
        parallel=True,
        timeout=100,
    )
    h, run = run_plan(
        plan, script={"a": [Hang()], "b": [Fail(10)], "d": [Ok(20)]}, fire_cancelled=True
    )  # the dropped retry timer still fires: ignored
    assert run.status == "timed_out" and run.end_ms == 100
    assert [a.step_id for a in h.cancelled] == ["a"]
    assert h.start_times("b") == [0]  # the retry due at 1010 ms never happened
    retry_timer = [t for t in h.timers if t.at_ms == 1010][0]
    assert id(retry_timer) in h.cancelled_timers
    assert state_names(run) == {
        "a": "cancelled",
        "b": "cancelled",
        "c": "cancelled",
        "d": "succeeded",
    }
    errors = run.plans[0].errors
    assert all("timed out" in errors[s] for s in "abc")
    result = RunResult.from_run(run)
    assert result.status == "timed_out" and "timed out" in result.error
    assert result.error == "Orchestration plan dl timed out"
    done = h.named("plan:completed")
    assert done[-1]["status"] == "timed_out" and done[-1]["success"] is False
    assert len(h.finished) == 1


def test_plan_deadline_timer_is_cancelled_when_the_plan_ends_first():
    plan = plan_of("dl", [step("a")], timeout=500)
    h, run = run_plan(plan, default=Ok(20))
    deadline = [t for t in h.timers if t.at_ms == 500][0]
    assert id(deadline) in h.cancelled_timers and run.status == "succeeded"


def test_plan_deadline_cancels_queued_attempts_without_starting_them():
    # When the deadline frees the agent slot of the running attempt, the next attempt of
    # the same (ending) plan must not be started for an instant and cancelled.
    plan = plan_of(
        "dl", [step("a", agent="one"), step("b", agent="one")], parallel=True, timeout=50
    )
    h, run = run_plan(plan, capacity={"one": 1}, default=Hang())
    assert run.status == "timed_out"
    assert [a.outcome for a in run.attempts] == ["cancelled", "cancelled"]
    assert h.start_times("b") == []
    assert [p["stepId"] for p in h.named("step:started")] == ["a"]
    b = attempts_of(run, "b")[0]
    assert b.start_ms is None  # the span of b shows it never ran
    assert [a.step_id for a in h.cancelled] == ["a"]


def test_fail_fast_does_not_start_a_queued_attempt_of_the_ending_plan():
    plan = plan_of(
        "ff", [step("a", agent="one"), step("b", agent="one")], parallel=True, failFast=True
    )
    h, run = run_plan(plan, capacity={"one": 1}, script={"a": [Fail(10)]}, default=Hang())
    assert run.status == "failed" and run.end_ms == 10
    assert state_names(run) == {"a": "failed", "b": "cancelled"}
    assert h.start_times("b") == []
    assert [p["stepId"] for p in h.named("step:started")] == ["a"]
    assert attempts_of(run, "b")[0].start_ms is None


def test_a_queued_attempt_of_another_run_gets_the_slot_when_a_plan_times_out():
    h = Harness(capacity={"one": 1}, default=Hang())
    r1 = h.submit(plan_of("slow", [step("a", agent="one")], timeout=50), run_id="r1")
    r2 = h.submit(plan_of("quick", [step("b", agent="one")]), at_ms=10, run_id="r2")
    h.script["quick/b"] = [Ok(5)]
    h.run()
    assert h.runs[r1].status == "timed_out"
    b = h.runs[r2].attempts[0]
    assert (b.queued_ms, b.start_ms, b.end_ms) == (10, 50, 55)
    assert h.runs[r2].status == "succeeded"


# ------------------------------------------------------------------ §3.8 fallback


def _with_fallback(main_steps, fb_steps, fb_timeout=None, **main_kw):
    fb = {"id": "fb", "steps": fb_steps}
    if fb_timeout is not None:
        fb["timeout"] = fb_timeout
    return plan_of("main", main_steps, fallbackPlan=fb, **main_kw)


def test_fallback_runs_after_failure_with_its_own_deadline():
    plan = _with_fallback([step("a")], [step("x")], fb_timeout=50, timeout=1000)
    h, run = run_plan(plan, script={"main/a": [Fail(10)], "fb/x": [Ok(20)]})
    fb_events = h.named("plan:fallback")
    assert len(fb_events) == 1
    assert fb_events[0]["planId"] == "main" and fb_events[0]["fallbackPlanId"] == "fb"
    assert fb_events[0]["timeMs"] == 10
    assert [t.at_ms for t in h.timers] == [1000, 60]  # fb's deadline counts from its start
    assert run.status == "succeeded" and run.end_ms == 30
    result = RunResult.from_run(run)
    assert result.plan_id == "fb" and result.success
    assert result.duration_ms == 30  # covers the chain
    assert result.fallback_chain == [
        {"plan_id": "main", "status": "failed"},
        {"plan_id": "fb", "status": "succeeded"},
    ]
    assert list(result.spans["plan_id"]) == ["main", "fb"]


def test_fallback_after_the_deadline_and_its_own_timeout():
    plan = _with_fallback([step("a")], [step("x")], fb_timeout=50, timeout=100)
    h, run = run_plan(plan, default=Hang())
    assert [p["planId"] for p in h.named("plan:started")] == ["main", "fb"]
    assert [r.at_ms for r in h.starts] == [0, 100]
    assert run.status == "timed_out" and run.end_ms == 150
    assert [p.status for p in run.plans] == ["timed_out", "timed_out"]
    assert RunResult.from_run(run).error == "Orchestration plan fb timed out"


def test_fallback_chain_stops_at_the_first_success_and_is_not_used_on_success():
    chain = {"id": "p2", "steps": [step("z")]}
    chain = {"id": "p1", "steps": [step("y")], "fallbackPlan": chain}
    plan = plan_of("p0", [step("x")], fallbackPlan=chain)
    h, run = run_plan(plan, script={"p0/x": [Fail(1)], "p1/y": [Fail(1)]}, default=Ok(1))
    assert [(p.cp.id, p.status) for p in run.plans] == [
        ("p0", "failed"),
        ("p1", "failed"),
        ("p2", "succeeded"),
    ]
    assert [(p["planId"], p["fallbackPlanId"]) for p in h.named("plan:fallback")] == [
        ("p0", "p1"),
        ("p1", "p2"),
    ]
    h, run = run_plan(plan, default=Ok(1))
    assert len(run.plans) == 1 and not h.named("plan:fallback")


def test_fail_fast_failure_also_triggers_the_fallback():
    plan = _with_fallback([step("a"), step("b")], [step("x")], parallel=True, failFast=True)
    h, run = run_plan(plan, script={"main/a": [Fail(5)], "main/b": [Hang()]}, default=Ok(5))
    assert [p.status for p in run.plans] == ["failed", "succeeded"]
    assert run.end_ms == 10 and [a.step_id for a in h.cancelled] == ["b"]


# ------------------------------------------------------------------ §3.3a capacity


def test_agent_capacity_queues_fifo_across_runs_sharing_one_scheduler():
    plan = plan_of("one", [step("s", agent="shared")])
    h = Harness(capacity={"shared": 1}, default=Ok(30))
    ids = [h.submit(plan, at_ms=t, run_id=f"r{t}") for t in (0, 5, 10)]
    h.run()
    runs = [h.runs[i] for i in ids]
    spans = [(r.attempts[0].queued_ms, r.attempts[0].start_ms, r.attempts[0].end_ms) for r in runs]
    assert spans == [(0, 0, 30), (5, 30, 60), (10, 60, 90)]
    assert [r.end_ms for r in runs] == [30, 60, 90]
    assert h.peak_agent["shared"] == 1
    started = h.named("step:started")
    assert [(p["runId"], p["queuedMs"], p["timeMs"]) for p in started] == [
        ("r0", 0, 0),
        ("r5", 0, 25),
        ("r10", 0, 50),
    ]  # times from each run's start
    assert RunResult.from_run(runs[1]).spans.loc[0, ["queued_ms", "start_ms"]].tolist() == [0, 25]


def test_capacity_two_with_plan_order_fifo_inside_a_plan():
    plan = plan_of("p", [step(f"s{i}", agent="ag") for i in range(5)], parallel=True)
    h, run = run_plan(plan, capacity={"ag": 2}, default=Ok(10))
    assert [(r.attempt.step_id, r.at_ms) for r in h.starts] == [
        ("s0", 0),
        ("s1", 0),
        ("s2", 10),
        ("s3", 10),
        ("s4", 20),
    ]
    assert all(a.queued_ms == 0 for a in run.attempts)
    assert h.peak_agent["ag"] == 2


def test_capacity_is_per_agent():
    plan = plan_of(
        "p", [step("a", agent="x"), step("b", agent="y"), step("c", agent="x")], parallel=True
    )
    h, _ = run_plan(plan, capacity={"x": 1}, default=Ok(10))
    assert [(r.attempt.step_id, r.at_ms) for r in h.starts] == [("a", 0), ("b", 0), ("c", 10)]


def test_capacity_is_asked_once_per_agent():
    asked = []
    core = Scheduler(lambda agent_id: asked.append(agent_id) or 1)
    cp = compile_plan(plan_of("p", [step("a", agent="x"), step("b", agent="x")], parallel=True))
    core.submit(cp, 0.0, "r1")
    core.submit(cp, 0.0, "r2")
    assert asked == ["x"]


def test_busy_ms_sums_running_time_per_agent():
    plan = plan_of(
        "p", [step("a", agent="x"), step("b", agent="x"), step("c", agent="y")], parallel=True
    )
    h, _ = run_plan(plan, capacity={"x": 1}, default=Ok(10))
    assert h.core.busy_ms() == {"x": 20.0, "y": 10.0}


# ------------------------------------------------------------------ stale facts, abort


def test_stale_facts_are_ignored():
    core = Scheduler()
    cp = compile_plan(plan_of("p", [step("a", timeout=50), step("b", deps=["a"])]))
    run, actions = core.submit(cp, 0.0, "r")
    att = next(a.attempt for a in actions if isinstance(a, StartAttempt))
    timer = next(a.timer for a in actions if isinstance(a, StartTimer))
    out = core.timer_fired(timer, 50.0)
    assert any(isinstance(a, CancelAttempt) and a.attempt is att for a in out)
    assert any(isinstance(a, FinishRun) for a in out)
    assert run.status == "failed"
    # the agent's answer arrives after all: nothing happens
    assert core.attempt_succeeded(att, 60.0, "late") == []
    assert core.attempt_failed(att, 61.0, "late error") == []
    assert core.timer_fired(timer, 62.0) == []
    assert run.plans[0].results == {} and att.outcome == "timeout" and att.end_ms == 50
    assert core.abort(run, 70.0, "too late") == [] and run.status == "failed"


def test_abort_cancels_in_flight_work_and_skips_the_fallback():
    plan = _with_fallback([step("a"), step("b", deps=["a"])], [step("x")])
    core = Scheduler()
    run, actions = core.submit(compile_plan(plan), 0.0, "r")
    att = next(a.attempt for a in actions if isinstance(a, StartAttempt))
    out = core.abort(run, 5.0, "cancelled: the caller gave up")
    kinds = [type(a).__name__ for a in out]
    assert "CancelAttempt" in kinds and kinds[-1] == "FinishRun"
    assert not any(isinstance(a, Emit) and a.event == "plan:fallback" for a in out)
    assert run.status == "failed" and run.end_ms == 5 and len(run.plans) == 1
    assert (
        att.outcome == "cancelled" and run.plans[0].errors["b"] == "cancelled: the caller gave up"
    )


# ------------------------------------------------------------------ §3.10 events


def test_event_payload_keys():
    plan = _with_fallback(
        [
            step("a", agent="ag", retry={"maxRetries": 1, "backoffMs": 5}),
            step("b", agent="ag", deps=["a"]),
        ],
        [step("x", agent="fa")],
    )
    h, run = run_plan(plan, script={"main/a": [Fail(1, "e1"), Fail(1, "e2")]}, default=Ok(2))
    base = {"planId", "stepId", "agentId", "runId", "timeMs"}
    by_name: dict[str, list[dict]] = {}
    for _, name, payload in h.events:
        by_name.setdefault(name, []).append(payload)
    assert base | {"jobId", "attempt"} <= set(by_name["step:started"][0])
    assert base | {"jobId", "response"} <= set(by_name["step:completed"][0])
    assert base | {"jobId", "result"} <= set(by_name["queue:completed"][0])
    for name in ("agent:error", "queue:failed", "step:failed", "step:retrying"):
        assert base | {"jobId", "error"} <= set(by_name[name][0]), name
    assert base <= set(by_name["step:skipped"][0])
    assert {"planId", "runId", "timeMs"} <= set(by_name["plan:started"][0])
    assert {"planId", "runId", "timeMs", "status", "success", "duration"} <= set(
        by_name["plan:completed"][0]
    )
    assert {"planId", "fallbackPlanId", "runId", "timeMs"} <= set(by_name["plan:fallback"][0])
    assert [p["error"] for p in by_name["agent:error"]] == ["e1", "e2"]
    assert by_name["step:completed"][0]["response"] == ("ok", "x", 1)
    assert by_name["step:completed"][0]["timeMs"] == 1 + 5 + 1 + 2  # fail, backoff, fail, x
    assert all(p["runId"] == run.run_id for ps in by_name.values() for p in ps)
    jobs = [p["jobId"] for p in by_name["step:started"]]
    assert len(set(jobs)) == len(jobs) == 3  # one job id per attempt
    names = [e for _, e, _ in h.events]
    assert names[0] == "plan:started" and names[-1] == "plan:completed"


def test_events_false_emits_nothing_and_schedules_the_same():
    plan = plan_of(
        "p",
        [
            step("a", retry={"maxRetries": 2, "backoffMs": 3, "jitter": 0.3}),
            step("b"),
            step("c", deps=["a"]),
        ],
        parallel=True,
    )
    kw = dict(script={"a": [Fail(4), Ok(2)]}, default=Ok(5), seed=3)
    h1, r1 = run_plan(plan, **kw)
    h2, r2 = run_plan(plan, events=False, **kw)
    assert not h2.events and h1.events
    assert [(a.step_id, a.start_ms, a.end_ms, a.outcome) for a in r1.attempts] == [
        (a.step_id, a.start_ms, a.end_ms, a.outcome) for a in r2.attempts
    ]
    assert r1.retries == r2.retries == 1


def test_compiled_plan_is_cached_and_plan_equality_is_unaffected():
    p1 = plan_of("p", [step("a")])
    p2 = plan_of("p", [step("a")])
    assert compile_plan(p1) is compile_plan(p1)
    assert p1 == p2
