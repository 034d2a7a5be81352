"""Plotly charts: Gantt charts of spans (simulated or live) and makespan distributions."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import plotly.graph_objects as go
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import orchkit as ok
from orchkit._views.charts import OUTCOME_COLORS
from orchkit.testing import Fail, Hang, Ok, ScriptedAgent, ScriptedModels

PLAN = ok.Plan.model_validate(
    {
        "id": "chart",
        "parallel": True,
        "steps": [
            {
                "id": "a",
                "agentId": "Q",
                "action": "a",
                "retryPolicy": {"maxRetries": 2, "backoffMs": 10},
            },
            {"id": "b", "agentId": "Q", "action": "b"},
            {
                "id": "h",
                "agentId": "R",
                "action": "h",
                "timeout": 40,
                "retryPolicy": {"maxRetries": 1, "backoffMs": 5},
            },
            {"id": "c", "agentId": "R", "action": "c", "dependencies": ["a", "b", "h"]},
        ],
    }
)


def _agents():
    return [
        ScriptedAgent("Q", {"a": [Fail(20), Ok(30)], "b": [Ok(25)]}, capacity=1),
        ScriptedAgent("R", {"h": [Hang(), Ok(15)], "c": [Ok(10)]}),
    ]


def _bars(fig):
    """(name, trace) of every bar trace, and the attempt bars (not the 'queued' ones)."""
    bars = [t for t in fig.data if t.type == "bar"]
    return bars, [t for t in bars if t.name != "queued"]


def _same_bars(trace, rows, base, length):
    """The trace's bars are exactly (row, base, length) for the given spans, in any order."""
    got = sorted(zip(trace.y, trace.base, trace.x))
    want = sorted(zip(rows, base, length))
    assert [r for r, *_ in got] == [r for r, *_ in want]
    np.testing.assert_allclose(
        np.array([g[1:] for g in got], dtype=float),
        np.array([w[1:] for w in want], dtype=float),
        atol=1e-9,
    )


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
    _same_bars(q, waited["step_id"], waited["queued_ms"], waited["start_ms"] - waited["queued_ms"])
    # attempt numbers label the bars: retries and timeouts read at a glance
    texts = sorted(x for t in attempts for x in t.text)
    assert texts == sorted("#" + spans["attempt"].astype(str))


def test_gantt_without_waits_has_no_queued_trace():
    models = ok.AgentModels.from_dict(
        {"agents": {"*": {"latency": {"dist": "constant", "value": 10}}}}
    )
    res = ok.simulate(PLAN, models)
    bars, _ = _check_gantt(ok.gantt(res), res.spans)
    assert "queued" not in {t.name for t in bars}


def test_gantt_shows_an_attempt_that_timed_out_while_queued():
    plan = ok.Plan.model_validate(
        {
            "id": "q",
            "parallel": True,
            "steps": [
                {"id": "first", "agentId": "Q", "action": "a"},
                {"id": "second", "agentId": "Q", "action": "b", "timeout": 30},
            ],
        }
    )
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
    models = ok.AgentModels.from_dict(
        {
            "agents": {
                "Q": {"capacity": 1, "latency": {"dist": "exponential", "mean": 20}, "error": 0.3},
                "R": {
                    "latency": {"dist": "exponential", "mean": 20},
                    "actions": {"h": {"hang": 0.3}},
                },
            }
        }
    )
    mc = ok.monte_carlo(PLAN, models, runs=20, seed=4, progress=False, method="simpy")
    one = mc.spans[mc.spans["run_id"] == 7]
    _check_gantt(ok.gantt(mc.spans, run_id=7), one)
    _check_gantt(ok.gantt(one), one)
    fig = ok.gantt(mc.spans[mc.spans["run_id"] < 3])
    rows = {y for t in fig.data for y in t.y}
    assert rows == {f"{r}/{s}" for r, s in zip(mc.spans["run_id"], mc.spans["step_id"]) if r < 3}
    by_agent = ok.gantt(one, y="agent_id")
    assert {y for t in by_agent.data for y in t.y} == set(one["agent_id"])


def test_gantt_rejects_bad_input():
    mc = ok.monte_carlo(
        PLAN,
        {"agents": {"*": {"latency": {"dist": "constant", "value": 1}}}},
        runs=5,
        progress=False,
        method="simpy",
    )
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
    models = {
        "agents": {"*": {"latency": {"dist": "lognormal", "median": 100, "p95": 400}, "error": 0.2}}
    }
    plan = {
        "id": "m",
        "parallel": True,
        "steps": [
            {
                "id": f"s{i}",
                "agentId": f"a{i}",
                "action": "x",
                "retryPolicy": {"maxRetries": 1, "backoffMs": 50},
            }
            for i in range(3)
        ],
    }
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


def test_makespan_chart_split_by_status_normalises_each_group(study):
    fig = ok.makespan_chart(study.runs, color="status")
    curves = [t for t in fig.data if t.mode == "lines"]
    counts = study.runs["status"].value_counts()
    assert {t.name.split(" (")[0] for t in curves} == set(counts.index) == {"succeeded", "failed"}
    for t in curves:  # each CDF ends at 1: its own group's runs
        status = t.name.split(" (")[0]
        assert t.y[-1] == pytest.approx(1.0) and f"({counts[status]:,} runs)" in t.name
        assert t.line.color == OUTCOME_COLORS[status]
    marks = {t.legendgroup: t for t in fig.data if t.mode == "markers"}
    for status in counts.index:  # percentiles of each group, never of the pool
        mk = study.runs.loc[study.runs["status"] == status, "makespan_ms"].to_numpy()
        assert list(marks[status].x) == pytest.approx(
            [np.quantile(mk, q) for q in (0.5, 0.95, 0.99)]
        )
    assert not [s for s in fig.layout.shapes if s.type == "line"]  # no pooled p50/p95/p99 lines
    with pytest.raises(TypeError, match="makespan_ms"):
        ok.makespan_chart(study.spans)
    with pytest.raises(ValueError, match="color='nope' is not a column"):
        ok.makespan_chart(study, color="nope")


def _percentile_marks(fig):
    return {t.legendgroup: t for t in fig.data if t.mode == "markers"}


def test_makespan_chart_compares_studies_with_percentiles_per_group(study):
    other = ok.monte_carlo(
        study.plan.with_values({"steps.*.retryPolicy": None}),
        study.models,
        runs=2000,
        seed=3,
        progress=False,
        method="simpy",
    )
    for data, labels in (
        ({"retries": study, "none": other}, ["retries", "none"]),
        ([study, other], ["1: m", "2: m"]),
    ):
        fig = ok.makespan_chart(data)
        curves = [t for t in fig.data if t.mode == "lines"]
        assert [t.name.split(" (")[0] for t in curves] == labels
        marks = _percentile_marks(fig)
        for label, mc in zip(labels, (study, other)):
            mk = mc.runs["makespan_ms"].to_numpy()
            assert list(marks[label].x) == pytest.approx(
                [np.quantile(mk, q) for q in (0.5, 0.95, 0.99)]
            )
            assert list(marks[label].y) == [0.5, 0.95, 0.99]
            lo = np.asarray(marks[label].error_x.arrayminus)
            hi = np.asarray(marks[label].error_x.array)
            assert np.all(lo >= 0) and np.all(hi >= 0) and hi[1] > 0  # 95% intervals drawn
            succeeded = (mc.runs["status"] == "succeeded").mean()
            assert f"{succeeded:.1%} succeeded" in next(
                t.name for t in curves if t.name.startswith(label + " (")
            )
        assert not [s for s in fig.layout.shapes if s.type == "line"]  # no pooled lines
        assert len({t.line.color for t in curves}) == 2
    hist = ok.makespan_chart({"a": study, "b": other}, kind="histogram")
    assert {t.histnorm for t in hist.data if t.type == "histogram"} == {"probability"}
    with pytest.raises(ValueError, match="empty"):
        ok.makespan_chart({})
    with pytest.raises(TypeError, match="study 'x'"):
        ok.makespan_chart({"x": [1, 2]})


def test_one_outcome_colour_map_in_every_chart():
    assert OUTCOME_COLORS["succeeded"] == "#2ca02c"
    assert OUTCOME_COLORS["error"] == OUTCOME_COLORS["failed"]
    assert OUTCOME_COLORS["timeout"] == OUTCOME_COLORS["timed_out"]
    assert (
        len({OUTCOME_COLORS[k] for k in ("succeeded", "error", "timeout", "cancelled", "rejected")})
        == 5
    )


def test_summary_gives_succeeded_only_percentiles_beside_all_runs(study):
    m = study.summary().metrics
    runs = study.runs
    ok_mk = runs.loc[runs["status"] == "succeeded", "makespan_ms"].to_numpy()
    for q in (50, 95, 99):
        assert m.loc[f"makespan_ok_p{q}_ms", "value"] == pytest.approx(np.quantile(ok_mk, q / 100))
        assert m.loc[f"makespan_ok_p{q}_ms", "runs"] == len(ok_mk) < len(runs)
        lo, hi = m.loc[f"makespan_ok_p{q}_ms", ["ci_low", "ci_high"]]
        assert lo <= m.loc[f"makespan_ok_p{q}_ms", "value"] <= hi
    assert m.loc["makespan_p95_ms", "runs"] == len(runs)
    # failed runs here end early (no retry left): all-runs p50 sits below succeeded-only p50
    assert m.loc["makespan_p50_ms", "value"] != m.loc["makespan_ok_p50_ms", "value"]


def test_gantt_agent_lanes_across_runs():
    models = ok.AgentModels.from_dict(
        {
            "agents": {
                "Q": {"capacity": 2, "latency": {"dist": "exponential", "mean": 30}},
                "R": {"latency": {"dist": "exponential", "mean": 20}},
            }
        }
    )
    mc = ok.monte_carlo(
        PLAN,
        models,
        runs=6,
        seed=1,
        progress=False,
        workload=ok.Workload(interval_ms=10, horizon_ms=60),
    )
    fig = ok.gantt(mc, y="agent_id")
    rows = {y for t in fig.data for y in t.y}
    assert rows == {"Q", "R"}  # one lane per agent, not per run
    bars = []
    for t in fig.data:
        for y, base, x, off, width in zip(t.y, t.base, t.x, t.offset, t.width):
            bars.append((y, base, base + x, off, width, t.name))
    for a in bars:  # bars that overlap in time sit side by side inside their lane
        for b in bars:
            if (
                a is not b
                and a[0] == b[0]
                and a[1] < b[2]
                and b[1] < a[2]
                and a[5] != "queued"
                and b[5] != "queued"
            ):
                assert a[3] != b[3]
        assert -0.4 - 1e-9 <= a[3] and a[3] + a[4] <= 0.4 + 1e-9
    # Q (capacity 2) is shared by six runs: waits show and the lane splits in sub-lanes
    assert "queued" in {t.name for t in fig.data}
    q_widths = {w for t in fig.data for y, w in zip(t.y, t.width) if y == "Q"}
    assert max(q_widths) < 0.8
    texts = [x for t in fig.data if t.name != "queued" for x in t.text]
    assert all(x.startswith("r") and "#" in x for x in texts)  # runs distinguishable
    for t in fig.data:
        if t.name != "queued":
            assert t.textangle == 0  # never sideways
    assert fig.layout.showlegend is True and fig.layout.uniformtext.mode == "hide"


def test_gantt_legend_with_one_outcome_and_dependency_arrows():
    models = ok.AgentModels.from_dict(
        {"agents": {"*": {"latency": {"dist": "constant", "value": 10}}}}
    )
    res = ok.simulate(PLAN, models)
    fig = ok.gantt(res, plan=PLAN)
    assert {t.name for t in fig.data} == {"succeeded"} and fig.layout.showlegend is True
    arrows = [a for a in fig.layout.annotations if a.showarrow]
    assert len(arrows) == 3  # c depends on a, b, h
    for a in arrows:
        assert a.y == "c" and a.x == pytest.approx(10.0) and a.ax == pytest.approx(10.0)
    assert not ok.gantt(res).layout.annotations
    with pytest.raises(TypeError, match="plan must be a Plan"):
        ok.gantt(res, plan={"id": "x"})


FALLBACK = ok.Plan.model_validate(
    {
        "id": "main",
        "parallel": True,
        "timeout": 5000,
        "steps": [
            {"id": "a", "agentId": "A", "action": "x"},
            {
                "id": "b",
                "agentId": "A",
                "action": "y",
                "timeout": 300,
                "retryPolicy": {"maxRetries": 2, "backoffMs": 100},
            },
            {"id": "c", "agentId": "B", "action": "z", "dependencies": ["a", "b"]},
        ],
        "fallbackPlan": {"id": "fb", "steps": [{"id": "d", "agentId": "B", "action": "w"}]},
    }
)


def test_draw_layers_steps_by_depth_and_shows_the_fallback():
    fig = ok.draw(FALLBACK)
    texts = [t for t in fig.data if t.mode == "text"]
    assert len(texts) == 2  # one per plan of the chain
    main = dict(zip([x.split("</b>")[0][3:] for x in texts[0].text], zip(texts[0].x, texts[0].y)))
    assert main["a"][0] == main["b"][0] == 0 and main["c"][0] == 1  # columns by depth
    assert main["c"][1] == pytest.approx((main["a"][1] + main["b"][1]) / 2)  # centred
    assert "2 retries" in texts[0].text[1] and "timeout 300 ms" in texts[0].text[1]
    assert max(texts[1].y) < min(texts[0].y)  # the fallback's band lies below
    assert len(fig.layout.shapes) == 4  # a box per step
    arrows = [a for a in fig.layout.annotations if a.showarrow]
    assert len(arrows) == 3  # a->c, b->c, main->fallback
    labels = " ".join(a.text for a in fig.layout.annotations if a.text)
    assert "plan main" in labels and "plan fb" in labels and "fallback" in labels
    with pytest.raises(TypeError, match="draw"):
        ok.draw({"id": "x"})


def test_to_mermaid_and_the_notebook_repr():
    text = FALLBACK.to_mermaid()
    assert text == FALLBACK.to_mermaid()  # deterministic
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert "p0_s0 --> p0_s2" in lines[2:] or "    p0_s0 --> p0_s2" in lines
    assert "    p0_s1 --> p0_s2" in lines and "  p0 -. fallback .-> p1" in lines
    assert 'subgraph p1["plan fb: sequential"]' in text
    bundle = FALLBACK._repr_mimebundle_()
    assert bundle["text/markdown"] == f"```mermaid\n{text}```"
    assert bundle["text/plain"].startswith("Plan(")


@settings(derandomize=True, max_examples=40, deadline=None)
@given(
    st.lists(
        st.text(min_size=1, max_size=8).filter(str.strip), min_size=1, max_size=6, unique=True
    ),
    st.data(),
)
def test_mermaid_is_well_formed_for_any_step_ids(ids, data):
    steps = []
    for i, sid in enumerate(ids):  # dependencies only on earlier steps: a DAG
        deps = data.draw(st.lists(st.sampled_from(ids[:i]), unique=True) if i else st.just([]))
        steps.append({"id": sid, "agentId": 'a"g<', "action": "act", "dependencies": deps})
    plan = ok.Plan.model_validate({"id": 'p"1', "steps": steps})
    text = plan.to_mermaid()
    lines = text.split("\n")
    assert len(lines) == len(text.splitlines()) + 1  # no stray line break anywhere
    nodes = [ln for ln in lines if re.fullmatch(r'    p0_s\d+\[".*"\]', ln)]
    assert len(nodes) == len(ids)
    for ln in nodes:  # user text never closes the label early
        assert '"' not in ln[ln.index('["') + 2 : -2]
    edges = [ln for ln in lines if "-->" in ln]
    assert len(edges) == sum(len(s["dependencies"]) for s in steps)
    for ln in edges:
        assert re.fullmatch(r"    p0_s\d+ --> p0_s\d+", ln)


def test_write_image_exports_a_png(tmp_path):
    pytest.importorskip("kaleido", reason="fig.write_image needs the [notebook] extra")
    path = tmp_path / "draw.png"
    ok.draw(FALLBACK).write_image(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    layout = ok.draw(FALLBACK).layout
    assert (width, height) == (layout.width, layout.height)
    assert 5_000 < len(data) < 2_000_000
