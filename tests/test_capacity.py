"""Capacity studies (SPEC §10.3, §11): model paths, outages, steady-state intervals,
workloads, offered load and the queue outputs."""

from __future__ import annotations

import pytest

import orchkit as ok

ONE = ok.Plan.model_validate({"id": "one", "steps": [{"id": "s", "agentId": "tutor-agent-1",
                                                      "action": "ask"}]})
MODELS = {"agents": {
    "tutor-agent-*": {"capacity": 1, "latency": {"dist": "exponential", "mean": 40}},
    "api.v1": {"latency": {"dist": "constant", "value": 5}},
}}


# ------------------------------------------------------------------ model paths


def test_model_paths_set_fields_by_exact_key_or_glob_and_validate():
    models = ok.AgentModels.from_dict(MODELS)
    tuned = models.with_values({"agents.tutor-agent-*.capacity": 4,
                                "agents.api.v1.latency.value": 7,
                                "agents.tutor-agent-*.actions.ask.error": 0.5})
    assert tuned.capacity("tutor-agent-9") == 4 and models.capacity("tutor-agent-9") == 1
    assert tuned.resolve("api.v1", "x").latency.mean_ms == 7  # a key holding a dot
    assert tuned.resolve("tutor-agent-2", "ask").error == 0.5
    assert tuned.resolve("tutor-agent-2", "other").error == 0.0
    every = models.with_values({"agents.*.capacity": 3})  # a glob over the keys
    assert every.capacity("tutor-agent-1") == every.capacity("api.v1") == 3
    with pytest.raises(ok.PlanValidationError, match="names no agent entry.*keys: tutor-agent-\\*, api.v1"):
        models.with_values({"agents.nobody.capacity": 2})
    with pytest.raises(ok.PlanValidationError, match="integer >= 1"):
        models.with_values({"agents.api.v1.capacity": 0})
    with pytest.raises(ok.PlanValidationError, match="unknown key 'capacty'.*did you mean 'capacity'"):
        models.with_values({"agents.api.v1.capacty": 2})
    with pytest.raises(ok.PlanValidationError, match="must look like 'agents.<pattern>.<key>'"):
        models.with_values({"agents.api": 2})


def test_sweep_takes_model_paths_beside_plan_paths():
    grid = {"agents.tutor-agent-*.capacity": [1, 3], "timeout": [None, 10_000]}
    df = ok.sweep(ONE, MODELS, grid, runs=50, seed=1, progress=False,
                  workload=ok.Workload(rate_per_s=20, horizon_ms=20_000))
    assert len(df) == 4 and list(df.columns[:2]) == list(grid)
    # ρ = 0.8 with one slot, 0.27 with three: waiting shrinks with capacity
    by_cap = df.groupby("agents.tutor-agent-*.capacity")["makespan_mean_ms"].mean()
    assert by_cap[1] > 1.5 * by_cap[3]
    with pytest.raises(ok.PlanValidationError, match="names no agent entry"):
        ok.sweep(ONE, MODELS, {"agents.nobody.capacity": [1]}, runs=10, progress=False)


# ------------------------------------------------------------------ outages (SPEC §10.3)

OUTAGE_MODELS = {"agents": {"tutor-agent-*": {
    "capacity": 2, "latency": {"dist": "exponential", "mean": 40},
    "actions": {"ask": {"latency": {"dist": "exponential", "mean": 30}}},
    "outages": [{"startMs": 20_000, "endMs": 30_000, "error": 1.0},
                {"startMs": 45_000, "endMs": 50_000, "error": 0.0,
                 "latency": {"dist": "constant", "value": 1}}]}}}


def test_every_attempt_started_in_an_outage_errors_and_none_outside():
    mc = ok.monte_carlo(ONE, OUTAGE_MODELS, seed=4, progress=False,
                        workload=ok.Workload(rate_per_s=20, horizon_ms=60_000))
    sp = mc.spans.dropna(subset=["start_ms"])
    down = (sp["start_ms"] >= 20_000) & (sp["start_ms"] < 30_000)
    slow = (sp["start_ms"] >= 45_000) & (sp["start_ms"] < 50_000)
    assert down.sum() > 150 and slow.sum() > 80
    assert (sp.loc[down, "outcome"] == "error").all()
    assert (sp.loc[~down, "outcome"] == "succeeded").all()
    # the second window replaces the latency of the action override too
    assert ((sp.loc[slow, "end_ms"] - sp.loc[slow, "start_ms"]) == 1).all()
    assert ((sp.loc[~slow, "end_ms"] - sp.loc[~slow, "start_ms"]) != 1).all()


def test_outages_of_lone_runs_count_from_each_runs_start_and_decline_the_fast_path():
    models = {"agents": {"tutor-agent-*": {"latency": {"dist": "constant", "value": 10},
                                           "outages": [{"startMs": 0, "endMs": 5}]}}}
    retry = ONE.with_values({"steps.s.retryPolicy": {"maxRetries": 1, "backoffMs": 0}})
    result = ok.simulate(retry, models)
    assert [s for s in result.spans["outcome"]] == ["error", "succeeded"]
    mc = ok.monte_carlo(retry, models, runs=20, progress=False)
    assert mc.method == "simpy" and (mc.runs["attempts"] == 2).all()
    with pytest.raises(ok.PlanValidationError, match="tutor-agent-1 have outages"):
        ok.monte_carlo(retry, models, runs=20, method="fast", progress=False)
    again = ok.AgentModels.from_dict(ok.AgentModels.from_dict(OUTAGE_MODELS).to_dict())
    assert again.resolve("tutor-agent-1", "ask") == ok.AgentModels.from_dict(
        OUTAGE_MODELS).resolve("tutor-agent-1", "ask")


@pytest.mark.parametrize("outages, message", [
    ([{"startMs": 10, "endMs": 10}], "needs startMs < endMs"),
    ([{"startMs": 0, "endMs": 10}, {"startMs": 5, "endMs": 20}], "overlap"),
    ([{"startMs": 0}], "missing 'endMs'"),
    ([{"startMs": 0, "endMs": float("inf")}], "'endMs' must be a finite number"),
    ([{"startMs": 0, "endMs": 1, "eror": 1}], "unknown key 'eror'.*did you mean 'error'"),
    ([{"startMs": 0, "endMs": 1, "hang": 0.5}], "error \\+ hang = 1.5 > 1"),
    ({"startMs": 0, "endMs": 1}, "must be a list"),
])
def test_bad_outages_are_clear_errors(outages, message):
    with pytest.raises(ok.PlanValidationError, match="agent 'x'.*" + message):
        ok.AgentModels.from_dict({"agents": {"x": {"latency": {"dist": "constant", "value": 1},
                                                   "outages": outages}}})
