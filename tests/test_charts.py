"""Plotly charts: Gantt charts of spans (simulated or live), makespan distributions, the
DAG, utilisation, tuning and comparison charts — each one checked, not only drawn (SPEC
§13.5): ``check_figure`` reads a figure's data and layout (no empty trace, every legend
entry named, numeric axes titled, each axis's range holds its data and its reference lines
and is not mostly empty), and the notebook course's figures are checked the same way and
rendered in headless chromium (kaleido)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import orchkit as ok
from orchkit._views.charts import OUTCOME_COLORS
from orchkit.testing import Fail, Hang, Ok, ScriptedAgent, ScriptedModels

# ------------------------------------------------------------------ figures, checked (§13.5)


def _values(v) -> np.ndarray | None:
    """A trace attribute as an array: lists, arrays, tuples, and the typed arrays a
    notebook's JSON holds (``{"dtype": "f8", "bdata": <base64>, "shape": "3, 2"}``)."""
    if v is None:
        return None
    if isinstance(v, dict) and "bdata" in v:
        arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        if v.get("shape"):
            arr = arr.reshape([int(n) for n in str(v["shape"]).split(",")])
        return arr
    return np.asarray(v if isinstance(v, (list, tuple, np.ndarray)) else list(v), dtype=object)


def _numbers(v) -> np.ndarray | None:
    """``v`` as floats (NaN dropped), or None when it is not numeric (a category axis)."""
    arr = _values(v)
    if arr is None:
        return None
    try:
        out = np.asarray(arr, dtype=float).ravel()
    except (TypeError, ValueError):
        return None
    return out[~np.isnan(out)]


def _axis_key(ref: str | None, letter: str) -> str | None:
    """'x' -> 'xaxis', 'y3' -> 'yaxis3'; None for paper, domain or other references."""
    ref = ref or letter
    if not re.fullmatch(letter + r"\d*", ref):
        return None
    return f"{letter}axis{ref[1:]}"


def _trace_extents(trace) -> dict[str, list[np.ndarray]]:
    """Numbers each axis of the trace must show: x and y (bars from their base, error
    bars to their ends); a histogram's counts axis is computed, so left out."""
    out: dict[str, list[np.ndarray]] = {}
    t = trace.to_plotly_json() if hasattr(trace, "to_plotly_json") else trace
    for letter in ("x", "y"):
        if t.get("type") == "histogram" and letter != ("y" if t.get("orientation") == "h" else "x"):
            continue
        values = _numbers(t.get(letter))
        if values is None or not len(values):
            continue
        key = _axis_key(t.get(f"{letter}axis"), letter)
        parts = [values]
        horizontal = t.get("orientation") == "h"
        if t.get("type") == "bar" and letter == ("x" if horizontal else "y"):
            base = _numbers(t.get("base"))
            start = base if base is not None and len(base) == len(values) else np.zeros(1)
            parts = [start, (start + values) if len(start) == len(values) else values]
        err = t.get(f"error_{letter}") or {}
        if err.get("visible", True) and err.get("type") == "data":
            plus = _numbers(err.get("array"))
            minus = _numbers(err.get("arrayminus"))
            minus = plus if err.get("symmetric", minus is None) else minus
            for arr, sign in ((plus, 1), (minus, -1)):
                if arr is not None and len(arr) == len(values):
                    parts.append(values + sign * arr)
        out.setdefault(key, []).extend(parts)
    return out


def _references(layout) -> dict[str, list[tuple[float, str]]]:
    """Coordinates of shapes and annotations pinned to a data axis: (value, 'data') for
    shapes (data units), (value, 'axis') for annotations, whose coordinates plotly reads
    in axis units (log10 on a log axis: the trap of ``add_hline(y=20)`` on one)."""
    out: dict[str, list[tuple[float, str]]] = {}
    lay = layout.to_plotly_json() if hasattr(layout, "to_plotly_json") else layout
    for shape in lay.get("shapes") or ():
        for letter in ("x", "y"):
            key = _axis_key(shape.get(f"{letter}ref"), letter)
            for end in ("0", "1"):
                v = shape.get(f"{letter}{end}")
                if key and isinstance(v, (int, float)):
                    out.setdefault(key, []).append((float(v), "data"))
    for note in lay.get("annotations") or ():
        for letter in ("x", "y"):
            key = _axis_key(note.get(f"{letter}ref"), letter)
            v = note.get(letter)
            if key and isinstance(v, (int, float)):
                out.setdefault(key, []).append((float(v), "axis"))
            tail = _axis_key(note.get(f"a{letter}ref"), letter)  # an arrow's tail on the axis
            v = note.get(f"a{letter}")
            if tail and note.get("showarrow") and isinstance(v, (int, float)):
                out.setdefault(tail, []).append((float(v), "axis"))
    return out


def check_figure(fig, full=None) -> None:
    """Assert that a figure can be read: no empty trace; every legend entry named;
    every numeric, visible axis titled; each axis's range (in axis units: log10 on a
    log axis, as plotly gives it) holds all its data and every shape and annotation
    pinned to it, and the data fill at least a fifth of it (a reference line far off
    squeezes the data into a corner). ``full``: the figure as a browser laid it out
    (``fig.full_figure_for_development()``), whose ranges are then the ones checked;
    without it, an explicit range or else the extent plotly's autorange would cover."""
    if not isinstance(fig, go.Figure):
        fig = go.Figure(fig)
    layout = fig.layout.to_plotly_json()
    full_layout = full.layout.to_plotly_json() if full is not None else {}
    traces = [t.to_plotly_json() for t in fig.data]
    assert traces, "a figure without a trace"
    legend = layout.get("showlegend")
    for i, t in enumerate(traces):
        sizes = [len(n) for n in (_numbers(t.get(k)) for k in ("x", "y")) if n is not None]
        sizes += [len(v) for v in (_values(t.get(k)) for k in ("x", "y")) if v is not None]
        assert max(sizes, default=0) > 0, f"trace {i} ({t.get('name')!r}) is empty"
        shown = t.get("showlegend")
        if shown is None:
            shown = legend is True or (legend is None and len(traces) > 1)
        if shown and legend is not False:
            assert str(t.get("name") or "").strip(), f"trace {i} is in the legend without a name"
    for shape in layout.get("shapes") or ():
        if shape.get("showlegend"):
            assert str(shape.get("name") or "").strip(), "a shape in the legend without a name"
    data: dict[str, list[np.ndarray]] = {}
    for t in traces:
        for key, parts in _trace_extents(t).items():
            data.setdefault(key, []).extend(parts)
    refs = _references(layout)
    for key in sorted(set(data) | set(refs)):
        axis = layout.get(key) or {}
        laid = full_layout.get(key) or {}
        if axis.get("visible") is False or laid.get("visible") is False:
            continue
        kind = laid.get("type") or axis.get("type") or "-"
        if kind in ("category", "multicategory", "date"):
            continue
        values = np.concatenate(data[key]) if data.get(key) else np.array([])
        log = kind == "log"
        if log:
            assert (values > 0).all(), f"{key}: values <= 0 on a log axis are not drawn"
            values = np.log10(values)
        if key in data and axis.get("showticklabels") is not False and not axis.get("matches"):
            title = (axis.get("title") or {}).get("text") or ""
            assert title.strip(), f"{key}: a numeric axis without a title (what, in which unit?)"
        marks = [np.log10(v) if log and how == "data" else v for v, how in refs.get(key, [])]
        marks = [m for m in marks if np.isfinite(m)]
        if laid.get("range") is not None:
            lo, hi = map(float, laid["range"])
        elif axis.get("range") is not None and axis.get("autorange") is not True:
            lo, hi = map(float, axis["range"])
        else:  # what autorange covers: data, reference lines and notes (and 0 if asked)
            every = [*values, *marks, *([0.0] if axis.get("rangemode") == "tozero" else [])]
            if not every:
                continue
            lo, hi = min(every), max(every)
        lo, hi = min(lo, hi), max(lo, hi)  # a reversed axis
        slack = 1e-9 * max(1.0, hi - lo)
        if len(values):
            assert lo - slack <= values.min() and values.max() <= hi + slack, (
                f"{key}: the data [{values.min():.4g}, {values.max():.4g}] run off the "
                f"axis [{lo:.4g}, {hi:.4g}]" + (" (log10 units)" if log else "")
            )
        for m in marks:
            assert lo - slack <= m <= hi + slack, (
                f"{key}: a reference line or note at {m:.4g} lies off the axis "
                f"[{lo:.4g}, {hi:.4g}]" + (" (log10 units)" if log else "")
            )
        if len(values) and values.max() > values.min() and hi > lo:
            fill = (values.max() - values.min()) / (hi - lo)
            assert fill >= 0.2, (
                f"{key}: the data fill {fill:.0%} of the axis [{lo:.4g}, {hi:.4g}]"
                + (" (log10 units)" if log else "")
                + ": something far off (a reference line, a note) squeezes them into a corner"
            )


def _decode_png(data: bytes) -> np.ndarray:
    """A PNG's pixels (8-bit RGB/RGBA, not interlaced: what chromium writes) as an
    (height, width, channels) array; no imaging library needed."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks, header = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + n
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    ch = 4 if colour == 6 else 3
    raw = np.frombuffer(zlib.decompress(b"".join(chunks)), dtype=np.uint8)
    raw = raw.reshape(height, 1 + width * ch).astype(np.int32)
    out = np.zeros((height, width * ch), dtype=np.int32)
    prev = np.zeros(width * ch, dtype=np.int32)
    for r in range(height):
        kind, line = raw[r, 0], raw[r, 1:]
        if kind in (0, 2):  # None, Up: whole rows at once
            cur = line if kind == 0 else (line + prev) & 255
        else:  # Sub, Average, Paeth: byte by byte
            cur = np.zeros_like(line)
            for i in range(len(line)):
                a = int(cur[i - ch]) if i >= ch else 0
                b, c = int(prev[i]), int(prev[i - ch]) if i >= ch else 0
                if kind == 1:
                    pred = a
                elif kind == 3:
                    pred = (a + b) // 2
                else:
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (int(line[i]) + pred) & 255
        out[r] = cur
        prev = cur
    return out.reshape(height, width, ch).astype(np.uint8)


def check_png(png: bytes, fig) -> None:
    """The PNG a browser drew is the figure: its size, ink beyond the background, and
    the colour of every opaque trace with a colour of its own somewhere in the pixels."""
    img = _decode_png(png)[..., :3].astype(int)
    width, height = fig.layout.width or 700, fig.layout.height or 500
    assert img.shape[:2] == (height, width), (img.shape, width, height)
    background = np.array([255, 255, 255])
    ink = np.abs(img - background).sum(axis=2) > 30
    assert ink.mean() > 0.02, f"an almost blank image ({ink.mean():.1%} ink)"
    for t in fig.data:
        if (t.opacity if t.opacity is not None else 1) < 1 or t.visible in (False, "legendonly"):
            continue
        colour = None
        for part in (getattr(t, "line", None), getattr(t, "marker", None)):
            c = getattr(part, "color", None)
            if isinstance(c, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", c):
                colour = c
                break
        if colour is None:
            continue
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        near = (np.abs(img - rgb) <= 12).all(axis=2).sum()
        assert near >= 10, f"trace {t.name!r}: its colour {colour} is nowhere in the image"


@pytest.fixture(scope="module")
def headless():
    """Headless chromium through kaleido (one browser for the module, ~0.2 s a figure):
    ``headless.layout(fig)`` is the figure as plotly.js laid it out (autoranges resolved),
    ``headless.png(fig)`` its PNG. Skips, saying why, without kaleido or a Chrome."""
    kaleido = pytest.importorskip(
        "kaleido", reason="kaleido is missing: pip install 'orchkit[notebook]' (and chromium)"
    )
    import plotly.io as pio

    kaleido.start_sync_server(silence_warnings=True)

    class Browser:
        def layout(self, fig):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "kopts is ignored when using a server"
                return fig.full_figure_for_development(warn=False)

        def png(self, fig):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return pio.to_image(fig, format="png")

    try:
        b = Browser()
        try:
            b.png(go.Figure(go.Scatter(x=[0, 1], y=[0, 1])))
        except Exception as exc:  # no Chrome/Chromium for kaleido to drive
            pytest.skip(f"kaleido cannot start a browser ({type(exc).__name__}: {exc})")
        yield b
    finally:
        kaleido.stop_sync_server()


def _broken_notebook_06_chart(slo_as_trace: bool) -> go.Figure:
    """The shape of notebook 06's first capacity chart: p95 on a log axis with an SLO
    line. ``add_hline(y=20, annotation_text=…)`` puts its note at log10 = 20 (10^20)."""
    fig = go.Figure()
    fig.add_scatter(x=[2, 3, 4, 5], y=[25.5, 16.1, 14.0, 13.6], name="0.5 sessions/s")
    fig.add_scatter(x=[2, 3, 4, 5], y=[60.0, 40.2, 18.3, 15.9], name="1 session/s")
    if slo_as_trace:
        fig.add_scatter(x=[2, 5], y=[20, 20], mode="lines", name="SLO: p95 ≤ 20 s")
    else:
        fig.add_hline(y=20, line_dash="dash", annotation_text="SLO: p95 <= 20 s")
    fig.update_layout(
        title="p95 session time vs tutor capacity",
        xaxis_title="tutor capacity (calls at once)",
        yaxis_title="p95 session time (s)",
        yaxis_type="log",
    )
    return fig


def test_check_figure_fails_on_a_reference_line_off_a_log_axis():
    with pytest.raises(AssertionError, match=r"yaxis: the data fill \d+% of the axis"):
        check_figure(_broken_notebook_06_chart(slo_as_trace=False))
    check_figure(_broken_notebook_06_chart(slo_as_trace=True))
    cut = _broken_notebook_06_chart(slo_as_trace=True).update_yaxes(range=[1.2, 1.5])
    with pytest.raises(AssertionError, match="run off the axis"):
        check_figure(cut)
    bad = go.Figure(go.Scatter(x=[], y=[], name="nothing"))
    with pytest.raises(AssertionError, match="is empty"):
        check_figure(bad)
    unnamed = go.Figure([go.Scatter(x=[1, 2], y=[1, 2]), go.Scatter(x=[1, 2], y=[2, 1])])
    with pytest.raises(AssertionError, match="without a name"):
        check_figure(unnamed)
    untitled = go.Figure(go.Scatter(x=[1, 2], y=[1, 2])).update_layout(yaxis_title="y (ms)")
    with pytest.raises(AssertionError, match="xaxis: a numeric axis without a title"):
        check_figure(untitled)


def test_the_browser_lays_the_broken_chart_out_as_the_check_says(headless):
    broken = _broken_notebook_06_chart(slo_as_trace=False)
    full = headless.layout(broken)
    assert full.layout.yaxis.type == "log" and full.layout.yaxis.range[1] > 18  # to 10^18+
    with pytest.raises(AssertionError, match="data fill"):
        check_figure(broken, full)
    fixed = _broken_notebook_06_chart(slo_as_trace=True)
    check_figure(fixed, headless.layout(fixed))


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
    check_figure(fig)
    assert fig.layout.xaxis.title.text == "time (ms)"
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
    check_figure(fig)
    trace = fig.data[0]
    if kind == "cdf":
        assert trace.type == "scatter"
        assert trace.y[-1] == pytest.approx(1.0) and np.all(np.diff(trace.x) >= 0)
        assert trace.x[-1] == mk.max() and len(trace.x) <= 2000
    else:
        assert trace.type == "histogram" and len(trace.x) == len(mk)


def test_makespan_chart_of_one_study_is_one_curve_with_the_outcome_shares(study):
    """SPEC §12.4: one study alone is one curve of all its runs, its outcome shares in the
    legend; the percentile markers are a legend entry of their own."""
    fig = ok.makespan_chart(study)
    check_figure(fig)
    curves = [t for t in fig.data if t.mode == "lines"]
    assert len(curves) == 1 and len(curves[0].x) == min(len(study.runs), 2000)
    assert curves[0].y[-1] == pytest.approx(1.0)
    shares = study.runs["status"].value_counts(normalize=True)
    assert curves[0].name.startswith(f"all runs ({len(study.runs):,}): ")
    for status, share in shares.items():
        assert f"{share:.1%} {status}" in curves[0].name
    marks = [t for t in fig.data if t.mode == "markers"]
    assert len(marks) == 1 and marks[0].showlegend is True
    assert marks[0].name == "p50, p95, p99 (bars: 95% intervals)"
    assert "95% interval" in marks[0].hovertemplate and " ms" in marks[0].hovertemplate


def test_makespan_chart_split_by_status_normalises_each_group(study):
    fig = ok.makespan_chart(study.runs, color="status")
    check_figure(fig)
    curves = [t for t in fig.data if t.mode == "lines"]
    counts = study.runs["status"].value_counts()
    assert {t.name.split(":")[0] for t in curves} == set(counts.index) == {"succeeded", "failed"}
    for t in curves:  # each CDF ends at 1: its own group's runs, labelled with its share
        status = t.name.split(":")[0]
        share = counts[status] / len(study.runs)
        assert t.y[-1] == pytest.approx(1.0)
        assert t.name == f"{status}: {share:.1%} of the runs ({counts[status]:,})"
        assert t.line.color == OUTCOME_COLORS[status]
    for t in (t for t in fig.data if t.mode == "markers"):  # markers explained in the legend
        assert t.showlegend and t.name.endswith("p50, p95, p99 (bars: 95% intervals)")
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
        check_figure(fig)
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
    check_figure(fig)
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


@pytest.mark.filterwarnings("ignore:The kopts argument is ignored")
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


# ------------------------------------------------------------------ utilisation, tuning, comparison

OUTAGE_PLAN = ok.Plan.model_validate(
    {
        "id": "two",
        "parallel": True,
        "steps": [
            {"id": "s", "agentId": "tutor-agent-1", "action": "ask"},
            {"id": "call", "agentId": "api-1", "action": "get"},
        ],
    }
)
OUTAGE_MODELS = {
    "agents": {
        "tutor-agent-*": {
            "capacity": 2,
            "latency": {"dist": "exponential", "mean": 40},
            "outages": [
                {"startMs": 20_000, "endMs": 30_000, "error": 1.0},
                {"startMs": 45_000, "endMs": 50_000, "error": 1.0},
            ],
        },
        "api-*": {"capacity": 4, "latency": {"dist": "exponential", "mean": 20}},
    }
}


@pytest.fixture(scope="module")
def busy():
    """A workload study with outages and a warm-up cut."""
    return ok.monte_carlo(
        OUTAGE_PLAN,
        OUTAGE_MODELS,
        seed=4,
        progress=False,
        workload=ok.Workload(rate_per_s=[(0, 5), (5_000, 45)], horizon_ms=60_000),
        warmup_ms=5_000,
    )


def test_utilisation_chart_is_in_ms_with_outages_and_warm_up_in_the_legend(busy):
    fig = ok.utilisation_chart(busy, 2000)
    check_figure(fig)
    assert fig.layout.xaxis2.title.text == "study time (ms)"  # ms like every other chart
    assert "(running / capacity)" in fig.layout.yaxis.title.text
    assert "(attempts waiting)" in fig.layout.yaxis2.title.text
    util = busy.utilisation(2000)
    first = fig.data[0]
    assert list(first.x) == list(util.loc[util["agent_id"] == first.name, "t_ms"])  # not s
    assert fig.layout.xaxis2.title.text.endswith("(ms)")
    assert not fig.layout.annotations  # nothing written over a panel or a panel's title
    legend = [s for s in fig.layout.shapes if s.showlegend]
    assert [s.name for s in legend] == ["tutor-agent-1 outage", "warm-up cut (5,000 ms)"]
    rects = sorted((s.x0, s.x1) for s in fig.layout.shapes if s.type == "rect")
    assert rects == [(20_000, 30_000)] * 2 + [(45_000, 50_000)] * 2  # both panels, in ms
    assert {t.name for t in fig.data} == {"tutor-agent-1", "api-1"}


@pytest.fixture(scope="module")
def tuned():
    pytest.importorskip("optuna", reason="ok.tune needs orchkit[tune]")
    plan = ok.Plan.model_validate(
        {
            "id": "tunable",
            "steps": [
                {
                    "id": "call",
                    "agentId": "api-1",
                    "action": "get",
                    "timeout": 100,
                    "retryPolicy": {"maxRetries": 0, "backoffMs": 5},
                }
            ],
        }
    )
    models = {
        "agents": {
            "api-*": {"latency": {"dist": "lognormal", "median": 40, "p95": 160}, "error": 0.1}
        }
    }
    space = {
        "steps.call.retryPolicy.maxRetries": ok.Int(0, 3),
        "steps.call.timeout": ok.Float(30, 400),
    }
    one = ok.tune(
        plan,
        models,
        space,
        minimize="makespan_p95_ms",
        constraints={"success_rate": ">= 0.97"},
        trials=24,
        runs=400,
        seed=1,
        progress=False,
    )
    two = ok.tune(
        plan,
        models,
        space,
        minimize=["makespan_p95_ms", "attempts_per_run"],
        constraints={"success_rate": ">= 0.97"},
        trials=24,
        runs=400,
        seed=1,
        progress=False,
    )
    return one, two


def test_tune_chart_keeps_infeasible_trials_out_of_the_objective_panel(tuned):
    res, _ = tuned
    trials = res.trials
    assert 0 < trials["feasible"].sum() < len(trials)  # both kinds, or the test says nothing
    fig = res.chart()
    check_figure(fig)
    top = [t for t in fig.data if t.yaxis == "y"]
    shown = {int(x) for t in top if t.mode == "markers" for x in t.x}
    assert shown == set(trials.loc[trials["feasible"], "trial"])  # no infeasible trial there
    best = next(t for t in top if t.name == "best feasible so far")
    x, y = np.asarray(best.x, dtype=int), np.asarray(best.y, dtype=float)
    first = int(trials.loc[trials["feasible"], "trial"].min())
    assert list(x) == list(range(first, int(trials["trial"].max()) + 1))  # one unbroken line
    assert np.isfinite(y).all() and (np.diff(y) <= 0).all()
    assert y[-1] == pytest.approx(trials.loc[trials["feasible"], "makespan_p95_ms"].min())
    star = next(t for t in top if t.name.startswith("best: trial "))
    assert int(star.x[0]) == res.best.meta["tuned"]["trial"] and star.name.endswith(" ms")
    assert fig.layout.yaxis.title.text == "makespan_p95_ms (ms)"
    assert fig.layout.xaxis2.title.text == "trial"
    # the constraint's panel: every trial's judged end of the interval, and the bound
    low = [t for t in fig.data if t.yaxis == "y2"]
    names = {t.name for t in low}
    assert names == {
        "meets success_rate ≥ 0.97",
        "misses success_rate ≥ 0.97",
        "bound: success_rate ≥ 0.97",
    }
    judged = {int(x): v for t in low if t.mode == "markers" for x, v in zip(t.x, t.y)}
    assert judged == pytest.approx(dict(zip(trials["trial"], trials["success_rate_ci_low"])))
    bound = next(t for t in low if t.name.startswith("bound"))
    assert list(bound.y) == [0.97, 0.97]
    assert "95% low" in fig.layout.yaxis2.title.text
    assert (
        f"{len(trials)} trials, {int(trials['feasible'].sum())} feasible" in fig.layout.title.text
    )


def test_tune_chart_of_a_pareto_front(tuned):
    _, res = tuned
    fig = res.chart()
    check_figure(fig)
    top = [t for t in fig.data if t.yaxis == "y"]
    assert [t.name for t in top] == ["feasible trial", "Pareto front"]
    feasible = res.trials[res.trials["feasible"]]
    assert len(top[0].x) == len(feasible)
    assert fig.layout.xaxis.title.text == "makespan_p95_ms (ms)"
    assert fig.layout.yaxis.title.text == "attempts_per_run (per run)"


@pytest.fixture(scope="module")
def comparison():
    pytest.importorskip("scipy", reason="ok.compare needs orchkit[tune]")
    plan = ok.Plan.model_validate(
        {
            "id": "cmp",
            "timeout": 60_000,
            "steps": [{"id": "s", "agentId": "a", "action": "x"}],
        }
    )

    def models(median, hang):
        return {
            "agents": {
                "a": {
                    "latency": {"dist": "lognormal", "median": median, "p95": 3 * median},
                    "hang": hang,
                }
            }
        }

    observed = ok.monte_carlo(plan, models(1000, 0.01), runs=800, seed=1, progress=False)
    predicted = ok.monte_carlo(plan, models(1300, 0.01), runs=5000, seed=2, progress=False)
    return ok.compare(observed, predicted), observed, predicted


def test_compare_chart_shows_the_difference_on_an_axis_that_holds_it(comparison):
    table, observed, predicted = comparison
    assert observed.runs["makespan_ms"].max() == 60_000  # hung runs at the 60 s deadline
    fig = table.chart()
    check_figure(fig)
    assert fig.layout.title.text.startswith("makespan, observed vs predicted: two-sample KS D =")
    # runs at the deadline would squeeze the bulk into a tenth of a linear axis: log
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis2.type == "log"
    assert fig.layout.xaxis2.title.text == "makespan (ms, log scale)"
    cdfs = [t for t in fig.data if t.mode == "lines" and t.yaxis == "y"]
    assert [t.name for t in cdfs] == ["observed (800 runs)", "predicted (5000 runs)"]
    marks = {t.name.split(":")[0]: t for t in fig.data if t.mode == "markers" and t.yaxis == "y"}
    for side in ("observed", "predicted"):
        want = table.loc[["makespan_p50_ms", "makespan_p95_ms", "makespan_p99_ms"], side]
        assert list(marks[side].x) == pytest.approx(list(want))
    diff = next(t for t in fig.data if t.name == "predicted − observed")
    d = next(t for t in fig.data if t.name.startswith("KS D = "))
    assert abs(d.y[0]) == pytest.approx(100 * table.ks_stat)  # percentage points of runs
    assert np.max(np.abs(diff.y)) == pytest.approx(100 * table.ks_stat)
    assert fig.layout.yaxis2.title.text == "difference<br>(% of runs)"


def test_every_chart_as_the_browser_lays_it_out_passes_the_checks(
    headless, study, busy, tuned, comparison
):
    """plotly.js's own layout (autoranges resolved in headless chromium) of each chart
    function's figure passes the same checks, and each renders."""
    res = ok.simulate(PLAN, ScriptedModels(_agents()))
    figures = {
        "gantt": ok.gantt(res, plan=PLAN),
        "gantt by agent": ok.gantt(study.spans[study.spans["run_id"] < 20], y="agent_id"),
        "makespan": ok.makespan_chart(study),
        "makespan by status": ok.makespan_chart(study, color="status"),
        "makespan histogram": ok.makespan_chart(study, kind="histogram"),
        "draw": ok.draw(FALLBACK),
        "utilisation": ok.utilisation_chart(busy, 2000),
        "tune": tuned[0].chart(),
        "pareto": tuned[1].chart(),
        "compare": comparison[0].chart(),
    }
    for name, fig in figures.items():
        try:
            check_figure(fig, headless.layout(fig))
            check_png(headless.png(fig), fig)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


# ------------------------------------------------------------------ the notebook course

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def notebook_figures(path: Path) -> list[tuple[str, go.Figure]]:
    """The plotly figures a committed notebook shows (its outputs), as (cell, figure)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for i, cell in enumerate(nb["cells"]):
        for output in cell.get("outputs", ()):
            spec = output.get("data", {}).get("application/vnd.plotly.v1+json")
            if spec is not None:
                out.append((f"{path.stem} cell {i}", go.Figure(spec)))
    return out


def test_the_notebook_course_shows_figures():
    shown = {p.stem: len(notebook_figures(p)) for p in NOTEBOOKS}
    assert sum(shown.values()) >= 12 and sum(n > 0 for n in shown.values()) >= 8, shown


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_notebook_course_figures_are_checked_and_render(path, headless):
    """Each figure a committed notebook shows passes ``check_figure`` on its own layout
    and on the layout headless chromium gives it; each renders to a PNG that is the
    figure (size, ink, its traces' colours)."""
    figures = notebook_figures(path)
    if not figures:
        pytest.skip(f"{path.name} shows no plotly figure")
    for where, fig in figures:
        try:
            check_figure(fig)
            check_figure(fig, headless.layout(fig))
            check_png(headless.png(fig), fig)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from None
