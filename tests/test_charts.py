"""Plotly charts: Gantt charts of spans (simulated or live) and makespan distributions."""

from __future__ import annotations

import asyncio

import numpy as np
import plotly.graph_objects as go
import pytest

import orchkit as ok
from orchkit._charts import OUTCOME_COLORS
from orchkit.testing import Fail, Hang, Ok, ScriptedAgent, ScriptedModels

PLAN = ok.Plan.model_validate({
    "id": "chart", "parallel": True, "steps": [
        {"id": "a", "agentId": "Q", "action": "a",
         "retryPolicy": {"maxRetries": 2, "backoffMs": 10}},
        {"id": "b", "agentId": "Q", "action": "b"},
        {"id": "h", "agentId": "R", "action": "h", "timeout": 40,
         "retryPolicy": {"maxRetries": 1, "backoffMs": 5}},
        {"id": "c", "agentId": "R", "action": "c", "dependencies": ["a", "b", "h"]},
    ]})


def _agents():
    return [ScriptedAgent("Q", {"a": [Fail(20), Ok(30)], "b": [Ok(25)]}, capacity=1),
            ScriptedAgent("R", {"h": [Hang(), Ok(15)], "c": [Ok(10)]})]


def _bars(fig):
    """(name, trace) of every bar trace, and the attempt bars (not the 'queued' ones)."""
    bars = [t for t in fig.data if t.type == "bar"]
    return bars, [t for t in bars if t.name != "queued"]


def _same_bars(trace, rows, base, length):
    """The trace's bars are exactly (row, base, length) for the given spans, in any order."""
    got = sorted(zip(trace.y, trace.base, trace.x))
    want = sorted(zip(rows, base, length))
    assert [r for r, *_ in got] == [r for r, *_ in want]
    np.testing.assert_allclose(np.array([g[1:] for g in got], dtype=float),
                               np.array([w[1:] for w in want], dtype=float), atol=1e-9)


def _check_gantt(fig, spans):
    assert isinstance(fig, go.Figure)
    bars, attempts = _bars(fig)
    ran = spans.dropna(subset=["start_ms"])
    # one bar per attempt that ran, on a numeric ms axis
    assert sum(len(t.y) for t in attempts) == len(ran)
    assert fig.layout.xaxis.type in (None, "linear", "-")
    for t in attempts:
        assert t.orientation == "h"
        assert t.marker.color == OUTCOME_COLORS[t.name]  # coloured by outcome
        g = ran[ran["outcome"] == t.name]
        _same_bars(t, g["step_id"], g["start_ms"], g["end_ms"] - g["start_ms"])
    assert {t.name for t in attempts} == set(ran["outcome"])
    # one row per step
    rows = {y for t in bars for y in t.y}
    assert rows == set(spans["step_id"])
    assert set(fig.layout.yaxis.categoryarray) == rows
    return bars, attempts


def test_gantt_of_a_simulated_run():
    res = ok.simulate(PLAN, ScriptedModels(_agents()))
    spans = res.spans
    assert len(spans) == 6  # a x2, b, h x2, c
    bars, attempts = _check_gantt(ok.gantt(res, title="t"), spans)
    assert {t.name for t in attempts} == {"succeeded", "error", "timeout"}
    # b waited for a's first attempt at Q (capacity 1), and a's retry waited for b
    queued = [t for t in bars if t.name == "queued"]
    assert len(queued) == 1
    q = queued[0]
    assert q.marker.color == OUTCOME_COLORS["queued"]
    waited = spans[spans["start_ms"] > spans["queued_ms"]]
    assert len(waited) == 2
    _same_bars(q, waited["step_id"], waited["queued_ms"],
               waited["start_ms"] - waited["queued_ms"])
    # attempt numbers label the bars: retries and timeouts read at a glance
    texts = sorted(x for t in attempts for x in t.text)
    assert texts == sorted("#" + spans["attempt"].astype(str))


def test_gantt_without_waits_has_no_queued_trace():
    models = ok.AgentModels.from_dict({"agents": {"*": {"latency": {"dist": "constant",
                                                                     "value": 10}}}})
    res = ok.simulate(PLAN, models)
    bars, _ = _check_gantt(ok.gantt(res), res.spans)
    assert "queued" not in {t.name for t in bars}


def test_gantt_shows_an_attempt_that_timed_out_while_queued():
    plan = ok.Plan.model_validate({"id": "q", "parallel": True, "steps": [
        {"id": "first", "agentId": "Q", "action": "a"},
        {"id": "second", "agentId": "Q", "action": "b", "timeout": 30}]})
    res = ok.simulate(plan, ScriptedModels([ScriptedAgent("Q", {"a": [Ok(50)]}, capacity=1)]))
    fig = ok.gantt(res)
    bars, attempts = _check_gantt(fig, res.spans)
    q = next(t for t in bars if t.name == "queued")
    assert list(q.y) == ["second"] and list(q.x) == [30.0]  # waited 0 -> 30, never ran


async def test_gantt_of_a_live_run():
    orch = ok.Orchestrator()
    for agent in _agents():
        await orch.register_agent(agent)
    res = await asyncio.wait_for(orch.orchestrate(PLAN), 10)
    await orch.shutdown()
    _check_gantt(ok.gantt(res), res.spans)


def test_gantt_of_a_spans_frame_with_several_runs():
    models = ok.AgentModels.from_dict({"agents": {
        "Q": {"capacity": 1, "latency": {"dist": "exponential", "mean": 20}, "error": 0.3},
        "R": {"latency": {"dist": "exponential", "mean": 20}, "actions": {"h": {"hang": 0.3}}}}})
    mc = ok.monte_carlo(PLAN, models, runs=20, seed=4, progress=False, method="simpy")
    one = mc.spans[mc.spans["run_id"] == 7]
    _check_gantt(ok.gantt(mc.spans, run_id=7), one)
    _check_gantt(ok.gantt(one), one)
    fig = ok.gantt(mc.spans[mc.spans["run_id"] < 3])
    rows = {y for t in fig.data for y in t.y}
    assert rows == {f"{r}/{s}" for r, s in zip(mc.spans["run_id"], mc.spans["step_id"])
                    if r < 3}
    by_agent = ok.gantt(one, y="agent_id")
    assert {y for t in by_agent.data for y in t.y} == set(one["agent_id"])


def test_gantt_rejects_bad_input():
    mc = ok.monte_carlo(PLAN, {"agents": {"*": {"latency": {"dist": "constant", "value": 1}}}},
                        runs=5, progress=False, method="simpy")
    with pytest.raises(ValueError) as info:
        ok.gantt(mc.runs)
    msg = str(info.value)
    for col in ("step_id", "agent_id", "queued_ms", "outcome"):
        assert col in msg
    with pytest.raises(ValueError, match="'start_ms'"):
        ok.gantt(mc.spans.drop(columns=["start_ms"]))
    with pytest.raises(TypeError, match="RunResult"):
        ok.gantt([1, 2, 3])
    with pytest.raises(ValueError, match="nope"):
        ok.gantt(mc.spans, y="nope")


@pytest.fixture(scope="module")
def study():
    models = {"agents": {"*": {"latency": {"dist": "lognormal", "median": 100, "p95": 400},
                               "error": 0.2}}}
    plan = {"id": "m", "parallel": True, "steps": [
        {"id": f"s{i}", "agentId": f"a{i}", "action": "x",
         "retryPolicy": {"maxRetries": 1, "backoffMs": 50}} for i in range(3)]}
    return ok.monte_carlo(plan, models, runs=3000, seed=2, progress=False, method="simpy")


@pytest.mark.parametrize("kind", ["cdf", "histogram"])
def test_makespan_chart_marks_p50_p95_p99(study, kind):
    fig = ok.makespan_chart(study, kind=kind)
    mk = study.runs["makespan_ms"].to_numpy()
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(lines) == 3
    want = [np.quantile(mk, q) for q in (0.5, 0.95, 0.99)]
    assert [s.x0 for s in lines] == pytest.approx(want)
    assert all(s.x0 == s.x1 for s in lines)  # vertical
    labels = [a.text for a in fig.layout.annotations]
    for q, v in zip(("p50", "p95", "p99"), want):
        assert any(t.startswith(q) and f"{v:,.0f}" in t for t in labels), labels
    assert fig.layout.xaxis.title.text == "makespan (ms)"
    trace = fig.data[0]
    if kind == "cdf":
        assert trace.type == "scatter"
        assert trace.y[-1] == pytest.approx(1.0) and np.all(np.diff(trace.x) >= 0)
        assert trace.x[-1] == mk.max() and len(trace.x) <= 2000
    else:
        assert trace.type == "histogram" and len(trace.x) == len(mk)


def test_makespan_chart_split_by_status(study):
    fig = ok.makespan_chart(study.runs, color="status")
    counts = study.runs["status"].value_counts()
    assert {t.name for t in fig.data} == set(counts.index) == {"succeeded", "failed"}
    for t in fig.data:  # each CDF ends at its share of the runs
        assert t.y[-1] == pytest.approx(counts[t.name] / len(study.runs))
    with pytest.raises(TypeError, match="makespan_ms"):
        ok.makespan_chart(study.spans)
