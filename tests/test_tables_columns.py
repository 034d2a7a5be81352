"""The table lane's frames take shortcuts when a study allows them (tables.py, ``frames``):
with no failed attempt, outcomes, attempt numbers and statuses are known without reading
them; with one attempt per run, attempt k is run k's, queued at its arrival and ended at
its end. Each case here is checked against the general core, bit for bit."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

import orchkit as ok
from orchkit._engine.prepared import Prepared
from orchkit._runtimes.sim import capacity_study
from orchkit._runtimes.tables import declines
from orchkit._spec.inputs import StudyInputs


def study(plan: dict, agents: dict, workload: ok.Workload, keep_spans: bool | int = True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = Prepared.of(
            StudyInputs.of(
                ok.Plan.model_validate(plan),
                ok.AgentModels.from_dict({"agents": agents}),
                None,
                workload,
                where="test",
            )
        )
        assert declines(p) is None
        lane = capacity_study(p, 7, keep_spans, False, tables=True)
        core = capacity_study(p, 7, keep_spans, False, tables=False)
    pd.testing.assert_frame_equal(lane[0], core[0], check_exact=True)
    pd.testing.assert_frame_equal(lane[1], core[1], check_exact=True)
    assert list(lane[2].items()) == list(core[2].items())
    assert lane[3] == core[3]
    return lane[0], lane[1]


ONE = {"id": "one", "steps": [{"id": "s", "agentId": "a", "action": "x"}]}
MM2 = ok.Workload(rate_per_s=40.0, horizon_ms=20_000)


@pytest.mark.parametrize("keep", [True, 100, False])
def test_one_step_without_failures(keep):
    agents = {"a": {"capacity": 2, "latency": {"dist": "exponential", "mean": 40.0}}}
    runs, spans = study(ONE, agents, MM2, keep)
    assert (runs["status"] == "succeeded").all() and (runs["attempts"] == 1).all()
    if keep is True:
        assert len(spans) == len(runs)


@pytest.mark.parametrize("keep", [True, 100])
@pytest.mark.parametrize("ends", ["step timeout", "plan timeout"])
def test_one_step_with_errors_and_timeouts(keep, ends):
    step = {"id": "s", "agentId": "a", "action": "x"}
    plan = {"id": "one", "steps": [step]}
    if ends == "step timeout":
        step["timeout"] = 60.0
    else:
        plan["timeout"] = 60.0  # ends runs still queued or running
    agents = {"a": {"capacity": 1, "error": 0.3, "latency": {"dist": "exponential", "mean": 30.0}}}
    runs, spans = study(plan, agents, MM2, keep)
    ended = "timed_out" if ends == "plan timeout" else "failed"
    assert set(runs["status"]) == {"succeeded", "failed", ended}
    assert (runs["attempts"] == 1).all()  # one attempt per run, with failures
    assert (runs["timeouts"] > 0).any() == (ends == "step timeout")


def test_a_skipped_dependent_leaves_one_attempt_per_run():
    plan = {
        "id": "two",
        "steps": [
            {"id": "s", "agentId": "a", "action": "x"},
            {"id": "t", "agentId": "a", "action": "y", "dependencies": ["s"]},
        ],
    }
    agents = {"a": {"capacity": 2, "error": 1.0, "latency": {"dist": "constant", "value": 5}}}
    runs, spans = study(plan, agents, ok.Workload(rate_per_s=50.0, horizon_ms=5_000))
    assert len(spans) == len(runs) and (runs["status"] == "failed").all()


def test_retries_and_a_fallback_make_more_attempts_than_runs():
    plan = {
        "id": "one",
        "steps": [
            {
                "id": "s",
                "agentId": "a",
                "action": "x",
                "retryPolicy": {"maxRetries": 1, "backoffMs": 5.0},
            }
        ],
        "fallbackPlan": {"id": "fb", "steps": [{"id": "f", "agentId": "b", "action": "x"}]},
    }
    agents = {
        "a": {"capacity": 2, "error": 0.5, "latency": {"dist": "exponential", "mean": 20.0}},
        "b": {"latency": {"dist": "constant", "value": 3}},
    }
    runs, spans = study(plan, agents, MM2, 150)
    assert (runs["retries"] > 0).any() and runs["fallback_used"].any()
