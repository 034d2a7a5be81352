"""The learning-analytics chart: ``outcomes``' table in, a plotly figure out (one panel per
dimension: tutor outcome, latency band, ...; a bar per group with its bootstrap interval)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from .charts import GREEN, GREY, ORANGE, PALETTE, PURPLE, RED

OUTCOME_COLORS = {  # join()'s outcomes, in the palette of the run charts
    "ok": GREEN,
    "fallback": "#1f77b4",
    "timeout": ORANGE,
    "shed": PURPLE,
    "error": RED,
    "none": GREY,
    "unknown": "#c7c7c7",
}
LABELS = {
    "gain": "mastery gain per interaction",
    "norm_gain": "learning rate (gain / gap left)",
    "next_correct": "share of next responses correct",
}
DIMENSIONS = {"outcome": "tutor outcome", "latency": "tutor latency"}
DIGITS = 6  # values drawn to 6 decimals: no last-bit noise of float sums in the figure


def outcomes_chart(table: pd.DataFrame, *, metric: str, title: str | None = None) -> go.Figure:
    """Bars of ``metric`` per group, one panel per dimension of ``table`` (the frame of
    ``ok.analytics.outcomes``), with the interval as error bars and n under each bar."""
    from plotly.subplots import make_subplots

    rows = table.xs(metric, level="metric").round(DIGITS)  # the same figure on any machine
    dims = list(dict.fromkeys(rows.index.get_level_values("by")))
    fig = make_subplots(
        rows=1,
        cols=max(1, len(dims)),
        subplot_titles=[DIMENSIONS.get(d, str(d)) for d in dims],
        shared_yaxes=True,
        horizontal_spacing=0.06,
    )
    for col, dim in enumerate(dims, start=1):
        part = rows.xs(dim, level="by")
        groups = [str(g) for g in part.index]
        colours = [
            OUTCOME_COLORS.get(g, PALETTE[i % len(PALETTE)]) if dim == "outcome" else PALETTE[0]
            for i, g in enumerate(groups)
        ]
        fig.add_trace(
            go.Bar(
                x=[f"{g}<br>n={n:,}" for g, n in zip(groups, part["n"])],
                y=part["value"],
                marker_color=colours,
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": part["ci_high"] - part["value"],
                    "arrayminus": part["value"] - part["ci_low"],
                    "color": "#444",
                },
                customdata=part[["ci_low", "ci_high", "diff", "diff_low", "diff_high"]].to_numpy(),
                hovertemplate=(
                    "%{x}<br>%{y:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}]"
                    "<br>vs first: %{customdata[2]:+.3f} [%{customdata[3]:+.3f}, "
                    "%{customdata[4]:+.3f}]<extra></extra>"
                ),
                showlegend=False,
            ),
            row=1,
            col=col,
        )
    fig.update_yaxes(title_text=LABELS.get(metric, metric), row=1, col=1)
    fig.update_layout(
        title=title
        or f"{LABELS.get(metric, metric).capitalize()}, by how the tutor served it "
        "(bootstrap intervals over learners)",
        template="plotly_white",
        bargap=0.35,
        height=420,
    )
    return fig
