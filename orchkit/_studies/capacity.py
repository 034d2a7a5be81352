"""Capacity for an SLO (SPEC §13.2): the smallest agent capacities whose workload study
meets every bound of an SLO on the conservative end of its 95% interval, or why none can.

The search, every study a workload study with the same seed (common random numbers):

1. **Unlimited capacity** for the agents searched: the best any capacity can do. If the SLO
   fails here, it is infeasible, and the reason gives this bound, the steps on the critical
   path that cause it (``MonteCarloResult.critical_path``) and what could change it.
2. **The range**: below ``λ·E[service]`` slots an agent's queue grows without bound (SPEC
   §11.4), so the search starts there; above the most attempts ever in flight at once in
   the unlimited study, nothing waits and the study *is* the unlimited one, so it ends
   there (or at ``max_capacity``).
3. **One agent**: bisection over the integers in that range: exact (the smallest capacity
   that meets the SLO in this study) when the metric does not get worse with capacity.
   **Several**: greedy by bottleneck (from every agent's lower end, raise the one whose
   attempts wait longest per run until the SLO is met), then each agent in turn is
   bisected down with the others fixed, pass after pass until none moves: no single
   capacity of the answer can be lowered by one (a local minimum, not always the
   smallest total).

**Autoscaled agents** (SPEC §13.2, §17): when the study's policies give a searched pattern's
agents an ``autoscale`` rule, the number searched is that rule's ``max`` (the ceiling the
autoscaler may reach), every candidate studied with the autoscaler running from the
models' capacity; the unlimited-capacity bound is studied without the autoscaler (no
ceiling, no lag). The search starts at the rule's ``min`` at the least.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .._base.errors import PlanValidationError
from .._base.version import VERSION
from .._spec.deployment import Deployment
from .._spec.inputs import HangWarning, StudyInputs, check_flag, check_int
from .._spec.models import best_match
from .._spec.plan import as_plan
from .._spec.policies import Policies
from .._spec.workload import Workload, offered_load
from .critical import describe_critical
from .montecarlo import run_study
from .parallel import caught, open_executor, result, rewarn, worker_count
from .summary import METRIC_NAMES, MonteCarloResult, Summary

#: Metrics whose SLO bound is a lower bound (``>=``); every other metric's is an upper bound.
LOWER_BOUND_METRICS = frozenset({"success_rate", "useful_rate", "goodput_per_s"})


@dataclass
class _Candidate:
    """One study of the search: the capacities tried and what they gave."""

    caps: dict[str, int | None]
    phase: str
    summary: Summary
    met: dict[str, bool]
    wait_per_run: dict[str, float]  # ms of queue wait per run, per pattern searched
    mc: MonteCarloResult | None = None

    @property
    def meets(self) -> bool:
        return all(self.met.values())


def _fmt(metric: str, x: float) -> str:
    if math.isnan(x):
        return "nan"
    if metric.endswith("_ms"):
        return f"{x:,.0f} ms"
    return f"{x:.4g}"


@dataclass
class CapacityPlan:
    """What ``capacity_for`` found (SPEC §13.2). Prints as a few lines: the answer (or
    "infeasible" and why) with the metrics at it (``describe()``).

    Attributes:
        feasible: True when some capacities meet the SLO.
        capacities: Pattern -> slots, the answer (empty when infeasible).
        slo: Metric -> (``">="`` or ``"<="``, bound); times in ms.
        agents: The patterns searched.
        summary: The study at the answer's capacities (None when infeasible).
        study: Its ``MonteCarloResult`` (None when infeasible).
        unlimited: The summary of the study with unlimited capacity for the agents
            searched.
        bound: Metric -> (value, ci_low, ci_high) with unlimited capacity: what no
            capacity can beat.
        reason: Why it is infeasible, with numbers (``""`` when feasible).
        candidates: Every study of the search, in order (see ``table()``).
        workload: The workload studied.
        seed: The studies' seed.
        search: ``"bisection"`` (one agent) or ``"greedy by bottleneck, then trimmed"``.
        peak_in_flight: Pattern -> the most attempts in flight at once on one of its
            agents, with unlimited capacity.
        seconds: How long the search took, s.
        inputs: The study's inputs, normalised (plan, models, policies, workload).
        searched: Pattern -> what its number is: ``"capacity"`` (the models' capacity) or,
            for an agent the policies autoscale, ``"autoscale.<pattern>.max"`` (the
            autoscaler's ceiling, studied with the autoscaler running; ``capacities`` then
            holds that max).
    """

    feasible: bool
    capacities: dict[str, int]
    slo: dict[str, tuple[str, float]]
    agents: list[str]
    summary: Summary | None
    study: MonteCarloResult | None
    unlimited: Summary
    bound: dict[str, tuple[float, float, float]]
    reason: str
    candidates: list[_Candidate] = field(repr=False)
    workload: Workload | None = None
    seed: int = 0
    search: str = "bisection"
    peak_in_flight: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    inputs: StudyInputs | None = field(default=None, repr=False)  # the study's inputs
    searched: dict[str, str] = field(default_factory=dict)

    @property
    def autoscaled(self) -> dict[str, str]:
        """Searched pattern -> the autoscale pattern whose ``max`` was searched."""
        return {
            p: s[len("autoscale.") : -len(".max")]
            for p, s in self.searched.items()
            if s.startswith("autoscale.")
        }

    def deployment(self, plan: Any = None, *, role: str | None = None) -> Deployment:
        """The answer as a deployment bundle (SPEC §14).

        Args:
            plan: The plan to deploy (a ``Plan``, its dict or file); default: the plan
                studied.
            role: The plan's role; default: the plan's id (``orchkit serve`` runs the roles
                ``session_initialization`` and ``process_interaction``).

        Returns:
            The bundle: the plan under ``role``, the capacities found, the study's
                policies and models, and the provenance in ``meta["capacityFor"]``
                (version, seed, SLO, workload, predicted metrics with 95% intervals, the
                models' source, what was searched). For an autoscaled agent the bundle's
                policies carry the autoscale ``max`` found and its capacity stays the
                models' (where the autoscaler starts).

        Raises:
            PlanValidationError: The search found no capacity (infeasible).
        """
        if not self.feasible or self.summary is None or self.inputs is None:
            raise PlanValidationError(
                f"capacity_for found no capacity to deploy: {self.reason or 'infeasible'}"
            )
        plan = self.inputs.plan if plan is None else as_plan(plan)
        metrics = self.summary.metrics
        predicted = {
            m: {
                "value": float(metrics.loc[m, "value"]),
                "ciLow": float(metrics.loc[m, "ci_low"]),
                "ciHigh": float(metrics.loc[m, "ci_high"]),
            }
            for m in dict.fromkeys([*self.slo, "makespan_p95_ms", "success_rate"])
        }
        meta = {
            "capacityFor": {
                "orchkitVersion": VERSION,
                "seed": self.seed,
                "search": self.search,
                "slo": {m: f"{op} {b:g}" for m, (op, b) in self.slo.items()},
                "workload": repr(self.workload),
                "predicted": predicted,
                "modelsSource": Path(str(getattr(self.inputs.models, "source", ""))).name,
            }
        }
        scaled = self.autoscaled
        if scaled:
            meta["capacityFor"]["searched"] = dict(self.searched)
        chosen = self.inputs.with_values(
            {
                (f"autoscale.{scaled[p]}.max" if p in scaled else f"agents.{p}.capacity"): n
                for p, n in self.capacities.items()
            }
        )
        return Deployment.of_study(plan, chosen.models, chosen.policies, meta, role=role)

    def table(self) -> pd.DataFrame:
        """One row per study tried, in order: ``phase``, the capacity of each agent pattern
        searched (<NA>: unlimited), each SLO metric with its 95% interval and whether it
        met its bound judged on the conservative end (``<metric>_met``), ``meets``. When an
        agent is autoscaled, a ``searched`` column after ``phase`` says which number its
        column holds (e.g. ``"tutor-agent-*: autoscale.tutor-agent-*.max"``)."""
        rows = []
        scaled = self.autoscaled
        what = "; ".join(f"{p}: {self.searched[p]}" for p in self.agents if p in scaled)
        for i, c in enumerate(self.candidates):
            row: dict[str, Any] = {"study": i, "phase": c.phase}
            if scaled:
                row["searched"] = what
            for p in self.agents:
                row[p] = c.caps[p]
            for metric in self.slo:
                r = c.summary.metrics.loc[metric]
                row[metric] = float(r["value"])
                row[f"{metric}_ci_low"] = float(r["ci_low"])
                row[f"{metric}_ci_high"] = float(r["ci_high"])
                row[f"{metric}_met"] = c.met[metric]
            row["meets"] = c.meets
            rows.append(row)
        frame = pd.DataFrame(rows)
        for p in self.agents:
            frame[p] = frame[p].astype("Int64")
        return frame

    def chart(self, metric: str | None = None, title: str | None = None) -> Any:
        """The SLO metric against capacity (``ok.capacity_chart``).

        Args:
            metric: A metric of the SLO; None (default): the first.
            title: The figure's title; None (default): the metric and the answer.

        Returns:
            A plotly Figure.

        Raises:
            PlanValidationError: ``metric`` is not a metric of the SLO.
        """
        return capacity_chart(self, metric, title=title)

    def describe(self) -> str:
        """A few lines: the answer (or "infeasible" and why) with the metrics at it."""
        slo = ", ".join(f"{m} {op} {_fmt(m, b)}" for m, (op, b) in self.slo.items())
        if not self.feasible:
            return f"infeasible (SLO {slo}):\n{self.reason}"
        scaled = self.autoscaled
        caps = ", ".join(
            f"{p}: {n}" + (f" (autoscale max, autoscale '{scaled[p]}')" if p in scaled else "")
            for p, n in self.capacities.items()
        )
        lines = [f"capacities {caps} meet the SLO {slo} (95% intervals, conservative end):"]
        assert self.summary is not None
        for m in self.slo:
            r = self.summary.metrics.loc[m]
            lines.append(
                f"  {m} = {_fmt(m, r['value'])} [{_fmt(m, r['ci_low'])}, {_fmt(m, r['ci_high'])}]"
                f"; with unlimited capacity {_fmt(m, self.bound[m][0])}"
            )
        lines.append(
            f"  ({len(self.candidates)} studies, {self.search}, seed {self.seed}, "
            f"{self.seconds:.1f} s)"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.describe()


# ------------------------------------------------------------------ input checks


def _check_slo(slo: Any) -> dict[str, tuple[str, float]]:
    if not isinstance(slo, dict) or not slo:
        raise PlanValidationError(
            "capacity_for: slo must be a non-empty dict of summary metric -> bound, e.g. "
            "{'makespan_p95_ms': 3000, 'success_rate': 0.99} (times in ms)"
        )
    out = {}
    for metric, bound in slo.items():
        if metric not in METRIC_NAMES:
            raise PlanValidationError(
                f"capacity_for: slo metric {metric!r} is not a summary metric; "
                f"use one of: {', '.join(METRIC_NAMES)}"
            )
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise PlanValidationError(
                f"capacity_for: slo[{metric!r}] must be a number (ms for *_ms metrics, a "
                f"share in [0, 1] for rates), got {bound!r}"
            )
        if not math.isfinite(bound) or bound < 0:
            raise PlanValidationError(
                f"capacity_for: slo[{metric!r}] must be a finite number >= 0, got {bound!r}"
            )
        if metric.endswith("_rate") and bound > 1:
            raise PlanValidationError(
                f"capacity_for: slo[{metric!r}] is a share of runs in [0, 1], got {bound!r} "
                "(write 99% as 0.99)"
            )
        op = ">=" if metric in LOWER_BOUND_METRICS else "<="
        out[str(metric)] = (op, float(bound))
    return out


def _agent_ids(base: StudyInputs) -> dict[str, list[str]]:
    """The models' patterns the study's plans use (models order) -> their agent ids."""
    models = base.models
    out: dict[str, list[str]] = {p: [] for p in models.patterns}
    for first in base.plans:
        for p in first.chain():
            for step in p.steps:
                key = models.match(step.agent_id)
                if key is not None and step.agent_id not in out[key]:
                    out[key].append(step.agent_id)
    return {p: ids for p, ids in out.items() if ids}


def _patterns(base: StudyInputs, agents: Any, used: dict[str, list[str]]) -> list[str]:
    if agents is None:
        return list(used)
    if isinstance(agents, str):
        agents = [agents]
    if not isinstance(agents, Sequence) or not agents:
        raise PlanValidationError(
            "capacity_for: agents must be a pattern of the models (e.g. 'tutor-agent-*'), an "
            f"agent id, or a list of them; got {agents!r}"
        )
    out: list[str] = []
    for a in agents:
        if not isinstance(a, str) or not a:
            raise PlanValidationError(f"capacity_for: agents holds {a!r}, not a pattern")
        hits = [k for k in base.models.patterns if k == a or fnmatchcase(k, a)]
        if not hits and base.models.match(a) is not None:  # an agent id: its entry
            hits = [base.models.match(a)]
        hits = [k for k in hits if k in used]
        if not hits:
            raise PlanValidationError(
                f"capacity_for: agents entry {a!r} names no agent pattern the plan uses "
                f"(it uses: {', '.join(used)})"
            )
        out.extend(k for k in hits if k not in out)
    return out


def _autoscaled(
    policies: Policies | None, patterns: list[str], ids: dict[str, list[str]], max_capacity: int
) -> dict[str, str]:
    """Searched pattern -> the autoscale pattern that serves all its agents (SPEC §13.2 with
    §17: its ``max`` is searched), for the patterns whose agents are autoscaled."""
    if policies is None or not policies.autoscale:
        return {}
    rules = list(policies.autoscale)
    out: dict[str, str] = {}
    for p in patterns:
        found = {a: best_match(a, rules) for a in ids[p]}
        which = {rules[i] if i is not None else None for i in found.values()}
        if which == {None}:
            continue
        if len(which) > 1:
            each = ", ".join(
                f"{a}: {'none' if i is None else repr(rules[i])}" for a, i in found.items()
            )
            raise PlanValidationError(
                f"capacity_for: the agents of pattern {p!r} are not all served by one "
                f"autoscale rule ({each}), so no one number can be searched for them; give "
                "them one autoscale pattern, or search them apart with agents= and models "
                "entries of their own"
            )
        (rule,) = which
        assert rule is not None
        other = next((q for q, r in out.items() if r == rule), None)
        if other is not None:
            raise PlanValidationError(
                f"capacity_for: autoscale {rule!r} serves the agents of two searched patterns, "
                f"{other!r} and {p!r}, so its max cannot be searched for each; give each "
                "pattern an autoscale rule of its own, or search one of them (agents=)"
            )
        low = policies.autoscale[rule].min
        if low > max_capacity:
            raise PlanValidationError(
                f"capacity_for: autoscale.{rule}.min is {low}, above max_capacity = "
                f"{max_capacity}, the largest max the search may try; raise max_capacity to "
                f"at least {low} or lower autoscale.{rule}.min"
            )
        out[p] = rule
    return out


# ------------------------------------------------------------------ the search


def capacity_for(
    plan: Any,
    models: Any,
    *,
    slo: dict[str, float],
    workload: Workload,
    agents: str | Sequence[str] | None = None,
    max_capacity: int = 256,
    seed: int = 0,
    policies: Any = None,
    progress: bool = True,
    executor: Any = None,
) -> CapacityPlan:
    """The smallest capacities (attempts served at once) of the agents that meet an SLO
    under a workload (SPEC §13.2).

    Every candidate is one workload study with ``seed`` (common random numbers). It first
    studies unlimited capacity: the best any capacity can do. Then, for one agent, it
    bisects over the integers from the fewest slots that keep up with the arrivals to the
    most attempts ever in flight at once (exact on this study); for several, it raises the
    bottleneck (the agent whose attempts wait longest per run) until the SLO is met, then
    bisects each one down with the others fixed until none moves (a local minimum). When
    no capacity can meet the SLO, ``feasible`` is False and ``reason`` gives the
    unlimited-capacity bound, the steps that cause it and what could change it.

    Args:
        plan: A ``Plan``, a dict in the plan format or a plan file's path; None with a
            workload that has a mix of plans.
        models: ``AgentModels``, a dict in the models format or a models file's path.
        slo: Summary metric -> bound, e.g. ``{"makespan_p95_ms": 3000, "success_rate":
            0.99}`` (times in ms; rates in [0, 1]). ``success_rate``, ``useful_rate`` and
            ``goodput_per_s`` (runs/s) are lower bounds, every other metric an upper
            bound; a bound is met when the metric's 95% interval lies on its side
            (``ci_high`` for an upper bound, ``ci_low`` for a lower one): a lucky estimate
            does not pass.
        workload: The arrivals (``ok.Workload``); required.
        agents: The model patterns (or agent ids) whose capacity is searched; default:
            every pattern of ``models`` the plan uses. Other agents keep their capacity.
        max_capacity: The largest capacity tried per agent.
        seed: The seed of every candidate study.
        policies: Resilience and overload policies (SPEC §10.1, §17; a dict, a YAML/JSON
            file path or ``Policies``), in every study. When they autoscale the agents of
            a searched pattern (one ``autoscale`` rule for all of them), that rule's ``max``
            is searched instead of the capacity, with the autoscaler running (its
            ``min`` the search's floor); ``searched`` says so and ``deployment()``
            carries the max found.
        progress: True (default): a progress bar of the studies run.
        executor: (SPEC §20: an Executor, a Dask ``Client``, ``orchkit.executors.ray()``
            or ``"processes"``) the candidate studies run on it, each one chunk with the
            study ``seed``. While the search waits for a study, the ones it may ask for
            next run ahead on the free workers (the next bisection midpoints on both
            sides, every bottleneck it may raise next); the search itself, its candidates
            (``table()``), the answer and its frames are those of one process.

    Returns:
        The answer: ``feasible``, ``capacities`` (pattern -> slots), the study at them,
            the unlimited-capacity bound, the ``reason`` when infeasible, ``table()`` of
            every candidate, ``chart()`` and ``deployment()``.

    Raises:
        PlanValidationError: No workload; an SLO metric that is not a summary metric or a
            bound that is not a finite number >= 0 (a rate above 1); an ``agents`` entry
            that names no pattern the plan uses; ``max_capacity`` < 1; invalid plan,
            models or policies; the agents of a searched pattern under different autoscale
            rules (or some without one), one autoscale rule over two searched patterns, or
            an autoscale ``min`` above ``max_capacity``.
        TypeError: ``models`` is not an ``AgentModels`` (or its dict or file), or
            ``seed`` or ``progress`` has the wrong type.

    Warns:
        HangWarning: A step can hang and no step or plan timeout would end it.

    Example:
        ```python
        answer = ok.capacity_for(
            ok.examples.plan("session_initialization"), ok.examples.models(),
            slo={"makespan_p95_ms": 4000},
            workload=ok.Workload(rate_per_s=20, horizon_ms=600_000),
            agents="tutor-agent-*",
        )
        answer.capacities  # {'tutor-agent-*': 28}
        answer.chart()
        ```
    """
    with open_executor(executor) as pool:
        return _search(
            plan, models, slo, workload, agents, max_capacity, seed, policies, progress, pool
        )


def _search(
    plan: Any,
    models: Any,
    slo: Any,
    workload: Any,
    agents: Any,
    max_capacity: int,
    seed: int,
    policies: Any,
    progress: bool,
    pool: Executor | None,
) -> CapacityPlan:
    """``capacity_for`` with its studies on ``pool`` (None: in this process)."""
    started = time.perf_counter()
    if workload is None:
        raise PlanValidationError(
            "capacity_for: workload is required: capacity is about runs that arrive and share "
            "agents, e.g. workload=ok.Workload(rate_per_s=20, horizon_ms=600_000)"
        )
    base = StudyInputs.of(plan, models, policies, workload, where="capacity_for", stacklevel=3)
    if not hasattr(base.models, "with_values"):
        raise TypeError("capacity_for: models must be an AgentModels (or a dict or file of one)")
    seed = check_int("seed", seed)
    max_capacity = check_int("max_capacity", max_capacity, 1)
    check_flag("progress", progress)
    bounds = _check_slo(slo)
    used = _agent_ids(base)
    patterns = _patterns(base, agents, used)
    ids = {p: used[p] for p in patterns}
    scaled = _autoscaled(base.policies, patterns, ids, max_capacity)
    searched = {p: f"autoscale.{scaled[p]}.max" if p in scaled else "capacity" for p in patterns}
    unlimited_base = base
    if scaled:  # the bound: no ceiling and no lag, i.e. without those autoscalers
        assert base.policies is not None
        data = base.policies.to_dict()
        data["autoscale"] = {a: r for a, r in data["autoscale"].items() if a not in scaled.values()}
        unlimited_base = dataclasses.replace(
            base, policies=Policies.from_dict(data, base.policies.source)
        )
    search = "bisection" if len(patterns) == 1 else "greedy by bottleneck, then trimmed"
    candidates: list[_Candidate] = []
    cache: dict[tuple, _Candidate] = {}
    bar = tqdm(desc=f"capacity for {base.plan.id}", unit="study", disable=not progress)

    width = worker_count(pool)
    ahead: dict[tuple, Future] = {}  # studies started on the pool before the search asked

    def inputs_for(caps: dict[str, int | None]) -> StudyInputs:
        if scaled and all(caps[p] is None for p in scaled):
            return unlimited_base.with_values({f"agents.{p}.capacity": caps[p] for p in patterns})
        return base.with_values(
            {
                (f"autoscale.{scaled[p]}.max" if p in scaled else f"agents.{p}.capacity"): caps[p]
                for p in patterns
            }
        )

    def launch(wanted: list[dict[str, int | None]]) -> None:
        """Start on the pool the study the search needs next (first) and those it may ask
        for after it, as far as workers are free; cancel the ones not yet started that it
        no longer may ask for. The search itself does not change."""
        if pool is None:
            return
        keys = [tuple(c[p] for p in patterns) for c in wanted]
        for key in [k for k in ahead if k not in keys]:
            if ahead[key].cancel():
                del ahead[key]
        running = sum(not f.done() for f in ahead.values())
        for i, (key, caps) in enumerate(zip(keys, wanted)):
            if key in cache or key in ahead:
                continue
            if i and running >= width:
                break
            ahead[key] = pool.submit(caught, candidate_study, inputs_for(caps), seed, bounds, ids)
            running += 1

    def study(caps: dict[str, int | None], phase: str) -> _Candidate:
        key = tuple(caps[p] for p in patterns)
        if key in cache:
            return cache[key]
        if pool is None:
            mc, s, met, waits = candidate_study(inputs_for(caps), seed, bounds, ids)
        else:
            fut = ahead.pop(key, None) or pool.submit(
                caught, candidate_study, inputs_for(caps), seed, bounds, ids
            )
            (mc, s, met, waits), seen = result(fut, pool)
            rewarn(seen, stacklevel=4)
        c = _Candidate(dict(caps), phase, s, met, waits, mc)
        if not c.meets and candidates:  # never the answer: free its frames now
            c.mc = None
        candidates.append(c)
        cache[key] = c
        bar.update(1)
        bar.set_postfix_str(", ".join(f"{p}={caps[p]}" for p in patterns))
        return c

    def answer(c: _Candidate | None, reason: str, unl: _Candidate, peak: dict) -> CapacityPlan:
        bar.close()
        for f in ahead.values():  # studies run ahead that the search never asked for
            f.cancel()
        ahead.clear()
        for other in candidates:  # keep the frames of the answer and the bound only
            if other is not c and other is not unl:
                other.mc = None
        return CapacityPlan(
            feasible=c is not None,
            capacities={p: int(c.caps[p] or 0) for p in patterns} if c is not None else {},
            slo=bounds,
            agents=patterns,
            summary=c.summary if c is not None else None,
            study=c.mc if c is not None else None,
            unlimited=unl.summary,
            bound={
                m: tuple(
                    float(unl.summary.metrics.loc[m, k]) for k in ("value", "ci_low", "ci_high")
                )
                for m in bounds
            },
            reason=reason,
            candidates=candidates,
            workload=workload,
            seed=seed,
            search=search,
            peak_in_flight=peak,
            seconds=time.perf_counter() - started,
            inputs=base,
            searched=searched,
        )

    unl = study(dict.fromkeys(patterns), "unlimited capacity")
    assert unl.mc is not None
    peak = _peak_in_flight(unl.mc, ids)
    if not unl.meets:
        return answer(None, _reason_unlimited(unl, bounds, patterns), unl, peak)
    lo = _stability_bounds(base, patterns, ids)
    for p, a in scaled.items():  # the autoscaler's max is at least its min
        assert base.policies is not None
        lo[p] = max(lo[p], base.policies.autoscale[a].min)
    over = {p: n for p, n in lo.items() if n > max_capacity}
    if over:
        text = "; ".join(
            f"{p} needs at least {n} slots just to keep up with the arrivals (its offered "
            f"load λ·E[service] keeps more than {n - 1} attempts in flight on average)"
            for p, n in over.items()
        )
        return answer(
            None,
            f"no capacity up to max_capacity = {max_capacity} can serve the workload: {text}; "
            "raise max_capacity",
            unl,
            peak,
        )
    hi = {p: min(max_capacity, max(peak[p], lo[p])) for p in patterns}
    if len(patterns) == 1:  # the bisection under hi may follow: its first midpoints ahead
        one = patterns[0]
        launch([hi, *({one: m} for m in _bisection_ahead(lo[one] - 1, hi[one], width))])
    else:
        launch([hi, dict(lo)])
    top = study(hi, "peak in flight (autoscaled)" if scaled else "no waits (as unlimited)")
    if not top.meets and any(hi[p] < max_capacity for p in patterns):
        top = study(dict.fromkeys(patterns, max_capacity), "max_capacity")
        hi = dict.fromkeys(patterns, max_capacity)
    if not top.meets:
        reason = _reason_max(top, unl, bounds, patterns, max_capacity, peak)
        if scaled:
            reason += (
                "; or, since the autoscaler of "
                + ", ".join(f"{p} (autoscale '{a}')" for p, a in scaled.items())
                + " lags the load, a shorter pollMs or provisionMs, a lower target or a "
                "higher min"
            )
        return answer(None, reason, unl, peak)

    def bisect(p: str, caps: dict[str, int | None], passing: _Candidate, phase: str) -> _Candidate:
        """The smallest capacity of ``p`` in [lo[p], caps[p]] that meets the SLO with the
        other capacities as in ``caps`` (``passing``: the study at ``caps``)."""
        fail, ok_n = lo[p] - 1, int(caps[p] or 0)
        best = passing
        while ok_n - fail > 1:
            mid = (fail + ok_n) // 2
            launch([{**caps, p: m} for m in _bisection_ahead(fail, ok_n, width)])
            c = study({**caps, p: mid}, phase)
            if c.meets:
                ok_n, best = mid, c
            else:
                fail = mid
        return best

    if len(patterns) == 1:
        best = bisect(patterns[0], dict(hi), top, "bisection")
        return answer(best, "", unl, peak)

    # several agents: greedy by bottleneck from the lower ends, then trim each one
    def raised(caps: dict[str, int | None], b: str) -> dict[str, int | None]:
        n = int(caps[b] or 0)
        return {**caps, b: min(hi[b], max(n + 1, math.ceil(n * 1.25)))}

    def greedy_ahead(caps: dict[str, int | None]) -> None:  # every raise it may pick next
        launch([caps, *(raised(caps, q) for q in patterns if (caps[q] or 0) < hi[q])])

    caps: dict[str, int | None] = dict(lo)
    greedy_ahead(caps)
    cur = study(caps, "greedy")
    while not cur.meets:
        raisable = [p for p in patterns if (caps[p] or 0) < hi[p]]
        if not raisable:
            cur = top
            caps = dict(top.caps)
            break
        b = max(raisable, key=lambda p: (cur.wait_per_run[p], -patterns.index(p)))
        caps = raised(caps, b)
        greedy_ahead(caps)
        cur = study(caps, f"greedy: raise {b}")
    for _ in range(8):  # trim passes until none lowers a capacity (each pass: one per agent)
        before = dict(cur.caps)
        for p in patterns:
            cur = bisect(p, dict(cur.caps), cur, f"trim {p}")
        if cur.caps == before:
            break
    return answer(cur, "", unl, peak)


# ------------------------------------------------------------------ one study


def candidate_study(
    inputs: StudyInputs, seed: int, bounds: dict[str, tuple[str, float]], ids: dict
) -> tuple[MonteCarloResult, Summary, dict[str, bool], dict[str, float]]:
    """One candidate's workload study (picklable: a chunk for any executor): the study, its
    summary, which SLO bounds it meets (on the conservative end of the 95% interval) and
    the queue wait per run of each pattern searched."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HangWarning)  # said once, at the user's call
        mc = run_study(inputs, seed=seed, progress=False, keep_spans=True)
    s = mc.summary()
    met = {}
    for metric, (op, bound) in bounds.items():
        x = float(s.metrics.loc[metric, "ci_low" if op == ">=" else "ci_high"])
        met[metric] = not math.isnan(x) and (x >= bound if op == ">=" else x <= bound)
    return mc, s, met, _waits(mc, ids)


def _bisection_ahead(fail: int, ok: int, n: int) -> list[int]:
    """The first ``n`` midpoints a bisection of (fail, ok] may try, breadth first: its next
    midpoint, then the two it tries after it (the lower first), and so on."""
    out: list[int] = []
    todo = [(fail, ok)]
    while todo and len(out) < n:
        f, o = todo.pop(0)
        if o - f > 1:
            m = (f + o) // 2
            out.append(m)
            todo += [(f, m), (m, o)]
    return out


# ------------------------------------------------------------------ what a study shows


def _pattern_of(ids: dict[str, list[str]]) -> dict[str, str]:
    return {a: p for p, agent_ids in ids.items() for a in agent_ids}


def _waits(mc: MonteCarloResult, ids: dict[str, list[str]]) -> dict[str, float]:
    """ms that attempts waited for a slot, per run, per pattern searched."""
    sp = mc.spans
    out = dict.fromkeys(ids, 0.0)
    if sp.empty or not len(mc.runs):
        return out
    until = sp["start_ms"].fillna(sp["end_ms"])
    wait = (until - sp["queued_ms"]).fillna(0.0).to_numpy(dtype=float)
    agent = sp["agent_id"].astype(str).map(_pattern_of(ids))
    for p, total in pd.Series(wait).groupby(agent.to_numpy()).sum().items():
        out[str(p)] = float(total) / len(mc.runs)
    return out


def _peak_in_flight(mc: MonteCarloResult, ids: dict[str, list[str]]) -> dict[str, int]:
    """The most attempts in flight at once on any one agent id of each pattern."""
    sp = mc.spans.dropna(subset=["start_ms"])
    out = dict.fromkeys(ids, 1)
    keys = ["replication", "agent_id"] if "replication" in sp.columns else ["agent_id"]
    for key, g in sp.groupby(keys, observed=True):
        agent = str(key[-1] if isinstance(key, tuple) else key)
        p = _pattern_of(ids).get(agent)
        if p is None or g.empty:
            continue
        t = np.concatenate(
            [g["start_ms"].to_numpy(float), g["end_ms"].fillna(np.inf).to_numpy(float)]
        )
        d = np.concatenate([np.ones(len(g)), -np.ones(len(g))])
        order = np.lexsort((d, t))  # at equal times a slot is freed before it is taken
        out[p] = max(out[p], int(np.cumsum(d[order]).max()))
    return out


def _stability_bounds(
    base: StudyInputs, patterns: list[str], ids: dict[str, list[str]]
) -> dict[str, int]:
    """The fewest slots per pattern that keep the offered load ρ below 1 (SPEC §11.4); 1
    for a closed population, which cannot overload."""
    assert base.workload is not None
    if base.workload.population is not None:
        return dict.fromkeys(patterns, 1)
    one = base.models.with_values({f"agents.{p}.capacity": 1 for p in patterns})
    load = offered_load(base.workload, one, base.plan)
    return {p: max([1] + [math.floor(load.get(a, 0.0)) + 1 for a in ids[p]]) for p in patterns}


# ------------------------------------------------------------------ reasons


def _interval(metric: str, s: Summary) -> str:
    r = s.metrics.loc[metric]
    return f"{_fmt(metric, r['value'])} [{_fmt(metric, r['ci_low'])}, {_fmt(metric, r['ci_high'])}]"


def _step_latency(mc: MonteCarloResult, step_id: str) -> tuple[float, float]:
    """Median and p95 (ms) of the step's succeeded attempts' own latency."""
    sp = mc.spans
    ok = sp[(sp["step_id"].astype(str) == step_id) & (sp["outcome"].astype(str) == "succeeded")]
    lat = (ok["end_ms"] - ok["start_ms"]).dropna().to_numpy(dtype=float)
    if not len(lat):
        return math.nan, math.nan
    return float(np.quantile(lat, 0.5)), float(np.quantile(lat, 0.95))


def _reason_unlimited(
    unl: _Candidate, bounds: dict[str, tuple[str, float]], patterns: list[str]
) -> str:
    assert unl.mc is not None
    mc = unl.mc
    who = ", ".join(patterns)
    parts = []
    for metric, (op, bound) in bounds.items():
        if unl.met[metric]:
            continue
        value, lo, hi = (
            float(unl.summary.metrics.loc[metric, k]) for k in ("value", "ci_low", "ci_high")
        )
        kind = "lower" if op == "<=" else "upper"
        text = (
            f"{metric} must be {op} {_fmt(metric, bound)}, but with unlimited capacity for {who} "
            f"the plan reaches {_interval(metric, unl.summary)} (95% interval): the {kind} "
            "bound no capacity can beat"
        )
        if (op == "<=" and lo <= bound < hi) or (op == ">=" and lo < bound <= hi):
            text += (
                f" (the interval straddles {_fmt(metric, bound)}: a longer study, a larger "
                "horizon_ms, could still show it met)"
            )
        parts.append(text)
    cp = mc.critical_path()
    where = describe_critical(cp)
    if where:
        parts.append("Where the time goes: " + "; ".join(where))
    parts.append("What could change it: " + _suggestions(mc, cp, unl, bounds))
    return ".\n".join(parts) + "."


def _suggestions(
    mc: MonteCarloResult, cp: pd.DataFrame, unl: _Candidate, bounds: dict[str, tuple[str, float]]
) -> str:
    steps = {s.id: s for p in mc.plan.chain() for s in p.steps}
    out = []
    failing = [m for m in bounds if not unl.met[m]]
    if any(m.endswith("_ms") for m in failing):
        top = cp.sort_values("makespan_share", ascending=False).head(1)
        if len(top) and float(top["makespan_share"].iloc[0]) > 0:
            row = top.iloc[0]
            sid, agent = str(row["step_id"]), str(row["agent_id"])
            med, p95 = _step_latency(mc, sid)
            step = steps.get(sid)
            pattern = mc.models.match(agent) if hasattr(mc.models, "match") else agent
            lat = f" (its attempts take {med:,.0f} ms at the median, {p95:,.0f} ms at p95)"
            delay = 50 * round(med / 100) if math.isfinite(med) else 0  # about half the median
            if step is not None and step.hedge is None:
                out.append(
                    f"a hedge on step '{sid}'{lat}: extra attempts started after a delay below "
                    f"its median, e.g. hedge: {{delayMs: {delay:,}, maxHedges: 2}}, cut its "
                    "tail at the cost of extra calls"
                )
            else:
                out.append(f"a shorter hedge delay or more hedges on step '{sid}'{lat}")
            out.append(
                f"a step timeout on '{sid}' near its p90 with a retry (a stuck attempt is "
                "abandoned sooner, at the cost of attempts)"
            )
            for metric in failing:
                if not metric.endswith("_ms"):
                    continue
                bound = bounds[metric][1]
                value = float(unl.summary.metrics.loc[metric, "ci_high"])
                if value > 0 and math.isfinite(value):
                    k = bound / value
                    out.append(
                        f"a faster agent: {metric} has to come down by {1 - k:.0%}; if step "
                        f"'{sid}' were all of it, models.scaled('{pattern}', latency={k:.2f})"
                    )
                    break
    if "success_rate" in failing or "timeout_rate" in failing:
        fails = _step_failures(mc)
        if fails:
            sid, share = fails[0]
            out.append(
                f"fewer failures: step '{sid}' ends failed in {share:.1%} of runs; more retries "
                "(retryPolicy.maxRetries), a step timeout for hangs, or a fallback plan"
            )
    if not out:
        out.append(
            "capacity does not move these metrics; look at the plan's retries, timeouts and "
            "the agents' error rates"
        )
    return "; ".join(out)


def _step_failures(mc: MonteCarloResult) -> list[tuple[str, float]]:
    """Steps whose last attempt did not succeed, by share of runs (largest first)."""
    sp = mc.spans
    keys = ["replication", "run_id"] if "replication" in sp.columns else ["run_id"]
    last = (
        sp.sort_values("attempt", kind="stable").groupby([*keys, "step_id"], observed=True).tail(1)
    )
    bad = last[last["outcome"].astype(str) != "succeeded"]
    shares = bad.groupby(bad["step_id"].astype(str)).size() / max(1, len(mc.runs))
    return [(str(k), float(v)) for k, v in shares.sort_values(ascending=False).items()]


def _reason_max(
    top: _Candidate,
    unl: _Candidate,
    bounds: dict[str, tuple[str, float]],
    patterns: list[str],
    max_capacity: int,
    peak: dict[str, int],
) -> str:
    failing = [m for m in bounds if not top.met[m]]
    at = "; ".join(f"{m} = {_interval(m, top.summary)}" for m in failing)
    unlimited = "; ".join(f"{m} = {_interval(m, unl.summary)}" for m in failing)
    most = ", ".join(f"{p}: {peak[p]}" for p in patterns)
    return (
        f"no capacity up to max_capacity = {max_capacity} meets the SLO: at "
        f"{max_capacity} slots {at}, while unlimited capacity reaches {unlimited} (its study "
        f"had up to {most} attempts in flight at once): raise max_capacity"
    )


# ------------------------------------------------------------------ the chart


def capacity_chart(plan: CapacityPlan, metric: str | None = None, title: str | None = None) -> Any:
    """An SLO metric of every candidate ``capacity_for`` studied, against its capacity
    (several agents: their total), with 95% intervals; the SLO bound, the
    unlimited-capacity bound and the answer marked. Lines are traces in data units, so
    they sit right on a linear or a log axis (log when the values span more than 4×).
    Times in ms.

    Args:
        plan: A ``CapacityPlan``.
        metric: A metric of the SLO; None (default): the first.
        title: The figure's title; None (default): the metric and the answer.

    Returns:
        A plotly Figure.

    Raises:
        TypeError: ``plan`` is not a ``CapacityPlan``.
        PlanValidationError: ``metric`` is not a metric of the SLO.
    """
    import plotly.graph_objects as go

    if not isinstance(plan, CapacityPlan):
        raise TypeError(f"capacity_chart takes a CapacityPlan, got {type(plan).__name__}")
    metric = metric or next(iter(plan.slo))
    if metric not in plan.slo:
        raise PlanValidationError(
            f"capacity_chart: {metric!r} is not a metric of the SLO ({', '.join(plan.slo)})"
        )
    op, bound = plan.slo[metric]
    unit = "ms" if metric.endswith("_ms") else "share of runs" if metric.endswith("_rate") else ""
    one = len(plan.agents) == 1

    def x_of(c: _Candidate) -> int:
        return sum(
            int(c.caps[p]) if c.caps[p] is not None else plan.peak_in_flight.get(p, 1)
            for p in plan.agents
        )

    rows = []
    for c in plan.candidates:
        r = c.summary.metrics.loc[metric]
        rows.append(
            (x_of(c), float(r["value"]), float(r["ci_low"]), float(r["ci_high"]), c.met[metric], c)
        )
    finite = [r for r in rows if r[5].caps[plan.agents[0]] is not None]
    unl = [r for r in rows if r[5].caps[plan.agents[0]] is None]
    fig = go.Figure()

    def hover(c: _Candidate) -> str:
        caps = ", ".join(
            f"{p}={'unlimited' if c.caps[p] is None else c.caps[p]}" for p in plan.agents
        )
        return f"{caps} ({c.phase})"

    for label, met, colour in (
        (f"meets {op} {_fmt(metric, bound)} (95% interval)", True, "#2ca02c"),
        ("misses it (95% interval)", False, "#d62728"),
    ):
        pts = [r for r in finite if r[4] == met]
        if not pts:
            continue
        fig.add_scatter(
            x=[r[0] for r in pts],
            y=[r[1] for r in pts],
            mode="markers",
            name=label,
            marker={"color": colour, "size": 9},
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [r[3] - r[1] for r in pts],
                "arrayminus": [r[1] - r[2] for r in pts],
            },
            text=[hover(r[5]) for r in pts],
        )
    xs = [r[0] for r in rows]
    x_pad = max(0.5, 0.04 * (max(xs) - min(xs)))
    x_lo, x_hi = min(xs) - x_pad, max(xs) + x_pad
    if unl:
        u = unl[0]
        fig.add_scatter(
            x=[u[0]],
            y=[u[1]],
            mode="markers",
            name=f"unlimited capacity ({'≥' if one else 'total ≥'} {u[0]} slots: nothing waits)",
            marker={"color": "grey", "symbol": "diamond", "size": 10},
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [u[3] - u[1]],
                "arrayminus": [u[1] - u[2]],
            },
            text=[hover(u[5])],
        )
        fig.add_scatter(
            x=[x_lo, x_hi],
            y=[u[1], u[1]],
            mode="lines",
            name=f"best any capacity can do: {_fmt(metric, u[1])}",
            line={"color": "grey", "dash": "dot"},
        )
    fig.add_scatter(
        x=[x_lo, x_hi],
        y=[bound, bound],
        mode="lines",
        name=f"SLO: {metric} {op} {_fmt(metric, bound)}",
        line={"color": "#d62728", "dash": "dash"},
    )
    if plan.feasible:
        chosen = next(r for r in finite if r[5].caps == plan.capacities)
        caps = ", ".join(f"{p}: {n}" for p, n in plan.capacities.items())
        fig.add_scatter(
            x=[chosen[0]],
            y=[chosen[1]],
            mode="markers",
            name=f"answer: {caps}",
            marker={"color": "black", "symbol": "star", "size": 16},
        )
    ys = [v for r in rows for v in r[1:4] if math.isfinite(v)] + [bound]
    y_min, y_max = min(ys), max(ys)
    log = y_min > 0 and y_max / y_min > 4
    if log:
        y_range = [math.log10(y_min / 1.25), math.log10(y_max * 1.25)]
    else:
        pad = 0.08 * (y_max - y_min) or 0.05 * max(abs(y_max), 1.0)
        y_range = [y_min - pad if y_min - pad > 0 or y_min < 0 else 0.0, y_max + pad]
    x_title = (
        (
            f"{plan.agents[0]} autoscale max (most attempts served at once)"
            if plan.agents[0] in plan.autoscaled
            else f"{plan.agents[0]} capacity (attempts served at once)"
        )
        if one
        else f"total slots of {' + '.join(plan.agents)}"
        + (" (autoscale max where autoscaled)" if plan.autoscaled else "")
    )
    if title is None:
        verdict = (
            "answer: " + ", ".join(f"{p} {n}" for p, n in plan.capacities.items())
            if plan.feasible
            else "infeasible"
        )
        title = f"{metric} vs capacity ({verdict})"
    fig.update_layout(
        title=title,
        xaxis={"title": x_title, "range": [x_lo, x_hi], "type": "linear"},
        yaxis={
            "title": f"{metric} ({unit})" if unit else metric,
            "type": "log" if log else "linear",
            "range": y_range,
        },
        legend={"orientation": "h", "yanchor": "top", "y": -0.22, "x": 0},
        margin={"b": 150},
        height=560,
        plot_bgcolor="white",
    )
    fig.update_xaxes(showgrid=True, gridcolor="#eee", dtick=_dtick(x_hi - x_lo))
    fig.update_yaxes(showgrid=True, gridcolor="#eee")
    return fig


def _dtick(span: float) -> int:
    """An integer tick step giving at most ~12 ticks (capacities are integers)."""
    step = 1
    while span / step > 12:
        step *= 2
    return step
