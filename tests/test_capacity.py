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
