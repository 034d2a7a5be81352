"""Monte-Carlo and capacity studies (SPEC §4.2–4.4): many simulated runs, tidy frames out."""

from __future__ import annotations

import itertools
from collections import Counter
import math
import random
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
import simpy
from tqdm.auto import tqdm

from ._core import Run, Scheduler, compile_plan
from ._errors import PlanValidationError
from ._models import AgentModels
from ._plan import Plan
from ._result import SPAN_COLUMNS, span_rows, spans_frame
from ._policies import Policies, as_policies, breaker_lookup
from ._sim import BLOCK, SimDriver, _as_plan, as_models, check_models, run_rng, simulate_runs

RUN_COLUMNS = ["run_id", "plan_id", "status", "arrival_ms", "start_ms", "end_ms", "makespan_ms",
               "attempts", "retries", "timeouts", "fallback_used", "final_plan_id"]
# breaker transitions of a study: run_id is the run an independent-runs study was in (None
# in a workload study, where breakers are shared); t_ms on the run's or the study's clock
BREAKER_COLUMNS = ["run_id", "t_ms", "agent_id", "event", "failure_rate", "slow_call_rate"]
_Z95 = NormalDist().inv_cdf(0.975)


@dataclass(frozen=True)
class Workload:
    """Arrivals of plan runs over ``horizon_ms`` for a capacity study (SPEC §4.2).

    Give exactly one of ``rate_per_s`` (Poisson arrivals, runs per second),
    ``interval_ms`` (one run every interval, from t = 0) or ``arrivals_ms`` (explicit
    times). Runs that arrive before the horizon run to their end; all share the agents'
    capacity, and their times count from the study's start.
    """

    rate_per_s: float | None = None
    interval_ms: float | None = None
    arrivals_ms: tuple[float, ...] | None = None
    horizon_ms: float | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("rate_per_s", "interval_ms", "arrivals_ms") if getattr(self, k) is not None]
        if len(given) != 1:
            raise PlanValidationError(
                "workload: give exactly one of rate_per_s, interval_ms or arrivals_ms "
                f"(got {', '.join(given) or 'none'})")
        if self.arrivals_ms is None and (self.horizon_ms is None or self.horizon_ms <= 0):
            raise PlanValidationError("workload: horizon_ms must be > 0 for rate_per_s or interval_ms")
        for name in ("rate_per_s", "interval_ms"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise PlanValidationError(f"workload: {name} must be > 0, got {value}")
        if self.arrivals_ms is not None:
            object.__setattr__(self, "arrivals_ms", tuple(float(t) for t in self.arrivals_ms))
            if any(t < 0 for t in self.arrivals_ms) or list(self.arrivals_ms) != sorted(self.arrivals_ms):
                raise PlanValidationError("workload: arrivals_ms must be >= 0 and sorted")

    def times(self, rng: random.Random) -> list[float]:
        """Arrival times in ms (Poisson arrivals drawn from ``rng``)."""
        if self.arrivals_ms is not None:
            return [t for t in self.arrivals_ms if self.horizon_ms is None or t < self.horizon_ms]
        if self.interval_ms is not None:
            return [i * self.interval_ms for i in range(math.ceil(self.horizon_ms / self.interval_ms))]
        out, t, mean = [], 0.0, 1000.0 / self.rate_per_s
        while True:
            t += rng.expovariate(1.0 / mean)
            if t >= self.horizon_ms:
                return out
            out.append(t)


class _Collector:
    """Turns finished runs into run rows and (optionally) span rows."""

    def __init__(self, keep_spans: bool | int, study_clock: bool):
        self.rows: list[tuple] = []
        self.spans: list[tuple] = []
        self.keep = keep_spans
        self.study_clock = study_clock

    def __call__(self, run: Run) -> None:
        plans = run.plans
        self.rows.append((run.run_id, plans[0].cp.id, run.status, run.start_ms, run.start_ms,
                          run.end_ms, run.end_ms - run.start_ms, len(run.attempts), run.retries,
                          run.timeouts, len(plans) > 1, plans[-1].cp.id))
        keep = self.keep
        if keep is True or (keep and run.run_id < keep):
            self.spans.extend(span_rows(run, 0.0 if self.study_clock else run.start_ms))


def _chunk(plan: Plan, models: AgentModels, seed: int, start: int, stop: int,
           keep_spans: bool | int, policies: Policies | None = None) -> tuple[list, list, dict, list]:
    """Worker: independent runs start..stop (picklable, for any Executor)."""
    sink = _Collector(keep_spans, study_clock=False)
    log: list = []
    busy = simulate_runs(compile_plan(plan), models, seed, start, stop, sink, policies, log)
    return sink.rows, sink.spans, busy, log


def _capacity_study(plan: Plan, models: AgentModels, seed: int, workload: Workload,
                    keep_spans: bool | int, progress: bool, policies: Policies | None = None
                    ) -> tuple[list, list, dict, float, list]:
    times = workload.times(random.Random(f"arrivals:{seed}"))
    cp = compile_plan(plan)
    env = simpy.Environment()
    core = Scheduler(models.capacity, random.Random(f"jitter:{seed}"), events=False,
                     breakers=breaker_lookup(policies))
    driver = SimDriver(env, core, models, responses=False)
    sink = _Collector(keep_spans, study_clock=True)
    runs: list[Run] = []
    bar = tqdm(total=len(times), desc="capacity study", unit="run", disable=not progress)
    rngs: dict[int, random.Random] = {}

    def arrive(_event: Any, i: int) -> None:
        block = i // BLOCK
        rng = rngs.get(block)
        if rng is None:
            rngs.clear()
            rng = rngs[block] = run_rng(seed, block)
        run, actions = core.submit(cp, env.now, i, rng)
        runs.append(run)
        driver.apply(actions)

    for i, t in enumerate(times):
        env.timeout(t).callbacks.append(lambda e, i=i: arrive(e, i))
    done = 0
    while env.peek() != float("inf"):
        env.step()
        if len(driver.finished) - done >= 256:
            bar.update(len(driver.finished) - done)
            done = len(driver.finished)
    driver.finish_hung(runs)
    bar.update(len(runs) - done)
    bar.close()
    for run in runs:
        sink(run)
    log = [(None, *t) for t in core.breaker_log]
    return (sink.rows, sink.spans, core.busy_ms(), max([r.end_ms for r in runs], default=0.0),
            log)


def monte_carlo(plan: Plan | dict | str | Path, models: AgentModels | str | Path | dict,
                runs: int = 1000, seed: int = 0, *, workload: Workload | None = None,
                executor: Executor | Literal["processes"] | None = None, chunk_runs: int = 4096,
                keep_spans: bool | int = True, progress: bool = True,
                method: Literal["auto", "simpy", "fast"] = "auto",
                policies: Policies | dict | str | Path | None = None) -> MonteCarloResult:
    """Simulate many runs of ``plan``; returns frames of runs and spans and a summary.

    - ``runs``: independent runs, each alone from t = 0 (ignored with a ``workload``).
    - ``workload``: a capacity study instead: runs arrive over the horizon and share
      each agent's capacity; times count from the study's start.
    - ``executor``: any ``concurrent.futures.Executor`` (a process pool, a Dask
      ``Client.get_executor()``), or ``"processes"`` for a process pool with one worker
      per core, to spread chunks of ``chunk_runs`` runs over (SimPy path); the result is
      identical to a single-process run with the same seed.
    - ``keep_spans``: True keeps every attempt; an int k keeps the spans of the first k
      runs only (runs are i.i.d., so they are a fair sample) — use it for big studies;
      False keeps none. Run rows are always kept (about 100 bytes a run).
    - ``method``: "simpy" (the SimPy driver of the scheduling core), "fast" (vectorised
      numpy, for plans where no agent's capacity can make an attempt of a lone run
      wait), or "auto" (fast when it applies); ``result.method_reason`` says why.
    - ``policies``: circuit breakers (SPEC §10.1; a dict, a YAML/JSON file path or
      ``Policies``). In a workload study one breaker per agent serves every run; with
      independent runs each run starts with closed, empty breakers (runs stay
      independent). Transitions are in ``result.breakers``.
    """
    plan = _as_plan(plan)
    models = as_models(models)
    check_models(plan, models)
    policies = as_policies(policies) or None
    if workload is not None:
        if method == "fast" or executor is not None:
            raise PlanValidationError(
                "monte_carlo: a capacity study is one simulation of runs sharing capacity, on "
                "the SimPy path; drop method='fast' and executor (they apply to independent runs)")
        rows, spans, busy, total_ms, log = _capacity_study(plan, models, seed, workload,
                                                           keep_spans, progress, policies)
        method_used, reason = "simpy", "a capacity study runs on the SimPy path"
    else:
        if runs < 1:
            raise PlanValidationError(f"monte_carlo: runs must be >= 1, got {runs}")
        method_used, reason = _choose_method(plan, models, method, policies)
        log = []
        if method_used == "fast":
            from ._fast import fast_runs
            rows, spans, busy = fast_runs(plan, models, seed, runs, keep_spans, progress=progress)
        else:
            with (ProcessPoolExecutor() if executor == "processes"
                  else nullcontext(executor)) as pool:
                rows, spans, busy, log = _run_chunks(plan, models, seed, runs, pool, chunk_runs,
                                                     keep_spans, progress, policies)
    runs_df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame.from_records(rows, columns=RUN_COLUMNS)
    if workload is None:  # runs are alone: agents are observed for the sum of makespans
        total_ms = float(runs_df["makespan_ms"].sum())
    runs_df["status"] = runs_df["status"].astype("category")
    spans_df = spans if isinstance(spans, pd.DataFrame) else spans_frame(spans)
    return MonteCarloResult(plan=plan, models=models, seed=seed, runs=runs_df, spans=spans_df,
                            busy_ms=busy, observed_ms=total_ms, workload=workload,
                            method=method_used, method_reason=reason,
                            breakers=pd.DataFrame.from_records(log, columns=BREAKER_COLUMNS))


def _choose_method(plan: Plan, models: AgentModels, method: str,
                   policies: Policies | None = None) -> tuple[str, str]:
    """The path to take and why (``MonteCarloResult.method_reason``)."""
    if method not in ("auto", "simpy", "fast"):
        raise ValueError(f"method must be 'auto', 'simpy' or 'fast', got {method!r}")
    if method == "simpy":
        return "simpy", "method='simpy' was asked for"
    from ._fast import why_not

    binding = _binding_capacities(plan, models)
    outages = sorted({s.agent_id for p in plan.chain() for s in p.steps
                      if getattr(models.resolve(s.agent_id, s.action), "outages", ())})
    breakers = sorted({s.agent_id for p in plan.chain() for s in p.steps
                       if policies is not None and policies.breaker(s.agent_id) is not None})
    why = (f"the capacity of agents {', '.join(binding)} can make attempts of one run "
           "wait" if binding else
           f"agents {', '.join(outages)} have outages, which depend on the clock (the fast "
           "path draws attempts before it knows their start times)" if outages else
           f"agents {', '.join(breakers)} have circuit breakers, whose state depends on the "
           "order of attempt outcomes in time (the fast path draws them step by step)"
           if breakers else why_not(plan))
    if why is None:
        return "fast", "the fast path applies: no capacity, outage, breaker or hedge makes an " \
                       "attempt depend on another one's timing"
    if method == "fast":
        raise PlanValidationError(f"plan '{plan.id}': method='fast' does not apply: {why}; "
                                  "use method='simpy' or 'auto'")
    return "simpy", f"the fast path does not apply: {why}"


def _binding_capacities(plan: Plan, models: AgentModels) -> list[str]:
    """Agents whose capacity can make an attempt of a lone run wait: fewer slots than the
    attempts the run can have in flight on it at once (plans of a chain run one at a time;
    a plan in flight at most min(its slots, its steps on that agent))."""
    out = set()
    for p in plan.chain():
        slots = (p.max_concurrency or len(p.steps)) if p.parallel else 1
        for agent_id, steps in Counter(s.agent_id for s in p.steps).items():
            capacity = models.capacity(agent_id)
            if capacity is not None and capacity < min(slots, steps):
                out.add(agent_id)
    return sorted(out)


def _run_chunks(plan: Plan, models: AgentModels, seed: int, runs: int, executor: Executor | None,
                chunk_runs: int, keep_spans: bool | int, progress: bool,
                policies: Policies | None = None) -> tuple[list, list, dict, list]:
    size = max(BLOCK, (chunk_runs // BLOCK) * BLOCK)
    bounds = [(s, min(s + size, runs)) for s in range(0, runs, size)]
    rows: list = []
    spans: list = []
    busy: dict[str, float] = {}
    log: list = []
    bar = tqdm(total=runs, desc=f"simulating {plan.id}", unit="run", disable=not progress)
    if executor is None:  # lazily, chunk by chunk, so the bar moves
        parts = (_chunk(plan, models, seed, a, b, keep_spans, policies) for a, b in bounds)
    else:
        futures = [executor.submit(_chunk, plan, models, seed, a, b, keep_spans, policies)
                   for a, b in bounds]
        parts = (f.result() for f in futures)
    for (a, b), (r, s, bz, lg) in zip(bounds, parts):  # in run order, whatever finished first
        bar.update(b - a)
        rows.extend(r)
        spans.extend(s)
        log.extend(lg)
        for k, v in bz.items():
            busy[k] = busy.get(k, 0.0) + v
    bar.close()
    return rows, spans, busy, log


# The first segment of a dotted path names the study input it changes; any other path
# changes the plan. Each input has ``with_values(paths)`` taking the full dotted paths.
VALUE_TARGETS: dict[str, str] = {"agents": "models", "breakers": "policies"}


def path_target(path: str) -> str:
    """The study input a dotted path changes: ``"models"`` for ``agents.…``, else ``"plan"``."""
    if not isinstance(path, str):
        raise TypeError(f"grid/values keys must be dotted path strings, got {path!r}")
    return VALUE_TARGETS.get(path.split(".", 1)[0], "plan")


def with_values(inputs: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of a study's ``inputs`` (``{"plan": Plan, "models": AgentModels, ...}``) with
    ``values`` (dotted path -> value) applied, each path to the input it names
    (``path_target``); inputs no path names are passed on unchanged."""
    groups: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        groups.setdefault(path_target(path), {})[path] = value
    out = dict(inputs)
    for target, paths in groups.items():
        if out.get(target) is None:
            raise PlanValidationError(
                f"paths {', '.join(paths)} change the study's {target}, but none was given")
        out[target] = out[target].with_values(paths)
    return out


def sweep(plan: Plan | dict | str | Path, models: AgentModels | str | Path | dict,
          grid: dict[str, Sequence[Any]], *, runs: int = 2000, seed: int = 0,
          progress: bool = True, **options: Any) -> pd.DataFrame:
    """One Monte-Carlo study per combination of ``grid`` values, to tune a plan.

    ``grid`` maps a dotted on-disk path to the values to try: a plan path (see
    ``Plan.with_values``, e.g. ``"steps.tutor_analysis.timeout"``) or a model path (see
    ``AgentModels.with_values``, e.g. ``"agents.tutor-agent-*.capacity"``) or a breaker path
    (see ``Policies.with_values``, e.g. ``"breakers.tutor-agent-*.openMs"``; give the
    ``policies=`` option). Every study uses the same
    ``seed`` (common random numbers: differences between rows are not seed noise).
    Returns one row per combination: the grid's values, then each summary metric with
    ``_ci_low``/``_ci_high`` columns (times in ms). ``options`` go to ``monte_carlo``.
    """
    inputs = {"plan": _as_plan(plan), "models": as_models(models),
              "policies": as_policies(options.pop("policies", None))}
    keys = list(grid)
    combos = list(itertools.product(*(grid[k] for k in keys)))
    # every combination is built (and validated) before anything runs
    studies = [with_values(inputs, dict(zip(keys, combo))) for combo in combos]
    rows = []
    for combo, study in tqdm(list(zip(combos, studies)), desc=f"sweeping {inputs['plan'].id}",
                             unit="study", disable=not progress):
        metrics = monte_carlo(study["plan"], study["models"], runs=runs, seed=seed,
                              progress=False, policies=study["policies"],
                              **options).summary().metrics
        row = dict(zip(keys, combo))
        for metric, r in metrics.iterrows():
            row[metric] = r["value"]
            row[f"{metric}_ci_low"] = r["ci_low"]
            row[f"{metric}_ci_high"] = r["ci_high"]
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ results and statistics


def mean_ci(x: np.ndarray) -> tuple[float, float, float]:
    """Mean and its 95% normal-approximation confidence interval."""
    n = len(x)
    m = float(np.mean(x)) if n else math.nan
    if n < 2:
        return m, math.nan, math.nan
    h = _Z95 * float(np.std(x, ddof=1)) / math.sqrt(n)
    return m, m - h, m + h


def quantile_ci(x: np.ndarray, q: float) -> tuple[float, float, float]:
    """The q-quantile and its distribution-free 95% interval from order statistics."""
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan
    s = np.sort(x)
    est = float(np.quantile(s, q))
    half = _Z95 * math.sqrt(n * q * (1 - q))
    lo, hi = math.floor(n * q - half), math.ceil(n * q + half)
    low = float(s[lo - 1]) if lo >= 1 else math.nan
    high = float(s[hi - 1]) if hi <= n else math.nan
    return est, low, high


def wilson_ci(k: int, n: int) -> tuple[float, float, float]:
    """A proportion k/n and its 95% Wilson score interval."""
    if n == 0:
        return math.nan, math.nan, math.nan
    p = k / n
    z2 = _Z95 * _Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Summary:
    """Headline figures of a study: ``metrics`` (metric, value, ci_low, ci_high; times in ms,
    95% intervals) and ``agents`` (agent_id, capacity, busy_ms, mean_in_flight,
    utilisation = mean_in_flight / capacity)."""

    metrics: pd.DataFrame
    agents: pd.DataFrame

    def __getitem__(self, metric: str) -> float:
        return float(self.metrics.loc[metric, "value"])

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": {k: {c: _nan_none(v) for c, v in row.items()}
                            for k, row in self.metrics.to_dict(orient="index").items()},
                "agents": [{k: _nan_none(v) for k, v in row.items()}
                           for row in self.agents.to_dict(orient="records")]}

    def __repr__(self) -> str:
        return (self.metrics.to_string(float_format=lambda v: f"{v:,.3f}") + "\n\n"
                + self.agents.to_string(index=False, float_format=lambda v: f"{v:,.3f}"))

    def _repr_html_(self) -> str:
        return self.metrics.to_html(float_format=lambda v: f"{v:,.3f}") + self.agents.to_html(
            index=False, float_format=lambda v: f"{v:,.3f}")


def _integral(sorted_times: np.ndarray, at: np.ndarray) -> np.ndarray:
    """sum(max(0, t - x) for x in sorted_times), for every t in ``at``."""
    k = np.searchsorted(sorted_times, at, side="right")
    cum = np.concatenate([[0.0], np.cumsum(sorted_times)])
    return k * at - cum[k]


def _nan_none(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


@dataclass
class MonteCarloResult:
    """A study's output: ``runs`` (one row per run: RUN_COLUMNS) and ``spans`` (one row per
    kept attempt: SPAN_COLUMNS); ``summary()`` gives the headline figures. ``method`` is the
    path taken ("simpy" or "fast") and ``method_reason`` why; ``breakers`` lists circuit
    breaker transitions (BREAKER_COLUMNS)."""

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
    _summary: Summary | None = field(default=None, repr=False)

    def summary(self) -> Summary:
        """mean/p50/p95/p99 makespan (ms) with 95% CIs — ``makespan_p95_ms`` over all runs,
        ``makespan_ok_p95_ms`` over succeeded runs only (the one an SLO is about; ``runs``
        then counts those) —, success rate (Wilson CI), attempts per run and each agent's
        utilisation."""
        if self._summary is not None:
            return self._summary
        runs = self.runs
        mk = runs["makespan_ms"].to_numpy(dtype=float)
        rows = {"makespan_mean_ms": mean_ci(mk)}
        for q in (0.5, 0.95, 0.99):
            rows[f"makespan_p{round(q * 100)}_ms"] = quantile_ci(mk, q)
        succeeded = runs["status"] == "succeeded"
        mk_ok = mk[succeeded.to_numpy()]  # an SLO is about answers: succeeded runs only
        for q in (0.5, 0.95, 0.99):
            rows[f"makespan_ok_p{round(q * 100)}_ms"] = quantile_ci(mk_ok, q)
        ok = int(succeeded.sum())
        rows["success_rate"] = wilson_ci(ok, len(runs))
        rows["attempts_per_run"] = mean_ci(runs["attempts"].to_numpy(dtype=float))
        rows["retries_per_run"] = mean_ci(runs["retries"].to_numpy(dtype=float))
        rows["timeout_rate"] = wilson_ci(int((runs["status"] == "timed_out").sum()), len(runs))
        rows["fallback_rate"] = wilson_ci(int(runs["fallback_used"].sum()), len(runs))
        metrics = pd.DataFrame.from_dict(rows, orient="index", columns=["value", "ci_low", "ci_high"])
        metrics.index.name = "metric"
        metrics.insert(0, "runs", len(runs))
        metrics.loc[metrics.index.str.startswith("makespan_ok_"), "runs"] = ok  # rows it counts
        agents = []
        for agent_id in sorted({s.agent_id for p in self.plan.chain() for s in p.steps}):
            cap = self.models.capacity(agent_id)
            busy = self.busy_ms.get(agent_id, 0.0)
            in_flight = busy / self.observed_ms if self.observed_ms else math.nan
            agents.append((agent_id, cap, busy, in_flight,
                           in_flight / cap if cap else math.nan))
        agents_df = pd.DataFrame(agents, columns=["agent_id", "capacity", "busy_ms",
                                                  "mean_in_flight", "utilisation"])
        self._summary = Summary(metrics, agents_df)
        return self._summary

    def utilisation(self, bin_ms: float = 1000.0) -> pd.DataFrame:
        """Attempts running per agent over time, from the kept spans: one row per
        (agent_id, t_ms bin start) with ``in_flight`` (mean attempts running in the bin)
        and ``utilisation`` (in_flight / capacity)."""
        sp = self.spans.dropna(subset=["start_ms"])
        if sp.empty:
            return pd.DataFrame(columns=["agent_id", "t_ms", "in_flight", "utilisation"])
        edges = np.arange(0.0, float(sp["end_ms"].max()) + bin_ms, bin_ms)
        out = []
        for agent_id, g in sp.groupby("agent_id", sort=True):
            # busy time up to t: sum over attempts of clip(t - start, 0, end - start)
            busy_to = _integral(np.sort(g["start_ms"].to_numpy()), edges) - _integral(
                np.sort(g["end_ms"].to_numpy()), edges)
            in_flight = np.diff(busy_to) / bin_ms
            cap = self.models.capacity(agent_id)
            for t, busy in zip(edges[:-1], in_flight):
                out.append((agent_id, float(t), float(busy), busy / cap if cap else math.nan))
        return pd.DataFrame(out, columns=["agent_id", "t_ms", "in_flight", "utilisation"])

    def __repr__(self) -> str:
        kind = (f"workload {self.workload}" if self.workload else f"{len(self.runs)} runs")
        return f"MonteCarloResult(plan={self.plan.id!r}, {kind}, seed={self.seed}, method={self.method!r})"
