"""Monte-Carlo and capacity studies (SPEC §4.2–4.4): many simulated runs, tidy frames out."""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections import Counter
import math
import operator
import random
import warnings
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Sequence

import numpy as np
import pandas as pd
import simpy
from tqdm.auto import tqdm

from ._core import Run, Scheduler, compile_plan, release
from ._errors import PlanValidationError
from ._models import AgentModels
from ._plan import Plan
from ._result import (RUN_CATEGORIES, SPAN_CATEGORIES, SPAN_COLUMNS, categorize, records_frame,
                      span_rows, spans_frame)
from ._policies import Policies, as_policies, breaker_lookup
from ._stats import (QUANTILE_BATCHES, batches_for, mean_ci, mser5, quantile_ci, section_ci, steady_mean_ci,
                     steady_proportion_ci, steady_quantile_ci, wilson_ci)
from ._sim import (BLOCK, SimDriver, _as_plan, as_models, at, check_flag, check_int, check_models,
                   gc_paused, run_rng, simulate_runs)

SPAN_SAMPLE_RUNS = 10_000  # monte_carlo keeps the spans of this many independent runs by default
RUN_COLUMNS = ["run_id", "plan_id", "status", "arrival_ms", "start_ms", "end_ms", "makespan_ms",
               "attempts", "retries", "timeouts", "fallback_used", "final_plan_id"]
# breaker transitions of a study: run_id is the run an independent-runs study was in (None
# in a workload study, where breakers are shared); t_ms on the run's or the study's clock
BREAKER_COLUMNS = ["run_id", "t_ms", "agent_id", "event", "failure_rate", "slow_call_rate"]


_RUN_DTYPES = {"arrival_ms": "float64", "start_ms": "float64", "end_ms": "float64",
               "makespan_ms": "float64", "attempts": "int64", "retries": "int64",
               "timeouts": "int64", "fallback_used": "bool"}


def runs_frame(rows: list[tuple]) -> pd.DataFrame:
    """The runs DataFrame (RUN_COLUMNS) from the collector's run tuples."""
    return records_frame(rows, RUN_COLUMNS, RUN_CATEGORIES, _RUN_DTYPES)


class OverloadWarning(UserWarning):
    """An agent's offered load ρ = λ·E[service]/capacity is >= 1 (SPEC §11.4): its queue grows
    without bound, and a study's figures depend on its horizon, not on the system."""


def _number(value: Any, name: str, *, low: float = 0.0, strict: bool = True) -> float:
    """A finite int/float > ``low`` (>= with ``strict=False``); TypeError names the parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"workload: {name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise PlanValidationError(f"workload: {name} must be finite, got {value!r}")
    if value < low or (strict and value == low):
        raise PlanValidationError(f"workload: {name} must be {'>' if strict else '>='} {low:g}, "
                                  f"got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Workload:
    """Arrivals of plan runs over ``horizon_ms`` for a capacity study (SPEC §4.2, §11.3).

    Give exactly one of
    - ``rate_per_s``: Poisson arrivals at that many runs per second, or piecewise-constant
      rates ``[(from_ms, runs_per_s), ...]`` (the first piece from 0, from_ms increasing; a
      rate may be 0), e.g. ``[(0, 5), (600_000, 20)]`` for a peak after ten minutes;
    - ``interval_ms``: one run every interval, from t = 0;
    - ``arrivals_ms``: explicit times (>= 0, sorted);
    - ``population`` with ``think_ms``: a closed population of that many users (learners),
      each thinking for an exponential time of mean ``think_ms``, then starting a run, and
      thinking again once it has ended (a run that never ends keeps its user). Users
      start thinking at t = 0; no user starts a run after the horizon. The load then
      regulates itself: a slow agent slows the arrivals, and queues never exceed the
      population (no ``OverloadWarning``).
    ``plans``: optionally a mix ``[(plan, weight), ...]`` (Plan objects, dicts or file paths;
    weights > 0, normalised): each arrival runs one of them, drawn independently with
    those probabilities; the plans share the agents. Runs that arrive before the horizon
    run to their end; times count from the study's start.

    A workload expected to generate more than ``Workload.MAX_ARRIVALS`` (10 million)
    arrivals is refused up front; raise the class attribute to allow more.
    """

    rate_per_s: float | Sequence[tuple[float, float]] | None = None
    interval_ms: float | None = None
    arrivals_ms: tuple[float, ...] | None = None
    horizon_ms: float | None = None
    population: int | None = None
    think_ms: float | None = None
    plans: tuple[tuple[Plan, float], ...] | None = field(default=None, repr=False)
    MAX_ARRIVALS: ClassVar[int] = 10_000_000

    def __post_init__(self) -> None:
        given = [k for k in ("rate_per_s", "interval_ms", "arrivals_ms", "population")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise PlanValidationError(
                "workload: give exactly one of rate_per_s, interval_ms, arrivals_ms or "
                f"population (with think_ms) (got {', '.join(given) or 'none'})")
        if self.horizon_ms is not None:
            _number(self.horizon_ms, "horizon_ms")
        elif self.arrivals_ms is None:
            raise PlanValidationError(f"workload: horizon_ms must be > 0 for {given[0]}")
        if (self.think_ms is None) != (self.population is None):
            raise PlanValidationError("workload: population and think_ms go together (a closed "
                                      "population of users who think think_ms between runs)")
        if self.population is not None:
            if isinstance(self.population, bool) or not isinstance(self.population, int):
                raise TypeError(f"workload: population must be an int >= 1, got "
                                f"{type(self.population).__name__} {self.population!r}")
            if self.population < 1:
                raise PlanValidationError(f"workload: population must be >= 1, got {self.population}")
            object.__setattr__(self, "think_ms", _number(self.think_ms, "think_ms"))
        if self.rate_per_s is not None:
            object.__setattr__(self, "rate_per_s", self._rates(self.rate_per_s))
        if self.interval_ms is not None:
            _number(self.interval_ms, "interval_ms")
        if self.arrivals_ms is not None:
            if isinstance(self.arrivals_ms, (str, bytes)) or not hasattr(self.arrivals_ms, "__iter__"):
                raise TypeError("workload: arrivals_ms must be a sequence of times in ms, got "
                                f"{type(self.arrivals_ms).__name__}")
            times = tuple(self.arrivals_ms)
            if len(times) > self.MAX_ARRIVALS:
                self._too_many(len(times))
            times = tuple(_number(t, f"arrivals_ms[{i}]", strict=False) for i, t in enumerate(times))
            if any(a > b for a, b in zip(times, times[1:])):
                raise PlanValidationError("workload: arrivals_ms must be sorted (ms, ascending)")
            object.__setattr__(self, "arrivals_ms", times)
        expected = self.expected_arrivals()
        if expected > self.MAX_ARRIVALS:
            self._too_many(expected)
        if self.plans is not None:
            object.__setattr__(self, "plans", self._mix(self.plans))

    def _rates(self, rate: Any) -> Any:
        if isinstance(rate, (list, tuple)):
            if not rate:
                raise PlanValidationError("workload: rate_per_s pieces must not be empty")
            pieces = []
            for i, piece in enumerate(rate):
                if not isinstance(piece, (list, tuple)) or len(piece) != 2:
                    raise TypeError(f"workload: rate_per_s[{i}] must be a pair (from_ms, runs_per_s),"
                                    f" got {piece!r}")
                pieces.append((_number(piece[0], f"rate_per_s[{i}] from_ms", strict=False),
                               _number(piece[1], f"rate_per_s[{i}] runs_per_s", strict=False)))
            if pieces[0][0] != 0:
                raise PlanValidationError(
                    f"workload: the first rate_per_s piece must start at 0 ms, got {pieces[0][0]:g}")
            if any(a[0] >= b[0] for a, b in zip(pieces, pieces[1:])):
                raise PlanValidationError("workload: rate_per_s pieces need increasing from_ms")
            if not any(r > 0 for _, r in pieces):
                raise PlanValidationError("workload: every rate_per_s piece is 0: no run arrives")
            return tuple(pieces)
        return _number(rate, "rate_per_s")

    @staticmethod
    def _mix(plans: Any) -> tuple[tuple[Plan, float], ...]:
        if isinstance(plans, (str, bytes, dict)) or not isinstance(plans, (list, tuple)) or not plans:
            raise TypeError("workload: plans must be a non-empty list of (plan, weight) pairs")
        out = []
        for i, pair in enumerate(plans):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise TypeError(f"workload: plans[{i}] must be a pair (plan, weight), got {pair!r}")
            out.append((_as_plan(pair[0]), _number(pair[1], f"plans[{i}] weight")))
        total = math.fsum(w for _, w in out)
        return tuple((p, w / total) for p, w in out)

    def _too_many(self, n: float) -> None:
        raise PlanValidationError(
            f"workload: about {n:,.0f} arrivals expected, more than Workload.MAX_ARRIVALS "
            f"({self.MAX_ARRIVALS:,}); shorten horizon_ms or lower the rate, or raise the cap "
            "(orchkit.Workload.MAX_ARRIVALS = ...) if you have the memory (~1 kB a run)")

    def pieces(self) -> tuple[tuple[float, float], ...]:
        """The arrival rate as ``((from_ms, runs_per_s), ...)`` (Poisson workloads only)."""
        rate = self.rate_per_s
        return rate if isinstance(rate, tuple) else ((0.0, rate),)

    def expected_arrivals(self) -> float:
        """The expected number of arrivals before the horizon (a closed population: at
        most, as if runs took no time)."""
        if self.population is not None:
            return self.population * (1.0 + self.horizon_ms / self.think_ms)
        if self.arrivals_ms is not None:
            return float(len(self.times(random.Random(0))))
        if self.interval_ms is not None:
            ratio = self.horizon_ms / self.interval_ms
            return float(math.ceil(ratio)) if math.isfinite(ratio) else math.inf
        bounds = [a for a, _ in self.pieces()] + [math.inf]
        return sum(r * max(0.0, min(b, self.horizon_ms) - a) / 1000.0
                   for (a, r), b in zip(self.pieces(), bounds[1:]))

    def peak_rate_per_s(self) -> float:
        """The highest arrival rate, runs/s (explicit arrivals: their mean rate; a closed
        population: population / think time, a bound its throughput never reaches)."""
        if self.population is not None:
            return 1000.0 * self.population / self.think_ms
        if self.interval_ms is not None:
            return 1000.0 / self.interval_ms
        if self.arrivals_ms is not None:
            times = self.times(random.Random(0))
            span = (times[-1] - times[0]) if len(times) > 1 else 0.0
            return 1000.0 * (len(times) - 1) / span if span > 0 else 0.0
        return max(r for a, r in self.pieces() if a < self.horizon_ms)

    def times(self, rng: random.Random) -> list[float]:
        """Arrival times in ms (Poisson arrivals drawn from ``rng``; with piecewise rates
        each piece's gaps at its own rate, memoryless across piece boundaries). A closed
        population's arrivals depend on the runs: its users' first arrivals."""
        if self.population is not None:
            return sorted(rng.expovariate(1.0 / self.think_ms) for _ in range(self.population))
        if self.arrivals_ms is not None:
            return [t for t in self.arrivals_ms if self.horizon_ms is None or t < self.horizon_ms]
        if self.interval_ms is not None:
            return [i * self.interval_ms for i in range(math.ceil(self.horizon_ms / self.interval_ms))]
        out: list[float] = []
        pieces = self.pieces()
        for k, (start, rate) in enumerate(pieces):
            end = min(pieces[k + 1][0] if k + 1 < len(pieces) else math.inf, self.horizon_ms)
            if rate <= 0 or start >= end:
                continue
            t, mean = start, 1000.0 / rate
            while True:
                t += rng.expovariate(1.0 / mean)
                if t >= end:
                    break
                out.append(t)
        return out

    def picker(self, rng: random.Random) -> Callable[[], int]:
        """For a mix of plans: a function giving the plan index of each next arrival,
        drawn from ``rng`` (one plan: always 0)."""
        if self.plans is None or len(self.plans) == 1:
            return lambda: 0
        cum = list(itertools.accumulate(w for _, w in self.plans))
        return lambda: min(bisect.bisect_right(cum, rng.random()), len(cum) - 1)


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


def offered_load(workload: Workload, models: AgentModels, plan: Plan | None = None
                 ) -> dict[str, float]:
    """Offered load per capacity-limited agent (SPEC §11.4): ρ = λ·E[service]/capacity, λ the
    workload's peak arrival rate, E[service] the mean latency its first attempts ask of the
    agent per run (summed over the steps of each plan of the mix, weighted by its share).
    Retries, timeouts, hangs and fallback plans add load that is not counted: ρ is a lower
    bound, and ρ >= 1 means overload for sure."""
    demand: dict[str, float] = {}
    mix = workload.plans if workload.plans is not None else ((plan, 1.0),)
    for p, weight in mix:
        for step in p.steps:
            latency = getattr(models.resolve(step.agent_id, step.action), "latency", None)
            if latency is not None:
                demand[step.agent_id] = demand.get(step.agent_id, 0.0) + weight * latency.mean_ms
    lam = workload.peak_rate_per_s() / 1000.0
    out = {}
    for agent_id, ms in sorted(demand.items()):
        cap = models.capacity(agent_id)
        if cap:
            out[agent_id] = lam * ms / cap
    return out


def _study_plans(plan: Plan, workload: Workload | None) -> list[Plan]:
    """The plans a study runs: the workload's mix, or ``plan``."""
    if workload is not None and workload.plans is not None:
        return [p for p, _ in workload.plans]
    return [plan]


def _capacity_study(plan: Plan, models: AgentModels, seed: int, workload: Workload,
                    keep_spans: bool | int, progress: bool, policies: Policies | None = None
                    ) -> tuple[list, list, dict, float, list]:
    times = workload.times(random.Random(f"arrivals:{seed}"))
    cps = [compile_plan(p) for p in _study_plans(plan, workload)]
    pick = workload.picker(random.Random(f"mix:{seed}"))
    closed = workload.population is not None
    if closed:  # a user thinks again once their run has ended
        think = random.Random(f"think:{seed}")
        mean_think, horizon = workload.think_ms, workload.horizon_ms
    env = simpy.Environment()
    core = Scheduler(models.capacity, random.Random(f"jitter:{seed}"), events=False,
                     breakers=breaker_lookup(policies))
    sink = _Collector(keep_spans, study_clock=True)
    open_runs: dict[int, Run] = {}  # the runs in flight; a finished run is collected at once
    last_end = 0.0

    def finish(run: Run) -> None:
        nonlocal last_end
        del open_runs[run.run_id]
        last_end = max(last_end, run.end_ms)
        sink(run)
        release(run)  # freed by reference counting: the live heap stays small
        if closed:
            delay = think.expovariate(1.0 / mean_think)
            if env.now + delay < horizon:
                at(env, delay, arrive, priority=0)

    driver = SimDriver(env, core, models, responses=False, on_finish=finish)
    n = len(times)
    bar = tqdm(total=round(workload.horizon_ms) if closed else n, desc="capacity study",
               unit="ms" if closed else "run", disable=not progress)
    rngs: dict[int, random.Random] = {}
    arrived = 0

    def arrive(_event: Any) -> None:
        nonlocal arrived
        i = arrived
        arrived += 1
        if arrived < n and not closed:  # one arrival in the event heap at a time keeps the
            # heap small; urgent: at equal times arrivals go first, in order
            at(env, times[arrived] - env.now, arrive, priority=0)
        block = i // BLOCK
        rng = rngs.get(block)
        if rng is None:
            rngs.clear()
            rng = rngs[block] = run_rng(seed, block)
        run, actions = core.submit(cps[pick()], env.now, i, rng)
        open_runs[i] = run
        driver.apply(actions)
        if i % 256 == 255 and not closed:
            bar.update(256)

    if closed:  # every user's first think; later arrivals come from finish()
        for t in times:
            at(env, t, arrive, priority=0)
        if progress:  # the bar follows the study clock, in hundredths of the horizon
            for k in range(1, 101):
                at(env, horizon * k / 100, lambda _e: bar.update(round(horizon / 100)), priority=1)
    elif n:
        at(env, times[0], arrive, priority=0)
    with gc_paused():
        env.run()
        driver.finish_hung(list(open_runs.values()))
    arrive = None  # it referred to itself: without the cycle, refcounting frees the study
    if not closed:
        bar.update(n % 256)
    bar.close()
    rows, spans = sink.rows, sink.spans
    key = operator.itemgetter(0)
    rows.sort(key=key)  # run order (runs were collected as they finished)
    spans.sort(key=key)  # stable: each run's attempts stay in order
    log = [(None, *t) for t in core.breaker_log]
    return rows, spans, core.busy_ms(), last_end, log


def monte_carlo(plan: Plan | dict | str | Path, models: AgentModels | str | Path | dict,
                runs: int = 1000, seed: int = 0, *, workload: Workload | None = None,
                executor: Executor | Literal["processes"] | None = None, chunk_runs: int = 4096,
                keep_spans: bool | int | None = None, progress: bool = True,
                method: Literal["auto", "simpy", "fast"] = "auto",
                policies: Policies | dict | str | Path | None = None,
                warmup_ms: float | None = None, replications: int = 1) -> MonteCarloResult:
    """Simulate many runs of ``plan``; returns frames of runs and spans and a summary.

    - ``runs``: independent runs, each alone from t = 0 (ignored with a ``workload``).
    - ``workload``: a capacity study instead: runs arrive over the horizon and share
      each agent's capacity; times count from the study's start.
    - ``executor``: any ``concurrent.futures.Executor`` (a process pool, a Dask
      ``Client.get_executor()``), or ``"processes"`` for a process pool with one worker
      per core, to spread chunks of ``chunk_runs`` runs over (SimPy path); the result is
      identical to a single-process run with the same seed.
    - ``keep_spans``: which attempts ``result.spans`` keeps. True: every attempt; an int k:
      those of runs 0..k-1 only; False: none. Default None: every attempt of a workload
      study (queue statistics need them all), and of the first ``SPAN_SAMPLE_RUNS``
      (10,000) independent runs — runs are i.i.d., so that is a fair sample, and it keeps
      million-run studies fast and small. Run rows, ``summary()`` and utilisation always
      use every run.
    - ``method``: "simpy" (the SimPy driver of the scheduling core), "fast" (vectorised
      numpy, for plans where no agent's capacity can make an attempt of a lone run
      wait), or "auto" (fast when it applies); ``result.method_reason`` says why.
    - ``policies``: circuit breakers (SPEC §10.1; a dict, a YAML/JSON file path or
      ``Policies``). In a workload study one breaker per agent serves every run; with
      independent runs each run starts with closed, empty breakers (runs stay
      independent). Transitions are in ``result.breakers``.
    - ``warmup_ms`` (workload studies): runs arriving earlier are left out of the summary;
      default None: the MSER-5 warm-up, found from the data and reported by ``summary()``.
    - ``replications`` (workload studies): k independent studies of the workload (seeds
      derived from ``seed``; the first is the study ``seed`` alone gives), for intervals
      from independent replications instead of batch means. Frames gain a
      ``replication`` column when k > 1.

    The summary's intervals (SPEC §11.1): independent runs get the exact i.i.d.
    intervals; the runs of a workload study share agents and are autocorrelated, so
    their intervals come from batch means after warm-up deletion, or from replications
    (``orchkit._stats`` documents the methods and their sources).
    """
    if workload is not None and not isinstance(workload, Workload):
        raise TypeError(f"workload must be an orchkit.Workload, got {type(workload).__name__}")
    runs, seed = check_int("runs", runs, 1), check_int("seed", seed)
    chunk_runs = check_int("chunk_runs", chunk_runs, 1)
    check_flag("progress", progress)
    if keep_spans is None:
        keep_spans = True if workload is not None else SPAN_SAMPLE_RUNS
    elif not isinstance(keep_spans, bool):
        keep_spans = check_int("keep_spans (True, False, None or a number of runs)", keep_spans, 0)
    mix = workload is not None and workload.plans is not None
    if plan is None and mix:
        plan = workload.plans[0][0]
    elif plan is None:
        raise TypeError("monte_carlo: plan is required (or a workload with a mix, plans=...)")
    elif mix:
        raise PlanValidationError("monte_carlo: give either plan or a workload with a mix of "
                                  "plans (Workload(plans=...)), not both; pass plan=None")
    plan = _as_plan(plan)
    models = as_models(models)
    for p in _study_plans(plan, workload):
        check_models(p, models)
    policies = as_policies(policies) or None
    if warmup_ms is not None and (isinstance(warmup_ms, bool) or not isinstance(warmup_ms, (int, float))):
        raise TypeError(f"warmup_ms must be a number of ms or None, got {warmup_ms!r}")
    if warmup_ms is not None and not (math.isfinite(warmup_ms) and warmup_ms >= 0):
        raise ValueError(f"warmup_ms must be a finite number of ms >= 0, got {warmup_ms!r}")
    if isinstance(replications, bool) or not isinstance(replications, int):
        raise TypeError(f"replications must be an int >= 1, got {replications!r}")
    if replications < 1:
        raise ValueError(f"replications must be >= 1, got {replications}")
    if workload is None and (warmup_ms is not None or replications != 1):
        raise PlanValidationError(
            "monte_carlo: warmup_ms and replications apply to workload studies (runs sharing "
            "agents); independent runs each start alone and have no warm-up")
    if workload is not None:
        load = offered_load(workload, models, plan) if workload.population is None else {}
        for agent_id, rho in load.items():  # (a closed population cannot overload)
            if rho >= 1:
                cap = models.capacity(agent_id)
                warnings.warn(
                    f"agent '{agent_id}': offered load ρ = {rho:.2f} >= 1 at "
                    f"{workload.peak_rate_per_s():g} runs/s (λ·E[service]/capacity with capacity "
                    f"{cap}): its queue grows without bound and the study's figures depend on "
                    f"its horizon; give it capacity >= {math.floor(rho * cap) + 1} or lower the "
                    "rate", OverloadWarning, stacklevel=2)
        if method == "fast" or executor is not None:
            raise PlanValidationError(
                "monte_carlo: a capacity study is one simulation of runs sharing capacity, on "
                "the SimPy path; drop method='fast' and executor (they apply to independent runs)")
        rows, spans, busy, total_ms, log = _replicated_study(
            plan, models, seed, workload, keep_spans, progress, policies, replications)
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
    runs_df = categorize(rows, RUN_CATEGORIES) if isinstance(rows, pd.DataFrame) \
        else runs_frame(rows)
    if workload is None:  # runs are alone: agents are observed for the sum of makespans
        total_ms = float(runs_df["makespan_ms"].sum())
    spans_df = categorize(spans, SPAN_CATEGORIES) if isinstance(spans, pd.DataFrame) \
        else spans_frame(spans)
    return MonteCarloResult(plan=plan, models=models, seed=seed, runs=runs_df, spans=spans_df,
                            busy_ms=busy, observed_ms=total_ms, workload=workload,
                            method=method_used, method_reason=reason,
                            breakers=pd.DataFrame.from_records(log, columns=BREAKER_COLUMNS),
                            warmup_ms=warmup_ms, replications=replications)


def replication_seed(seed: int, r: int) -> int:
    """The seed of replication ``r`` of a study with ``seed`` (r = 0: ``seed`` itself)."""
    if r == 0:
        return seed
    digest = hashlib.sha256(f"orchkit replication {seed} {r}".encode()).digest()
    return int.from_bytes(digest[:5], "big")


def _replicated_study(plan: Plan, models: AgentModels, seed: int, workload: Workload,
                      keep_spans: bool | int, progress: bool, policies: Policies | None,
                      replications: int) -> tuple[Any, Any, dict, float, list]:
    """One workload study, or ``replications`` independent ones with their frames stacked
    (a ``replication`` column), busy and observed times summed, breaker logs joined (each
    on its replication's clock)."""
    if replications == 1:
        return _capacity_study(plan, models, seed, workload, keep_spans, progress, policies)
    runs, spans, busy, total, log = [], [], {}, 0.0, []
    for r in range(replications):
        rows, sp, bz, t, lg = _capacity_study(plan, models, replication_seed(seed, r), workload,
                                              keep_spans, progress, policies)
        runs.append(runs_frame(rows).assign(replication=r))
        spans.append(spans_frame(sp).assign(replication=r))
        for k, v in bz.items():
            busy[k] = busy.get(k, 0.0) + v
        total += t
        log.extend(lg)
    return (pd.concat(runs, ignore_index=True), pd.concat(spans, ignore_index=True), busy,
            total, log)


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
    runs, seed = check_int("runs", runs, 1), check_int("seed", seed)
    check_flag("progress", progress)
    if not isinstance(grid, dict) or any(isinstance(v, (str, bytes)) or not hasattr(v, "__iter__")
                                         for v in grid.values()):
        raise TypeError("grid must be a dict of a dotted path to a list of values to try, e.g. "
                        "{'timeout': [500, 1000]}")
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


@dataclass
class Summary:
    """Headline figures of a study.

    - ``metrics``: one row per metric (runs, value, ci_low, ci_high; times in ms, 95%
      intervals), over the runs the summary uses (``runs`` column);
    - ``agents``: agent_id, capacity, busy_ms, mean_in_flight, utilisation
      (mean_in_flight / capacity), queue_wait_mean_ms and queue_wait_p95_ms (time attempts
      waited for a slot, from the kept spans; NaN when none were kept);
    - ``method``: how the intervals were computed: "independent runs" (exact i.i.d.
      intervals), "batch means" (one workload study, ``sections`` batches; quantiles at
      most ``QUANTILE_BATCHES``, 10, see ``orchkit._stats.steady_quantile_ci``) or
      "replications" (``sections`` independent studies);
    - ``warmup``: "none", "MSER-5" or "given"; ``warmup_ms``: runs arriving before it are
      left out (with replications: the mean over replications); ``warmup_runs``: how many.
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
        return {"metrics": {k: {c: _nan_none(v) for c, v in row.items()}
                            for k, row in self.metrics.to_dict(orient="index").items()},
                "agents": [{k: _nan_none(v) for k, v in row.items()}
                           for row in self.agents.to_dict(orient="records")],
                "intervals": {"method": self.method, "sections": self.sections,
                              "warmup": self.warmup, "warmup_ms": self.warmup_ms,
                              "warmup_runs": self.warmup_runs}}

    def describe(self) -> str:
        """One line: how the intervals were computed and what warm-up was left out."""
        how = {"batch means": f"batch means ({self.sections} batches, at most "
                              f"{QUANTILE_BATCHES} for quantiles)",
               "replications": f"{self.sections} independent replications"}.get(
                   self.method, self.method)
        if self.warmup == "none":
            return f"95% intervals: {how}"
        return (f"95% intervals: {how}, after a warm-up of {self.warmup_ms:,.0f} ms "
                f"({self.warmup_runs} runs left out, {self.warmup})")

    def __repr__(self) -> str:
        head = "" if self.method == "independent runs" else self.describe() + "\n\n"
        return (head + self.metrics.to_string(float_format=lambda v: f"{v:,.3f}") + "\n\n"
                + self.agents.to_string(index=False, float_format=lambda v: f"{v:,.3f}"))

    def _repr_html_(self) -> str:
        head = "" if self.method == "independent runs" else f"<p>{self.describe()}</p>"
        return (head + self.metrics.to_html(float_format=lambda v: f"{v:,.3f}")
                + self.agents.to_html(index=False, float_format=lambda v: f"{v:,.3f}"))


def _integral(sorted_times: np.ndarray, at: np.ndarray) -> np.ndarray:
    """sum(max(0, t - x) for x in sorted_times), for every t in ``at``."""
    k = np.searchsorted(sorted_times, at, side="right")
    cum = np.concatenate([[0.0], np.cumsum(sorted_times)])
    return k * at - cum[k]


def _nan_none(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


_RATES = (("success_rate", "status", "succeeded"), ("timeout_rate", "status", "timed_out"),
          ("fallback_rate", "fallback_used", True))
_MEANS = (("attempts_per_run", "attempts"), ("retries_per_run", "retries"))
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
    return _order(rows)


def _metrics_batched(runs: pd.DataFrame) -> tuple[dict[str, tuple[float, float, float]], int]:
    """Batch-means / sectioning intervals for one warm-up-free study, runs in arrival order."""
    b = batches_for(len(runs))
    mk = runs["makespan_ms"].to_numpy(dtype=float)
    rows = {"makespan_mean_ms": steady_mean_ci(mk, b)}
    mk_ok = mk[(runs["status"] == "succeeded").to_numpy()]  # in arrival order too
    for q in _QUANTILES:
        rows[f"makespan_p{round(q * 100)}_ms"] = steady_quantile_ci(mk, q, b)
        rows[f"makespan_ok_p{round(q * 100)}_ms"] = steady_quantile_ci(
            mk_ok, q, batches_for(len(mk_ok)))
    for name, col, value in _RATES:
        rows[name] = steady_proportion_ci((runs[col] == value).to_numpy(), b)
    for name, col in _MEANS:
        rows[name] = steady_mean_ci(runs[col].to_numpy(dtype=float), b)
    return _order(rows), b


def _metrics_replicated(parts: list[pd.DataFrame]) -> dict[str, tuple[float, float, float]]:
    """Intervals from independent replications: the pooled estimate, the spread of the
    replications' own estimates (``section_ci`` with ``correlated=False``)."""
    pooled = pd.concat(parts)

    def ci(stat: Any) -> tuple[float, float, float]:
        return section_ci(stat(pooled), np.array([stat(p) for p in parts]), correlated=False)

    rows = {"makespan_mean_ms": ci(lambda d: float(d["makespan_ms"].mean()))}
    for q in _QUANTILES:
        rows[f"makespan_p{round(q * 100)}_ms"] = ci(
            lambda d, q=q: _quantile(d["makespan_ms"], q))
        rows[f"makespan_ok_p{round(q * 100)}_ms"] = ci(
            lambda d, q=q: _quantile(d.loc[d["status"] == "succeeded", "makespan_ms"], q))
    for name, col, value in _RATES:
        p, lo, hi = ci(lambda d, c=col, v=value: float((d[c] == v).mean()))
        rows[name] = (p, max(0.0, lo), min(1.0, hi))
    for name, col in _MEANS:
        rows[name] = ci(lambda d, c=col: float(d[c].mean()))
    return _order(rows)


def _quantile(x: pd.Series, q: float) -> float:
    return float(np.quantile(x.to_numpy(dtype=float), q)) if len(x) else math.nan


def _order(rows: dict[str, Any]) -> dict[str, Any]:
    names = (["makespan_mean_ms"] + [f"makespan_p{round(q * 100)}_ms" for q in _QUANTILES]
             + [f"makespan_ok_p{round(q * 100)}_ms" for q in _QUANTILES]
             + ["success_rate", "attempts_per_run", "retries_per_run", "timeout_rate",
                "fallback_rate"])
    return {k: rows[k] for k in names}


@dataclass
class MonteCarloResult:
    """A study's output: ``runs`` (one row per run: RUN_COLUMNS) and ``spans`` (one row per
    kept attempt: SPAN_COLUMNS), both with a ``replication`` column when the workload
    study had several; ``summary()`` gives the headline figures. ``method`` is the path
    taken ("simpy" or "fast") and ``method_reason`` why; ``breakers`` lists circuit breaker
    transitions (BREAKER_COLUMNS)."""

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
    warmup_ms: float | None = None
    replications: int = 1
    _summary: Summary | None = field(default=None, repr=False)

    def summary(self) -> Summary:
        """mean/p50/p95/p99 makespan (ms) — ``makespan_p95_ms`` over all runs,
        ``makespan_ok_p95_ms`` over succeeded runs only (the one an SLO is about; ``runs``
        then counts those) —, success rate, attempts and retries per run, timeout and
        fallback rates, each with its 95% interval; each agent's utilisation and queue
        waits. ``Summary.method`` says how the intervals were computed (SPEC
        §11.1): exact i.i.d. intervals for independent runs; for a workload study, batch
        means after warm-up deletion (MSER-5 unless ``warmup_ms`` was given), or
        independent replications."""
        if self._summary is not None:
            return self._summary
        runs = self.runs
        extra: dict[str, Any] = {}
        if self.workload is None:
            used = runs
            rows = _metrics_iid(runs)
        else:
            parts, cuts = [], []
            groups = ([g for _, g in runs.groupby("replication", sort=True)]
                      if self.replications > 1 else [runs])
            for g in groups:
                g = g.sort_values("run_id", kind="stable")  # arrival order
                if self.warmup_ms is None:
                    d = mser5(g["makespan_ms"].to_numpy(dtype=float))
                    cut = float(g["arrival_ms"].iloc[d]) if d else 0.0
                else:
                    cut = float(self.warmup_ms)
                cuts.append(cut)
                parts.append(g[g["arrival_ms"] >= cut])
            used = pd.concat(parts)
            extra = {"warmup": "given" if self.warmup_ms is not None else "MSER-5",
                     "warmup_ms": float(np.mean(cuts)), "warmup_runs": len(runs) - len(used)}
            if self.replications > 1:
                rows = _metrics_replicated(parts)
                extra.update(method="replications", sections=self.replications)
            else:
                rows, b = _metrics_batched(used)
                extra.update(method="batch means", sections=b)
        metrics = pd.DataFrame.from_dict(rows, orient="index", columns=["value", "ci_low", "ci_high"])
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
        for agent_id in sorted({s.agent_id for plan in _study_plans(self.plan, self.workload)
                                for p in plan.chain() for s in p.steps}):
            cap = self.models.capacity(agent_id)
            busy = self.busy_ms.get(agent_id, 0.0)
            in_flight = busy / self.observed_ms if self.observed_ms else math.nan
            w = waits.get(agent_id)
            agents.append((agent_id, cap, busy, in_flight, in_flight / cap if cap else math.nan,
                           float(w.mean()) if w is not None and len(w) else math.nan,
                           float(np.quantile(w, 0.95)) if w is not None and len(w) else math.nan))
        return pd.DataFrame(agents, columns=["agent_id", "capacity", "busy_ms", "mean_in_flight",
                                             "utilisation", "queue_wait_mean_ms",
                                             "queue_wait_p95_ms"])

    def utilisation(self, bin_ms: float = 1000.0) -> pd.DataFrame:
        """Attempts running per agent over time, from the kept spans: one row per
        (agent_id, t_ms bin start) with ``in_flight`` (mean attempts running in the bin,
        averaged over replications) and ``utilisation`` (in_flight / capacity)."""
        sp = self.spans.dropna(subset=["start_ms"])
        out = self._over_time(sp["start_ms"], sp["end_ms"], sp["agent_id"], bin_ms)
        out = out.rename(columns={"value": "in_flight"})
        caps = out["agent_id"].map(lambda a: self.models.capacity(a) or math.nan)
        out["utilisation"] = (out["in_flight"] / caps.astype(float)).astype(float)
        return out

    def queue_length(self, bin_ms: float = 1000.0) -> pd.DataFrame:
        """Attempts waiting for an agent slot over time, from the kept spans: one row per
        (agent_id, t_ms bin start) with ``queue_length`` (mean attempts waiting in the
        bin, averaged over replications). An attempt waits from ``queued_ms`` to
        ``start_ms`` (or to ``end_ms`` if it never started)."""
        sp = self.spans
        until = sp["start_ms"].fillna(sp["end_ms"])
        out = self._over_time(sp["queued_ms"], until, sp["agent_id"], bin_ms)
        return out.rename(columns={"value": "queue_length"})

    def _over_time(self, start: pd.Series, end: pd.Series, agent: pd.Series,
                   bin_ms: float) -> pd.DataFrame:
        """Mean number of intervals [start, end) open per bin, per agent."""
        if isinstance(bin_ms, bool) or not isinstance(bin_ms, (int, float)) or not (
                math.isfinite(bin_ms) and bin_ms > 0):
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
                np.sort(end[idx].to_numpy(dtype=float)), edges)
            mean_open = np.diff(open_to) / bin_ms / self.replications
            out.extend((agent_id, float(t), float(v)) for t, v in zip(edges[:-1], mean_open))
        return pd.DataFrame(out, columns=["agent_id", "t_ms", "value"])

    def __repr__(self) -> str:
        kind = (f"workload {self.workload}" if self.workload else f"{len(self.runs)} runs")
        return f"MonteCarloResult(plan={self.plan.id!r}, {kind}, seed={self.seed}, method={self.method!r})"
