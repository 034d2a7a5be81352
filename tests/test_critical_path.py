"""mc.critical_path() (SPEC §13.3): the Monte-Carlo criticality index, slack and share of
the makespan of each step, on plans whose critical path is known; and its chart."""

from __future__ import annotations

import pytest
from test_charts import check_figure  # the suite's figure checks (SPEC §13.5)

import orchkit as ok


def const(ms: float) -> dict:
    return {"dist": "constant", "value": ms}


MODELS = {
    "agents": {
        "x": {
            "latency": const(100),
            "actions": {"b": {"latency": const(50)}, "slow": {"latency": const(500)}},
        },
        "y": {"latency": const(200)},
    }
}
CHAIN = ok.Plan.model_validate(
    {
        "id": "chain",
        "parallel": True,
        "steps": [
            {"id": "a", "agentId": "x", "action": "a"},
            {"id": "b", "agentId": "x", "action": "b", "dependencies": ["a"]},
            {"id": "c", "agentId": "y", "action": "c", "dependencies": ["b"]},
        ],
    }
)
FORK = ok.Plan.model_validate(
    {
        "id": "fork",
        "parallel": True,
        "steps": [
            {"id": "fast", "agentId": "x", "action": "a"},
            {"id": "slow", "agentId": "x", "action": "slow"},
            {"id": "join", "agentId": "x", "action": "b", "dependencies": ["fast", "slow"]},
        ],
    }
)


def by_step(frame):
    return frame.set_index("step_id")


def test_a_chain_is_all_critical_and_each_step_has_its_share_of_the_makespan():
    cp = by_step(ok.monte_carlo(CHAIN, MODELS, runs=200, seed=1, progress=False).critical_path())
    assert list(cp.index) == ["a", "b", "c"]
    assert (cp["criticality"] == 1.0).all() and (cp["slack_mean_ms"] == 0).all()
    assert list(cp["duration_mean_ms"]) == pytest.approx([100, 50, 200])
    assert list(cp["makespan_share"]) == pytest.approx([100 / 350, 50 / 350, 200 / 350])
    assert cp["makespan_share"].sum() == pytest.approx(1.0)
    assert (cp["runs"] == 200).all() and list(cp["agent_id"]) == ["x", "x", "y"]


def test_a_parallel_plan_with_one_slow_branch():
    mc = ok.monte_carlo(FORK, MODELS, runs=200, seed=1, progress=False)
    frame = mc.critical_path()
    assert list(frame.columns) == [
        "plan_id",
        "step_id",
        "agent_id",
        "action",
        "runs",
        "criticality",
        "slack_mean_ms",
        "duration_mean_ms",
        "makespan_share",
    ]
    cp = by_step(frame)
    assert cp.loc["slow", "criticality"] == 1.0 and cp.loc["join", "criticality"] == 1.0
    assert cp.loc["fast", "criticality"] == 0.0
    assert cp.loc["fast", "slack_mean_ms"] == pytest.approx(400)  # 500 - 100
    assert cp.loc["slow", "slack_mean_ms"] == 0 and cp.loc["join", "slack_mean_ms"] == 0
    assert cp.loc["join", "duration_mean_ms"] == pytest.approx(50)  # released by the slow one
    assert list(cp["makespan_share"]) == pytest.approx([0, 500 / 550, 50 / 550])
    assert frame.attrs["runs"] == 200 and frame.attrs["plan_id"] == "fork"


def test_the_same_plan_run_one_attempt_at_a_time_is_one_chain():
    mc = ok.monte_carlo(FORK.with_values({"parallel": False}), MODELS, runs=50, progress=False)
    cp = by_step(mc.critical_path())
    assert (cp["criticality"] == 1.0).all() and (cp["slack_mean_ms"] == 0).all()
    assert cp["makespan_share"].sum() == pytest.approx(1.0)
    assert list(cp["duration_mean_ms"]) == pytest.approx([100, 500, 50])


def test_criticality_of_two_random_branches_is_the_chance_one_is_slower():
    """Two exponential branches, means 100 and 200 ms: the first is the critical one when
    it is the slower, P = 100 / (100 + 200) = 1/3; the join is always critical."""
    models = {
        "agents": {
            "x": {"latency": {"dist": "exponential", "mean": 100}},
            "y": {"latency": {"dist": "exponential", "mean": 200}},
        }
    }
    plan = FORK.with_values({"steps.slow.agentId": "y"})
    n = 20_000
    cp = by_step(ok.monte_carlo(plan, models, runs=n, seed=2, progress=False).critical_path())
    sd = (1 / 3 * 2 / 3 / 10_000) ** 0.5  # the spans of 10,000 runs are kept
    assert cp.loc["fast", "criticality"] == pytest.approx(1 / 3, abs=4 * sd)
    assert cp.loc["fast", "criticality"] + cp.loc["slow", "criticality"] == pytest.approx(1.0)
    assert cp.loc["join", "criticality"] == 1.0
    assert cp["makespan_share"].sum() == pytest.approx(1.0)


def test_a_fallback_plan_and_a_workload_study_share_the_makespan():
    fallback = {
        "id": "main",
        "parallel": True,
        "steps": [{"id": "try", "agentId": "z", "action": "try"}],
        "fallbackPlan": {
            "id": "backup",
            "parallel": True,
            "steps": [{"id": "rescue", "agentId": "x", "action": "a"}],
        },
    }
    models = {"agents": {**MODELS["agents"], "z": {"latency": const(30), "error": 1.0}}}
    cp = ok.monte_carlo(fallback, models, runs=50, progress=False).critical_path()
    assert list(cp["plan_id"]) == ["main", "backup"]
    assert list(cp["makespan_share"]) == pytest.approx([30 / 130, 100 / 130])
    study = ok.monte_carlo(
        FORK, MODELS, seed=1, workload=ok.Workload(rate_per_s=5, horizon_ms=20_000), progress=False
    )
    cp = by_step(study.critical_path())
    assert cp.loc["slow", "criticality"] == 1.0 and cp.loc["fast", "criticality"] == 0.0


def test_a_study_without_spans_says_how_to_keep_them():
    mc = ok.monte_carlo(CHAIN, MODELS, runs=10, keep_spans=False, progress=False)
    with pytest.raises(ok.PlanValidationError, match="keep_spans=True"):
        mc.critical_path()


def test_critical_path_chart_is_read_not_only_drawn():
    mc = ok.monte_carlo(FORK, MODELS, runs=100, progress=False)
    for fig in (ok.critical_path_chart(mc), ok.critical_path_chart(mc.critical_path())):
        check_figure(fig)
        names = [t.name for t in fig.data]
        assert names == [
            "share of runs on the critical path (criticality index)",
            "share of the makespan it accounts for",
            "mean slack (ms)",
        ]
        assert list(fig.data[0].y) == ["fast", "slow", "join"]
        assert list(fig.data[0].x) == [0.0, 1.0, 1.0]
        assert fig.layout.xaxis.range == (0, 1.05) and fig.layout.xaxis.title.text == (
            "share (0 to 1)"
        )
        assert fig.layout.xaxis2.title.text == "mean slack (ms)"
        assert max(fig.data[2].x) == pytest.approx(400)
        assert 400 <= fig.layout.xaxis2.range[1]
        assert fig.layout.title.text == "fork: critical path over 100 runs"
    with pytest.raises(TypeError, match="critical_path_chart"):
        ok.critical_path_chart(mc.runs)
