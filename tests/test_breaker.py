"""Circuit breakers (SPEC §10.1): the state machine fact by fact on the core harness
(virtual clock), the policies format, and the same scripted scenario simulated and live."""

from __future__ import annotations

import asyncio
import json

import pytest
from core_harness import Harness, plan_of, step
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sim import _assert_agree, _plan, _step

import orchkit as ok
from orchkit.testing import Fail, Hang, Ok, ScriptedAgent, ScriptedModels


def breaker(**kw):
    return {"breakers": {"a": kw}}


def calls(h, script, *, gap=10.0, start=0.0, **step_kw):
    """Submit one single-step plan per outcome (step ids c0, c1, ...), one every ``gap`` ms
    from ``start``; returns the run ids."""
    ids = []
    for k, outcome in enumerate(script):
        sid = f"c{sum(k[0] == 'c' for k in h.script)}"
        h.script[sid] = [outcome]
        ids.append(
            h.submit(
                plan_of(f"p{sid}", [step(sid, "a", **step_kw)]), at_ms=start + k * gap, run_id=sid
            )
        )
    return ids


def transitions(h):
    return [(t, e, p["failureRate"]) for t, e, p in h.events if e.startswith("breaker:")]


def outcome_of(h, run_id):
    (att,) = h.runs[run_id].attempts
    return att.outcome


# ------------------------------------------------------------------ the state machine


def test_window_slides_opens_exactly_then_rejects_then_half_open_then_closes():
    h = Harness(
        policies=breaker(window=4, minCalls=3, failureRate=0.5, openMs=100, halfOpenCalls=2)
    )
    # ends at 5, 15, 25, 35, 45: O F O O -> 1/4; then F: the window drops the first O -> 2/4
    calls(h, [Ok(5), Fail(5), Ok(5), Ok(5), Fail(5)])
    h.run(until_ms=44)
    assert transitions(h) == [] and h.core.breaker_states() == {"a": "closed"}
    h.run(until_ms=46)
    assert transitions(h) == [(45, "breaker:opened", 0.5)]
    # open: an attempt fails at once without calling the agent
    (rejected,) = calls(h, [Ok(5)], start=50)
    h.run(until_ms=144)
    att = h.runs[rejected].attempts[0]
    assert (att.outcome, att.queued_ms, att.start_ms, att.end_ms) == ("rejected", 50, None, 50)
    assert att.error == "circuit open for agent a"
    assert h.runs[rejected].status == "failed"
    assert [r.attempt.step_id for r in h.starts].count(att.step_id) == 0
    # exactly openMs after opening: half-open (it reports the rate that opened it)
    h.run(until_ms=145)
    assert transitions(h)[-1] == (145, "breaker:half_open", 0.5)
    # two trial calls are let through, the third is rejected
    trial = calls(h, [Ok(20), Ok(20), Ok(20)], start=150, gap=1)
    h.run(until_ms=169)
    assert [outcome_of(h, r) for r in trial[2:]] == ["rejected"]
    h.run(until_ms=171)
    # both trials succeeded: closed once the second ended, with an empty window
    assert transitions(h)[-1] == (171, "breaker:closed", 0.0)
    assert [outcome_of(h, r) for r in trial] == ["succeeded", "succeeded", "rejected"]
    calls(h, [Fail(5), Fail(5)], start=200)  # 2 < minCalls calls since closing
    h.run()
    assert len(transitions(h)) == 3 and not h.violations


def test_an_attempt_waiting_for_capacity_when_the_breaker_opens_is_rejected_not_sent():
    # capacity 1: c0 fails at 10 and opens the breaker (window 1); c1 has waited since 5
    h = Harness({"a": 1}, policies=breaker(window=1, minCalls=1, failureRate=0.5, openMs=100))
    first, queued = calls(h, [Fail(10), Ok(10)], gap=5)
    h.run()
    att = h.runs[queued].attempts[0]
    assert transitions(h) == [(10, "breaker:opened", 1.0), (110, "breaker:half_open", 1.0)]
    assert (att.outcome, att.queued_ms, att.start_ms, att.end_ms) == ("rejected", 5, None, 10)
    assert [r.attempt.step_id for r in h.starts] == ["c0"]  # the failing agent got one call
    assert not h.violations


def test_failed_trials_reopen_for_another_open_period():
    h = Harness(policies=breaker(window=2, minCalls=2, failureRate=1.0, openMs=50, halfOpenCalls=1))
    calls(h, [Fail(1), Fail(1)])  # open at 11
    calls(h, [Fail(5)], start=70)  # half-open at 61: the trial fails at 75
    calls(h, [Ok(1)], start=100)  # open until 125: rejected
    calls(h, [Ok(1)], start=130)  # half-open at 125: the trial succeeds at 131
    h.run()
    assert transitions(h) == [
        (11, "breaker:opened", 1.0),
        (61, "breaker:half_open", 1.0),
        (75, "breaker:opened", 1.0),
        (125, "breaker:half_open", 1.0),
        (131, "breaker:closed", 0.0),
    ]
    assert [outcome_of(h, f"c{k}") for k in range(5)] == [
        "error",
        "error",
        "error",
        "rejected",
        "succeeded",
    ]


def test_failure_rate_below_the_threshold_keeps_it_closed_and_min_calls_counts():
    h = Harness(policies=breaker(window=10, minCalls=5, failureRate=0.6, openMs=50))
    calls(h, [Fail(1)] * 4)  # 4/4 failures, but fewer than minCalls calls
    h.run()
    assert transitions(h) == []
    calls(h, [Ok(1), Ok(1)], start=100)  # 4/5 = 0.8 >= 0.6 at the fifth call
    h.run()
    assert transitions(h)[:1] == [(101, "breaker:opened", 0.8)]


def test_slow_calls_open_it_and_their_queue_wait_does_not_count():
    pol = breaker(
        window=4, minCalls=2, failureRate=1.0, slowCallMs=50, slowCallRate=0.5, openMs=1000
    )
    # capacity 1: the second call waits 40 ms, then runs 40: not slow (running time only)
    h = Harness({"a": 1}, policies=pol)
    calls(h, [Ok(40), Ok(40)], gap=0)
    h.run()
    assert transitions(h) == []
    # one call of 2 running longer than slowCallMs (> 50, strictly): slow rate 0.5 -> open
    h = Harness(policies=pol)
    calls(h, [Ok(50), Ok(51)], gap=0)
    h.run()
    assert [(t, e) for t, e, _ in transitions(h)][:1] == [(51, "breaker:opened")]
    payload = h.named("breaker:opened")[0]
    assert payload == {"agentId": "a", "failureRate": 0.0, "slowCallRate": 0.5, "timeMs": 51}


def test_timeouts_count_as_failures_and_never_started_attempts_do_not_count():
    pol = breaker(window=2, minCalls=2, failureRate=1.0, openMs=100)
    h = Harness({"a": 1}, policies=pol)
    # c0 hangs and times out at 30 (a failure); c1 waits for the slot and times out at 20
    # while still queued (it never called the agent: not recorded)
    calls(h, [Hang()], timeout=30)
    calls(h, [Ok(1)], timeout=20)
    h.run()
    assert [outcome_of(h, "c0"), outcome_of(h, "c1")] == ["timeout", "timeout"]
    assert transitions(h) == []  # one recorded call < minCalls
    calls(h, [Hang()], start=50, timeout=30)
    h.run()
    assert transitions(h)[:1] == [(80, "breaker:opened", 1.0)]


def test_outcomes_of_attempts_admitted_before_a_transition_do_not_count():
    h = Harness(policies=breaker(window=2, minCalls=2, failureRate=1.0, openMs=50, halfOpenCalls=1))
    calls(h, [Fail(200)])  # admitted while closed, fails at 200 while half-open
    calls(h, [Fail(1), Fail(1)], start=1)  # open at 12, half-open at 62
    calls(h, [Ok(300)], start=70)  # the trial: admitted at 70, succeeds at 370
    h.run()
    # c0's late failure (at 200) did not reopen the half-open breaker
    assert [e for _, e, _ in transitions(h)] == [
        "breaker:opened",
        "breaker:half_open",
        "breaker:closed",
    ]
    assert transitions(h)[-1][0] == 370


def test_a_cancelled_trial_gives_its_permit_back():
    h = Harness(policies=breaker(window=1, minCalls=1, failureRate=1.0, openMs=10, halfOpenCalls=1))
    calls(h, [Fail(1)])  # open at 1, half-open at 11
    h.script["t"] = [Hang()]
    h.submit(plan_of("pt", [step("t", "a")], timeout=30), at_ms=20, run_id="t")  # cancelled at 50
    calls(h, [Ok(1)], start=40)  # the permit is taken: rejected
    calls(h, [Ok(1)], start=60)  # the permit came back at 50: admitted, closes at 61
    h.run()
    assert outcome_of(h, "t") == "cancelled"
    assert [outcome_of(h, "c1"), outcome_of(h, "c2")] == ["rejected", "succeeded"]
    assert transitions(h)[-1] == (61, "breaker:closed", 0.0)


@pytest.mark.parametrize(
    "retry_on, attempts, status",
    [
        (["error"], 3, "succeeded"),  # a rejection counts as an error for retryOn
        (["timeout"], 1, "failed"),
    ],
)
def test_the_retry_policy_decides_whether_a_rejection_is_retried(retry_on, attempts, status):
    h = Harness(policies=breaker(window=1, minCalls=1, failureRate=1.0, openMs=50, halfOpenCalls=1))
    calls(h, [Fail(1)])  # open at 1 until 51
    h.script["r"] = []
    h.default = Ok(5)
    rid = h.submit(
        plan_of(
            "pr",
            [
                step(
                    "r",
                    "a",
                    retry={
                        "maxRetries": 2,
                        "backoffMs": 30,
                        "strategy": "fixed",
                        "retryOn": retry_on,
                    },
                )
            ],
        ),
        at_ms=10,
    )
    h.run()
    run = h.runs[rid]
    assert run.status == status and len(run.attempts) == attempts
    if status == "succeeded":  # rejected at 10 and 40, admitted half-open at 70
        assert [(a.outcome, a.queued_ms) for a in run.attempts] == [
            ("rejected", 10),
            ("rejected", 40),
            ("succeeded", 70),
        ]
        assert h.named("step:retrying")[0]["error"] == "circuit open for agent a"


def test_each_agent_has_its_own_breaker_and_patterns_pick_the_most_specific():
    pol = {
        "breakers": {
            "a*": {"window": 1, "minCalls": 1, "failureRate": 1.0, "openMs": 50},
            "ab": {"window": 3, "minCalls": 3, "failureRate": 1.0, "openMs": 50},
        }
    }
    h = Harness(policies=pol)
    for sid, agent in (("x", "a1"), ("y", "ab"), ("z", "other")):
        h.script[sid] = [Fail(1)]
        h.submit(plan_of(f"p{sid}", [step(sid, agent)]), run_id=sid)
    h.run()
    assert [p["agentId"] for p in h.named("breaker:opened")] == ["a1"]
    assert h.core.breaker_states() == {"a1": "half_open", "ab": "closed"}


# ------------------------------------------------------------------ the policies format


def test_policies_errors_name_the_pattern_and_the_key(tmp_path):
    for bad, words in [
        ({"breaker": {}}, ["unknown section 'breaker'", "did you mean 'breakers'"]),
        (
            {"breakers": {"t-*": {"opneMs": 1}}},
            ["breakers 't-*'", "unknown key 'opneMs'", "did you mean 'openMs'"],
        ),
        ({"breakers": {"t": {"failureRate": 1.5}}}, ["breakers 't'", "'failureRate'", "1.5"]),
        ({"breakers": {"t": {"window": 5, "minCalls": 9}}}, ["minCalls (9)", "window (5)"]),
        ({"breakers": {"t": 3}}, ["breakers 't'", "must be a mapping"]),
        ({"breakers": ["t"]}, ["'breakers' must map"]),
    ]:
        with pytest.raises(ok.PlanValidationError) as err:
            ok.Policies.from_dict(bad)
        for w in words:
            assert w in str(err.value), (w, str(err.value))
    with pytest.raises(TypeError, match="policies must be"):
        ok.simulate(
            _plan([_step("s", "a")]),
            {"agents": {"a": {"latency": {"dist": "constant", "value": 1}}}},
            policies=42,
        )
    path = tmp_path / "p.yaml"
    path.write_text('breakers:\n  "tutor-*": {window: 20, minCalls: 10, openMs: 30000}\n')
    pol = ok.Policies.load(path)
    b = pol.breaker("tutor-7")
    assert (b.window, b.min_calls, b.failure_rate, b.open_ms, b.half_open_calls) == (
        20,
        10,
        0.5,
        30000,
        10,
    )
    assert pol.breaker("learning-1") is None
    (tmp_path / "p.json").write_text(json.dumps(pol.to_dict()))
    assert ok.Policies.load(tmp_path / "p.json") == pol
    with pytest.raises(ok.PlanValidationError, match="not valid"):
        (tmp_path / "bad.yaml").write_text("breakers: [")
        ok.Policies.load(tmp_path / "bad.yaml")


def test_breaker_paths_for_sweep_and_tune():
    pol = ok.Policies.from_dict({"breakers": {"tutor.v2-*": {"window": 20}}})
    changed = pol.with_values({"breakers.tutor.v2-*.openMs": 500, "breakers.tutor.v2-*.window": 4})
    b = changed.breaker("tutor.v2-1")
    assert (b.open_ms, b.window, b.min_calls) == (500, 4, 4)  # minCalls follows the window
    with pytest.raises(ok.PlanValidationError, match="patterns: tutor.v2-"):
        pol.with_values({"breakers.nope.openMs": 1})
    with pytest.raises(ok.PlanValidationError, match="'openMs' input should be greater than 0"):
        pol.with_values({"breakers.tutor.v2-*.openMs": 0})


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "window",
                "minCalls",
                "failureRate",
                "slowCallMs",
                "slowCallRate",
                "openMs",
                "halfOpenCalls",
                "typo",
            ]
        ),
        st.one_of(st.integers(-3, 30), st.floats(-1, 2), st.text(max_size=3), st.none()),
        max_size=5,
    )
)
def test_policies_parser_accepts_or_names_the_problem(spec):
    try:
        pol = ok.Policies.from_dict({"breakers": {"x-*": spec}})
    except ok.PlanValidationError as exc:
        assert "breakers 'x-*'" in str(exc)
        return
    b = pol.breaker("x-1")
    assert 1 <= b.min_calls <= b.window and 0 < b.failure_rate <= 1 and b.open_ms > 0


# ------------------------------------------------------------------ drivers


OUTAGE = {
    "breakers": {
        "T": {"window": 4, "minCalls": 2, "failureRate": 0.5, "openMs": 250, "halfOpenCalls": 1}
    }
}


def _outage_plan():
    return _plan(
        [
            _step("s", "T", retryPolicy={"maxRetries": 7, "backoffMs": 100, "strategy": "fixed"}),
            _step("after", "U", deps=["s"]),
        ]
    )


def _outage_agents():
    return [
        ScriptedAgent("T", {"s": [Fail(40), Fail(40), Fail(40)]}, default=Ok(40)),
        ScriptedAgent("U", default=Ok(10)),
    ]


async def test_sim_and_live_agree_on_breaker_transitions_and_rejections():
    """a1 0-40 err; a2 140-180 err: open at 180 until 430; a3 at 280, a4 at 380 rejected;
    a5 at 480 half-open trial, err at 520: open until 770; a6, a7 rejected; a8 at 820 ok,
    closed at 860; then 'after'."""
    plan = _outage_plan()
    sim_events, live_events = [], []
    bus = ok.EventBus()
    bus.on("*", lambda e, p: sim_events.append((e, p)))
    sim = ok.simulate(plan, ScriptedModels(_outage_agents()), bus=bus, policies=OUTAGE)
    orch = ok.Orchestrator(policies=OUTAGE)
    orch.on("*", lambda e, p: live_events.append((e, p)))
    for agent in _outage_agents():
        await orch.register_agent(agent)
    live = await asyncio.wait_for(orch.orchestrate(plan), 10)
    assert orch.breaker_states() == {"T": "closed"}
    await orch.shutdown()
    keep = lambda evs: [(e, p) for e, p in evs if e not in ("agent:registered", "listener:error")]  # noqa: E731
    sim_events, live_events = keep(sim_events), keep(live_events)
    assert sim.success and sim.duration_ms == 870
    sp = sim.spans[sim.spans.step_id == "s"]
    assert sp["outcome"].tolist() == [
        "error",
        "error",
        "rejected",
        "rejected",
        "error",
        "rejected",
        "rejected",
        "succeeded",
    ]
    assert sp["queued_ms"].tolist() == [0, 140, 280, 380, 480, 620, 720, 820]
    assert [(e, p["timeMs"]) for e, p in sim_events if e.startswith("breaker:")] == [
        ("breaker:opened", 180),
        ("breaker:half_open", 430),
        ("breaker:opened", 520),
        ("breaker:half_open", 770),
        ("breaker:closed", 860),
    ]
    _assert_agree(sim, sim_events, live, live_events)
    assert [e for e, _ in live_events if e.startswith("breaker:")] == [
        e for e, _ in sim_events if e.startswith("breaker:")
    ]


async def test_one_breaker_serves_every_run_of_an_orchestrator():
    pol = {"breakers": {"T": {"window": 1, "minCalls": 1, "failureRate": 1.0, "openMs": 60000}}}
    orch = ok.Orchestrator(policies=pol)
    agent = ScriptedAgent("T", {"*": [Fail(1)]}, default=Ok(1))
    await orch.register_agent(agent)
    plan = _plan([_step("s", "T")])
    first = await orch.orchestrate(plan)
    second = await orch.orchestrate(plan)  # the breaker opened by the first run rejects it
    await orch.shutdown()
    assert first.spans["outcome"].tolist() == ["error"]
    assert second.spans["outcome"].tolist() == ["rejected"]
    assert second.errors["s"] == "circuit open for agent T"
    assert len(agent.calls) == 1  # the agent was not called for the rejected attempt


def test_studies_share_a_breaker_over_a_workload_and_reset_it_between_independent_runs():
    models = {"agents": {"T": {"latency": {"dist": "constant", "value": 10}, "error": 1.0}}}
    plan = _plan([_step("s", "T")])
    pol = {"breakers": {"T": {"window": 2, "minCalls": 2, "failureRate": 1.0, "openMs": 1000}}}
    wl = ok.monte_carlo(
        plan,
        models,
        seed=1,
        policies=pol,
        progress=False,
        workload=ok.Workload(interval_ms=100, horizon_ms=1000),
    )
    # runs at 0 and 100 fail (called); the breaker opens at 110; runs 200..900 are rejected
    assert wl.spans["outcome"].tolist() == ["error", "error"] + ["rejected"] * 8
    assert wl.breakers["event"].tolist() == ["breaker:opened", "breaker:half_open"]
    assert wl.breakers["t_ms"].tolist() == [110, 1110]
    ind = ok.monte_carlo(plan, models, runs=300, seed=1, policies=pol, progress=False)
    assert (ind.spans["outcome"] == "error").all()  # one call per run: never opens
    assert ind.method == "simpy" and "circuit breakers" in ind.method_reason
    with pytest.raises(ok.PlanValidationError, match="circuit breakers"):
        ok.monte_carlo(plan, models, runs=10, policies=pol, method="fast", progress=False)
    # a sweep over a breaker path: with minCalls 1 the breaker opens after the first error,
    # so 9 of the 10 runs are rejected at once (0 ms); with 2, after two (10 ms each)
    work = ok.Workload(interval_ms=100, horizon_ms=1000)
    df = ok.sweep(
        plan,
        models,
        {"breakers.T.minCalls": [1, 2]},
        runs=50,
        policies=pol,
        progress=False,
        workload=work,
    )
    assert df["makespan_mean_ms"].tolist() == [1.0, 2.0]
    # and tuning one: the smallest minCalls gives the shortest runs
    res = ok.tune(
        plan,
        models,
        {"breakers.T.minCalls": ok.Int(1, 2)},
        minimize="makespan_mean_ms",
        trials=4,
        policies=pol,
        workload=work,
        progress=False,
    )
    best = res.trials.sort_values("makespan_mean_ms").iloc[0]
    assert (best["breakers.T.minCalls"], best["makespan_mean_ms"]) == (1, 1.0)


def test_cli_simulate_takes_a_policies_file(tmp_path, capsys):
    from orchkit.cli import main

    (tmp_path / "plan.json").write_text(json.dumps(_plan([_step("s", "T")]).to_dict()))
    (tmp_path / "m.yaml").write_text(
        "agents:\n  T: {latency: {dist: constant, value: 10}, error: 1.0}\n"
    )
    (tmp_path / "pol.yaml").write_text(
        "breakers:\n  T: {window: 2, minCalls: 2, failureRate: 1.0, openMs: 1000}\n"
    )
    args = [
        str(tmp_path / "plan.json"),
        "--models",
        str(tmp_path / "m.yaml"),
        "--workload",
        "interval=100,horizon=1000",
        "--policies",
        str(tmp_path / "pol.yaml"),
        "--json",
    ]
    assert main(["simulate", *args]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["breaker_events"] == {"breaker:opened": 1, "breaker:half_open": 1}
    (tmp_path / "pol.yaml").write_text("breakers:\n  T: {windw: 2}\n")
    assert main(["simulate", *args]) != 0
    assert "unknown key 'windw'" in capsys.readouterr().err
