"""What a study returns (SPEC §4.4, §11): ``MonteCarloResult`` (the runs and spans frames,
utilisation and queue length over time) and ``Summary`` (headline metrics with 95%
intervals computed the way the study's design allows)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._base.stats import (
    QUANTILE_BATCHES,
    batches_for,
    mean_ci,
    mser5,
    quantile_ci,
    section_ci,
    steady_mean_ci,
    steady_proportion_ci,
    steady_quantile_ci,
    wilson_ci,
)
from .._engine.result import BREAKER_COLUMNS, OVERLOAD_COLUMNS
from .._spec.models import AgentModels
from .._spec.plan import Plan
from .._spec.workload import Workload


@dataclass
class Summary:
    """Headline figures of a study, with 95% intervals (``MonteCarloResult.summary()``).

    ``summary[metric]`` is a metric's value (``summary["makespan_p95_ms"]``); ``describe()``
    says in one line how the intervals were computed.

    Attributes:
        metrics: One row per metric (index ``metric``: ``makespan_mean_ms``,
            ``makespan_p50_ms``/``p95``/``p99``, ``makespan_ok_p50_ms``/``p95``/``p99``
            (succeeded runs only), ``success_rate``, ``attempts_per_run``,
            ``retries_per_run``, ``timeout_rate``, ``fallback_rate``, ``useful_rate`` (runs
            that succeeded within the workload's ``give_up_ms`` of arriving; without one,
            the success rate), ``goodput_per_s`` (useful runs per second: the arrival rate
            times ``useful_rate``; NaN for independent runs, which do not arrive over
            time), ``shed_per_run`` (attempts shed or throttled per run, SPEC §17)), with
            columns
            ``runs`` (the runs it counts), ``value``, ``ci_low``, ``ci_high``; times in ms.
        agents: One row per agent: ``agent_id``, ``capacity``, ``busy_ms`` (time its
            attempts ran, ms), ``mean_in_flight``, ``utilisation`` (mean_in_flight /
            capacity), ``queue_wait_mean_ms`` and ``queue_wait_p95_ms`` (how long attempts
            waited for a slot, from the kept spans; NaN when none were kept).
        method: How the intervals were computed: ``"independent runs"`` (exact i.i.d.
            intervals), ``"batch means"`` (one workload study, ``sections`` batches;
            quantiles at most 10) or ``"replications"`` (``sections`` independent studies).
        sections: The batches or replications; None for independent runs.
        warmup: ``"none"``, ``"MSER-5"`` (found from the data) or ``"given"``
            (``warmup_ms=``).
        warmup_ms: Runs arriving before this were left out, ms (with replications: the
            mean over them).
        warmup_runs: How many runs the warm-up left out.
    """

    metrics: pd.DataFrame
    agents: pd.DataFrame
    method: str = "independent runs"
    sections: int | None = None
    warmup: str = "none"
    warmup_ms: float = 0.0
    warmup_runs: int = 0

    def __getitem__(self, metric: str) -> float:
        return float(self.metrics.loc[metric, "value"])

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON values (NaN as None).

        Returns:
            ``{"metrics": {metric: {runs, value, ci_low, ci_high}}, "agents": [row, ...],
                "intervals": {method, sections, warmup, warmup_ms, warmup_runs}}``.
        """
        return {
            "metrics": {
                k: {c: _nan_none(v) for c, v in row.items()}
                for k, row in self.metrics.to_dict(orient="index").items()
            },
            "agents": [
                {k: _nan_none(v) for k, v in row.items()}
                for row in self.agents.to_dict(orient="records")
            ],
            "intervals": {
                "method": self.method,
                "sections": self.sections,
                "warmup": self.warmup,
                "warmup_ms": self.warmup_ms,
                "warmup_runs": self.warmup_runs,
            },
        }

    def describe(self) -> str:
        """One line: how the intervals were computed and what warm-up was left out."""
        how = {
            "batch means": f"batch means ({self.sections} batches, at most "
            f"{QUANTILE_BATCHES} for quantiles)",
            "replications": f"{self.sections} independent replications",
        }.get(self.method, self.method)
        if self.warmup == "none":
            return f"95% intervals: {how}"
        return (
            f"95% intervals: {how}, after a warm-up of {self.warmup_ms:,.0f} ms "
            f"({self.warmup_runs} runs left out, {self.warmup})"
        )

    def __repr__(self) -> str:
        head = "" if self.method == "independent runs" else self.describe() + "\n\n"
        return (
            head
            + self.metrics.to_string(float_format=lambda v: f"{v:,.3f}")
            + "\n\n"
            + self.agents.to_string(index=False, float_format=lambda v: f"{v:,.3f}")
        )

    def _repr_html_(self) -> str:
        head = "" if self.method == "independent runs" else f"<p>{self.describe()}</p>"
        return (
            head
            + self.metrics.to_html(float_format=lambda v: f"{v:,.3f}")
            + self.agents.to_html(index=False, float_format=lambda v: f"{v:,.3f}")
        )


def _integral(sorted_times: np.ndarray, at: np.ndarray) -> np.ndarray:
    """sum(max(0, t - x) for x in sorted_times), for every t in ``at``."""
    k = np.searchsorted(sorted_times, at, side="right")
    cum = np.concatenate([[0.0], np.cumsum(sorted_times)])
    return k * at - cum[k]


def _nan_none(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


_RATES = (
    ("success_rate", "status", "succeeded"),
    ("timeout_rate", "status", "timed_out"),
    ("fallback_rate", "fallback_used", True),
)
_MEANS = (
    ("attempts_per_run", "attempts"),
    ("retries_per_run", "retries"),
    ("shed_per_run", "shed"),
)
_QUANTILES = (0.5, 0.95, 0.99)


def _metrics_iid(runs: pd.DataFrame) -> dict[str, tuple[float, float, float]]:
    """Exact intervals for independent runs."""
    mk = runs["makespan_ms"].to_numpy(dtype=float)
    rows = {"makespan_mean_ms": mean_ci(mk)}
    mk_ok = mk[(runs["status"] == "succeeded").to_numpy()]  # an SLO is about answers
    for q in _QUANTILES:
        rows[f"makespan_p{round(q * 100)}_ms"] = quantile_ci(mk, q)
        rows[f"makespan_ok_p{round(q * 100)}_ms"] = quantile_ci(mk_ok, q)
    rows["success_rate"] = wilson_ci(int((runs["status"] == "succeeded").sum()), len(runs))
    for name, col in _MEANS:
        rows[name] = mean_ci(runs[col].to_numpy(dtype=float))
    for name, col, value in _RATES[1:]:
        rows[name] = wilson_ci(int((runs[col] == value).sum()), len(runs))
    rows["useful_rate"] = rows["success_rate"]  # no clients to give up
    rows["goodput_per_s"] = (math.nan, math.nan, math.nan)  # runs do not arrive over time
    return _order(rows)


def _useful(runs: pd.DataFrame, give_up_ms: float | None) -> np.ndarray:
    """Per run: it succeeded within ``give_up_ms`` of its arrival (SPEC §17.2)."""
    ok = (runs["status"] == "succeeded").to_numpy()
    if give_up_ms is None:
        return ok
    return ok & (runs["makespan_ms"].to_numpy(dtype=float) <= give_up_ms)


def _metrics_batched(
    runs: pd.DataFrame, give_up_ms: float | None, rate_per_s: float
) -> tuple[dict[str, tuple[float, float, float]], int]:
    """Batch-means / sectioning intervals for one warm-up-free study, runs in arrival order;
    ``rate_per_s``: the arrival rate over the runs kept (goodput = rate x useful rate)."""
    b = batches_for(len(runs))
    mk = runs["makespan_ms"].to_numpy(dtype=float)
    rows = {"makespan_mean_ms": steady_mean_ci(mk, b)}
    mk_ok = mk[(runs["status"] == "succeeded").to_numpy()]  # in arrival order too
    for q in _QUANTILES:
        rows[f"makespan_p{round(q * 100)}_ms"] = steady_quantile_ci(mk, q, b)
        rows[f"makespan_ok_p{round(q * 100)}_ms"] = steady_quantile_ci(
            mk_ok, q, batches_for(len(mk_ok))
        )
    for name, col, value in _RATES:
        rows[name] = steady_proportion_ci((runs[col] == value).to_numpy(), b)
    for name, col in _MEANS:
        rows[name] = steady_mean_ci(runs[col].to_numpy(dtype=float), b)
    useful = rows["useful_rate"] = steady_proportion_ci(_useful(runs, give_up_ms), b)
    rows["goodput_per_s"] = (rate_per_s * useful[0], rate_per_s * useful[1], rate_per_s * useful[2])
    return _order(rows), b


def _metrics_replicated(
    parts: list[pd.DataFrame], give_up_ms: float | None, rates: list[float]
) -> dict[str, tuple[float, float, float]]:
    """Intervals from independent replications: the pooled estimate, the spread of the
    replications' own estimates (``section_ci`` with ``correlated=False``); ``rates``: each
    replication's arrival rate over its runs kept, runs/s."""
    pooled = pd.concat(parts)

    def ci(stat: Any) -> tuple[float, float, float]:
        return section_ci(stat(pooled), np.array([stat(p) for p in parts]), correlated=False)

    rows = {"makespan_mean_ms": ci(lambda d: float(d["makespan_ms"].mean()))}
    for q in _QUANTILES:
        rows[f"makespan_p{round(q * 100)}_ms"] = ci(lambda d, q=q: _quantile(d["makespan_ms"], q))
        rows[f"makespan_ok_p{round(q * 100)}_ms"] = ci(
            lambda d, q=q: _quantile(d.loc[d["status"] == "succeeded", "makespan_ms"], q)
        )
    for name, col, value in _RATES:
        p, lo, hi = ci(lambda d, c=col, v=value: float((d[c] == v).mean()))
        rows[name] = (p, max(0.0, lo), min(1.0, hi))
    for name, col in _MEANS:
        rows[name] = ci(lambda d, c=col: float(d[c].mean()))
    shares = np.array([_useful(p, give_up_ms).mean() for p in parts])
    p, lo, hi = section_ci(float(_useful(pooled, give_up_ms).mean()), shares, correlated=False)
    rows["useful_rate"] = (p, max(0.0, lo), min(1.0, hi))
    goodputs = np.array(rates) * shares
    rows["goodput_per_s"] = section_ci(float(goodputs.mean()), goodputs, correlated=False)
    return _order(rows)


def _arrival_rate(workload: Workload, runs: pd.DataFrame, cut: float) -> float:
    """The arrival rate over the runs kept (arriving from ``cut`` ms on), runs/s: the
    workload's own where it fixes one (an estimate would add noise the interval of the
    useful rate does not carry), else the runs counted over the time they arrived in."""
    arrivals = runs["arrival_ms"].to_numpy(dtype=float)
    end = workload.horizon_ms if workload.horizon_ms is not None else float(arrivals.max(initial=0))
    rate = workload.mean_rate_per_s(cut, end)
    if rate is not None:
        return rate
    return 1000.0 * len(arrivals) / (end - cut) if end > cut else math.nan


def _quantile(x: pd.Series, q: float) -> float:
    return float(np.quantile(x.to_numpy(dtype=float), q)) if len(x) else math.nan


#: The summary's metrics, in the order ``Summary.metrics`` lists them (times in ms).
METRIC_NAMES = (
    ("makespan_mean_ms",)
    + tuple(f"makespan_p{round(q * 100)}_ms" for q in _QUANTILES)
    + tuple(f"makespan_ok_p{round(q * 100)}_ms" for q in _QUANTILES)
    + ("success_rate", "attempts_per_run", "retries_per_run", "timeout_rate", "fallback_rate")
    + ("useful_rate", "goodput_per_s")
    + ("shed_per_run",)
)


def _order(rows: dict[str, Any]) -> dict[str, Any]:
    return {k: rows[k] for k in METRIC_NAMES}


@dataclass
class MonteCarloResult:
    """What ``ok.monte_carlo`` returns: tidy frames of the runs and their attempts, and
    the figures computed from them (``summary()``, ``utilisation()``, ``queue_length()``,
    ``critical_path()``).

    Attributes:
        plan: The plan studied (with a workload's mix: its first plan).
        models: The agent models used.
        seed: The study's seed.
        runs: One row per run (``RUN_COLUMNS``; times in ms on the study's clock).
        spans: One row per kept attempt (``SPAN_COLUMNS``; see ``keep_spans``), in ms
            from each run's start (independent runs) or from the study's start (a
            workload study).
        busy_ms: Agent id -> total time its attempts ran, ms.
        observed_ms: The time the agents were observed, ms: the sum of the makespans
            (independent runs) or the study's length (a workload study).
        workload: The workload; None for independent runs.
        method: The path taken: ``"simpy"`` or ``"fast"``.
        method_reason: Why that path.
        breakers: Circuit breaker transitions: ``run_id`` (None in a workload study, whose
            breakers are shared), ``t_ms``, ``agent_id``, ``event``
            (``breaker:opened``/``half_open``/``closed``), ``failure_rate``,
            ``slow_call_rate``.
        overload: Overload changes (SPEC §17): ``run_id`` (as in ``breakers``), ``t_ms``,
            ``agent_id``, ``event`` (``admission:limit_changed``: ``value`` is the new
            usable limit; ``autoscale:scaled``: ``value`` is the capacity now in effect).
        warmup_ms: The warm-up given (ms), or None: MSER-5 finds it.
        replications: Independent studies of the workload; with more than one, ``runs``
            and ``spans`` have a ``replication`` column.

    Example:
        ```python
        mc = ok.monte_carlo(ok.examples.plan("parallel_analysis"), ok.examples.models(),
                            runs=2000, progress=False)
        mc.summary()["makespan_p95_ms"]  # about 15,900 ms
        mc.runs.groupby("status", observed=True).size()
        ```
    """

    plan: Plan
    models: AgentModels
    seed: int
    runs: pd.DataFrame
    spans: pd.DataFrame
    busy_ms: dict[str, float]
    observed_ms: float
    workload: Workload | None = None
    method: str = "simpy"
    method_reason: str = ""
    breakers: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=BREAKER_COLUMNS))
    overload: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=OVERLOAD_COLUMNS))
    warmup_ms: float | None = None
    replications: int = 1
    _summary: Summary | None = field(default=None, repr=False)

    def summary(self) -> Summary:
        """The headline figures, each with its 95% interval (computed once, then kept).

        Mean/p50/p95/p99 makespan (ms): ``makespan_p95_ms`` over all runs,
        ``makespan_ok_p95_ms`` over succeeded runs only (the one an SLO is about); success
        rate, attempts and retries per run, timeout and fallback rates; each agent's
        utilisation and queue waits. The intervals (SPEC §11.1): exact i.i.d. intervals
        for independent runs; for a workload study, batch means after warm-up deletion
        (MSER-5 unless ``warmup_ms`` was given), or independent replications.

        Returns:
            The summary: ``metrics`` and ``agents`` frames, ``method`` of the intervals.
        """
        if self._summary is not None:
            return self._summary
        runs = self.runs
        extra: dict[str, Any] = {}
        if self.workload is None:
            used = runs
            rows = _metrics_iid(runs)
        else:
            parts, cuts = [], []
            groups = (
                [g for _, g in runs.groupby("replication", sort=True)]
                if self.replications > 1
                else [runs]
            )
            rates = []
            for g in groups:
                g = g.sort_values("run_id", kind="stable")  # arrival order
                if self.warmup_ms is None:
                    d = mser5(g["makespan_ms"].to_numpy(dtype=float))
                    cut = float(g["arrival_ms"].iloc[d]) if d else 0.0
                else:
                    cut = float(self.warmup_ms)
                cuts.append(cut)
                parts.append(g[g["arrival_ms"] >= cut])
                rates.append(_arrival_rate(self.workload, parts[-1], cut))
            used = pd.concat(parts)
            extra = {
                "warmup": "given" if self.warmup_ms is not None else "MSER-5",
                "warmup_ms": float(np.mean(cuts)),
                "warmup_runs": len(runs) - len(used),
            }
            if self.replications > 1:
                rows = _metrics_replicated(parts, self.workload.give_up_ms, rates)
                extra.update(method="replications", sections=self.replications)
            else:
                rows, b = _metrics_batched(used, self.workload.give_up_ms, rates[0])
                extra.update(method="batch means", sections=b)
        metrics = pd.DataFrame.from_dict(
            rows, orient="index", columns=["value", "ci_low", "ci_high"]
        )
        metrics.index.name = "metric"
        metrics.insert(0, "runs", len(used))
        ok = int((used["status"] == "succeeded").sum())
        metrics.loc[metrics.index.str.startswith("makespan_ok_"), "runs"] = ok  # rows it counts
        self._summary = Summary(metrics, self._agents(used), **extra)
        return self._summary

    def _agents(self, used: pd.DataFrame) -> pd.DataFrame:
        waits: dict[str, np.ndarray] = {}
        sp = self.spans
        if not sp.empty:
            if len(used) < len(self.runs):  # the spans of the runs the summary uses
                keys = ["replication", "run_id"] if "replication" in sp.columns else ["run_id"]
                sp = sp.merge(used[keys], on=keys)
            started = sp.dropna(subset=["start_ms"])
            wait = (started["start_ms"] - started["queued_ms"]).to_numpy(dtype=float)
            for agent_id, idx in started.groupby("agent_id", sort=True).indices.items():
                waits[agent_id] = wait[idx]
        agents = []
        for agent_id in sorted(
            {
                s.agent_id
                for plan in (self.workload.plans_of(self.plan) if self.workload else [self.plan])
                for p in plan.chain()
                for s in p.steps
            }
        ):
            cap = self.models.capacity(agent_id)
            busy = self.busy_ms.get(agent_id, 0.0)
            in_flight = busy / self.observed_ms if self.observed_ms else math.nan
            w = waits.get(agent_id)
            agents.append(
                (
                    agent_id,
                    cap,
                    busy,
                    in_flight,
                    in_flight / cap if cap else math.nan,
                    float(w.mean()) if w is not None and len(w) else math.nan,
                    float(np.quantile(w, 0.95)) if w is not None and len(w) else math.nan,
                )
            )
        return pd.DataFrame(
            agents,
            columns=[
                "agent_id",
                "capacity",
                "busy_ms",
                "mean_in_flight",
                "utilisation",
                "queue_wait_mean_ms",
                "queue_wait_p95_ms",
            ],
        )

    def critical_path(self) -> pd.DataFrame:
        """Where the makespan goes (SPEC §13.3), from the kept spans. Draw it with
        ``ok.critical_path_chart``.

        Returns:
            One row per step of each plan the study ran: ``plan_id``, ``step_id``,
                ``agent_id``, ``action``; ``runs`` (runs in which the step finished);
                ``criticality`` (the share of the analysed runs in which it lies on the
                critical path: the Monte-Carlo criticality index); ``slack_mean_ms`` (how
                much later it could have finished without delaying its run, mean over the
                runs it ran in); ``duration_mean_ms`` (release to finish: queue waits,
                retries and backoffs included); ``makespan_share`` (the mean share of a
                run's makespan it accounts for while on the critical path; a plan's shares
                add up to about 1). ``attrs["runs"]``: the runs analysed.

        Raises:
            PlanValidationError: The study kept no spans (``keep_spans=False``).
        """
        from .critical import critical_path

        return critical_path(self)

    def utilisation(self, bin_ms: float = 1000.0) -> pd.DataFrame:
        """Attempts running per agent over time, from the kept spans (SPEC §11.5). Meant
        for a workload study; with independent runs, which all start at t = 0, the bins
        add up the runs. Draw it with ``ok.utilisation_chart``.

        Args:
            bin_ms: The width of a time bin, ms (default 1000).

        Returns:
            One row per (agent, bin): ``agent_id``, ``t_ms`` (the bin's start, ms),
                ``in_flight`` (mean attempts running in the bin, averaged over
                replications) and ``utilisation`` (in_flight / capacity; NaN for an
                unlimited agent).

        Raises:
            ValueError: ``bin_ms`` is not a finite number > 0.
        """
        sp = self.spans.dropna(subset=["start_ms"])
        out = self._over_time(sp["start_ms"], sp["end_ms"], sp["agent_id"], bin_ms)
        out = out.rename(columns={"value": "in_flight"})
        caps = out["agent_id"].map(lambda a: self.models.capacity(a) or math.nan)
        out["utilisation"] = (out["in_flight"] / caps.astype(float)).astype(float)
        return out

    def queue_length(self, bin_ms: float = 1000.0) -> pd.DataFrame:
        """Attempts waiting for an agent slot over time, from the kept spans (SPEC §11.5).
        An attempt waits from ``queued_ms`` to ``start_ms`` (or to ``end_ms`` if it never
        started). Meant for a workload study, as ``utilisation``.

        Args:
            bin_ms: The width of a time bin, ms (default 1000).

        Returns:
            One row per (agent, bin): ``agent_id``, ``t_ms`` (the bin's start, ms) and
                ``queue_length`` (mean attempts waiting in the bin, averaged over
                replications).

        Raises:
            ValueError: ``bin_ms`` is not a finite number > 0.
        """
        sp = self.spans
        until = sp["start_ms"].fillna(sp["end_ms"])
        out = self._over_time(sp["queued_ms"], until, sp["agent_id"], bin_ms)
        return out.rename(columns={"value": "queue_length"})

    def _over_time(
        self, start: pd.Series, end: pd.Series, agent: pd.Series, bin_ms: float
    ) -> pd.DataFrame:
        """Mean number of intervals [start, end) open per bin, per agent."""
        if (
            isinstance(bin_ms, bool)
            or not isinstance(bin_ms, (int, float))
            or not (math.isfinite(bin_ms) and bin_ms > 0)
        ):
            raise ValueError(f"bin_ms must be a finite number of ms > 0, got {bin_ms!r}")
        ok = end.notna() & start.notna()
        start, end, agent = start[ok], end[ok], agent[ok]
        if start.empty:
            return pd.DataFrame(columns=["agent_id", "t_ms", "value"])
        edges = np.arange(0.0, float(end.max()) + bin_ms, bin_ms)
        out = []
        for agent_id, idx in agent.groupby(agent, sort=True).groups.items():
            # open time up to t: sum over intervals of clip(t - start, 0, end - start)
            open_to = _integral(np.sort(start[idx].to_numpy(dtype=float)), edges) - _integral(
                np.sort(end[idx].to_numpy(dtype=float)), edges
            )
            mean_open = np.diff(open_to) / bin_ms / self.replications
            out.extend((agent_id, float(t), float(v)) for t, v in zip(edges[:-1], mean_open))
        return pd.DataFrame(out, columns=["agent_id", "t_ms", "value"])

    def __repr__(self) -> str:
        kind = f"workload {self.workload}" if self.workload else f"{len(self.runs)} runs"
        return (
            f"MonteCarloResult(plan={self.plan.id!r}, {kind}, seed={self.seed}, "
            f"method={self.method!r})"
        )
