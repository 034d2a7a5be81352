"""Issue 4: every seed plan under data/plans/ runs live with the built-in agents."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import orchkit as ok
from orchkit.agents import for_plan
from orchkit.cli import main

ROOT = Path(__file__).resolve().parent.parent
PLANS = sorted((ROOT / "data" / "plans").glob("*.json"))


@pytest.fixture(autouse=True)
def _offline_llm(monkeypatch):
    for var in ("ORCHKIT_LLM_BASE_URL", "ORCHKIT_LLM_API_KEY", "ORCHKIT_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)


def test_the_six_seed_plans_are_shipped():
    assert {p.stem for p in PLANS} >= {
        "session_initialization",
        "learning_activity",
        "parallel_analysis",
        "retry_example",
        "ml_with_gpt4_fallback",
        "graceful_degradation",
    }


@pytest.mark.parametrize("path", PLANS, ids=lambda p: p.stem)
async def test_seed_plan_runs_live_with_for_plan(path):
    plan = ok.Plan.load(path)
    orch = ok.Orchestrator()
    kinds = {}
    for agent in for_plan(plan):
        kinds[agent.agent_id] = type(agent).__name__
        await orch.register_agent(agent)
    events = []
    orch.on("*", lambda event, payload: events.append(event))
    result = await orch.orchestrate(plan)
    await orch.shutdown()

    assert result.status == "succeeded", result.errors
    assert set(result.step_states.values()) == {"succeeded"}
    for step in plan.steps:
        response = result.results[step.id]
        assert isinstance(response, ok.AgentResponse)
        assert response.action == step.action and 0.0 <= response.confidence <= 1.0
        if kinds[step.agent_id] == "AITutorAgent":
            assert response.data["source"] == "offline"  # no LLM configured: says so
    assert events[0] == "plan:started" and events[-1] == "plan:completed"
    assert events.count("step:completed") == len(plan.steps)
    assert list(result.spans.columns[: len(ok.SPAN_COLUMNS)]) == ok.SPAN_COLUMNS


def test_builtin_agents_match_ids_by_glob_and_reject_unknown_ids():
    plan = ok.Plan.model_validate(
        {
            "id": "p",
            "steps": [
                {
                    "id": "a",
                    "agentId": "learning-agent-learner_1-17",
                    "action": "predict_with_rules",
                },
                {"id": "b", "agentId": "agent1", "action": "analyze_A"},
            ],
        }
    )
    with pytest.raises(ok.PlanValidationError, match="no built-in agent serves 'agent1'.*--models"):
        for_plan(plan)
    agents = for_plan(plan, str(ROOT / "data" / "agents" / "default.yaml"), time_scale=0)
    assert [type(a).__name__ for a in agents] == ["PersonalizedLearningAgent", "SyntheticAgent"]


def test_cli_run_prints_result_and_writes_spans_and_gantt(tmp_path, capsys):
    code = main(
        [
            "run",
            str(ROOT / "data" / "plans" / "session_initialization.json"),
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "plan 'session_init_12345': succeeded" in out
    assert "init_learning" in out and "init_tutor" in out
    spans = pd.read_csv(tmp_path / "session_init_12345_spans.csv")
    assert list(spans["step_id"]) == ["init_learning", "init_tutor"]
    assert (spans["outcome"] == "succeeded").all()
    # init_tutor depends on init_learning: it starts once init_learning has ended
    assert spans.loc[1, "start_ms"] >= spans.loc[0, "end_ms"]
    assert (tmp_path / "session_init_12345_gantt.html").read_text().count("plotly") > 0


@pytest.mark.parametrize("scale", [1.0, 0.01])
def test_cli_run_time_scale_scales_the_plans_timeouts_with_the_agents(tmp_path, capsys, scale):
    """A 1000 ms agent under a 500 ms step timeout times out at any time scale, as the
    simulator says: the plan's times shrink with the agents' sleeps."""
    models = tmp_path / "m.yaml"
    models.write_text(
        'agents:\n  "slow-*": {capacity: 1, latency: {dist: constant, value: 1000}}\n'
    )
    plan = tmp_path / "p.json"
    plan.write_text(
        '{"id": "p", "steps": [{"id": "s", "agentId": "slow-1", "action": "a", '
        '"timeout": 500, "retryPolicy": {"maxRetries": 1, "backoffMs": 100}}]}'
    )
    sim = ok.simulate(ok.Plan.load(plan), ok.AgentModels.load(models), seed=0)
    assert sim.status == "failed"
    code = main(
        [
            "run",
            str(plan),
            "--models",
            str(models),
            "--time-scale",
            str(scale),
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 1 and "plan 'p': failed" in capsys.readouterr().out
    spans = pd.read_csv(tmp_path / "p_spans.csv")
    assert list(spans["outcome"]) == ["timeout", "timeout"]
    assert spans["end_ms"].max() < 2 * (500 + 100 + 500) * scale
    if scale != 1:  # the file says so: fit_models reads it to work in model ms
        assert (spans["time_scale"] == scale).all()


def test_cli_run_unknown_agent_exits_2(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text('{"id": "p", "steps": [{"id": "a", "agentId": "robot-1", "action": "x"}]}')
    proc = subprocess.run(
        [sys.executable, "-m", "orchkit", "run", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "no built-in agent serves 'robot-1'" in proc.stderr
