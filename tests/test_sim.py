"""The simulated runtime: it agrees with the live one, it is deterministic, it emits the
live events with simulated times, it validates its input, and capacity studies share
the agents' capacity on one clock."""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import warnings

import numpy as np
import pandas as pd
import pytest

import orchkit as ok
from orchkit.testing import Fail, Hang, Ok, ScriptedAgent, ScriptedModels


def _plan(steps, **kw):
    return ok.Plan.model_validate({"id": kw.pop("id", "p"), "steps": steps, **kw})


def _models(agents):
    return ok.AgentModels.from_dict({"agents": agents})


def _step(sid, agent, action=None, deps=(), **kw):
    return {"id": sid, "agentId": agent, "action": action or sid, "dependencies": list(deps), **kw}


# ------------------------------------------------------------------ sim and live agree

JITTER_MS = 15.0  # allowed live-vs-simulated difference per attempt along the chain
IGNORED = {"agent:registered", "listener:error"}
LIVE_LIMIT_S = 10.0  # a live run that never finishes fails the test instead of hanging it


async def _run_both(plan, make_agents):
    """Run ``plan`` simulated (ScriptedModels) and live (Orchestrator), each with fresh
    ScriptedAgents from ``make_agents()``; returns (sim, sim_events, live, live_events)."""
    sim_events: list = []
    bus = ok.EventBus()
    bus.on("*", lambda event, payload: sim_events.append((event, payload)))
    sim = ok.simulate(plan, ScriptedModels(make_agents()), bus=bus)
    orch = ok.Orchestrator()
    live_events: list = []
    orch.on("*", lambda event, payload: live_events.append((event, payload)))
    for agent in make_agents():
        await orch.register_agent(agent)
    live = await asyncio.wait_for(orch.orchestrate(plan), LIVE_LIMIT_S)
    await orch.shutdown()
    keep = lambda evs: [(e, p) for e, p in evs if e not in IGNORED]  # noqa: E731
    return sim, keep(sim_events), live, keep(live_events)


def _key(event, payload):
    return (
        event,
        payload.get("planId"),
        payload.get("stepId"),
        payload.get("attempt"),
        payload.get("status"),
    )


def _assert_agree(sim, sim_events, live, live_events):
    # outcomes
    assert live.status == sim.status
    assert live.step_states == sim.step_states
    assert live.fallback_chain == sim.fallback_chain
    assert set(live.results) == set(sim.results)
    assert set(live.errors) == set(sim.errors)
    # the same events in the same order
    assert [_key(*e) for e in live_events] == [_key(*e) for e in sim_events]
    # times within scheduler jitter, accumulated along the run
    started = 0
    for (event, sp), (_, lp) in zip(sim_events, live_events):
        started += event == "step:started"
        tol = JITTER_MS * (started + 1)
        assert abs(lp["timeMs"] - sp["timeMs"]) <= tol, (event, sp, lp)
        assert lp["timeMs"] >= sp["timeMs"] - 2.0, (event, sp, lp)  # live is never early
    # the same attempts, outcomes and (within jitter) times
    cols = ["plan_id", "step_id", "attempt", "outcome"]
    s, l_ = sim.spans, live.spans
    pd.testing.assert_frame_equal(l_[cols], s[cols])
    tol = JITTER_MS * (np.arange(len(s)) + 1)
    for c in ("queued_ms", "start_ms", "end_ms"):
        a, b = l_[c].to_numpy(), s[c].to_numpy()
        assert (np.isnan(a) == np.isnan(b)).all(), c
        ok_ = np.isnan(b) | (np.abs(a - b) <= tol)
        assert ok_.all(), (c, a, b)
    assert abs(live.duration_ms - sim.duration_ms) <= JITTER_MS * (len(s) + 1)


async def test_sim_and_live_agree_on_retries_backoff_and_non_retryable_errors():
    plan = _plan(
        [
            _step("a", "A", retryPolicy={"maxRetries": 2, "backoffMs": 30}),
            _step("b", "B"),
            _step("c", "B", deps=["a", "b"]),
            _step("d", "C", retryPolicy={"maxRetries": 3, "backoffMs": 10}),
            _step("e", "C", deps=["d"]),
            _step("f", "C", deps=["e", "b"]),
        ],
        parallel=True,
    )

    def agents():
        return [
            ScriptedAgent("A", {"a": [Fail(30), Fail(20), Ok(40)]}),
            ScriptedAgent("B", {"b": [Ok(100)], "c": [Ok(20)]}),
            ScriptedAgent("C", {"d": [Fail(10, retryable=False)], "e": [Ok(5)]}),
        ]

    sim, se, live, le = await _run_both(plan, agents)
    # simulated: a 0-30 err, wait 30, 60-80 err, wait 60, 140-180 ok; b 0-100; c 180-200;
    # d fails for good at 10 (non-retryable), e and (transitively) f skipped
    assert sim.status == "failed"
    assert sim.duration_ms == 200.0
    assert sim.step_states == {
        "a": "succeeded",
        "b": "succeeded",
        "c": "succeeded",
        "d": "failed",
        "e": "skipped",
        "f": "skipped",
    }
    assert sim.spans["step_id"].tolist().count("d") == 1
    _assert_agree(sim, se, live, le)
    assert [e for e, _ in se].count("step:retrying") == 2


async def test_sim_and_live_agree_on_a_step_timeout_on_a_hang():
    plan = _plan(
        [
            _step("h", "H", timeout=50, retryPolicy={"maxRetries": 1, "backoffMs": 20}),
            _step("after", "H", deps=["h"]),
        ]
    )

    def agents():
        return [ScriptedAgent("H", {"h": [Hang(), Ok(30)], "after": [Ok(10)]})]

    sim, se, live, le = await _run_both(plan, agents)
    assert sim.success
    assert sim.spans["outcome"].tolist() == ["timeout", "succeeded", "succeeded"]
    assert sim.duration_ms == 50 + 20 + 30 + 10
    _assert_agree(sim, se, live, le)


async def test_sim_and_live_agree_on_capacity_queueing():
    """Capacity 1: parallel steps on one agent wait FIFO; the wait counts toward a step's
    timeout: q3's passes while it waits (it never starts), q2's while it runs."""
    plan = _plan(
        [
            _step("q1", "Q"),
            _step("q2", "Q", timeout=80),
            _step("q3", "Q", timeout=60),
            _step("other", "R"),
        ],
        parallel=True,
    )

    def agents():
        return [
            ScriptedAgent("Q", {"q1": [Ok(40)], "q2": [Ok(50)], "q3": [Ok(10)]}, capacity=1),
            ScriptedAgent("R", {"other": [Ok(20)]}),
        ]

    sim, se, live, le = await _run_both(plan, agents)
    sp = sim.spans.set_index("step_id")
    assert sp.loc["q2", ["queued_ms", "start_ms", "end_ms", "outcome"]].tolist() == [
        0.0,
        40.0,
        80.0,
        "timeout",
    ]
    assert "(running)" in sp.loc["q2", "error"]
    assert sp.loc["q3", "outcome"] == "timeout" and math.isnan(sp.loc["q3", "start_ms"])
    assert sp.loc["q3", "end_ms"] == 60.0
    assert "waiting for agent capacity" in sp.loc["q3", "error"]
    _assert_agree(sim, se, live, le)


async def test_sim_and_live_agree_on_a_plan_deadline():
    plan = _plan(
        [_step("quick", "A"), _step("long", "A"), _step("later", "A", deps=["quick"])],
        parallel=True,
        timeout=100,
    )

    def agents():
        return [ScriptedAgent("A", {"quick": [Ok(30)], "long": [Ok(300)], "later": [Hang()]})]

    sim, se, live, le = await _run_both(plan, agents)
    assert sim.status == "timed_out" and sim.duration_ms == 100.0
    assert sim.step_states == {"quick": "succeeded", "long": "cancelled", "later": "cancelled"}
    assert "timed out" in sim.errors["long"]
    _assert_agree(sim, se, live, le)
    with pytest.raises(ok.PlanTimeoutError, match="Orchestration plan p timed out"):
        live.raise_for_status()


async def test_sim_and_live_agree_on_a_fallback_plan():
    fallback = {"id": "fb", "steps": [_step("x", "B"), _step("y", "B", deps=["x"])]}
    plan = _plan(
        [_step("m1", "A"), _step("m2", "A", deps=["m1"])], id="main", fallbackPlan=fallback
    )

    def agents():
        return [
            ScriptedAgent("A", {"m1": [Fail(20)]}),
            ScriptedAgent("B", {"x": [Ok(30)], "y": [Ok(40)]}),
        ]

    sim, se, live, le = await _run_both(plan, agents)
    assert sim.success and sim.plan_id == "fb"
    assert sim.fallback_chain == [
        {"plan_id": "main", "status": "failed"},
        {"plan_id": "fb", "status": "succeeded"},
    ]
    assert sim.duration_ms == 90.0
    assert ("plan:fallback", "main") in [(e, p["planId"]) for e, p in se]
    _assert_agree(sim, se, live, le)


def _sim_events(plan, agents):
    events: list = []
    bus = ok.EventBus()
    bus.on("*", lambda e, p: events.append((e, p)))
    return ok.simulate(plan, ScriptedModels(agents), bus=bus), events


def test_a_hang_without_any_timeout_ends_the_run_as_failed():
    plan = _plan([_step("ok", "A"), _step("stuck", "A", deps=["ok"])])
    res, events = _sim_events(plan, [ScriptedAgent("A", {"ok": [Ok(25)], "stuck": [Hang()]})])
    assert res.status == "failed" and res.duration_ms == 25.0
    assert "never finished" in res.errors["stuck"]
    assert res.spans["outcome"].tolist() == ["succeeded", "cancelled"]
    assert events[-1][0] == "plan:completed" and events[-1][1]["status"] == "failed"


@pytest.mark.parametrize("ending", ["deadline", "failFast"])
def test_attempts_still_waiting_when_the_plan_ends_never_start(ending):
    if ending == "deadline":
        kw, first, status = {"timeout": 100}, Ok(300), "timed_out"
    else:
        kw, first, status = {"failFast": True}, Fail(50), "failed"
    plan = _plan([_step("q1", "Q"), _step("q2", "Q"), _step("q3", "Q")], parallel=True, **kw)
    res, events = _sim_events(plan, [ScriptedAgent("Q", {"q1": [first]}, capacity=1)])
    assert res.status == status
    assert [p["stepId"] for e, p in events if e == "step:started"] == ["q1"]
    sp = res.spans.set_index("step_id")
    assert sp.loc[["q2", "q3"], "outcome"].eq("cancelled").all()
    assert sp.loc[["q2", "q3"], "start_ms"].isna().all()


# ------------------------------------------------------------------ determinism

_DET_MODELS = {
    "agents": {
        "fast-*": {
            "latency": {"dist": "lognormal", "median": 50, "p95": 200},
            "error": 0.15,
            "hang": 0.02,
        },
        "slow": {
            "latency": {"dist": "gamma", "mean": 120, "cv": 0.8},
            "error": 0.1,
            "actions": {"last": {"latency": {"dist": "uniform", "low": 10, "high": 40}}},
        },
    }
}
_DET_PLAN = {
    "id": "det",
    "parallel": True,
    "timeout": 900,
    "steps": [
        _step(
            "a",
            "fast-1",
            timeout=300,
            retryPolicy={"maxRetries": 2, "backoffMs": 20, "jitter": 0.5},
        ),
        _step(
            "b",
            "fast-2",
            timeout=250,
            retryPolicy={
                "maxRetries": 1,
                "backoffMs": 10,
                "strategy": "exponential",
                "jitter": 1.0,
            },
        ),
        _step("c", "slow", deps=["a", "b"], retryPolicy={"maxRetries": 1, "backoffMs": 5}),
        _step("d", "slow", "last", deps=["c"]),
    ],
    "fallbackPlan": {"id": "det-fb", "steps": [_step("f", "slow", "last")]},
}


def _mc(**kw):
    kw = {"runs": 1000, "seed": 11, "progress": False, "method": "simpy", **kw}
    return ok.monte_carlo(_DET_PLAN, _DET_MODELS, **kw)


@pytest.fixture(scope="module")
def reference():
    return _mc()


def _assert_same(a, b):
    pd.testing.assert_frame_equal(a.runs, b.runs)
    pd.testing.assert_frame_equal(a.spans, b.spans)
    assert a.busy_ms == pytest.approx(b.busy_ms, rel=1e-12)


def test_reference_study_exercises_every_rule(reference):
    """The determinism tests below mean something: the study draws latencies, errors,
    hangs, jitter, timeouts, deadlines and fallbacks."""
    runs, spans = reference.runs, reference.spans
    assert len(runs) == 1000 and runs["run_id"].tolist() == list(range(1000))
    assert set(runs["status"]) == {"succeeded", "failed"}  # the fallback's outcome
    assert set(spans["outcome"]) >= {"succeeded", "error", "timeout"}
    assert runs["fallback_used"].any() and runs["retries"].gt(0).any()
    assert len(set(np.round(runs["makespan_ms"], 6))) > 900


def test_same_seed_identical_frames(reference):
    _assert_same(reference, _mc())


@pytest.mark.parametrize("chunk_runs", [64, 100, 333])
def test_chunking_does_not_change_results(reference, chunk_runs):
    _assert_same(reference, _mc(chunk_runs=chunk_runs))


def test_process_pool_gives_identical_results(reference):
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        _assert_same(reference, _mc(executor=pool, chunk_runs=128))


def test_processes_shorthand_gives_identical_results(reference):
    _assert_same(reference, _mc(executor="processes", chunk_runs=128))


def test_dask_executor_gives_identical_results(reference):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, dashboard_address=None, threads_per_worker=1
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        _assert_same(reference, _mc(executor=client.get_executor(), chunk_runs=256))


def test_keep_spans_k_keeps_the_first_k_runs(reference):
    part = _mc(keep_spans=37)
    pd.testing.assert_frame_equal(part.runs, reference.runs)
    expected = reference.spans[reference.spans["run_id"] < 37].reset_index(drop=True)
    # the same rows; id columns are categoricals of the values present, so fewer categories
    pd.testing.assert_frame_equal(
        part.spans.reset_index(drop=True), expected, check_categorical=False
    )
    assert sorted(part.spans["run_id"].unique()) == list(range(37))
    none = _mc(keep_spans=False)
    pd.testing.assert_frame_equal(none.runs, reference.runs)
    assert none.spans.empty and list(none.spans.columns) == ok.SPAN_COLUMNS
    assert none.summary()["makespan_mean_ms"] == reference.summary()["makespan_mean_ms"]


def test_different_seeds_give_different_results(reference):
    other = _mc(seed=12)
    assert not np.allclose(other.runs["makespan_ms"], reference.runs["makespan_ms"])
    # ... but the same distribution (both are 1000 draws of one plan): means within 5 SE
    a, b = reference.runs["makespan_ms"], other.runs["makespan_ms"]
    assert abs(a.mean() - b.mean()) <= 5 * math.sqrt((a.var() + b.var()) / 1000)


def test_simulate_is_deterministic():
    one = ok.simulate(_DET_PLAN, _DET_MODELS, seed=5)
    pd.testing.assert_frame_equal(one.spans, ok.simulate(_DET_PLAN, _DET_MODELS, seed=5).spans)
    durations = {ok.simulate(_DET_PLAN, _DET_MODELS, seed=s).duration_ms for s in range(8)}
    assert len(durations) > 4


def test_capacity_study_is_deterministic():
    models = _models(
        {"srv": {"capacity": 2, "latency": {"dist": "exponential", "mean": 40}, "error": 0.1}}
    )
    plan = _plan([_step("s", "srv", retryPolicy={"maxRetries": 1, "backoffMs": 5, "jitter": 1})])
    w = ok.Workload(rate_per_s=40, horizon_ms=20_000)
    a = ok.monte_carlo(plan, models, seed=3, workload=w, progress=False)
    b = ok.monte_carlo(plan, models, seed=3, workload=w, progress=False)
    _assert_same(a, b)
    c = ok.monte_carlo(plan, models, seed=4, workload=w, progress=False)
    assert len(c.runs) != len(a.runs) or not a.runs["end_ms"].equals(c.runs["end_ms"])


# ------------------------------------------------------------------ events in simulated time

PLAN_EVENTS = {
    "plan:started",
    "plan:completed",
    "plan:fallback",
    "step:started",
    "step:completed",
    "step:failed",
    "step:retrying",
    "step:skipped",
    "queue:completed",
    "queue:failed",
}


def test_simulate_emits_every_event_with_the_spans_times():
    plan = _plan(
        [
            _step("a", "cap1", timeout=100, retryPolicy={"maxRetries": 1, "backoffMs": 15}),
            _step("b", "cap1"),
            _step("c", "other", deps=["a"], retryPolicy={"maxRetries": 2, "backoffMs": 7}),
            _step("d", "other", deps=["c"]),
        ],
        id="main",
        parallel=True,
        fallbackPlan={"id": "fb", "steps": [_step("a", "other", "fine")]},
    )
    agents = [
        ScriptedAgent("cap1", {"a": [Fail(20), Ok(30)], "b": [Ok(70)]}, capacity=1),
        ScriptedAgent("other", {"c": [Fail(5)], "fine": [Ok(12)]}, default=Fail(5)),
    ]
    events: list = []
    bus = ok.EventBus()
    bus.on("*", lambda e, p: events.append((e, p)))
    res = ok.simulate(plan, ScriptedModels(agents), bus=bus)
    names = {e for e, _ in events}
    assert PLAN_EVENTS <= names, PLAN_EVENTS - names
    assert "agent:error" in names
    assert all(isinstance(p["timeMs"], float) for _, p in events)

    sp = res.spans
    span = {(r.plan_id, r.step_id, r.attempt): r for r in sp.itertuples()}

    def att(p):  # jobId = run:plan:step:attempt
        return int(p["jobId"].rsplit(":", 1)[1])

    checked = 0
    for e, p in events:
        if e in (
            "step:started",
            "step:completed",
            "queue:completed",
            "queue:failed",
            "step:retrying",
            "step:failed",
            "agent:error",
        ):
            r = span[(p["planId"], p["stepId"], att(p))]
            want = r.start_ms if e == "step:started" else r.end_ms
            assert p["timeMs"] == want, (e, p, r)
            if e == "step:started":
                assert p["queuedMs"] == r.queued_ms and p["attempt"] == r.attempt
            if e == "step:retrying":
                nxt = span[(p["planId"], p["stepId"], p["attempt"])]
                assert nxt.queued_ms == r.end_ms + p["delayMs"]
            checked += 1
    assert checked >= 3 * len(sp)
    # the capacity queue: b waits for a's first attempt at cap1
    b = span[("main", "b", 1)]
    assert (b.queued_ms, b.start_ms) == (0.0, 20.0)
    # the slot a's failure freed goes to b only after the failure's own events
    order = [(e, p.get("stepId")) for e, p in events]
    assert order.index(("step:retrying", "a")) < order.index(("step:started", "b"))
    # plan events: the chain ends at the run's duration
    plan_events = [(e, p["planId"], p["timeMs"]) for e, p in events if e.startswith("plan:")]
    main_end = sp.loc[sp["plan_id"] == "main", "end_ms"].max()
    assert plan_events == [
        ("plan:started", "main", 0.0),
        ("plan:completed", "main", main_end),
        ("plan:fallback", "main", main_end),
        ("plan:started", "fb", main_end),
        ("plan:completed", "fb", res.duration_ms),
    ]
    skipped = [p for e, p in events if e == "step:skipped"]
    assert [(p["stepId"], p["dependencyId"]) for p in skipped] == [("d", "c")]
    failed_c = next(p for e, p in events if e == "step:failed" and p["stepId"] == "c")
    assert skipped[0]["timeMs"] == failed_c["timeMs"]


# ------------------------------------------------------------------ validation


def test_simulate_rejects_an_agent_no_model_matches():
    models = _models(
        {
            "learning-*": {"latency": {"dist": "constant", "value": 1}},
            "tutor-agent-1": {"latency": {"dist": "constant", "value": 1}},
        }
    )
    plan = _plan([_step("s", "learning-1"), _step("t", "speech-agent-9", deps=["s"])])
    for call in (
        lambda: ok.simulate(plan, models),
        lambda: ok.monte_carlo(plan, models, runs=10, progress=False),
    ):
        with pytest.raises(ok.PlanValidationError) as info:
            call()
        msg = str(info.value)
        assert "speech-agent-9" in msg and "'t'" in msg
        assert "learning-*" in msg and "tutor-agent-1" in msg
    # the fallback plan is checked too, before anything runs
    fb = _plan(
        [_step("s", "learning-1")], fallbackPlan={"id": "fb", "steps": [_step("x", "nobody")]}
    )
    with pytest.raises(ok.PlanValidationError, match="nobody"):
        ok.simulate(fb, models)


def test_scripted_models_reject_an_unknown_agent():
    with pytest.raises(ok.PlanValidationError, match="'ghost'"):
        ok.simulate(_plan([_step("s", "ghost")]), ScriptedModels([ScriptedAgent("A")]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of"),
        ({"rate_per_s": 5, "interval_ms": 10, "horizon_ms": 100}, "exactly one of"),
        ({"rate_per_s": 0, "horizon_ms": 100}, "rate_per_s must be > 0"),
        ({"rate_per_s": -1, "horizon_ms": 100}, "rate_per_s must be > 0"),
        ({"interval_ms": 0, "horizon_ms": 100}, "interval_ms must be > 0"),
        ({"rate_per_s": 5}, "horizon_ms"),
        ({"interval_ms": 5, "horizon_ms": -1}, "horizon_ms"),
        ({"arrivals_ms": [5, 1]}, "sorted"),
        ({"arrivals_ms": [-1, 1]}, ">= 0"),
    ],
)
def test_bad_workloads_are_rejected(kwargs, match):
    with pytest.raises(ok.PlanValidationError, match=match):
        ok.Workload(**kwargs)


def test_bad_study_arguments_are_rejected():
    models = _models({"srv": {"capacity": 1, "latency": {"dist": "constant", "value": 1}}})
    plan = _plan([_step("s", "srv"), _step("t", "srv")], parallel=True)  # 2 at once > 1 slot
    with pytest.raises(ok.PlanValidationError, match="runs"):
        ok.monte_carlo(plan, models, runs=0, progress=False)
    with pytest.raises(ok.PlanValidationError, match="capacity of agents srv"):
        ok.monte_carlo(plan, models, runs=10, method="fast", progress=False)
    with pytest.raises(ValueError, match="method"):
        ok.monte_carlo(plan, models, runs=10, method="quick", progress=False)
    assert ok.monte_carlo(plan, models, runs=10, progress=False).method == "simpy"
    # a capacity a lone run cannot fill never makes an attempt wait: the fast path applies
    for lone in (_plan([_step("s", "srv")]), _plan([_step("s", "srv"), _step("t", "srv")])):
        assert ok.monte_carlo(lone, models, runs=10, progress=False).method == "fast"


# ------------------------------------------------------------------ capacity studies


def test_capacity_study_queues_fifo_on_the_study_clock():
    """Explicit arrivals into an agent of capacity 1 (30 ms per attempt): every time is on
    the study's clock, queue waits show in the spans, FIFO across runs."""
    models = _models(
        {
            "srv": {"capacity": 1, "latency": {"dist": "constant", "value": 30}},
            "free": {"latency": {"dist": "constant", "value": 5}},
        }
    )
    plan = _plan([_step("s", "srv"), _step("t", "free", deps=["s"])])
    mc = ok.monte_carlo(
        plan, models, seed=0, progress=False, workload=ok.Workload(arrivals_ms=[0, 0, 10, 100])
    )
    runs = mc.runs
    assert runs["arrival_ms"].tolist() == [0.0, 0.0, 10.0, 100.0]
    assert runs["start_ms"].tolist() == runs["arrival_ms"].tolist()
    assert runs["end_ms"].tolist() == [35.0, 65.0, 95.0, 135.0]
    assert runs["makespan_ms"].tolist() == [35.0, 65.0, 85.0, 35.0]
    s = mc.spans[mc.spans["step_id"] == "s"].sort_values("run_id")
    assert s["queued_ms"].tolist() == [0.0, 0.0, 10.0, 100.0]
    assert s["start_ms"].tolist() == [0.0, 30.0, 60.0, 100.0]
    util = mc.utilisation(bin_ms=10)
    srv = util[util["agent_id"] == "srv"].set_index("t_ms")["in_flight"]
    assert srv.loc[0:80].eq(1.0).all() and srv.loc[90] == 0.0 and srv.loc[100] == 1.0


def test_capacity_study_under_overload():
    """Load 1.5x capacity: waits grow, the agent is busy nearly all the time, utilisation
    over time never exceeds 1 and integrates to the agent's busy time."""
    models = _models(
        {
            "srv": {"capacity": 2, "latency": {"dist": "exponential", "mean": 50}},
            "free": {"latency": {"dist": "exponential", "mean": 20}},
        }
    )
    plan = _plan([_step("s", "srv"), _step("t", "free", deps=["s"])], parallel=True)
    mc = ok.monte_carlo(
        plan, models, seed=2, progress=False, workload=ok.Workload(rate_per_s=60, horizon_ms=30_000)
    )
    runs, spans = mc.runs, mc.spans
    assert abs(len(runs) - 1800) <= 5 * math.sqrt(1800)
    assert runs["arrival_ms"].is_monotonic_increasing
    assert (runs["arrival_ms"] < 30_000).all()
    assert np.allclose(runs["makespan_ms"], runs["end_ms"] - runs["arrival_ms"])
    merged = spans.merge(
        runs[["run_id", "arrival_ms", "end_ms"]], on="run_id", suffixes=("", "_run")
    )
    assert (merged["queued_ms"] >= merged["arrival_ms"]).all()
    assert (merged["end_ms"] <= merged["end_ms_run"]).all()
    srv_spans = spans[spans["agent_id"] == "srv"]
    wait = (srv_spans["start_ms"] - srv_spans["queued_ms"]).to_numpy()
    assert (wait > 0).mean() > 0.9
    # fluid limit: work arrives at 60/s * 50 ms = 3 ms per ms and is served at 2 ms per ms,
    # so an attempt queued at t waits about (3 - 2) t / 2 = 0.5 t
    slope = np.polyfit(srv_spans["queued_ms"].to_numpy(), wait, 1)[0]
    assert slope == pytest.approx(0.5, rel=0.1)
    assert (
        spans.loc[spans["agent_id"] == "free", "start_ms"]
        == spans.loc[spans["agent_id"] == "free", "queued_ms"]
    ).all()

    agents = mc.summary().agents.set_index("agent_id")
    assert agents.loc["srv", "utilisation"] > 0.97
    assert math.isnan(agents.loc["free", "utilisation"])  # unlimited capacity
    for bin_ms in (250.0, 1000.0):
        util = mc.utilisation(bin_ms=bin_ms)
        for agent_id, g in util.groupby("agent_id"):
            busy = (
                spans.loc[spans["agent_id"] == agent_id, "end_ms"]
                - spans.loc[spans["agent_id"] == agent_id, "start_ms"]
            ).sum()
            assert g["in_flight"].sum() * bin_ms == pytest.approx(busy, rel=1e-9)
            assert mc.busy_ms[agent_id] == pytest.approx(busy, rel=1e-9)
        srv = util[util["agent_id"] == "srv"]
        assert (srv["in_flight"] <= 2 + 1e-9).all()
        assert srv["utilisation"].to_numpy() == pytest.approx(srv["in_flight"].to_numpy() / 2)


def test_capacity_study_interval_workload_and_span_sample():
    models = _models({"srv": {"capacity": 1, "latency": {"dist": "constant", "value": 4}}})
    plan = _plan([_step("s", "srv")])
    w = ok.Workload(interval_ms=10, horizon_ms=1000)
    full = ok.monte_carlo(plan, models, workload=w, progress=False)
    assert full.runs["arrival_ms"].tolist() == [10.0 * i for i in range(100)]
    assert (full.runs["makespan_ms"] == 4.0).all()
    part = ok.monte_carlo(plan, models, workload=w, progress=False, keep_spans=10)
    pd.testing.assert_frame_equal(part.runs, full.runs)
    assert part.spans["run_id"].tolist() == list(range(10))
    assert full.summary().agents.set_index("agent_id").loc["srv", "utilisation"] == pytest.approx(
        400.0 / 994.0
    )


def test_a_step_that_can_hang_forever_is_warned_about_naming_plan_step_and_fix():
    models = ok.AgentModels.from_dict(
        {"agents": {"x": {"latency": {"dist": "constant", "value": 5}, "hang": 0.5}}}
    )
    bare = _plan([_step("a", "x"), _step("b", "x", timeout=50)])
    with pytest.warns(ok.HangWarning, match=r"plan 'p' step 'a': .*can hang.*Add a step 'timeout'"):
        result = ok.simulate(bare, models, seed=3)
    assert result.status in ("succeeded", "failed")
    with pytest.warns(ok.HangWarning):
        ok.monte_carlo(bare, models, runs=10, seed=3, progress=False)
    bounded = _plan([_step("a", "x", timeout=50)])  # a step timeout ends every hang
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok.simulate(bounded, models, seed=3)
        ok.simulate(_plan([_step("a", "x")], timeout=500), models, seed=3)  # so does a deadline


@pytest.mark.parametrize("kw", [{"method": "fast"}])  # executor= runs replications (§20)
def test_capacity_study_rejects_options_that_apply_to_independent_runs_only(kw):
    models = _models({"x": {"latency": {"dist": "constant", "value": 5}}})
    with pytest.raises(ok.PlanValidationError, match="capacity study .* SimPy path"):
        ok.monte_carlo(
            _plan([_step("a", "x")]),
            models,
            progress=False,
            workload=ok.Workload(interval_ms=10, horizon_ms=100),
            **kw,
        )
