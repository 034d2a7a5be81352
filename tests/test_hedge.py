"""Hedged attempts (SPEC §10.2): the rules on the core harness (virtual clock), the closed
form of an exponential agent, plan validation, and the same scenario simulated and live."""

from __future__ import annotations

import math
import warnings

import pytest
from core_harness import plan_of, run_plan, state_names, step
from test_sim import _assert_agree, _plan, _run_both, _step

import orchkit as ok
from orchkit._engine.core import CancelAttempt
from orchkit.testing import Fail, Hang, Ok, ScriptedAgent


def hedged(sid="s", delay=50, max_hedges=1, **kw):
    out = step(sid, "a", **kw)
    out["hedge"] = {"delayMs": delay, "maxHedges": max_hedges}
    return out


def spans(run):
    return [(a.number, a.hedge, a.queued_ms, a.start_ms, a.end_ms, a.outcome) for a in run.attempts]


def test_a_hung_first_attempt_is_rescued_exactly_at_delay_plus_latency():
    h, run = run_plan(plan_of("p", [hedged(delay=50)]), script={"s": [Hang(), Ok(30)]})
    assert run.status == "succeeded" and run.end_ms == 80
    assert spans(run) == [(1, False, 0, 0, 80, "cancelled"), (2, True, 50, 50, 80, "succeeded")]
    assert run.attempts[0].error == "cancelled: attempt 2 of step 's' succeeded first"
    assert [a.attempt for _, a in h.actions if type(a) is CancelAttempt] == [run.attempts[0]]
    assert run.retries == 0
    started = h.named("step:started")
    assert [(p["attempt"], p["timeMs"]) for p in started] == [(1, 0), (2, 50)]


def test_the_delay_runs_from_the_last_start_and_max_hedges_bounds_the_try():
    _, run = run_plan(
        plan_of("p", [hedged(delay=50, max_hedges=2)]),
        script={"s": [Hang(), Hang(), Ok(10), Ok(10)]},
    )
    assert [(n, hg, s) for n, hg, _, s, _, _ in spans(run)] == [
        (1, False, 0),
        (2, True, 50),
        (3, True, 100),
    ]
    assert run.end_ms == 110
    # one hedge only: the try waits for the two attempts it has, each with its own timeout
    _, run = run_plan(
        plan_of("p", [hedged(delay=50, timeout=200)]), script={"s": [Hang(), Hang(), Ok(1)]}
    )
    assert spans(run) == [(1, False, 0, 0, 200, "timeout"), (2, True, 50, 50, 250, "timeout")]
    assert run.status == "failed" and run.end_ms == 250


def test_a_fast_failure_ends_the_try_and_the_retry_policy_counts_tries():
    # the only attempt in flight fails before the delay: the try is over, no hedge starts
    _, run = run_plan(
        plan_of("p", [hedged(delay=50, retry={"maxRetries": 1, "backoffMs": 5})]),
        script={"s": [Fail(10), Ok(10)]},
    )
    assert spans(run) == [(1, False, 0, 0, 10, "error"), (2, False, 15, 15, 25, "succeeded")]
    assert run.retries == 1
    # every attempt fails: 2 tries x (1 + 1 hedge) attempts, then the step fails
    h, run = run_plan(
        plan_of("p", [hedged(delay=50, retry={"maxRetries": 1, "backoffMs": 10})]),
        default=Fail(100),
    )
    assert spans(run) == [
        (1, False, 0, 0, 100, "error"),
        (2, True, 50, 50, 150, "error"),
        (3, False, 160, 160, 260, "error"),
        (4, True, 210, 210, 310, "error"),
    ]
    assert run.status == "failed" and run.retries == 1
    assert [p["attempt"] for p in h.named("step:retrying")] == [3]
    assert [p["attempt"] for p in h.named("step:failed")] == [4]


def test_a_failure_while_another_attempt_runs_leaves_the_try_going():
    _, run = run_plan(plan_of("p", [hedged(delay=20)]), script={"s": [Ok(100), Fail(10)]})
    assert spans(run) == [(1, False, 0, 0, 100, "succeeded"), (2, True, 20, 20, 30, "error")]
    assert run.status == "succeeded"


def test_a_non_retryable_error_fails_the_step_at_once_and_cancels_the_others():
    _, run = run_plan(
        plan_of(
            "p",
            [
                hedged(delay=20, retry={"maxRetries": 3, "backoffMs": 1}),
                step("next", "b", deps=["s"]),
            ],
        ),
        script={"s": [Hang(), Fail(10, retryable=False)]},
    )
    assert spans(run) == [(1, False, 0, 0, 30, "cancelled"), (2, True, 20, 20, 30, "error")]
    assert state_names(run) == {"s": "failed", "next": "skipped"}


def test_a_hedge_waits_for_agent_capacity_like_any_attempt():
    h, run = run_plan(
        plan_of("p", [hedged(delay=20)]), capacity={"a": 1}, script={"s": [Ok(100), Ok(1)]}
    )
    # queued at 20, never started: cancelled when the first attempt succeeded
    assert spans(run) == [(1, False, 0, 0, 100, "succeeded"), (2, True, 20, None, 100, "cancelled")]
    assert h.peak_agent["a"] == 1


def test_the_plan_deadline_cancels_every_attempt_of_a_try():
    _, run = run_plan(plan_of("p", [hedged(delay=20)], timeout=100), default=Hang())
    assert run.status == "timed_out" and run.end_ms == 100
    assert [(n, o) for n, _, _, _, _, o in spans(run)] == [(1, "cancelled"), (2, "cancelled")]


def test_hedges_in_the_spans_frames_live_simulated_and_studied():
    models = {"agents": {"a": {"latency": {"dist": "constant", "value": 80}}}}
    plan = _plan([{**_step("s", "a"), "hedge": {"delayMs": 50}}])
    sim = ok.simulate(plan, models)
    assert sim.spans["hedge"].tolist() == [False, True]
    assert sim.spans["hedge"].dtype == bool
    mc = ok.monte_carlo(plan, models, runs=10, progress=False)
    assert mc.spans["hedge"].tolist() == [False, True] * 10
    assert mc.method == "simpy" and "hedges steps s" in mc.method_reason
    with pytest.raises(ok.PlanValidationError, match="hedges steps s"):
        ok.monte_carlo(plan, models, runs=10, method="fast", progress=False)
    plain = ok.monte_carlo(_plan([_step("s", "a")]), models, runs=10, progress=False)
    assert plain.method == "fast" and not plain.spans["hedge"].any()


@pytest.mark.parametrize("delay", [50.0, 150.0])
def test_hedging_matches_its_closed_form_on_an_exponential_agent(delay):
    """E[makespan] = m(1 - e^(-d/m)) + e^(-d/m) m/2 for latency Exp(mean m), hedge delay d."""
    m = 100.0
    models = {"agents": {"a": {"latency": {"dist": "exponential", "mean": m}}}}
    plan = _plan([{**_step("s", "a"), "hedge": {"delayMs": delay}}])
    mc = ok.monte_carlo(plan, models, runs=10_000, seed=3, keep_spans=False, progress=False)
    expected = m * (1 - math.exp(-delay / m)) + math.exp(-delay / m) * m / 2
    row = mc.summary().metrics.loc["makespan_mean_ms"]
    assert row["ci_low"] <= expected <= row["ci_high"], (expected, row.to_dict())
    # and the share of runs that hedged is P(X > d) (Wilson interval)
    hedged_runs = (mc.runs["attempts"] == 2).mean()
    assert abs(hedged_runs - math.exp(-delay / m)) < 4 * math.sqrt(0.25 / 10_000)


async def test_sim_and_live_agree_on_a_hedged_rescue():
    plan = _plan(
        [{**_step("s", "H", timeout=1000), "hedge": {"delayMs": 100}}, _step("t", "H", deps=["s"])]
    )

    def agents():
        return [ScriptedAgent("H", {"s": [Hang(), Ok(60)], "t": [Ok(20)]})]

    sim, se, live, le = await _run_both(plan, agents)
    assert sim.success and sim.duration_ms == 180
    assert sim.spans["hedge"].tolist() == [False, True, False]
    assert sim.spans["outcome"].tolist() == ["cancelled", "succeeded", "succeeded"]
    assert live.spans["hedge"].tolist() == [False, True, False]
    _assert_agree(sim, se, live, le)


def test_plan_validation_of_hedge():
    base = {"id": "p", "steps": [{"id": "s", "agentId": "a", "action": "x"}]}

    def with_hedge(h):
        return {**base, "steps": [{**base["steps"][0], "hedge": h}]}

    for bad, words in [
        ({"delayMs": -1}, ["step 's'", "hedge", "'delayMs'", ">= 0"]),
        ({"delayMs": 10, "maxHedges": 0}, ["'maxHedges'", ">= 1"]),
        ({"delayMs": 10, "maxHedges": 11}, ["'maxHedges'", "<= 10"]),
        ({"delay": 10}, ["unknown field 'delay'", "did you mean 'delayMs'"]),
        ({}, ["missing required field 'delayMs'"]),
    ]:
        with pytest.raises(ok.PlanValidationError) as err:
            ok.Plan.model_validate(with_hedge(bad))
        for w in words:
            assert w in str(err.value), (w, str(err.value))
    with pytest.raises(ok.PlanValidationError, match="did you mean 'hedge'"):
        ok.Plan.model_validate({**base, "steps": [{**base["steps"][0], "hedg": {}}]})
    plan = ok.Plan.model_validate(with_hedge({"delayMs": 25}))
    assert plan.steps[0].hedge == ok.Hedge(delay_ms=25, max_hedges=1)
    assert plan.to_dict()["steps"][0]["hedge"] == {"delayMs": 25, "maxHedges": 1}
    assert ok.Plan.model_validate(plan.to_dict()) == plan
    assert plan.with_values({"steps.s.hedge.delayMs": 75}).steps[0].hedge.delay_ms == 75
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seed = plan.to_dict(compat="seed")
    assert "hedge" not in seed["steps"][0]
    assert "plan 'p' step 's': hedge" in str(caught[0].message)
