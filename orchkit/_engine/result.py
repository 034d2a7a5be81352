"""What runs leave behind, for every driver: ``RunResult`` (one run), and the schemas of the
runs, spans and breaker tables (SPEC §3.9, §4.4), written once here and used by the live,
SimPy and fast drivers alike."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._base.errors import PlanFailedError, PlanTimeoutError
from .core import Run

#: What a run that can never end is told (no step timeout or plan deadline ends a hung attempt).
HUNG = "never finished: an attempt hung and no step timeout or plan timeout ends it"

SPAN_COLUMNS = [
    "run_id",
    "plan_id",
    "step_id",
    "agent_id",
    "action",
    "attempt",
    "queued_ms",
    "start_ms",
    "end_ms",
    "outcome",
    "error",
    "hedge",
]
"""Columns of a spans frame, one row per attempt (``RunResult.spans``,
``MonteCarloResult.spans``; SPEC §4.4):

- ``run_id``, ``plan_id``, ``step_id``, ``agent_id``, ``action``: what was called, in
  which run and plan of the fallback chain;
- ``attempt``: 1, 2, ... in the order the step's attempts started (retries and hedges);
- ``queued_ms``, ``start_ms``, ``end_ms``: when the attempt was queued at the agent, began
  running (NaN if it never left the queue) and ended, in ms from the run's start (from the
  study's start in a workload study);
- ``outcome``: ``"succeeded"``, ``"error"``, ``"timeout"``, ``"cancelled"``,
  ``"rejected"`` (an open circuit breaker) or ``"shed"`` (shed by the agent's admission
  rules or refused by client-side throttling, SPEC §17); ``error``: the message, or None;
- ``hedge``: True for a hedged attempt (every attempt of a try but its first).

A live trace of agents that slept scaled latencies adds a ``time_scale`` column.
"""
_STEP_STATES = ["pending", "running", "backing_off", "succeeded", "failed", "skipped", "cancelled"]


def span_rows(run: Run, origin_ms: float) -> list[tuple]:
    """One tuple per attempt of ``run`` (SPAN_COLUMNS), times in ms from ``origin_ms``."""
    rid, nan = run.run_id, math.nan
    rows = []
    shift = origin_ms != 0.0  # (simulations count from 0: the attempts' own floats serve)
    for a in run.attempts:
        cp, i, queued, start, end = a.prun.cp, a.step, a.queued_ms, a.start_ms, a.end_ms
        if shift:
            queued -= origin_ms
            start = None if start is None else start - origin_ms
            end = None if end is None else end - origin_ms
        rows.append(
            (
                rid,
                cp.id,
                cp.step_ids[i],
                cp.agent_ids[i],
                cp.actions[i],
                a.number,
                queued,
                nan if start is None else start,
                nan if end is None else end,
                a.outcome,
                a.error,
                a.hedge,
            )
        )
    return rows


RUN_COLUMNS = [
    "run_id",
    "plan_id",
    "status",
    "arrival_ms",
    "start_ms",
    "end_ms",
    "makespan_ms",
    "attempts",
    "retries",
    "timeouts",
    "shed",
    "fallback_used",
    "final_plan_id",
]
"""Columns of a runs frame, one row per run (``MonteCarloResult.runs``; SPEC §4.4):

- ``run_id``, ``plan_id``: the run and its first plan;
- ``status``: ``"succeeded"``, ``"failed"`` or ``"timed_out"`` (of the last plan tried);
- ``arrival_ms``, ``start_ms``, ``end_ms``: on the study's clock, ms;
  ``makespan_ms``: ``end_ms - start_ms``, the whole fallback chain;
- ``attempts``: attempts made; ``retries``: attempts after a step's first; ``timeouts``:
  attempts ended by a step timeout; ``shed``: attempts shed or throttled (outcome
  ``"shed"``, SPEC §17);
- ``fallback_used``: True when a fallback plan ran; ``final_plan_id``: the last plan tried.
"""
# breaker transitions of a study: run_id is the run an independent-runs study was in (None
# in a workload study, where breakers are shared); t_ms on the run's or the study's clock
BREAKER_COLUMNS = ["run_id", "t_ms", "agent_id", "event", "failure_rate", "slow_call_rate"]
# overload changes of a study (SPEC §17): "admission:limit_changed" (value: the new usable
# limit) and "autoscale:scaled" (value: the capacity now in effect); run_id as above
OVERLOAD_COLUMNS = ["run_id", "t_ms", "agent_id", "event", "value"]


def policy_frames(log: list[tuple]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A driver's policy log (breaker transitions and overload changes, as the SimPy
    driver returns them) as the breakers frame (BREAKER_COLUMNS) and the overload frame
    (OVERLOAD_COLUMNS)."""
    breakers = [t for t in log if t[3].startswith("breaker:")]
    changes = [t for t in log if not t[3].startswith("breaker:")]
    return _records(breakers, BREAKER_COLUMNS), _records(changes, OVERLOAD_COLUMNS)


def _records(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    if not rows:  # (most studies): a copy of the empty frame, built once
        return _empty_records(tuple(columns)).copy()
    return pd.DataFrame.from_records(rows, columns=columns)


@functools.cache
def _empty_records(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame.from_records([], columns=list(columns))


def run_row(run: Run) -> tuple:
    """One tuple of RUN_COLUMNS for a finished run (times on the clock the run was given)."""
    plans, end_ms = run.plans, run.end_ms
    assert end_ms is not None, "a finished run has an end"
    return (
        run.run_id,
        plans[0].cp.id,
        run.status,
        run.start_ms,
        run.start_ms,
        end_ms,
        end_ms - run.start_ms,
        len(run.attempts),
        run.retries,
        run.timeouts,
        run.shed,
        len(plans) > 1,
        plans[-1].cp.id,
    )


class RunCollector:
    """Turns finished runs into run rows and (optionally) span rows: ``keep_spans`` True
    keeps every attempt, an int k those of runs 0..k-1, False none; span times count from
    the study's start (``study_clock``) or from each run's own."""

    def __init__(self, keep_spans: bool | int, study_clock: bool):
        self.rows: list[tuple] = []
        self.spans: list[tuple] = []
        self.keep = keep_spans
        self.study_clock = study_clock

    def __call__(self, run: Run) -> None:
        self.rows.append(run_row(run))
        keep = self.keep
        if keep is True or (keep and run.run_id < keep):
            self.spans += span_rows(run, 0.0 if self.study_clock else run.start_ms)


# id-like columns are categoricals (sorted categories): small and fast at millions of rows
SPAN_CATEGORIES = ("plan_id", "step_id", "agent_id", "action", "outcome")
RUN_CATEGORIES = ("plan_id", "status", "final_plan_id")


def categorical(values: list[str], codes: np.ndarray) -> pd.Categorical:
    """``values[code]`` per row, as a categorical whose categories are the values used, sorted
    (the same dtype as ``astype("category")`` of the strings)."""
    n = len(values)
    # the codes used: for a few values, one comparison each beats a histogram
    used = (
        [c for c in range(n) if (codes == c).any()]
        if n <= 8
        else np.flatnonzero(np.bincount(codes, minlength=n))
    )
    cats = sorted({values[c] for c in used})
    remap = np.full(n, -1, dtype=np.int8 if n < 128 else np.int32)
    for c in used:
        remap[c] = cats.index(values[c])
    return pd.Categorical.from_codes(np.take(remap, codes), dtype=_category_dtype(tuple(cats)))


@functools.lru_cache(maxsize=256)
def _category_dtype(categories: tuple[str, ...]) -> pd.CategoricalDtype:
    """The categorical dtype of these categories, made once (frames of a study need the same
    few, and making one is most of the cost of a column; dtypes are immutable)."""
    return pd.CategoricalDtype(pd.Index(list(categories), dtype="str"))


def categorize(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """Turn ``columns`` of ``df`` (strings) into categoricals, in place; returns ``df``."""
    for col in columns:
        df[col] = df[col].astype(
            pd.CategoricalDtype(pd.Index(sorted(df[col].dropna().unique()), dtype="str"))
        )
    return df


def _category_column(values: tuple) -> pd.Categorical:
    """Strings (or None) as a categorical with the sorted values as categories."""
    codes, uniques = pd.factorize(np.array(values, dtype=object))  # None -> -1
    cats = sorted(uniques)
    if len(cats):
        remap = np.argsort(np.argsort(uniques.astype(str), kind="stable"))
        codes = np.where(codes < 0, -1, remap[np.maximum(codes, 0)])
    return pd.Categorical.from_codes(codes, categories=pd.Index(cats, dtype="str"))


def records_frame(
    rows: list[tuple], columns: list[str], categories: Iterable[str], dtypes: dict[str, str]
) -> pd.DataFrame:
    """A frame of ``rows`` built column by column (much faster than ``from_records`` on
    object rows): ``categories`` as categoricals of their sorted values, ``dtypes`` as
    numpy arrays, any other column as pandas infers it."""
    if not rows:
        df = pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "object")) for c in columns})
        return categorize(df, categories)
    categories = set(categories)
    data: dict[str, Any] = {}
    for name, col in zip(columns, zip(*rows)):
        if name in categories:
            data[name] = _category_column(col)
        elif name in dtypes:
            data[name] = np.array(col, dtype=dtypes[name])
        else:
            data[name] = pd.Series(col)  # inferred, as from_records does
    return pd.DataFrame(data)


_SPAN_DTYPES = {
    "attempt": "int64",
    "queued_ms": "float64",
    "start_ms": "float64",
    "end_ms": "float64",
    "hedge": "bool",
}


def spans_frame(rows: Iterable[tuple]) -> pd.DataFrame:
    """The spans DataFrame (one row per attempt) from ``span_rows`` tuples."""
    rows = list(rows)
    if not rows:  # (a study that keeps no spans): a copy of the empty frame, built once
        return _empty_spans().copy()
    return records_frame(rows, SPAN_COLUMNS, SPAN_CATEGORIES, _SPAN_DTYPES)


@functools.cache
def _empty_spans() -> pd.DataFrame:
    return records_frame([], SPAN_COLUMNS, SPAN_CATEGORIES, _SPAN_DTYPES)


_RUN_DTYPES = {
    "arrival_ms": "float64",
    "start_ms": "float64",
    "end_ms": "float64",
    "makespan_ms": "float64",
    "attempts": "int64",
    "retries": "int64",
    "timeouts": "int64",
    "shed": "int64",
    "fallback_used": "bool",
}


def runs_frame(rows: list[tuple]) -> pd.DataFrame:
    """The runs DataFrame (RUN_COLUMNS) from ``run_row`` tuples."""
    return records_frame(rows, RUN_COLUMNS, RUN_CATEGORIES, _RUN_DTYPES)


def str_column(values: np.ndarray) -> Any:
    """``values`` (an object array of strings and None) as the column pandas infers from it,
    built by pyarrow when pandas keeps its strings there (pandas 3 with pyarrow installed):
    ~6x faster than pandas checking each value."""
    dtype = _str_dtype()
    if getattr(dtype, "storage", None) != "pyarrow" or not any(values):
        return values  # inferred by pandas (no string at all: an object column)
    import pyarrow as pa  # type: ignore[import-untyped]

    return pd.array(pa.array(values, type=pa.large_string()), dtype=dtype)


@functools.cache
def _str_dtype() -> Any:
    """The dtype pandas infers for strings (pandas 3: "str"; object before)."""
    return pd.Series(np.array(["x"], dtype=object)).dtype


def columns_frame(columns: dict[str, Any], schema: list[str]) -> pd.DataFrame:
    """A frame of whole columns (a vectorised driver's) in ``schema``'s order; a missing or
    unknown column is a bug, not a column of NaN. The frame takes the arrays as they are
    (no copy into blocks): each must be the caller's own, used by no other column."""
    if list(columns) != schema:
        raise AssertionError(f"columns {list(columns)} are not the schema {schema}")
    return pd.DataFrame(columns, columns=pd.Index(schema), copy=False)


@dataclass(eq=False)
class RunResult:
    """The result of one run: never raises for step failures (call ``raise_for_status``).

    Returned by ``Orchestrator.orchestrate`` (live) and ``ok.simulate`` (simulated ms).

    Attributes:
        run_id: The run's id (an int in a simulation, a string live).
        plan_id: The id of the last plan of the fallback chain that ran.
        status: ``"succeeded"``, ``"failed"`` or ``"timed_out"`` (of that last plan).
        results: Step id -> ``AgentResponse``, for the steps of the last plan that
            succeeded.
        errors: Step id -> message, for every step of the last plan that did not succeed
            (failed, skipped or cancelled).
        step_states: Step id -> ``"succeeded"``, ``"failed"``, ``"skipped"`` or
            ``"cancelled"``.
        duration_ms: From the run's start to its end, fallbacks included, ms.
        fallback_chain: ``[{"plan_id": ..., "status": ...}]`` for every plan tried, in
            order.
        time_scale: Agent id -> the time scale of live agents that slept a scaled model
            latency (``SyntheticAgent(time_scale=...)``; also the ``time_scale`` column of
            ``spans`` and ``spans.attrs["time_scale"]``); empty otherwise.
    """

    run_id: Any
    plan_id: str
    status: str
    results: dict[str, Any]
    errors: dict[str, str]
    step_states: dict[str, str]
    duration_ms: float
    fallback_chain: list[dict[str, str]]
    _run: Run = field(repr=False)
    _spans: pd.DataFrame | None = field(default=None, repr=False)
    time_scale: dict[str, float] = field(default_factory=dict, repr=False)

    @classmethod
    def from_run(cls, run: Run) -> RunResult:
        """The result of the scheduling core's finished ``run`` (what every driver calls;
        users get results from ``orchestrate`` and ``simulate``)."""
        last = run.plans[-1]
        cp = last.cp
        return cls(
            run_id=run.run_id,
            plan_id=cp.id,
            status=run.status or "failed",
            results=dict(last.results),
            errors=dict(last.errors),
            step_states={sid: _STEP_STATES[s] for sid, s in zip(cp.step_ids, last.state)},
            duration_ms=(run.end_ms or run.start_ms) - run.start_ms,
            fallback_chain=[
                {"plan_id": p.cp.id, "status": p.status or "failed"} for p in run.plans
            ],
            _run=run,
        )

    @property
    def success(self) -> bool:
        """True if the last plan of the chain succeeded."""
        return self.status == "succeeded"

    @property
    def spans(self) -> pd.DataFrame:
        """One row per attempt (``orchkit.SPAN_COLUMNS``): run_id, plan_id, step_id,
        agent_id, action, attempt, queued_ms, start_ms, end_ms (ms from the run's start),
        outcome, error, hedge (True for a hedged attempt, SPEC §10.2); and, when an agent
        slept scaled latencies (``time_scale``), a ``time_scale`` column (1.0 for the
        others), so that a file or a concatenation of traces still tells ``fit_models`` the
        scale. Built on first use, then kept."""
        if self._spans is None:
            self._spans = spans_frame(span_rows(self._run, self._run.start_ms))
            if self.time_scale:
                scales = self._spans["agent_id"].astype(object).map(self.time_scale)
                self._spans["time_scale"] = scales.fillna(1.0).astype(float)
                self._spans.attrs["time_scale"] = dict(self.time_scale)
        return self._spans

    def span_records(self) -> list[dict[str, Any]]:
        """The spans as plain dicts (SPAN_COLUMNS keys, ms from the run's start; NaN for a
        time that never came): no DataFrame, for a service's request path."""
        run = self._run
        return [dict(zip(SPAN_COLUMNS, row)) for row in span_rows(run, run.start_ms)]

    @property
    def error(self) -> str | None:
        """The plan-level message (as the seed's), or None if the run succeeded."""
        if self.status == "succeeded":
            return None
        if self.status == "timed_out":
            return f"Orchestration plan {self.plan_id} timed out"
        failed = [
            f"{sid}: {msg}"
            for sid, msg in self.errors.items()
            if self.step_states.get(sid) == "failed"
        ]
        return f"Orchestration plan {self.plan_id} failed: " + "; ".join(
            failed or ["no step succeeded"]
        )

    def raise_for_status(self) -> RunResult:
        """Raise unless the run succeeded.

        Returns:
            This result, when it succeeded (so calls chain).

        Raises:
            PlanTimeoutError: The plan's deadline passed ("Orchestration plan X timed out").
            PlanFailedError: A step failed; the message lists the failed steps' errors.
        """
        if self.status == "timed_out":
            raise PlanTimeoutError(self.error)
        if self.status != "succeeded":
            raise PlanFailedError(self.error)
        return self

    def __repr__(self) -> str:
        chain = " -> ".join(f"{p['plan_id']}:{p['status']}" for p in self.fallback_chain)
        return (
            f"RunResult(plan_id={self.plan_id!r}, status={self.status!r}, "
            f"duration_ms={self.duration_ms:.1f}, steps={len(self.step_states)}, "
            f"attempts={len(self._run.attempts)}, chain={chain!r})"
        )
