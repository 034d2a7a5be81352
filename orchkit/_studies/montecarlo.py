"""Monte-Carlo and capacity studies (SPEC §4.2–4.4, §11): many simulated runs, tidy frames
out. The entry points normalise their input at the front door (``StudyInputs``), compile it
once (``Prepared``) and hand it to a driver: the SimPy driver (independent runs in chunks,
or one workload study) or the fast path."""

from __future__ import annotations

import hashlib
import itertools
import math
import warnings
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any, Literal

import pandas as pd
from tqdm.auto import tqdm

from .._base.errors import PlanValidationError
from .._engine.prepared import Prepared
from .._engine.result import (
    RUN_CATEGORIES,
    SPAN_CATEGORIES,
    categorize,
    policy_frames,
    runs_frame,
    spans_frame,
)
from .._runtimes.fast import choose_method, fast_runs
from .._runtimes.sim import BLOCK, capacity_study, independent_runs
from .._runtimes.tables import declines
from .._spec.inputs import StudyInputs, check_flag, check_int
from .._spec.workload import offered_load
from .parallel import caught, open_executor, result, rewarn
from .summary import MonteCarloResult

SPAN_SAMPLE_RUNS = 10_000  # monte_carlo keeps the spans of this many independent runs by default


class OverloadWarning(UserWarning):
    """An agent's offered load ρ = λ·E[service]/capacity is >= 1 (SPEC §11.4): its queue grows
    without bound, and a study's figures depend on its horizon, not on the system."""


def monte_carlo(
    plan: Any,
    models: Any,
    runs: int = 1000,
    seed: int = 0,
    *,
    workload: Any = None,
    executor: Executor | Literal["processes"] | Any = None,
    chunk_runs: int = 4096,
    keep_spans: bool | int | None = None,
    progress: bool = True,
    method: Literal["auto", "simpy", "fast"] = "auto",
    policies: Any = None,
    warmup_ms: float | None = None,
    replications: int = 1,
) -> MonteCarloResult:
    """Simulate many runs of ``plan`` (SPEC §4.2–4.4): independent runs, or a workload
    study whose runs arrive over time and share the agents; tidy frames out.

    The summary's intervals (SPEC §11.1): independent runs get the exact i.i.d.
    intervals; the runs of a workload study share agents and are autocorrelated, so
    their intervals come from batch means after warm-up deletion, or from replications
    (``orchkit._base.stats`` documents the methods and their sources).

    Args:
        plan: A ``Plan``, a dict in the plan format or a plan file's path; None with a
            workload that has a mix of plans (``Workload(plans=...)``).
        models: ``AgentModels``, a dict in the models format or a models file's path: a
            model for every agent the plans call.
        runs: Independent runs, each alone from t = 0 (ignored with a ``workload``).
        seed: Seeds every random draw: the same inputs and seed give the same frames.
        workload: A capacity study instead (``ok.Workload``): runs arrive over the
            horizon and share each agent's capacity; times count from the study's start.
        executor: (SPEC §20) any ``concurrent.futures.Executor`` (a process pool), a Dask
            ``distributed.Client``, ``orchkit.executors.ray()``, or ``"processes"`` for a
            process pool with one worker per core: chunks of ``chunk_runs`` independent
            runs (SimPy path; the fast path is vectorised and runs here), or the
            ``replications`` of a workload study, run on it. Each chunk's seed comes from
            ``seed`` and the chunk's index only: the frames are identical to a
            single-process run with the same seed. From a script, a process pool or
            cluster needs the ``if __name__ == "__main__":`` guard.
        chunk_runs: Independent runs per chunk (rounded down to a multiple of 64, at
            least 64); the frames do not depend on it.
        keep_spans: Which attempts ``result.spans`` keeps. True: every attempt; an int k:
            those of runs 0..k-1 only; False: none. Default None: every attempt of a
            workload study (queue statistics need them all), and of the first
            ``SPAN_SAMPLE_RUNS`` (10,000) independent runs — runs are i.i.d., so that is a
            fair sample, and it keeps million-run studies fast and small. Run rows,
            ``summary()`` and utilisation always use every run.
        progress: True (default): a progress bar of the runs simulated.
        method: "simpy" (the SimPy driver of the scheduling core), "fast" (vectorised
            numpy, for plans where no agent's capacity can make an attempt of a lone run
            wait), or "auto" (fast when it applies); ``result.method_reason`` says why.
        policies: Circuit breakers (SPEC §10.1; a dict, a YAML/JSON file path or
            ``Policies``). In a workload study one breaker per agent serves every run;
            with independent runs each run starts with closed, empty breakers (runs stay
            independent). Transitions are in ``result.breakers``.
        warmup_ms: (workload studies) runs arriving earlier are left out of the summary,
            ms; default None: the MSER-5 warm-up, found from the data and reported by
            ``summary()``.
        replications: (workload studies) k independent studies of the workload (seeds
            derived from ``seed``; the first is the study ``seed`` alone gives), for
            intervals from independent replications instead of batch means. Frames gain
            a ``replication`` column when k > 1.

    Returns:
        The study: ``runs`` and ``spans`` frames (ms), ``summary()`` (metrics with 95%
            intervals), ``utilisation()``, ``queue_length()`` and ``critical_path()``.

    Raises:
        PlanValidationError: An invalid plan, models or policies; a step whose agent no
            model matches; ``runs`` or ``chunk_runs`` < 1; ``method="fast"`` where it does
            not apply (always with a workload); ``warmup_ms`` or ``replications`` without
            a workload.
        TypeError: A number of the wrong type (``runs``, ``seed``, ``warmup_ms``, ...), a
            ``progress`` that is not a bool, or a ``workload`` that is not a ``Workload``.
        ValueError: ``warmup_ms`` < 0 or not finite, ``replications`` < 1, or an unknown
            ``method``.

    Warns:
        HangWarning: A step can hang and no step or plan timeout would end it.
        OverloadWarning: (workload studies) an agent's offered load ρ >= 1: its queue
            grows without bound.

    Example:
        ```python
        mc = ok.monte_carlo(ok.examples.plan("parallel_analysis"), ok.examples.models(),
                            runs=10_000, seed=1)
        mc.summary()
        ok.makespan_chart(mc)
        ```
    """
    inputs = StudyInputs.of(plan, models, policies, workload, stacklevel=2)
    return run_study(
        inputs,
        runs=runs,
        seed=seed,
        executor=executor,
        chunk_runs=chunk_runs,
        keep_spans=keep_spans,
        progress=progress,
        method=method,
        warmup_ms=warmup_ms,
        replications=replications,
        stacklevel=2,
    )


def run_study(
    inputs: StudyInputs,
    *,
    runs: int = 1000,
    seed: int = 0,
    executor: Executor | Literal["processes"] | Any = None,
    chunk_runs: int = 4096,
    keep_spans: bool | int | None = None,
    progress: bool = True,
    method: Literal["auto", "simpy", "fast"] = "auto",
    warmup_ms: float | None = None,
    replications: int = 1,
    stacklevel: int = 1,
) -> MonteCarloResult:
    """``monte_carlo`` on inputs already through the front door (sweeps and tune trials):
    checks the study's own options, compiles once, runs the driver that applies."""
    runs, seed = check_int("runs", runs, 1), check_int("seed", seed)
    chunk_runs = check_int("chunk_runs", chunk_runs, 1)
    check_flag("progress", progress)
    workload = inputs.workload
    if keep_spans is None:
        keep_spans = True if workload is not None else SPAN_SAMPLE_RUNS
    elif not isinstance(keep_spans, bool):
        keep_spans = check_int("keep_spans (True, False, None or a number of runs)", keep_spans, 0)
    if warmup_ms is not None and (
        isinstance(warmup_ms, bool) or not isinstance(warmup_ms, (int, float))
    ):
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
            "agents); independent runs each start alone and have no warm-up"
        )
    prepared = Prepared.of(inputs)
    models = inputs.models
    if workload is not None:
        load = offered_load(workload, models, inputs.plan) if workload.population is None else {}
        for agent_id, rho in load.items():  # (a closed population cannot overload)
            if rho >= 1:
                cap = models.capacity(agent_id)
                warnings.warn(
                    f"agent '{agent_id}': offered load ρ = {rho:.2f} >= 1 at "
                    f"{workload.peak_rate_per_s():g} runs/s (λ·E[service]/capacity with capacity "
                    f"{cap}): its queue grows without bound and the study's figures depend on "
                    f"its horizon; give it capacity >= {math.floor(rho * cap) + 1} or lower the "
                    "rate",
                    OverloadWarning,
                    stacklevel=stacklevel + 1,
                )
        if method == "fast":
            raise PlanValidationError(
                "monte_carlo: a capacity study is one simulation of runs sharing capacity, on "
                "the SimPy path; drop method='fast' (it applies to independent runs)"
            )
        why = declines(prepared)  # the engine: the table lane, unless it declines
        with open_executor(executor if replications > 1 else None) as pool:
            runs_df, spans_df, busy, total_ms, log = _replicated_study(
                prepared, seed, keep_spans, progress, replications, pool, why is None
            )
        method_used, reason = (
            "simpy",
            (
                "a capacity study runs on the SimPy path, in the table lane"
                if why is None
                else f"a capacity study runs on the SimPy path, in the general core ({why})"
            ),
        )
    else:
        method_used, reason = choose_method(prepared, method)
        log = []
        if method_used == "fast":  # whole frames, built column-wise, categoricals included
            runs_df, spans_df, busy = fast_runs(prepared, seed, runs, keep_spans, progress=progress)
        else:
            with open_executor(executor) as pool:
                rows, spans, busy, log = _run_chunks(
                    prepared, seed, runs, pool, chunk_runs, keep_spans, progress
                )
            runs_df, spans_df = _frames(rows, spans)
        # runs are alone: agents are observed for the sum of makespans
        total_ms = float(runs_df["makespan_ms"].sum())
    return MonteCarloResult(
        plan=inputs.plan,
        models=models,
        seed=seed,
        runs=runs_df,
        spans=spans_df,
        busy_ms=busy,
        observed_ms=total_ms,
        workload=workload,
        method=method_used,
        method_reason=reason,
        breakers=policy_frames(log)[0],
        overload=policy_frames(log)[1],
        warmup_ms=warmup_ms,
        replications=replications,
    )


def _frames(rows: list, spans: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs and spans frames from a SimPy driver's rows (tuples)."""
    return runs_frame(rows), spans_frame(spans)


def replication_seed(seed: int, r: int) -> int:
    """The seed of replication ``r`` of a study with ``seed`` (r = 0: ``seed`` itself)."""
    if r == 0:
        return seed
    digest = hashlib.sha256(f"orchkit replication {seed} {r}".encode()).digest()
    return int.from_bytes(digest[:5], "big")


def _replicated_study(
    prepared: Prepared,
    seed: int,
    keep_spans: bool | int,
    progress: bool,
    replications: int,
    executor: Executor | None = None,
    tables: bool | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict, float, list]:
    """One workload study, or ``replications`` independent ones with their frames stacked
    (a ``replication`` column), busy and observed times summed, breaker logs joined (each
    on its replication's clock). Each replication is a chunk: on ``executor`` when given,
    seeded by ``replication_seed(seed, r)`` alone. ``tables``: run in the table lane (None:
    unless it declines the study)."""
    if replications == 1:
        return capacity_study(prepared, seed, keep_spans, progress, tables)
    runs, spans, busy, total, log = [], [], {}, 0.0, []
    if executor is None:
        parts: Any = (
            capacity_study(prepared, replication_seed(seed, r), keep_spans, progress, tables)
            for r in range(replications)
        )
    else:
        futures = [
            executor.submit(
                capacity_study, prepared, replication_seed(seed, r), keep_spans, False, tables
            )
            for r in range(replications)
        ]
        parts = (result(f, executor) for f in futures)
    for r, (rf, sf, bz, t, lg) in enumerate(parts):  # in replication order
        runs.append(rf.assign(replication=r))
        spans.append(sf.assign(replication=r))
        for k, v in bz.items():
            busy[k] = busy.get(k, 0.0) + v
        total += t
        log.extend(lg)
    return (  # (the id columns back to categoricals of every replication's values)
        categorize(pd.concat(runs, ignore_index=True), RUN_CATEGORIES),
        categorize(pd.concat(spans, ignore_index=True), SPAN_CATEGORIES),
        busy,
        total,
        log,
    )


def _run_chunks(
    prepared: Prepared,
    seed: int,
    runs: int,
    executor: Executor | None,
    chunk_runs: int,
    keep_spans: bool | int,
    progress: bool,
) -> tuple[list, list, dict, list]:
    size = max(BLOCK, (chunk_runs // BLOCK) * BLOCK)
    bounds = [(s, min(s + size, runs)) for s in range(0, runs, size)]
    rows: list = []
    spans: list = []
    busy: dict[str, float] = {}
    log: list = []
    bar = tqdm(total=runs, desc=f"simulating {prepared.plan.id}", unit="run", disable=not progress)
    if executor is None:  # lazily, chunk by chunk, so the bar moves
        parts: Any = (independent_runs(prepared, seed, a, b, keep_spans) for a, b in bounds)
    else:
        futures = [
            executor.submit(independent_runs, prepared, seed, a, b, keep_spans) for a, b in bounds
        ]
        parts = (result(f, executor) for f in futures)
    for (a, b), (r, s, bz, lg) in zip(bounds, parts):  # in run order, whatever finished first
        bar.update(b - a)
        rows.extend(r)
        spans.extend(s)
        log.extend(lg)
        for k, v in bz.items():
            busy[k] = busy.get(k, 0.0) + v
    bar.close()
    return rows, spans, busy, log


def sweep(
    plan: Any,
    models: Any,
    grid: dict[str, Sequence[Any]],
    *,
    runs: int = 2000,
    seed: int = 0,
    progress: bool = True,
    **options: Any,
) -> pd.DataFrame:
    """One Monte-Carlo study per combination of ``grid`` values, to tune a plan.

    Every study uses the same ``seed`` (common random numbers: differences between rows
    are not seed noise).

    Args:
        plan: A ``Plan``, a dict in the plan format or a plan file's path.
        models: ``AgentModels``, a dict in the models format or a models file's path.
        grid: A dotted on-disk path -> the values to try: a plan path (see
            ``Plan.with_values``, e.g. ``"steps.tutor_analysis.timeout"``), a model path
            (see ``AgentModels.with_values``, e.g. ``"agents.tutor-agent-*.capacity"``) or
            a breaker path (see ``Policies.with_values``, e.g.
            ``"breakers.tutor-agent-*.openMs"``; give the ``policies=`` option). Times in
            ms.
        runs: Independent runs per study (ignored with a ``workload=``).
        seed: The seed of every study.
        progress: True (default): a progress bar of the studies.
        **options: Go to ``monte_carlo`` (``workload=``, ``policies=``, ``method=``, ...);
            ``executor=`` (SPEC §20: an Executor, a Dask ``Client``,
            ``orchkit.executors.ray()`` or ``"processes"``) runs the cells on it, each
            cell one chunk, in this process otherwise: the frame is the same either way.

    Returns:
        One row per combination, in grid order: the grid's values, then each summary
            metric with ``_ci_low``/``_ci_high`` columns (times in ms), as a
            ``SweepFrame``: a DataFrame that prints as a short table (the swept values and
            the headline metrics); every column is there (``.frame`` gives it as a plain
            DataFrame).

    Raises:
        TypeError: ``grid`` is not a dict of path -> list of values, or ``runs``,
            ``seed`` or ``progress`` has the wrong type.
        PlanValidationError: A path or value that makes the plan, models or policies
            invalid (every combination is built and checked before anything runs), or
            ``runs`` < 1.

    Example:
        ```python
        ok.sweep(ok.examples.plan("parallel_analysis"), ok.examples.models(),
                 {"steps.tutor_analysis.timeout": [5_000, 10_000, 20_000]}, runs=1000)
        ```
    """
    runs, seed = check_int("runs", runs, 1), check_int("seed", seed)
    check_flag("progress", progress)
    if not isinstance(grid, dict) or any(
        isinstance(v, (str, bytes)) or not hasattr(v, "__iter__") for v in grid.values()
    ):
        raise TypeError(
            "grid must be a dict of a dotted path to a list of values to try, e.g. "
            "{'timeout': [500, 1000]}"
        )
    base = StudyInputs.of(
        plan,
        models,
        options.pop("policies", None),
        options.pop("workload", None),
        where="sweep",
        stacklevel=2,
    )
    keys = list(grid)
    combos = list(itertools.product(*(grid[k] for k in keys)))
    # every combination is built (and validated) before anything runs
    studies = [base.with_values(dict(zip(keys, combo)), stacklevel=2) for combo in combos]
    executor = options.pop("executor", None)
    rows = []
    with open_executor(executor) as pool:
        if pool is None:  # lazily, cell by cell, so the bar moves
            cells: Any = (sweep_cell(study, runs, seed, options) for study in studies)
        else:
            futures = [
                pool.submit(caught, sweep_cell, study, runs, seed, options) for study in studies
            ]
            cells = (_rewarned(result(f, pool)) for f in futures)
        bar = tqdm(
            total=len(studies), desc=f"sweeping {base.plan.id}", unit="study", disable=not progress
        )
        for combo, metrics in zip(combos, cells):  # in grid order, whatever finished first
            bar.update(1)
            rows.append(_sweep_row(keys, combo, metrics))
        bar.close()
    return SweepFrame(rows, swept=keys)


def _rewarned(found: tuple[Any, list[Warning]]) -> Any:
    value, seen = found
    rewarn(seen, stacklevel=4)
    return value


def sweep_cell(study: StudyInputs, runs: int, seed: int, options: dict) -> pd.DataFrame:
    """One cell of a sweep (picklable: a chunk for any executor): its summary metrics."""
    return run_study(study, runs=runs, seed=seed, progress=False, **options).summary().metrics


def _sweep_row(keys: list, combo: tuple, metrics: pd.DataFrame) -> dict:
    """A sweep's row: the grid's values, then each metric with its interval."""
    row = dict(zip(keys, combo))
    for metric, r in metrics.iterrows():
        row[metric] = r["value"]
        row[f"{metric}_ci_low"] = r["ci_low"]
        row[f"{metric}_ci_high"] = r["ci_high"]
    return row


#: The metrics a ``SweepFrame`` shows when printed (all of them stay in the frame).
HEADLINE = ("makespan_p50_ms", "makespan_p95_ms", "success_rate", "attempts_per_run")


class SweepFrame(pd.DataFrame):
    """``sweep``'s result: a DataFrame (one row per combination: the swept values, then
    every summary metric with ``_ci_low``/``_ci_high``; times in ms) that prints short —
    the swept values, the headline metrics and p95's 95% interval. ``swept``: the grid's
    paths; ``frame``: the whole table as a plain DataFrame. Selecting columns, ``assign``
    and the like give plain DataFrames, which print in full."""

    _metadata = ["swept"]

    def __init__(self, *args: Any, swept: Sequence[str] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.swept = list(swept)

    @property
    def _constructor(self) -> type[pd.DataFrame]:
        return pd.DataFrame

    @property
    def frame(self) -> pd.DataFrame:
        """Every column, as a plain DataFrame."""
        return pd.DataFrame(self)

    def short(self) -> pd.DataFrame:
        """The table it prints: the swept values, the headline metrics (``HEADLINE``) and the
        p95 makespan's 95% interval."""
        cols = [c for c in self.swept if c in self.columns]
        out = pd.DataFrame(self[cols]) if cols else pd.DataFrame(index=self.index)
        for metric in HEADLINE:
            if metric not in self.columns:
                continue
            out[metric] = self[metric]
            if metric == "makespan_p95_ms" and f"{metric}_ci_low" in self.columns:
                out["p95 95% interval (ms)"] = [
                    f"[{lo:,.0f}, {hi:,.0f}]"
                    for lo, hi in zip(self[f"{metric}_ci_low"], self[f"{metric}_ci_high"])
                ]
        return out

    def _caption(self) -> str:
        return (
            f"sweep: {len(self)} combination(s) of {', '.join(self.swept) or 'nothing'}; times "
            f"in ms. Shown: the headline metrics; all {self.shape[1]} columns (each metric "
            "with _ci_low/_ci_high) are in the frame (.frame)"
        )

    def __repr__(self) -> str:
        return (
            self._caption()
            + "\n"
            + self.short().to_string(float_format=lambda v: f"{v:,.3f}", index=False)
        )

    def _repr_html_(self) -> str:
        return f"<p>{self._caption()}</p>" + self.short().to_html(
            float_format=lambda v: f"{v:,.3f}", index=False
        )
