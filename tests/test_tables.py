"""The table lane of workload studies (orchkit/_runtimes/tables.py) is the core's rules
compiled: for every study it takes, its frames equal the core's bit for bit, ties included.
Checked here on the seed plans and on random plans, models and workloads (constant
latencies and backoffs make many events fall at the same ms)."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import orchkit as ok
from orchkit._engine.prepared import Prepared
from orchkit._runtimes.sim import capacity_study
from orchkit._runtimes.tables import declines
from orchkit._spec.inputs import StudyInputs
from orchkit.testing import Ok, ScriptedAgent, ScriptedModels


def prepared(plan, models, workload, policies=None) -> Prepared:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Prepared.of(StudyInputs.of(plan, models, policies, workload, where="test"))


def both(p: Prepared, seed: int, keep_spans: bool | int = True) -> tuple:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lane = capacity_study(p, seed, keep_spans, False, tables=True)
        core = capacity_study(p, seed, keep_spans, False, tables=False)
    return lane, core


def assert_same(lane: tuple, core: tuple) -> None:
    pd.testing.assert_frame_equal(lane[0], core[0], check_exact=True)
    pd.testing.assert_frame_equal(lane[1], core[1], check_exact=True)
    assert list(lane[2].items()) == list(core[2].items())  # busy ms, agents in the same order
    assert lane[3] == core[3]  # when the last run ended
    assert lane[4] == core[4] == []


WORKLOADS = {
    "poisson": ok.Workload(rate_per_s=3.0, horizon_ms=60_000),
    "closed": ok.Workload(population=8, think_ms=800, horizon_ms=40_000),
    "interval": ok.Workload(interval_ms=250, horizon_ms=30_000),
}


@pytest.mark.parametrize("name", ok.examples.names())
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_the_lane_gives_the_cores_frames_on_the_seed_plans(name, workload):
    p = prepared(ok.examples.plan(name), ok.examples.models(), WORKLOADS[workload])
    assert declines(p) is None
    lane, core = both(p, seed=3)
    assert len(lane[0]) > 10 and len(lane[1]) >= len(lane[0])
    assert_same(lane, core)
    if workload == "poisson":  # what a user is told
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mc = ok.monte_carlo(p.plan, p.models, workload=p.workload, progress=False)
        assert mc.method_reason.endswith("in the table lane")


def test_the_lane_gives_the_cores_frames_on_a_mix_with_a_span_sample():
    plans = tuple((ok.examples.plan(n), 1.0 + i) for i, n in enumerate(ok.examples.names()))
    wl = ok.Workload(rate_per_s=5.0, horizon_ms=60_000, plans=plans)
    p = prepared(None, ok.examples.models(), wl)
    for keep in (True, 40, False):
        lane, core = both(p, seed=5, keep_spans=keep)
        assert_same(lane, core)
    assert lane[1].empty


def test_the_lane_gives_the_cores_frames_under_an_outage():
    plan = ok.examples.plan("parallel_analysis")
    models = ok.examples.models().to_dict()
    entry = models["agents"]["tutor-agent-*"]
    entry["outages"] = [{"startMs": 10_000, "endMs": 25_000, "error": 0.7, "hang": 0.1}]
    p = prepared(plan, ok.AgentModels.from_dict(models), WORKLOADS["poisson"])
    assert declines(p) is None
    assert_same(*both(p, seed=9))


def test_the_lane_declines_what_runs_in_the_core():
    plan = ok.examples.plan("parallel_analysis")
    models = ok.examples.models()
    wl = WORKLOADS["poisson"]
    breakers = {"breakers": {"tutor-agent-*": {"window": 10, "failureRate": 0.5, "openMs": 100}}}
    assert "breakers" in declines(prepared(plan, models, wl, breakers))
    overload = {"throttle": {"k": 2.0}}
    assert "overload" in declines(prepared(plan, models, wl, overload))
    hedged = plan.to_dict()
    hedged["steps"][0]["hedge"] = {"delayMs": 100}
    assert "hedges" in declines(prepared(ok.Plan.model_validate(hedged), models, wl))
    hangs = {"agents": {"a": {"latency": {"dist": "constant", "value": 5}, "hang": 0.1}}}
    bare = ok.Plan.model_validate(
        {"id": "p", "steps": [{"id": "s", "agentId": "a", "action": "x"}]}
    )
    assert "hang for ever" in declines(prepared(bare, hangs, wl))
    # a hang the step's timeout ends is the lane's
    timed = ok.Plan.model_validate(
        {"id": "p", "steps": [{"id": "s", "agentId": "a", "action": "x", "timeout": 50}]}
    )
    assert declines(prepared(timed, hangs, wl)) is None
    scripted = ScriptedModels([ScriptedAgent("a", script={"*": [Ok(latency_ms=5)]})])
    assert "ok.AgentModels" in declines(prepared(timed, scripted, wl))


# ---------------------------------------------------------------- random studies

AGENTS = ["a", "b", "c"]


@st.composite
def plans(draw, depth: int = 0) -> dict:
    n = draw(st.integers(1, 5))
    steps = []
    for i in range(n):
        step: dict = {
            "id": f"s{i}",
            "agentId": draw(st.sampled_from(AGENTS)),
            "action": draw(st.sampled_from(["x", "y"])),
            "dependencies": sorted(
                draw(st.sets(st.sampled_from([f"s{j}" for j in range(i)]), max_size=2))
            )
            if i
            else [],
        }
        if draw(st.booleans()):
            step["timeout"] = draw(st.sampled_from([5.0, 10.0, 20.0, 35.0]))
        if draw(st.booleans()):
            step["retryPolicy"] = {
                "maxRetries": draw(st.integers(0, 3)),
                "backoffMs": draw(st.sampled_from([0.0, 5.0, 10.0])),
                "strategy": draw(st.sampled_from(["linear", "exponential", "fixed"])),
                "jitter": draw(st.sampled_from([0.0, 0.0, 0.5])),
                "retryOn": draw(st.sampled_from([["error"], ["timeout"], ["error", "timeout"]])),
            }
        steps.append(step)
    plan: dict = {"id": f"plan{depth}", "steps": steps, "parallel": draw(st.booleans())}
    if plan["parallel"] and draw(st.booleans()):
        plan["maxConcurrency"] = draw(st.integers(1, 3))
    if draw(st.booleans()):
        plan["timeout"] = draw(st.sampled_from([30.0, 60.0, 100.0]))
    plan["failFast"] = draw(st.booleans())
    if depth == 0 and draw(st.booleans()):
        plan["fallbackPlan"] = draw(plans(depth=1))
    return plan


latencies = st.one_of(
    st.sampled_from([5.0, 10.0, 20.0]).map(lambda v: {"dist": "constant", "value": v}),
    st.sampled_from([5.0, 15.0]).map(lambda m: {"dist": "exponential", "mean": m}),
    st.just({"dist": "uniform", "low": 2.0, "high": 12.0}),
)


@st.composite
def models(draw) -> dict:
    agents = {}
    for a in AGENTS:
        entry: dict = {
            "latency": draw(latencies),
            "error": draw(st.sampled_from([0.0, 0.1, 0.4])),
            "capacity": draw(st.sampled_from([1, 2, None])),
        }
        if draw(st.booleans()):
            entry["actions"] = {"y": {"latency": draw(latencies), "hang": 0.05}}
        if entry["capacity"] is None:
            del entry["capacity"]
        agents[a] = entry
    return {"agents": agents}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    plan=plans(),
    model=models(),
    rate=st.sampled_from([20.0, 80.0, 200.0]),
    closed=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_the_lane_gives_the_cores_frames_on_random_studies(plan, model, rate, closed, seed):
    wl = (
        ok.Workload(population=6, think_ms=20, horizon_ms=1_500)
        if closed
        else ok.Workload(rate_per_s=rate, horizon_ms=1_500)
    )
    p = prepared(ok.Plan.model_validate(plan), ok.AgentModels.from_dict(model), wl)
    if declines(p) is not None:  # a step can hang and nothing ends it
        return
    assert_same(*both(p, seed))
