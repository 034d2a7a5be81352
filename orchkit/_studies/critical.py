"""Critical paths of a study's runs (SPEC §13.3): for each step, how often it lies on the
critical path (the Monte-Carlo criticality index), its slack and its share of the makespan.

In one run, a step is *released* when its last dependency finished (``parallel: true``;
the plan's start for a step without dependencies) or when the attempt before it finished
(``parallel: false``: one attempt at a time, so every step that ran is on the path); it
*finishes* when its last attempt ends. Its duration (release to finish) therefore holds
its queue waits for an agent slot, its retries and their backoffs, and its hedges. A
backward pass over the plan's DAG with those durations gives each step's latest finish
that would not delay the plan's last step; slack = latest − actual finish, and the steps
with no slack are the run's critical path. Ties (two branches ending at the same ms) put
both on it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._base.errors import PlanValidationError
from .._spec.plan import Plan

if TYPE_CHECKING:
    from .summary import MonteCarloResult

#: The columns of ``MonteCarloResult.critical_path()``.
CRITICAL_COLUMNS = [
    "plan_id",
    "step_id",
    "agent_id",
    "action",
    "runs",
    "criticality",
    "slack_mean_ms",
    "duration_mean_ms",
    "makespan_share",
]


def _topological(plan: Plan) -> list[int]:
    """Step indexes in an order where every dependency comes first (plan order on ties)."""
    index = {s.id: i for i, s in enumerate(plan.steps)}
    done: set[int] = set()
    order: list[int] = []
    while len(order) < len(plan.steps):
        for i, s in enumerate(plan.steps):
            if i not in done and all(index[d] in done for d in s.dependencies):
                done.add(i)
                order.append(i)
                break
    return order


def _segment(
    plan: Plan, finish: np.ndarray, queued: np.ndarray, start: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Durations, slacks and the on-path mask (runs × steps; NaN/False where a step did not
    finish) of one plan's segment of each run, from its steps' finish and first-queued
    times and the segment's start."""
    n, k = finish.shape
    ran = ~np.isnan(finish)
    release = np.full((n, k), np.nan)
    if not plan.parallel:  # one attempt at a time: a chain in the order the steps ran
        order = np.argsort(np.where(ran, queued, np.inf), axis=1, kind="stable")
        f_sorted = np.take_along_axis(finish, order, axis=1)
        prev = np.concatenate([start[:, None], f_sorted[:, :-1]], axis=1)
        np.put_along_axis(release, order, prev, axis=1)
        release[~ran] = np.nan
        duration = finish - release
        slack = np.where(ran, 0.0, np.nan)
        return duration, slack, ran
    index = {s.id: i for i, s in enumerate(plan.steps)}
    deps = [[index[d] for d in s.dependencies] for s in plan.steps]
    dependents: list[list[int]] = [[] for _ in plan.steps]
    for j, ds in enumerate(deps):
        for i in ds:
            dependents[i].append(j)
    order = _topological(plan)
    for s in order:
        r = start.copy()
        for d in deps[s]:
            r = np.fmax(r, finish[:, d])
        release[:, s] = r
    release[~ran] = np.nan
    duration = finish - release
    end = np.nanmax(np.where(ran, finish, -np.inf), axis=1)
    latest = np.repeat(end[:, None], k, axis=1)
    for s in reversed(order):
        for j in dependents[s]:
            latest[:, s] = np.fmin(
                latest[:, s], np.where(ran[:, j], latest[:, j] - duration[:, j], np.nan)
            )
    slack = np.where(ran, latest - finish, np.nan)
    tol = 1e-9 * np.maximum(1.0, np.abs(end))[:, None] + 1e-6
    on_path = ran & (slack <= tol)
    return duration, np.where(on_path, 0.0, slack), on_path


def critical_path(mc: MonteCarloResult) -> pd.DataFrame:
    """The Monte-Carlo criticality analysis of ``mc``'s kept spans; see
    ``MonteCarloResult.critical_path``."""
    spans = mc.spans
    if spans.empty:
        raise PlanValidationError(
            "critical_path(): the study kept no spans; run it with keep_spans=True (or a "
            "number of runs) to analyse its critical paths"
        )
    keys = ["replication", "run_id"] if "replication" in spans.columns else ["run_id"]
    runs = mc.runs
    plans: dict[str, Plan] = {}
    for first in mc.workload.plans_of(mc.plan) if mc.workload is not None else [mc.plan]:
        for p in first.chain():
            plans.setdefault(p.id, p)
    run_keys = spans[keys].drop_duplicates().sort_values(keys, kind="stable")
    n_runs = len(run_keys)
    pos = pd.Series(np.arange(n_runs), index=pd.MultiIndex.from_frame(run_keys))
    makespan = (
        runs.set_index(keys)["makespan_ms"].reindex(pos.index).to_numpy(dtype=float)
        if len(keys) > 1
        else runs.set_index("run_id")["makespan_ms"]
        .reindex(run_keys["run_id"].to_numpy())
        .to_numpy(dtype=float)
    )
    rows = []
    for plan_id, sp in spans.groupby("plan_id", observed=True, sort=False):
        plan = plans.get(str(plan_id))
        if plan is None:  # not a plan of this study (should not happen)
            continue
        step_pos = {s.id: i for i, s in enumerate(plan.steps)}
        k = len(plan.steps)
        g = sp.groupby([*keys, "step_id"], observed=True, sort=False).agg(
            finish=("end_ms", "max"), queued=("queued_ms", "min")
        )
        g = g.reset_index()
        g = g[g["step_id"].astype(str).isin(step_pos)]
        seg_runs = sp.groupby(keys, observed=True, sort=False)["queued_ms"].min()
        if len(keys) > 1:
            r_idx = pos.reindex(pd.MultiIndex.from_frame(g[keys])).to_numpy()
            seg_idx = pos.reindex(seg_runs.index).to_numpy()
        else:
            lookup = pd.Series(np.arange(n_runs), index=run_keys["run_id"].to_numpy())
            r_idx = lookup.reindex(g["run_id"].to_numpy()).to_numpy()
            seg_idx = lookup.reindex(seg_runs.index.to_numpy()).to_numpy()
        c_idx = g["step_id"].astype(str).map(step_pos).to_numpy()
        finish = np.full((n_runs, k), np.nan)
        queued = np.full((n_runs, k), np.nan)
        finish[r_idx, c_idx] = g["finish"].to_numpy(dtype=float)
        queued[r_idx, c_idx] = g["queued"].to_numpy(dtype=float)
        start = np.full(n_runs, np.nan)
        start[seg_idx] = seg_runs.to_numpy(dtype=float)
        duration, slack, on_path = _segment(plan, finish, queued, start)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(on_path, duration / makespan[:, None], 0.0)
        share = np.where(np.isfinite(share), share, 0.0)
        for i, step in enumerate(plan.steps):
            ran = ~np.isnan(finish[:, i])
            n = int(ran.sum())
            rows.append(
                (
                    plan.id,
                    step.id,
                    step.agent_id,
                    step.action,
                    n,
                    float(on_path[:, i].sum()) / n_runs,
                    float(np.nanmean(slack[ran, i])) if n else math.nan,
                    float(np.nanmean(duration[ran, i])) if n else math.nan,
                    float(share[:, i].mean()),
                )
            )
    frame = pd.DataFrame(rows, columns=CRITICAL_COLUMNS)
    frame.attrs["runs"] = n_runs
    frame.attrs["plan_id"] = mc.plan.id
    return frame


def describe_critical(frame: pd.DataFrame, top: int = 3) -> list[str]:
    """Short sentences on the steps that make most of the makespan (for reasons and
    summaries): step, agent, criticality and share."""
    out: list[Any] = []
    for row in frame.sort_values("makespan_share", ascending=False).head(top).itertuples():
        if row.makespan_share <= 0:
            break
        out.append(
            f"step '{row.step_id}' ({row.agent_id}, {row.action}) is on the critical path in "
            f"{row.criticality:.0%} of runs and makes {row.makespan_share:.0%} of the makespan "
            f"(mean {row.duration_mean_ms:,.0f} ms)"
        )
    return out
