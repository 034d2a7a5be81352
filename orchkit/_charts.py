"""Plotly charts of tidy frames: Gantt charts of spans, makespan distributions of runs."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ._result import SPAN_COLUMNS, RunResult

OUTCOME_COLORS = {"succeeded": "#2ca02c", "error": "#d62728", "timeout": "#ff7f0e",
                  "cancelled": "#7f7f7f", "queued": "#aec7e8"}


def _spans_of(data: Any) -> pd.DataFrame:
    spans = getattr(data, "spans", data)
    if not isinstance(spans, pd.DataFrame):
        raise TypeError(f"gantt() takes a RunResult, a MonteCarloResult or a spans DataFrame, "
                        f"got {type(data).__name__}")
    missing = [c for c in SPAN_COLUMNS if c not in spans.columns]
    if missing:
        raise ValueError(f"gantt(): the frame lacks columns {missing}; "
                         f"a spans frame has {SPAN_COLUMNS}")
    return spans


def gantt(data: RunResult | pd.DataFrame | Any, *, y: str = "step_id", run_id: Any = None,
          title: str | None = None) -> go.Figure:
    """One bar per attempt on a ms axis, one row per ``y`` value, coloured by outcome.

    A light bar before an attempt shows its wait for agent capacity (queued_ms→start_ms);
    bars are labelled with the attempt number, so retries and timeouts read at a glance.
    ``data`` is a RunResult (live or simulated) or a spans frame; with several runs, pick
    one with ``run_id`` or the rows are labelled ``run_id/step``.
    """
    spans = _spans_of(data)
    if y not in spans.columns:
        raise ValueError(f"gantt(): y={y!r} is not a column (columns: {list(spans.columns)})")
    if run_id is not None:
        spans = spans[spans["run_id"] == run_id]
    several_plans = spans["plan_id"].nunique() > 1 and y == "step_id"
    labels = spans[y].astype(str)
    if several_plans:
        labels = spans["plan_id"].astype(str) + "/" + labels
    if spans["run_id"].nunique() > 1 and y != "run_id":
        labels = spans["run_id"].astype(str) + "/" + labels
    spans = spans.assign(_row=labels)
    order = list(dict.fromkeys(spans.sort_values(["queued_ms", "_row"])["_row"]))
    fig = go.Figure()
    waited = spans[spans["start_ms"].isna() | (spans["start_ms"] > spans["queued_ms"])]
    if len(waited):
        wait_end = waited["start_ms"].fillna(waited["end_ms"])
        fig.add_bar(name="queued", orientation="h", y=waited["_row"], base=waited["queued_ms"],
                    x=wait_end - waited["queued_ms"], marker_color=OUTCOME_COLORS["queued"],
                    hovertemplate="%{y}: waited %{x:.1f} ms from %{base:.1f} ms<extra></extra>")
    ran = spans.dropna(subset=["start_ms"])
    for outcome, g in ran.groupby("outcome", sort=False):
        fig.add_bar(name=str(outcome), orientation="h", y=g["_row"], base=g["start_ms"],
                    x=g["end_ms"] - g["start_ms"], text="#" + g["attempt"].astype(str),
                    textposition="inside", marker_color=OUTCOME_COLORS.get(str(outcome)),
                    customdata=np.stack([g["agent_id"], g["action"], g["error"].fillna("")], axis=1),
                    hovertemplate=("%{y} attempt %{text}: %{base:.1f} → %{x:.1f} ms<br>"
                                   "%{customdata[0]}.%{customdata[1]}<br>%{customdata[2]}"
                                   "<extra>" + str(outcome) + "</extra>"))
    fig.update_layout(barmode="overlay", title=title, xaxis_title="time (ms)",
                      yaxis_title=y, legend_title="outcome")
    fig.update_yaxes(categoryorder="array", categoryarray=order[::-1])
    return fig


def makespan_chart(data: Any, *, kind: Literal["cdf", "histogram"] = "cdf",
                   color: str | None = None, title: str | None = None) -> go.Figure:
    """The distribution of ``makespan_ms`` over runs, with p50/p95/p99 marked.

    ``data`` is a MonteCarloResult or its ``runs`` frame; ``color`` names a column to
    split by (e.g. "status"): each CDF curve is then that group's share of all runs, so
    the curves add up to the overall CDF.
    """
    runs = getattr(data, "runs", data)
    if not isinstance(runs, pd.DataFrame) or "makespan_ms" not in runs.columns:
        raise TypeError("makespan_chart() takes a MonteCarloResult or a runs frame with "
                        "a 'makespan_ms' column")
    fig = go.Figure()
    groups = [(None, runs)] if color is None else list(runs.groupby(color, observed=True))
    for name, g in groups:
        x = np.sort(g["makespan_ms"].to_numpy(dtype=float))
        label = "all runs" if name is None else str(name)
        if kind == "cdf":
            y = np.arange(1, len(x) + 1) / len(runs)
            if len(x) > 2000:  # 2000 points draw the same curve, in a lighter figure
                keep = np.unique(np.linspace(0, len(x) - 1, 2000).astype(int))
                x, y = x[keep], y[keep]
            fig.add_scatter(x=x, y=y, mode="lines", name=label, line_shape="hv")
        else:
            fig.add_histogram(x=x, name=label, opacity=0.75)
    mk = runs["makespan_ms"].to_numpy(dtype=float)
    for q, dash, y in ((0.5, "dot", 1.0), (0.95, "dash", 0.93), (0.99, "longdash", 0.86)):
        v = float(np.quantile(mk, q))  # labels at three heights: p95 and p99 may coincide
        fig.add_vline(x=v, line_dash=dash, line_color="black",
                      annotation_text=f"p{round(q * 100)} {v:,.0f} ms",
                      annotation_position="top left", annotation_y=y,
                      annotation_bgcolor="rgba(255,255,255,0.7)")
    fig.update_layout(title=title, xaxis_title="makespan (ms)",
                      yaxis_title="fraction of runs" if kind == "cdf" else "runs",
                      barmode="overlay")
    return fig
