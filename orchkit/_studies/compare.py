"""Validation (SPEC §7.4): observed runs next to predicted ones, with intervals, a
two-sample KS test of the makespans and overlaid CDFs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .._base.stats import mean_ci, quantile_ci, wilson_ci
from .._spec.fitting import require_scipy

COMPARE_COLUMNS = [
    "observed",
    "observed_ci_low",
    "observed_ci_high",
    "predicted",
    "predicted_ci_low",
    "predicted_ci_high",
    "relative",
    "overlap",
]


def _runs_of(data: Any, what: str, time_scale: float | None) -> tuple[pd.DataFrame, float]:
    """A frame with ``makespan_ms`` and ``status`` from a RunResult, a list of them, a
    MonteCarloResult or a runs frame; live makespans divided by the runs' time scale."""
    if isinstance(data, pd.DataFrame):
        frame = data
    elif hasattr(data, "runs") and isinstance(data.runs, pd.DataFrame):
        frame = data.runs
    else:
        results = [data] if hasattr(data, "duration_ms") else data
        try:
            results = list(results)
            frame = pd.DataFrame(
                {
                    "makespan_ms": [r.duration_ms for r in results],
                    "status": [r.status for r in results],
                }
            )
        except (TypeError, AttributeError):
            raise TypeError(
                f"{what} must be a RunResult, a list of them, a MonteCarloResult or "
                f"a runs frame, got {type(data).__name__}"
            ) from None
        if time_scale is None:
            scales = {s for r in results for s in (getattr(r, "time_scale", None) or {}).values()}
            if len(scales) > 1:
                raise ValueError(
                    f"{what}: its agents ran at different time scales {sorted(scales)}; "
                    "a makespan cannot be rescaled to model ms: pass time_scale="
                )
            time_scale = scales.pop() if scales else None
    missing = {"makespan_ms", "status"} - set(frame.columns)
    if missing or frame.empty:
        raise ValueError(
            f"{what}: need runs with columns makespan_ms and status "
            f"(missing: {sorted(missing) or 'none'}; runs: {len(frame)})"
        )
    _check_makespans(frame, what)
    if time_scale is not None and (
        isinstance(time_scale, bool)
        or not isinstance(time_scale, (int, float))
        or not 0 < time_scale < math.inf
    ):
        raise ValueError(f"{what}: time_scale must be a finite number > 0, got {time_scale!r}")
    return frame, 1.0 if time_scale is None else float(time_scale)


def _check_makespans(frame: pd.DataFrame, what: str) -> None:
    """Every run's ``makespan_ms`` is a finite number >= 0, else ``ValueError`` naming
    the column, the count and the first rows (by the frame's index)."""
    raw = frame["makespan_ms"]
    mk = pd.to_numeric(raw, errors="coerce").astype(float).to_numpy()
    bad = ~(np.isfinite(mk) & (mk >= 0))
    if bad.any():
        rows = frame.index[bad]
        first = ", ".join(str(i) for i in rows[:5]) + (", …" if len(rows) > 5 else "")
        value = raw.iloc[int(np.argmax(bad))]
        value = getattr(value, "item", lambda: value)()
        raise ValueError(
            f"{what}: column 'makespan_ms' has {len(rows)} bad value(s) in {len(frame)} runs "
            f"(not a finite number of ms >= 0, e.g. {value!r:.40}) at row(s) {first}; "
            "fix or drop those runs"
        )


_METRICS = (
    "makespan_mean_ms",
    "makespan_p50_ms",
    "makespan_p95_ms",
    "makespan_p99_ms",
    "success_rate",
)


def _metrics(data: Any, frame: pd.DataFrame, scale: float) -> tuple[dict[str, tuple], np.ndarray]:
    """The metrics with 95% intervals: a workload study's own (its runs share agents, so
    i.i.d. intervals would be far too narrow: batch means or replications, as its
    ``summary()`` says), else the i.i.d. ones of independent runs."""
    mk = frame["makespan_ms"].to_numpy(dtype=float) / scale
    if getattr(data, "workload", None) is not None and hasattr(data, "summary"):
        table = data.summary().metrics
        return {
            m: tuple(float(v) for v in table.loc[m, ["value", "ci_low", "ci_high"]])
            for m in _METRICS
        }, mk
    out = {"makespan_mean_ms": mean_ci(mk)}
    for q in (0.5, 0.95, 0.99):
        out[f"makespan_p{round(q * 100)}_ms"] = quantile_ci(mk, q)
    out["success_rate"] = wilson_ci(int((frame["status"] == "succeeded").sum()), len(frame))
    return out, mk


class Comparison(pd.DataFrame):
    """``ok.compare``'s table: a DataFrame with one row per metric (``makespan_mean_ms``,
    ``makespan_p50_ms``, ``makespan_p95_ms``, ``makespan_p99_ms``, ``success_rate``) and
    the columns ``observed``, ``predicted`` (each with ``_ci_low``/``_ci_high``: its 95%
    interval; times in ms), ``relative`` (predicted / observed − 1) and ``overlap`` (True
    when the two intervals overlap).

    Attributes:
        ks_stat (float): The two-sample KS statistic D of the makespans.
        ks_p (float): Its p-value (assumes independent runs).
    """

    _metadata = ["ks_stat", "ks_p", "_samples"]

    @property
    def _constructor(self) -> type:
        return Comparison

    def _ks_line(self) -> str:
        ks, p = getattr(self, "ks_stat", None), getattr(self, "ks_p", None)
        return "" if ks is None else f"two-sample KS on makespan_ms: D = {ks:.4f}, p = {p:.4g}"

    def __repr__(self) -> str:
        return super().__repr__() + "\n" + self._ks_line()

    def _repr_html_(self) -> str:
        return (super()._repr_html_() or "") + f"<p>{self._ks_line()}</p>"

    def chart(self, title: str | None = None) -> Any:
        """The two makespan distributions, overlaid, and where they differ; times in ms.

        Top: the observed and predicted makespan CDFs, each side's p50/p95/p99 marked with
        its 95% interval (this table's rows). Bottom: their difference, predicted −
        observed, in percentage points of runs, with the KS statistic D marked where it is
        largest. The makespan axis is logarithmic when the slowest run took over 5× the
        median (a few runs at a 60 s deadline would otherwise squeeze the bulk, where the
        two differ, into a corner).

        Args:
            title: The figure's title; None (default): the KS statistic and p-value.

        Returns:
            A plotly Figure.
        """
        from plotly.subplots import make_subplots

        colours = ("#1f77b4", "#e377c2")  # observed, predicted: not outcome colours
        samples = [(name, np.sort(np.asarray(x, dtype=float))) for name, x in self._samples.items()]
        pooled = np.concatenate([x for _, x in samples])
        log = bool(pooled.min() > 0 and pooled.max() > 5 * np.median(pooled))
        fig = make_subplots(
            rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.06
        )
        tags = ("p50", "p95", "p99")
        for (name, x), colour, side in zip(samples, colours, ("observed", "predicted")):
            y = np.arange(1, len(x) + 1) / len(x)
            xs, ys = x, y
            if len(x) > 2000:
                keep = np.unique(np.linspace(0, len(x) - 1, 2000).astype(int))
                xs, ys = x[keep], y[keep]
            fig.add_scatter(
                x=xs,
                y=ys,
                mode="lines",
                name=name,
                line={"shape": "hv", "color": colour},
                legendgroup=side,
                row=1,
                col=1,
            )
            rows = [f"makespan_{t}_ms" for t in tags]
            est = self.loc[rows, side].to_numpy(dtype=float)
            lo = self.loc[rows, f"{side}_ci_low"].to_numpy(dtype=float)
            hi = self.loc[rows, f"{side}_ci_high"].to_numpy(dtype=float)
            fig.add_scatter(
                x=est,
                y=[0.5, 0.95, 0.99],
                mode="markers",
                name=f"{side}: p50, p95, p99 (bars: 95% intervals)",
                marker={"color": colour, "symbol": "diamond", "size": 8},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": np.nan_to_num(hi - est),
                    "arrayminus": np.nan_to_num(est - lo),
                    "color": colour,
                },
                customdata=list(tags),
                hovertemplate=side + " %{customdata}: %{x:,.0f} ms<extra></extra>",
                legendgroup=side,
                row=1,
                col=1,
            )
        (_, obs), (_, pred) = samples
        grid = np.unique(np.quantile(pooled, np.linspace(0, 1, 2001)))
        at = np.concatenate([obs, pred])
        gap = np.searchsorted(pred, at, side="right") / len(pred) - np.searchsorted(
            obs, at, side="right"
        ) / len(obs)
        k = int(np.argmax(np.abs(gap)))  # where D is reached (a jump point of either side)
        grid = np.unique(np.append(grid, at[k]))
        diff = np.searchsorted(pred, grid, side="right") / len(pred) - np.searchsorted(
            obs, grid, side="right"
        ) / len(obs)
        fig.add_scatter(
            x=grid,
            y=100 * diff,
            mode="lines",
            name="predicted − observed",
            line={"shape": "hv", "color": "#555"},
            row=2,
            col=1,
        )
        fig.add_scatter(
            x=[at[k]],
            y=[100 * gap[k]],
            mode="markers",
            name=f"KS D = {self.ks_stat:.3f} at {at[k]:,.0f} ms",
            marker={"color": "#d62728", "size": 9},
            row=2,
            col=1,
        )
        fig.add_hline(y=0, line_color="#999", line_width=1, row=2, col=1)
        fig.update_xaxes(type="log" if log else "linear")
        fig.update_xaxes(title_text="makespan (ms" + (", log scale)" if log else ")"), row=2, col=1)
        fig.update_yaxes(title_text="fraction of runs", row=1, col=1)
        fig.update_yaxes(title_text="difference<br>(% of runs)", row=2, col=1)
        fig.update_layout(
            title=title
            or f"makespan, observed vs predicted: two-sample KS D = {self.ks_stat:.3f}, "
            f"p = {self.ks_p:.3g}",
            legend={"orientation": "h", "yanchor": "top", "y": -0.2, "xanchor": "left", "x": 0},
            height=600,  # the legend below the panels: never over a curve
        )
        return fig


def compare(observed: Any, predicted: Any, *, time_scale: float | None = None) -> Comparison:
    """Observed runs (e.g. a held-out live trace) next to predicted ones (a simulation),
    SPEC §7.4: makespan mean/p50/p95/p99 (ms) and success rate with 95% intervals, and a
    two-sample KS test of the makespans.

    A workload study's intervals are its own steady-state ones (``summary()``); the KS
    p-value assumes independent runs, so for a workload study read D, not p.

    Args:
        observed: A ``RunResult``, a list of them, a ``MonteCarloResult`` or a runs frame
            (``makespan_ms`` and ``status`` columns). Live runs of agents with a
            ``time_scale`` (``SyntheticAgent``) are rescaled to model ms.
        predicted: The same kinds.
        time_scale: The observed runs' time scale, > 0: their makespans are divided by it;
            None (default): the one the runs carry, else 1.

    Returns:
        The table (one row per metric; see ``Comparison``) with ``ks_stat``, ``ks_p``
            and ``chart()``.

    Raises:
        TypeError: A side is none of the kinds above.
        ValueError: A side has no runs, lacks a column, has a makespan that is not a
            finite number of ms >= 0, mixes time scales, or ``time_scale`` is not a
            finite number > 0.
        MissingDependencyError: scipy is not installed.

    Example:
        ```python
        plan, models = ok.examples.plan("parallel_analysis"), ok.examples.models()
        observed = [ok.simulate(plan, models, seed=s) for s in range(200)]
        predicted = ok.monte_carlo(plan, models, runs=2000, seed=1, progress=False)
        table = ok.compare(observed, predicted)
        table.chart()
        ```
    """
    stats = require_scipy()
    obs_frame, obs_scale = _runs_of(observed, "observed", time_scale)
    pred_frame, pred_scale = _runs_of(predicted, "predicted", None)
    obs, obs_mk = _metrics(observed, obs_frame, obs_scale)
    pred, pred_mk = _metrics(predicted, pred_frame, pred_scale)
    rows = {}
    for metric in obs:
        o, p = obs[metric], pred[metric]
        rows[metric] = (
            *o,
            *p,
            p[0] / o[0] - 1 if o[0] else math.nan,
            bool(o[1] <= p[2] and p[1] <= o[2]) if not any(map(math.isnan, (*o, *p))) else False,
        )
    table = Comparison(pd.DataFrame.from_dict(rows, orient="index", columns=COMPARE_COLUMNS))
    table.index.name = "metric"
    ks = stats.ks_2samp(obs_mk, pred_mk)
    table.ks_stat, table.ks_p = float(ks.statistic), float(ks.pvalue)
    table._samples = {
        f"observed ({len(obs_mk)} runs)": obs_mk,
        f"predicted ({len(pred_mk)} runs)": pred_mk,
    }
    return table
