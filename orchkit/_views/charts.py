"""Plotly charts of tidy frames: Gantt charts of spans, makespan distributions of runs, and
a plan's DAG. One outcome colour map serves every chart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .._engine.result import SPAN_COLUMNS, RunResult
from .._spec.plan import Plan, depths, describe_plan, describe_step

GREEN, RED, ORANGE, GREY, PURPLE = "#2ca02c", "#d62728", "#ff7f0e", "#7f7f7f", "#9467bd"
OUTCOME_COLORS = {  # attempt outcomes and run statuses: the same colour in every chart
    "succeeded": GREEN,
    "error": RED,
    "failed": RED,
    "timeout": ORANGE,
    "timed_out": ORANGE,
    "cancelled": GREY,
    "skipped": "#c7c7c7",
    "rejected": PURPLE,
    "shed": "#e7ba52",  # shed or throttled (SPEC §17)
    "queued": "#aec7e8",
}
PALETTE = (
    "#1f77b4",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#8c564b",
    "#393b79",
    "#637939",
    "#843c39",
)  # groups that are not outcomes (studies, plans): none of the above
PERCENTILES = (0.5, 0.95, 0.99)


def _spans_of(data: Any) -> pd.DataFrame:
    spans = getattr(data, "spans", data)
    if not isinstance(spans, pd.DataFrame):
        raise TypeError(
            f"gantt() takes a RunResult, a MonteCarloResult or a spans DataFrame, "
            f"got {type(data).__name__}"
        )
    missing = [c for c in SPAN_COLUMNS if c not in spans.columns]
    if missing:
        raise ValueError(
            f"gantt(): the frame lacks columns {missing}; a spans frame has {SPAN_COLUMNS}"
        )
    return spans


def _slots(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Sub-lane of each interval: the lowest one free at its start (intervals sorted by
    start), so overlapping attempts of one agent sit side by side, never on each other."""
    free_at: list[float] = []
    out = np.zeros(len(start), dtype=int)
    for i in np.argsort(start, kind="stable"):
        k = next((j for j, t in enumerate(free_at) if t <= start[i]), len(free_at))
        if k == len(free_at):
            free_at.append(end[i])
        else:
            free_at[k] = end[i]
        out[i] = k
    return out


def gantt(
    data: RunResult | pd.DataFrame | Any,
    *,
    y: str = "step_id",
    run_id: Any = None,
    plan: Plan | None = None,
    title: str | None = None,
) -> go.Figure:
    """A Gantt chart of attempts: one bar per attempt on a ms axis, coloured by outcome.

    A light bar before an attempt is its wait for agent capacity (``queued_ms`` to
    ``start_ms``). Bars are labelled ``#<attempt>`` (``r<run>#<attempt>`` in agent lanes
    across runs).

    Args:
        data: A ``RunResult`` (live or simulated), a ``MonteCarloResult`` or a spans frame
            (``SPAN_COLUMNS``); times in ms from the run's (or the study's) start.
        y: ``"step_id"`` (default): one row per step (``run/step`` when there are several
            runs, ``plan/step`` across a fallback chain). ``"agent_id"``: one lane per
            agent across all runs, overlapping attempts side by side, so capacity
            contention shows as a lane as tall as the agent's capacity with queue waits
            in front. Any other column of the spans: one row per value.
        run_id: Only this run's attempts; None (default): every run in ``data``.
        plan: With step rows, the ``Plan`` whose dependencies to draw: an arrow from each
            dependency's end to the dependent's first start.
        title: The figure's title.

    Returns:
        A plotly Figure.

    Raises:
        TypeError: ``data`` has no spans frame, or ``plan`` is not a ``Plan``.
        ValueError: The frame lacks a span column, or ``y`` is not a column.

    Example:
        ```python
        plan = ok.examples.plan("parallel_analysis")
        run = ok.simulate(plan, ok.examples.models(), seed=1)
        ok.gantt(run, plan=plan)
        ```
    """
    spans = _spans_of(data)
    if y not in spans.columns:
        raise ValueError(f"gantt(): y={y!r} is not a column (columns: {list(spans.columns)})")
    if plan is not None and not isinstance(plan, Plan):
        raise TypeError(
            f"gantt(): plan must be a Plan (for dependency arrows), got {type(plan).__name__}"
        )
    if run_id is not None:
        spans = spans[spans["run_id"] == run_id]
    several_runs = spans["run_id"].nunique() > 1
    lanes = y == "agent_id"
    labels = spans[y].astype(str)
    if y == "step_id" and spans["plan_id"].nunique() > 1:
        labels = spans["plan_id"].astype(str) + "/" + labels
    if several_runs and y not in ("run_id", "agent_id"):
        labels = spans["run_id"].astype(str) + "/" + labels
    spans = spans.assign(_row=labels.to_numpy())
    order = list(dict.fromkeys(spans.sort_values(["queued_ms", "_row"], kind="stable")["_row"]))
    if lanes:  # sub-lanes inside each agent's lane: offset/width per bar
        spans = spans.assign(_slot=0, _of=1)
        for _, g in spans.groupby("_row", sort=False):
            end = g["end_ms"].fillna(g["queued_ms"]).to_numpy(dtype=float)
            slot = _slots(g["queued_ms"].to_numpy(dtype=float), end)
            spans.loc[g.index, "_slot"] = slot
            spans.loc[g.index, "_of"] = slot.max() + 1
        width = 0.8 / spans["_of"]
        spans = spans.assign(_width=width, _offset=-0.4 + spans["_slot"] * width)
    tag = "r" + spans["run_id"].astype(str) + "#" if lanes and several_runs else "#"
    spans = spans.assign(_text=tag + spans["attempt"].astype(str))

    def geometry(g: pd.DataFrame) -> dict[str, Any]:
        return {"offset": g["_offset"], "width": g["_width"]} if lanes else {}

    fig = go.Figure()
    waited = spans[spans["start_ms"].isna() | (spans["start_ms"] > spans["queued_ms"])]
    if len(waited):
        wait_end = waited["start_ms"].fillna(waited["end_ms"])
        fig.add_bar(
            name="queued",
            orientation="h",
            y=waited["_row"],
            base=waited["queued_ms"],
            x=wait_end - waited["queued_ms"],
            marker_color=OUTCOME_COLORS["queued"],
            customdata=np.stack([waited["run_id"].astype(str), waited["step_id"]], axis=1),
            hovertemplate=(
                "run %{customdata[0]} %{customdata[1]}: waited %{x:.1f} ms "
                "from %{base:.1f} ms<extra>queued</extra>"
            ),
            **geometry(waited),
        )
    ran = spans.dropna(subset=["start_ms"])
    for outcome, g in ran.groupby("outcome", sort=False):
        fig.add_bar(
            name=str(outcome),
            orientation="h",
            y=g["_row"],
            base=g["start_ms"],
            x=g["end_ms"] - g["start_ms"],
            text=g["_text"],
            textposition="inside",
            textangle=0,
            insidetextanchor="middle",
            marker_color=OUTCOME_COLORS.get(str(outcome), GREY),
            customdata=np.stack(
                [
                    g["run_id"].astype(str),
                    g["step_id"],
                    g["agent_id"],
                    g["action"],
                    g["error"].fillna(""),
                ],
                axis=1,
            ),
            hovertemplate=(
                "run %{customdata[0]}, step %{customdata[1]}, attempt "
                "%{text}: %{base:.1f} ms + %{x:.1f} ms<br>%{customdata[2]}."
                "%{customdata[3]}<br>%{customdata[4]}<extra>" + str(outcome) + "</extra>"
            ),
            **geometry(g),
        )
    if plan is not None and not lanes:
        _arrows(fig, spans, plan)
    fig.update_layout(
        barmode="overlay",
        title=title,
        xaxis_title="time (ms)",
        yaxis_title="agent (lanes: attempts in flight)" if lanes else y,
        legend_title="outcome",
        showlegend=True,  # a legend even for one outcome
        uniformtext={"minsize": 9, "mode": "hide"},
    )  # no tiny or sideways labels
    fig.update_yaxes(categoryorder="array", categoryarray=order[::-1])
    return fig


def _arrows(fig: go.Figure, spans: pd.DataFrame, plan: Plan) -> None:
    """Dependency arrows: from a dependency's last end to the dependent's first start."""
    deps = {(p.id, s.id): s.dependencies for p in plan.chain() for s in p.steps}
    key = ["run_id", "plan_id", "step_id"]
    first = spans.groupby(key, sort=False).agg(start=("start_ms", "min"), row=("_row", "first"))
    last = spans.groupby(key, sort=False).agg(end=("end_ms", "max"), row=("_row", "first"))
    for (run, plan_id, step_id), r in first.iterrows():
        for d in deps.get((plan_id, step_id), ()):
            if (run, plan_id, d) not in last.index or np.isnan(r["start"]):
                continue
            src = last.loc[(run, plan_id, d)]
            fig.add_annotation(
                x=r["start"],
                y=r["row"],
                ax=src["end"],
                ay=src["row"],
                xref="x",
                yref="y",
                axref="x",
                ayref="y",
                showarrow=True,
                arrowhead=2,
                arrowsize=1,
                arrowwidth=1,
                arrowcolor="#444",
                opacity=0.6,
                text="",
            )


# ------------------------------------------------------------------ makespan


def _runs_of(data: Any, what: str) -> pd.DataFrame:
    runs = getattr(data, "runs", data)
    if not isinstance(runs, pd.DataFrame) or "makespan_ms" not in runs.columns:
        raise TypeError(
            f"makespan_chart() takes a MonteCarloResult or a runs frame with a "
            f"'makespan_ms' column (or a list or dict of them); {what} is a "
            f"{type(data).__name__}"
        )
    return runs


def _studies(data: Any) -> tuple[pd.DataFrame, str | None]:
    """One runs frame; with several studies, a 'study' column labels each one's rows."""
    if isinstance(data, Mapping):
        items = [(str(k), v) for k, v in data.items()]
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        items = []
        for i, v in enumerate(data):
            plan = getattr(v, "plan", None)
            items.append((f"{i + 1}: {plan.id}" if plan is not None else f"study {i + 1}", v))
    else:
        return _runs_of(data, "data"), None
    if not items:
        raise ValueError("makespan_chart(): the list or dict of studies is empty")
    frames = [_runs_of(v, f"study {k!r}").assign(study=k) for k, v in items]
    return pd.concat(frames, ignore_index=True), "study"


def _group_colour(name: Any, i: int, by_outcome: bool) -> str:
    if by_outcome and str(name) in OUTCOME_COLORS:
        return OUTCOME_COLORS[str(name)]
    return PALETTE[i % len(PALETTE)]


def _pct(share: float) -> str:
    """A share as a percentage a reader can trust: 91.5%, 0.04% (never 0.0% for a few)."""
    if share == 0 or share >= 0.001:
        return f"{share:.1%}"
    return f"{100 * share:.2g}%"


def _outcome_shares(status: pd.Series) -> str:
    """``91.5% succeeded, 8.0% failed, 0.5% timed_out``: each status's share of the runs,
    in the outcome palette's order."""
    counts = status.astype(str).value_counts()
    order = [k for k in OUTCOME_COLORS if k in counts.index]
    order += [k for k in counts.index if k not in order]
    return ", ".join(f"{_pct(counts[k] / len(status))} {k}" for k in order)


def makespan_chart(
    data: Any,
    *,
    kind: Literal["cdf", "histogram"] = "cdf",
    color: str | None = None,
    title: str | None = None,
) -> go.Figure:
    """The distribution of ``makespan_ms`` over runs (ms), p50/p95/p99 marked per group.

    One study alone is one curve of all its runs (a timed-out run counts at its deadline),
    its outcome shares in the legend. Each group's curve is normalised to that group (a
    CDF ends at 1; a histogram shows the fraction of the group's runs), and its
    percentiles are marked on it (diamonds) with their 95% intervals as horizontal bars
    (one group: also as labelled vertical lines). The legend gives each study's runs and,
    when runs can fail, its success rate.

    Args:
        data: A ``MonteCarloResult`` or its ``runs`` frame; or several to compare in one
            figure: a list (labelled ``1: <plan id>``, ...) or a dict (labelled by key).
        kind: ``"cdf"`` (default) or ``"histogram"``.
        color: A column of the runs to split each study by, e.g. ``"status"`` (coloured
            by outcome): each curve is then labelled with its share of the (study's) runs,
            so a small group of failures is never read as the whole. None (default): no
            split.
        title: The figure's title.

    Returns:
        A plotly Figure.

    Raises:
        TypeError: A study is neither a ``MonteCarloResult`` nor a frame with a
            ``makespan_ms`` column.
        ValueError: ``color`` is not a column, or the list or dict is empty.

    Example:
        ```python
        plan, models = ok.examples.plan("parallel_analysis"), ok.examples.models()
        mc = ok.monte_carlo(plan, models, runs=2000, progress=False)
        ok.makespan_chart(mc, color="status")
        ok.makespan_chart({"as is": mc, "tutor 2x slower": ok.monte_carlo(
            plan, models.scaled("tutor-agent-*", latency=2), runs=2000, progress=False)})
        ```
    """
    from .._base.stats import quantile_ci, wilson_ci

    runs, study_col = _studies(data)
    if color is not None and color not in runs.columns:
        raise ValueError(
            f"makespan_chart(): color={color!r} is not a column (columns: {list(runs.columns)})"
        )
    keys = [k for k in (study_col, color) if k is not None]
    groups = (
        [(None, runs)]
        if not keys
        else list(runs.groupby(keys if len(keys) > 1 else keys[0], sort=False, observed=True))
    )
    of = (
        runs.groupby(study_col, sort=False).size() if study_col else pd.Series({None: len(runs)})
    )  # runs per study: the base of a colour group's share
    by_outcome = color is not None and study_col is None
    fig = go.Figure()
    for i, (name, g) in enumerate(groups):
        label = (
            "all runs"
            if name is None
            else (" / ".join(map(str, name)) if isinstance(name, tuple) else str(name))
        )
        colour = _group_colour(name, i, by_outcome)
        x = np.sort(g["makespan_ms"].to_numpy(dtype=float))
        n = len(x)
        if color is not None:  # a split on request: its share of the (study's) runs
            study = name[0] if isinstance(name, tuple) else None
            total = int(of[study]) if study_col else len(runs)
            whose = "of the study's runs" if study_col else "of the runs"
            legend = f"{label}: {_pct(n / total)} {whose} ({n:,})"
            if "status" in g.columns and color != "status":
                legend += f", {_pct(float((g['status'] == 'succeeded').mean()))} succeeded"
        elif name is None and "status" in g.columns:  # one study: its outcome shares
            legend = f"all runs ({n:,}): {_outcome_shares(g['status'])}"
        else:
            legend = f"{label} ({n:,} runs"
            if "status" in g.columns:
                ok, lo, hi = wilson_ci(int((g["status"] == "succeeded").sum()), n)
                legend += f", {ok:.1%} succeeded [{lo:.1%}, {hi:.1%}]"
            legend += ")"
        if kind == "cdf":
            y = np.arange(1, n + 1) / n
            if n > 2000:  # 2000 points draw the same curve, in a lighter figure
                keep = np.unique(np.linspace(0, n - 1, 2000).astype(int))
                x, y = x[keep], y[keep]
            fig.add_scatter(
                x=x,
                y=y,
                mode="lines",
                name=legend,
                line_shape="hv",
                line_color=colour,
                legendgroup=label,
                hovertemplate="%{x:,.0f} ms: %{y:.1%} of the group's runs<extra>"
                + label
                + "</extra>",
            )
        else:
            fig.add_histogram(
                x=x,
                name=legend,
                opacity=0.6,
                marker_color=colour,
                histnorm="probability" if len(groups) > 1 else None,
                legendgroup=label,
            )
        cis = [quantile_ci(g["makespan_ms"].to_numpy(dtype=float), q) for q in PERCENTILES]
        est = np.array([c[0] for c in cis])
        lo = np.array([c[1] for c in cis])
        hi = np.array([c[2] for c in cis])
        tags = [f"p{round(q * 100)}" for q in PERCENTILES]
        fig.add_scatter(
            x=est,
            y=list(PERCENTILES) if kind == "cdf" else [0] * len(est),
            mode="markers",
            marker={"color": colour, "size": 8, "symbol": "diamond"},
            legendgroup=label,
            showlegend=True,
            name=("" if name is None else f"{label}: ") + "p50, p95, p99 (bars: 95% intervals)",
            error_x={
                "type": "data",
                "symmetric": False,
                "array": np.nan_to_num(hi - est),
                "arrayminus": np.nan_to_num(est - lo),
                "color": colour,
                "thickness": 1.5,
            },
            customdata=[
                [t, *(None if np.isnan(v) else float(v) for v in (a, b))]  # NaN: not JSON
                for t, a, b in zip(tags, lo, hi)
            ],
            hovertemplate=(
                label + " %{customdata[0]}: %{x:,.0f} ms (95% interval %{customdata[1]:,.0f}"
                "–%{customdata[2]:,.0f} ms)<extra></extra>"
            ),
        )
    if len(groups) == 1:
        mk = runs["makespan_ms"].to_numpy(dtype=float)
        for q, dash, ypos in zip(PERCENTILES, ("dot", "dash", "longdash"), (1.0, 0.93, 0.86)):
            v = float(np.quantile(mk, q))  # labels at three heights: p95 and p99 may coincide
            fig.add_vline(
                x=v,
                line_dash=dash,
                line_color="black",
                annotation_text=f"p{round(q * 100)} {v:,.0f} ms",
                annotation_position="top left",
                annotation_y=ypos,
                annotation_bgcolor="rgba(255,255,255,0.7)",
            )
    fig.update_layout(
        title=title,
        xaxis_title="makespan (ms)",
        yaxis_title=(
            "fraction of the group's runs"
            if len(groups) > 1
            else "fraction of runs"
            if kind == "cdf"
            else "runs"
        ),
        barmode="overlay",
        legend={"yanchor": "bottom", "y": 0.02, "xanchor": "right", "x": 0.99},
    )
    return fig


# ------------------------------------------------------------------ the plan's DAG


def draw(plan: Plan, *, title: str | None = None) -> go.Figure:
    """The plan's DAG: steps as boxes in columns by dependency depth (plan order within a
    column), arrows for dependencies, one band per plan of the fallback chain with a red
    "fallback" arrow between bands. Hover a step for its limits (timeout in ms, retries).

    Args:
        plan: A ``Plan``.
        title: The figure's title; None (default): ``plan <id>``.

    Returns:
        A plotly Figure.

    Raises:
        TypeError: ``plan`` is not a ``Plan``.

    Example:
        ```python
        ok.draw(ok.examples.plan("graceful_degradation"))
        ```
    """
    if not isinstance(plan, Plan):
        raise TypeError(f"draw() takes a Plan, got {type(plan).__name__}")
    fig = go.Figure()
    top, half_w, half_h = 0.0, 0.42, 0.3  # y of the current band's label; box half sizes
    bands = []  # (label y, lowest box y) per plan
    chain = plan.chain()
    for k, p in enumerate(chain):
        colour = PALETTE[k % len(PALETTE)]
        depth = depths(p)
        columns: dict[int, list[str]] = {}
        for s in p.steps:
            columns.setdefault(depth[s.id], []).append(s.id)
        rows = max(len(c) for c in columns.values())
        pos = {
            sid: (float(d), top - 0.8 - i - (rows - len(ids)) / 2)
            for d, ids in columns.items()
            for i, sid in enumerate(ids)
        }
        fig.add_annotation(
            x=-half_w,
            y=top,
            xref="x",
            yref="y",
            showarrow=False,
            xanchor="left",
            text=f"<b>plan {p.id}</b>{' (fallback)' if k else ''}: {describe_plan(p)}",
        )
        for s in p.steps:
            x, y = pos[s.id]
            fig.add_shape(
                type="rect",
                x0=x - half_w,
                x1=x + half_w,
                y0=y - half_h,
                y1=y + half_h,
                line={"color": colour, "width": 1.5},
                fillcolor=colour,
                opacity=0.18,
                layer="below",
            )
            for d in s.dependencies:
                x0, y0 = pos[d]
                fig.add_annotation(
                    x=x - half_w,
                    y=y,
                    ax=x0 + half_w,
                    ay=y0,
                    xref="x",
                    yref="y",
                    axref="x",
                    ayref="y",
                    showarrow=True,
                    arrowhead=2,
                    arrowwidth=1.5,
                    arrowcolor="#555",
                    text="",
                )
        steps = list(p.steps)
        limits = [describe_step(s) for s in steps]
        fig.add_scatter(
            x=[pos[s.id][0] for s in steps],
            y=[pos[s.id][1] for s in steps],
            mode="text",
            text=[
                f"<b>{s.id}</b><br>{s.agent_id}.{s.action}" + (f"<br><i>{lim}</i>" if lim else "")
                for s, lim in zip(steps, limits)
            ],
            textfont={"size": 11},
            showlegend=False,
            name=f"plan {p.id}",
            hovertemplate="%{text}<extra>plan " + p.id + "</extra>",
        )
        bands.append((top, top - 0.8 - (rows - 1)))
        top -= rows + 1.3
    for (_, low), (label_y, _) in zip(bands, bands[1:]):
        fig.add_annotation(
            x=-half_w,
            y=label_y + 0.25,
            ax=-half_w,
            ay=low - half_h - 0.1,
            xref="x",
            yref="y",
            axref="x",
            ayref="y",
            showarrow=True,
            arrowhead=2,
            arrowcolor=RED,
            arrowwidth=1.5,
            text="",
        )
        fig.add_annotation(
            x=-half_w + 0.03,
            y=(label_y + low - half_h) / 2 + 0.05,
            xref="x",
            yref="y",
            xanchor="left",
            showarrow=False,
            font={"color": RED},
            text="fallback: runs if the plan above does not succeed",
        )
    ncols = 1 + max(max(depths(p).values()) for p in chain)
    bottom = bands[-1][1] - half_h - 0.2
    fig.update_xaxes(visible=False, range=[-0.5, ncols - 0.5])
    fig.update_yaxes(visible=False, range=[bottom, 0.35])
    fig.update_layout(
        title=title or f"plan {plan.id}",
        plot_bgcolor="white",
        showlegend=False,
        width=60 + 340 * ncols,
        height=int(110 + 80 * (0.35 - bottom)),
        margin={"l": 20, "r": 20, "t": 60, "b": 20},
    )
    return fig


def utilisation_chart(
    mc: Any,
    bin_ms: float = 1000.0,
    *,
    agents: Sequence[str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Utilisation and queue length per agent over a workload study's time (SPEC §11.5).

    Two panels sharing the time axis (ms of the study clock): ``mc.utilisation(bin_ms)``
    (attempts running / capacity; the dashed line is 1, full) and
    ``mc.queue_length(bin_ms)`` (attempts waiting for a slot), one line per agent. Outage
    windows of the models are shaded and the study's warm-up cut is marked; both are named
    in the legend (no text over the panels).

    Args:
        mc: A ``MonteCarloResult``, of a workload study (with independent runs, which all
            start at t = 0, the bins add up the runs).
        bin_ms: The width of a time bin, ms (default 1000).
        agents: The agent ids to draw; None (default): every agent with a capacity.
        title: The figure's title; None (default): the plan's id and the bin width.

    Returns:
        A plotly Figure.

    Raises:
        ValueError: ``bin_ms`` is not a finite number > 0.

    Example:
        ```python
        mc = ok.monte_carlo(ok.examples.plan("parallel_analysis"), ok.examples.models(),
                            workload=ok.Workload(rate_per_s=1, horizon_ms=300_000),
                            progress=False)
        ok.utilisation_chart(mc, bin_ms=5_000)
        ```
    """
    from plotly.subplots import make_subplots

    util = mc.utilisation(bin_ms)
    queue = mc.queue_length(bin_ms)
    if agents is None:
        agents = [a for a in sorted(set(util["agent_id"])) if mc.models.capacity(a)]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06)
    for i, agent_id in enumerate(agents):
        colour = PALETTE[i % len(PALETTE)]
        u = util[util["agent_id"] == agent_id]
        q = queue[queue["agent_id"] == agent_id]
        fig.add_scatter(
            x=u["t_ms"],
            y=u["utilisation"],
            mode="lines",
            name=agent_id,
            legendgroup=agent_id,
            line={"color": colour, "shape": "hv"},
            hovertemplate="%{y:.2f} busy<extra>" + agent_id + "</extra>",
            row=1,
            col=1,
        )
        fig.add_scatter(
            x=q["t_ms"],
            y=q["queue_length"],
            mode="lines",
            name=agent_id,
            legendgroup=agent_id,
            showlegend=False,
            line={"color": colour, "shape": "hv"},
            hovertemplate="%{y:.1f} waiting<extra>" + agent_id + "</extra>",
            row=2,
            col=1,
        )
        for k, o in enumerate(getattr(_first_model(mc, agent_id), "outages", ())):
            fig.add_vrect(
                x0=o.start_ms,
                x1=o.end_ms,
                fillcolor=RED,
                opacity=0.12,
                line_width=0,
                name=f"{agent_id} outage",
                legendgroup=f"{agent_id} outage",
                showlegend=k == 0,  # one legend entry for the agent's outages
            )
    fig.add_hline(y=1.0, line_dash="dash", line_color="#555", row=1, col=1)
    if mc.workload is not None:
        s = mc.summary()
        if s.warmup_ms > 0:
            fig.add_vline(
                x=s.warmup_ms,
                line_dash="dot",
                line_color="#555",
                name=f"warm-up cut ({s.warmup_ms:,.0f} ms)",
                showlegend=True,
            )
    seen: set[str] = set()
    for shape in fig.layout.shapes:  # a shape spanning both panels: one legend entry
        if shape.showlegend:
            shape.showlegend = shape.name not in seen
            seen.add(shape.name)
    fig.update_xaxes(title_text="study time (ms)", row=2, col=1)
    fig.update_yaxes(title_text="utilisation<br>(running / capacity)", row=1, col=1)
    fig.update_yaxes(title_text="queue<br>(attempts waiting)", row=2, col=1)
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(
        title=title or f"{mc.plan.id}: agents over time ({bin_ms:,.0f} ms bins)",
        plot_bgcolor="white",
        hovermode="x unified",
    )
    return fig


def _first_model(mc: Any, agent_id: str) -> Any:
    """The model of ``agent_id``'s first step in the study's plans (for its outages)."""
    mix = getattr(mc.workload, "plans", None)
    for plan in [p for p, _ in mix] if mix else [mc.plan]:
        for s in (s for p in plan.chain() for s in p.steps):
            if s.agent_id == agent_id:
                return mc.models.resolve(agent_id, s.action)
    return None


def critical_path_chart(data: Any, *, title: str | None = None) -> go.Figure:
    """Where a study's makespan goes (SPEC §13.3): for each step, the share of runs in which
    it lies on the critical path and its share of the makespan (left, 0–1), and its mean
    slack in ms (right: how much later it could finish without delaying its run).

    Args:
        data: A ``MonteCarloResult`` (its ``critical_path()`` is computed) or that frame.
        title: The figure's title; None (default): the plan's id and the runs analysed.

    Returns:
        A plotly Figure.

    Raises:
        TypeError: ``data`` is neither of those.
        PlanValidationError: The study kept no spans.

    Example:
        ```python
        mc = ok.monte_carlo(ok.examples.plan("parallel_analysis"), ok.examples.models(),
                            runs=2000, progress=False)
        ok.critical_path_chart(mc)
        ```
    """
    from plotly.subplots import make_subplots

    frame = data.critical_path() if hasattr(data, "critical_path") else data
    need = ["plan_id", "step_id", "criticality", "makespan_share", "slack_mean_ms"]
    if not isinstance(frame, pd.DataFrame) or any(c not in frame.columns for c in need):
        raise TypeError(
            "critical_path_chart() takes a MonteCarloResult or the frame of its "
            f"critical_path(), got {type(data).__name__}"
        )
    several = frame["plan_id"].nunique() > 1
    labels = [
        f"{p} / {s}" if several else str(s) for p, s in zip(frame["plan_id"], frame["step_id"])
    ]
    slack = frame["slack_mean_ms"].fillna(0.0).to_numpy(dtype=float)
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.06,
        subplot_titles=("on the critical path", "slack"),
    )
    hover = [
        f"{r.step_id} ({r.agent_id}, {r.action}): critical in {r.criticality:.1%} of runs, "
        f"{r.makespan_share:.1%} of the makespan, mean slack {r.slack_mean_ms:,.0f} ms"
        for r in frame.itertuples()
    ]
    fig.add_bar(
        y=labels,
        x=frame["criticality"],
        orientation="h",
        name="share of runs on the critical path (criticality index)",
        marker_color=PALETTE[0],
        hovertext=hover,
        row=1,
        col=1,
    )
    fig.add_bar(
        y=labels,
        x=frame["makespan_share"],
        orientation="h",
        name="share of the makespan it accounts for",
        marker_color=PALETTE[1],
        hovertext=hover,
        row=1,
        col=1,
    )
    fig.add_bar(
        y=labels,
        x=slack,
        orientation="h",
        name="mean slack (ms)",
        marker_color=GREY,
        hovertext=hover,
        row=1,
        col=2,
    )
    top = float(slack.max()) if len(slack) else 0.0
    fig.update_xaxes(title_text="share (0 to 1)", range=[0, 1.05], row=1, col=1)
    fig.update_xaxes(title_text="mean slack (ms)", range=[0, top * 1.08 or 1.0], row=1, col=2)
    fig.update_yaxes(autorange="reversed", title_text="step", row=1, col=1)
    runs = frame.attrs.get("runs")
    fig.update_layout(
        title=title
        or f"{frame.attrs.get('plan_id', frame['plan_id'].iloc[0])}: critical path"
        + (f" over {runs:,} runs" if runs else ""),
        barmode="group",
        plot_bgcolor="white",
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0},
        margin={"b": 120},
    )
    return fig
