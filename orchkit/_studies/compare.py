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
    return frame, 1.0 if time_scale is None else float(time_scale)


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
    """``ok.compare``'s table (one row per metric: observed and predicted values with 95%
    intervals, ``relative`` = predicted / observed − 1, ``overlap`` of the intervals), with
    the two-sample KS test of the makespans in ``ks_stat`` / ``ks_p`` and ``chart()``."""

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
        """Plotly figure: the observed and predicted makespan CDFs, overlaid."""
        import plotly.graph_objects as go

        fig = go.Figure()
        for name, x in self._samples.items():
            x = np.sort(x)
            y = np.arange(1, len(x) + 1) / len(x)
            if len(x) > 2000:
                keep = np.unique(np.linspace(0, len(x) - 1, 2000).astype(int))
                x, y = x[keep], y[keep]
            fig.add_scatter(x=x, y=y, mode="lines", name=name, line_shape="hv")
        fig.update_layout(
            title=title
            or f"makespan CDFs: two-sample KS D = {self.ks_stat:.3f}, p = {self.ks_p:.3g}",
            xaxis_title="makespan (ms)",
            yaxis_title="fraction of runs",
        )
        return fig


def compare(observed: Any, predicted: Any, *, time_scale: float | None = None) -> Comparison:
    """Observed runs (e.g. a held-out live trace) next to predicted ones (a simulation):
    makespan mean/p50/p95/p99 (ms) and success rate with 95% intervals, and a two-sample
    KS test of the makespans. Each side is a RunResult, a list of them, a MonteCarloResult
    or a runs frame. Live runs of agents with a ``time_scale`` (SyntheticAgent) are
    rescaled to model ms (or pass ``time_scale=`` for the observed side). A workload
    study's intervals are its own steady-state ones (``summary()``); the KS p-value
    assumes independent runs, so for a workload study read D, not p."""
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
