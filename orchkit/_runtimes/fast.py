"""The vectorised fast path of Monte-Carlo studies (numpy): the rules of SPEC §3 computed for
a whole block of independent runs at once, for plans where no slot limit binds.

It applies when every plan of the fallback chain is sequential (``parallel: false``) or
parallel with no ``maxConcurrency`` below its number of steps, and no agent has a capacity
limit (``monte_carlo`` checks the latter). Then a run's timeline needs no event queue:

- parallel: a step starts when its last dependency succeeds (the plan's start for roots);
  sequential: steps run one at a time in the fixed order "first ready step in plan
  order", computed once from the DAG; a skipped step is left out and the others keep
  their relative order (the core's ready-heap gives exactly this order).
- a step is a chain of attempts: latency and outcome from ``ActionModel.draw_arrays``; an
  attempt whose latency reaches the step's timeout (or that hangs) ends as "timeout" at
  the timeout; a retry starts its backoff (with jitter) after the failed attempt's end.
- each plan is first computed as if nothing ended it early; then it is cut at the first
  failure (failFast) or at its deadline (the deadline wins a tie, as in the core, whose
  deadline timer is scheduled first): attempts that start at or after the cut never
  happened, those still running are "cancelled" at the cut.
- a plan that never ends (a hang with no step timeout, no deadline, no failFast failure)
  ends as "failed", without fallback, at the last moment anything happened in the run
  (as the SimPy driver's ``finish_hung``).
- a plan that did not succeed runs its fallback from its end time, with its own deadline.

Runs are processed in blocks of ``BLOCK_RUNS``; block b draws from
``numpy.random.default_rng`` seeded from (seed, b), so results depend only on the seed and
the number of runs, and memory stays bounded. All times are ms from the run's start.
"""

from __future__ import annotations

import math
from collections import Counter
from heapq import heapify, heappop, heappush
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .._base.errors import PlanValidationError
from .._engine.core import CompiledPlan
from .._engine.prepared import Prepared
from .._engine.result import (
    HUNG,
    RUN_COLUMNS,
    SPAN_COLUMNS,
    categorical,
    columns_frame,
    spans_frame,
    str_column,
)
from .._spec.models import AgentModels
from .._spec.plan import Plan

__all__ = ["BLOCK_RUNS", "choose_method", "fast_runs", "supports", "why_not"]

BLOCK_RUNS = 1 << 16  # runs per block (one rng seeding, bounded working memory)
_INF = math.inf
_ALL = slice(None)  # every run of the block
_OK, _ERROR, _HANG, _TIMEOUT, _CANCELLED = 0, 1, 2, 3, 4  # attempt outcome codes
_OUTCOMES = np.array(["succeeded", "error", "hang", "timeout", "cancelled"], dtype=object)
_SUCCEEDED, _FAILED, _TIMED_OUT, _HUNG = 0, 1, 2, 3  # plan status codes
_STATUS = ("succeeded", "failed", "timed_out")
_SEED_TAG = 0x66617374  # "fast": keeps these streams apart from other uses of the seed


def supports(plan: Plan) -> bool:
    """True when every plan of ``plan``'s fallback chain can be computed by the vectorised
    rules (see ``why_not``). (Agent capacity limits are checked by ``choose_method``.)"""
    return why_not(plan) is None


def why_not(plan: Plan) -> str | None:
    """Why the vectorised rules cannot compute ``plan``, or None: they need every plan of
    the chain sequential, or parallel with no ``maxConcurrency`` below its number of steps,
    and no hedged step (a hedge starts when another attempt is late, and is cancelled when
    one succeeds: attempts of a step are no longer one after the other)."""
    p: Plan | None = plan
    while p is not None:
        if p.parallel and p.max_concurrency is not None and p.max_concurrency < len(p.steps):
            return f"plan '{p.id}' caps parallel steps with maxConcurrency {p.max_concurrency}"
        hedged = [s.id for s in p.steps if s.hedge is not None]
        if hedged:
            return (
                f"plan '{p.id}' hedges steps {', '.join(hedged)} (hedged attempts overlap "
                "and cancel each other; the fast path draws attempts one after the other)"
            )
        p = p.fallback_plan
    return None


def choose_method(prepared: Prepared, method: str) -> tuple[str, str]:
    """The path an independent-runs study takes ("simpy" or "fast", as ``method`` asks:
    "auto", "simpy" or "fast") and why (``MonteCarloResult.method_reason``). The fast path
    applies when no capacity, outage, breaker, overload rule or hedge makes an attempt
    depend on another one's timing."""
    plan, models, policies = prepared.plan, prepared.models, prepared.policies
    if method not in ("auto", "simpy", "fast"):
        raise ValueError(f"method must be 'auto', 'simpy' or 'fast', got {method!r}")
    if method == "simpy":
        return "simpy", "method='simpy' was asked for"
    binding = binding_capacities(plan, models)
    outages = sorted(
        {
            s.agent_id
            for p in plan.chain()
            for s in p.steps
            if getattr(models.resolve(s.agent_id, s.action), "outages", ())
        }
    )
    breakers = sorted(
        {
            s.agent_id
            for p in plan.chain()
            for s in p.steps
            if policies is not None and policies.breaker(s.agent_id) is not None
        }
    )
    overloaded = sorted(
        {
            s.agent_id
            for p in plan.chain()
            for s in p.steps
            if policies is not None and policies.overload(s.agent_id) is not None
        }
    )
    why = (
        f"the capacity of agents {', '.join(binding)} can make attempts of one run wait"
        if binding
        else f"agents {', '.join(outages)} have outages, which depend on the clock (the fast "
        "path draws attempts before it knows their start times)"
        if outages
        else f"agents {', '.join(breakers)} have circuit breakers, whose state depends on the "
        "order of attempt outcomes in time (the fast path draws them step by step)"
        if breakers
        else f"agents {', '.join(overloaded)} have overload rules (admission, throttle or "
        "autoscale), which depend on what other attempts do at the same time (the fast path "
        "draws each run alone)"
        if overloaded
        else why_not(plan)
    )
    if why is None:
        return (
            "fast",
            "the fast path applies: no capacity, outage, breaker or hedge makes an "
            "attempt depend on another one's timing",
        )
    if method == "fast":
        raise PlanValidationError(
            f"plan '{plan.id}': method='fast' does not apply: {why}; use method='simpy' or 'auto'"
        )
    return "simpy", f"the fast path does not apply: {why}"


def binding_capacities(plan: Plan, models: AgentModels) -> list[str]:
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


# ------------------------------------------------------------------ compiled form


class _Step:
    __slots__ = (
        "index",
        "step_id",
        "agent_id",
        "action",
        "model",
        "timeout",
        "retries",
        "delay_ms",
        "jitter",
        "on_error",
        "on_timeout",
        "error_msg",
    )

    def __init__(self, cp: CompiledPlan, i: int, models: AgentModels):
        self.index = i
        self.step_id, self.agent_id, self.action = cp.step_ids[i], cp.agent_ids[i], cp.actions[i]
        self.model = models.resolve(self.agent_id, self.action)
        self.timeout = cp.timeout_ms[i]
        rp = cp.retry[i]
        self.retries = 0 if rp is None else rp[0]
        self.delay_ms = None if rp is None else rp[1]  # (k): after failed attempt k, before jitter
        self.jitter = 0.0 if rp is None else rp[2]
        self.on_error = rp is not None and rp[3]
        self.on_timeout = rp is not None and rp[4] and self.timeout is not None
        self.error_msg = f"simulated error: agent '{self.agent_id}' action '{self.action}' failed"

    def timeout_msg(self, k: int) -> str:
        return f"step '{self.step_id}' attempt {k} timed out after {self.timeout:g} ms (running)"

    def retry_mask(self, outc: np.ndarray) -> np.ndarray | None:
        if self.on_error and self.on_timeout:
            return (outc == _ERROR) | (outc == _TIMEOUT)
        if self.on_error:
            return outc == _ERROR
        if self.on_timeout:
            return outc == _TIMEOUT
        return None


class _Plan:
    __slots__ = (
        "cp",
        "id",
        "n",
        "steps",
        "deps",
        "order",
        "rank",
        "parallel",
        "deadline",
        "fail_fast",
        "can_hang",
        "deadline_msg",
    )

    def __init__(self, cp: CompiledPlan, models: AgentModels):
        self.cp, self.id, self.n = cp, cp.id, cp.n
        self.steps = [_Step(cp, i, models) for i in range(cp.n)]
        self.deps = cp.deps
        self.parallel = cp.limit > 1
        self.deadline = cp.deadline_ms
        self.fail_fast = cp.fail_fast
        self.deadline_msg = f"cancelled: Orchestration plan {cp.id} timed out"
        # "first ready step in plan order" with every step succeeding (the core's ready
        # heap): a topological order; a sequential plan runs its non-skipped steps in it
        remaining = list(cp.deps_count)
        ready = list(cp.roots)
        heapify(ready)
        order, depth = [], [0] * cp.n
        while ready:
            i = heappop(ready)
            order.append(i)
            for j in cp.dependents[i]:
                depth[j] = max(depth[j], depth[i] + 1)
                remaining[j] -= 1
                if remaining[j] == 0:
                    heappush(ready, j)
        self.order = order
        # tie-break of attempts starting at the same instant in the spans frame
        key = (
            {i: pos for pos, i in enumerate(order)}
            if not self.parallel
            else {i: (depth[i], i) for i in range(cp.n)}
        )
        ranked = sorted(range(cp.n), key=key.__getitem__)
        self.rank = np.empty(cp.n, dtype=np.int64)
        self.rank[ranked] = np.arange(cp.n)
        self.can_hang = self.deadline is None and any(
            s.timeout is None and s.model.hang > 0 for s in self.steps
        )


def _at(x: Any, rows: np.ndarray | None) -> Any:
    """``x`` (a per-run array or a scalar) at ``rows`` (None: all runs)."""
    return x if rows is None or np.ndim(x) == 0 else x[rows]


def _chain(cp: CompiledPlan | None, models: AgentModels) -> list[_Plan]:
    """The compiled plan and its fallbacks with the models bound to their steps."""
    out = []
    while cp is not None:
        out.append(_Plan(cp, models))
        cp = cp.fallback
    return out


# ------------------------------------------------------------------ one block of runs


class _Outputs:
    """The per-run columns of a study; a block writes its runs' rows through views of
    them (``rows``), so nothing is copied block by block."""

    __slots__ = ("end", "status", "attempts", "retries", "timeouts", "final")

    def __init__(self, *columns: np.ndarray):
        for name, col in zip(self.__slots__, columns, strict=True):
            setattr(self, name, col)

    @classmethod
    def zeros(cls, n: int) -> _Outputs:
        counts = [np.zeros(n, dtype=np.int64) for _ in range(3)]  # attempts, retries, timeouts
        return cls(np.zeros(n), np.zeros(n, dtype=np.int8), *counts, np.zeros(n, dtype=np.int8))

    def rows(self, sl: slice) -> _Outputs:
        return _Outputs(*(getattr(self, name)[sl] for name in self.__slots__))


class _Block:
    """Runs ``base .. base+n`` of a study: per-run outputs (written into ``out``, the
    block's rows of the study's columns), busy time, kept span pieces."""

    def __init__(
        self,
        chain: list[_Plan],
        gen: np.random.Generator,
        base: int,
        out: _Outputs,
        keep: int,
        busy: dict[str, float],
        pieces: list[tuple] | None,
    ):
        self.chain, self.gen, self.base, self.keep = chain, gen, base, keep
        self.busy, self.pieces = busy, pieces
        self.track = any(fp.can_hang for fp in chain)
        self.end, self.status, self.final = out.end, out.status, out.final
        self.attempts, self.retries, self.timeouts = out.attempts, out.retries, out.timeouts
        # the latest event time of each run so far (for runs that hang; SimDriver's clock)
        self.last_event = np.zeros(len(out.end)) if self.track else None

    def run(self) -> None:
        ids: np.ndarray | None = None  # block-local run indexes in this plan (None: all)
        t0 = np.zeros(len(self.end))
        for p, fp in enumerate(self.chain):
            st, end = self._plan(p, fp, ids, t0)
            sel = _ALL if ids is None else ids
            self.status[sel], self.end[sel], self.final[sel] = st, end, p
            if p + 1 == len(self.chain):
                break
            go = np.flatnonzero((st == _FAILED) | (st == _TIMED_OUT))
            if not go.size:
                break
            t0 = end[go]
            ids = go if ids is None else ids[go]
        self.status[self.status == _HUNG] = _FAILED

    # -- one plan of the chain, for the runs ``ids`` started at ``t0`` -----------------

    def _plan(
        self, p: int, fp: _Plan, ids: np.ndarray | None, t0: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        m = len(t0)
        track = self.track
        # one record per batch of attempts: (step, attempt number, rows (None: all m runs),
        # run mask, start, end, outcome code, latest event time, retry timer's start)
        recs: list[tuple] = []
        ends: list[Any] = [None] * fp.n  # step end (-inf: skipped / never started)
        oks: list[Any] = [None] * fp.n
        fails: list[Any] = [None] * fp.n
        all_ok: np.ndarray | None = None
        t = t0  # sequential: when the slot frees up
        horizon = None if fp.deadline is None else t0 + fp.deadline
        for i in fp.order:
            fs = fp.steps[i]
            deps = fp.deps[i]
            run = None
            if deps:
                run = oks[deps[0]]
                for d in deps[1:]:
                    run = run & oks[d]
                if run.all():
                    run = None
            if fp.parallel:
                if deps:
                    start = ends[deps[0]]
                    for d in deps[1:]:
                        start = np.maximum(start, ends[d])
                else:
                    start = t0
            else:
                start = t
            if run is not None:
                start = np.where(run, start, _INF)
            end, outc = self._step(fs, start, run, recs, horizon)
            ok = outc == _OK
            # a failure matters only to a failFast plan (its first one cuts the plan)
            fail = (outc == _ERROR) | (outc == _TIMEOUT) if fp.fail_fast else None
            if run is not None:
                ok &= run
                if fail is not None:
                    fail &= run
                if not fp.parallel:
                    t = np.where(run, end, t)
                end = np.where(run, end, -_INF)
            elif not fp.parallel:
                t = end
            ends[i], oks[i], fails[i] = end, ok, fail
            all_ok = ok if all_ok is None else all_ok & ok

        natural = t if not fp.parallel else np.maximum.reduce(ends) if fp.n > 1 else ends[0]
        status = np.where(all_ok, _SUCCEEDED, _FAILED).astype(np.int8)
        trunc = fp.deadline is not None or fp.fail_fast or fp.can_hang
        first_fail = None
        if fp.fail_fast:
            first_fail = np.minimum.reduce([np.where(f, e, _INF) for f, e in zip(fails, ends)])
            plan_end = np.minimum(natural, first_fail)
            cut_start, cut_cancel = first_fail, np.nextafter(first_fail, _INF)
        else:
            plan_end = natural
            cut_start = cut_cancel = _INF
        timed = None
        if fp.deadline is not None:
            dl = t0 + fp.deadline
            timed = dl <= plan_end  # the deadline timer fires first on a tie
            plan_end = np.where(timed, dl, plan_end)
            cut_start = np.where(timed, dl, cut_start)
            cut_cancel = np.where(timed, dl, cut_cancel)
            status[timed] = _TIMED_OUT
        hung = None
        if fp.can_hang:
            hung = plan_end == _INF
            if hung.any():
                status[hung] = _HUNG
            else:
                hung = None
        if track:  # the latest event time of each run, through this plan
            sel = _ALL if ids is None else ids
            last = np.maximum(
                self.last_event[sel], self._hung_events(recs, cut_start, cut_cancel, t0, fp)
            )
            if hung is not None:
                plan_end = np.where(hung, last, plan_end)
            self.last_event[sel] = last

        # -- the attempts that happened: counts, busy time, spans ----------------------
        if ids is None:  # the chain's first plan, for every run: count into the block's
            attempts, retries, timeouts = self.attempts, self.retries, self.timeouts
        else:
            attempts = np.zeros(m, dtype=np.int64)
            retries = np.zeros(m, dtype=np.int64)
            timeouts = np.zeros(m, dtype=np.int64)
        keep = self.keep if ids is None else int(np.searchsorted(ids, self.keep))
        reasons = self._reasons(fp, keep, timed, first_fail, hung, fails, ends) if keep else None
        busy = self.busy
        for i, k, rows, run, start, end, outc in recs:
            fs = fp.steps[i]
            if trunc:
                launched = start < _at(cut_start, rows)
                cancelled = end >= _at(cut_cancel, rows)
                if cancelled.any():
                    span_end = np.where(cancelled, _at(plan_end, rows), end)
                else:
                    cancelled = None
                    span_end = end
                busy_ms = float(np.sum(span_end - start, where=launched))
                counted = launched
            else:
                cancelled = None
                span_end = end
                launched = run  # None: every row
                if launched is None:
                    busy_ms = float(np.sum(end - start))
                else:
                    busy_ms = float(np.sum(end - start, where=launched))
                counted = 1 if launched is None else launched
            busy[fs.agent_id] += busy_ms
            if rows is None:
                attempts += counted
            else:
                attempts[rows] += counted
                retries[rows] += counted
            if fs.timeout is not None:
                tmo = outc == _TIMEOUT
                if launched is not None:
                    tmo &= launched
                if cancelled is not None:
                    tmo &= ~cancelled
                if rows is None:
                    timeouts += tmo
                else:
                    timeouts[rows] += tmo
            if keep:
                self._keep(
                    p,
                    fp,
                    fs,
                    k,
                    rows,
                    keep,
                    launched,
                    start,
                    span_end,
                    outc,
                    cancelled,
                    reasons,
                    ids,
                )
        if ids is not None:
            self._add(ids, attempts, retries, timeouts)
        return status, plan_end

    def _step(
        self,
        fs: _Step,
        start: np.ndarray,
        run: np.ndarray | None,
        recs: list,
        horizon: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every attempt of step ``fs`` from ``start``: its end and final attempt outcome.
        Retries stop once every run still retrying would start at or after its plan's
        deadline (``horizon``): none of them could start, so a huge budget costs nothing."""
        gen = self.gen
        m = len(start)
        lat, code = fs.model.draw_arrays(gen, m)
        end, outc = _outcome(fs, start, lat, code)
        recs.append((fs.index, 1, None, run, start, end, outc))
        if not fs.retries:
            return end, outc
        need = fs.retry_mask(outc)
        if need is None:
            return end, outc
        if run is not None:
            need &= run
        rows = None
        fin_end, fin_outc = end, outc
        for k in range(1, fs.retries + 1):  # attempt k failed: attempt k+1 after the backoff
            loc = np.flatnonzero(need)
            if not loc.size:
                break
            if rows is None:
                fin_end, fin_outc = end.copy(), outc.copy()
                rows = loc
            else:
                rows = rows[loc]
            prev = fin_end[rows]
            delay: Any = fs.delay_ms(k)
            if fs.jitter:
                delay = delay * (1.0 - fs.jitter + 2.0 * fs.jitter * gen.random(rows.size))
            s = prev + delay
            if horizon is not None and (s >= horizon[rows]).all():
                fin_end[rows] = s  # past the deadline: the plan times out first
                break
            lat, code = fs.model.draw_arrays(gen, rows.size)
            e, o = _outcome(fs, s, lat, code)
            fin_end[rows] = e
            fin_outc[rows] = o
            recs.append((fs.index, k + 1, rows, None, s, e, o))
            need = fs.retry_mask(o)
        return fin_end, fin_outc

    @staticmethod
    def _hung_events(
        recs: list, cut_start: Any, cut_cancel: Any, t0: np.ndarray, fp: _Plan
    ) -> np.ndarray:
        """Per run, the last moment anything happened in this plan (as SimDriver.finish_hung
        sees it): the plan's start, and each attempt that started: its end, or its start if
        it never ends."""
        last = t0.copy()
        for _i, _k, rows, _run, start, end, _outc in recs:
            cs, cc = _at(cut_start, rows), _at(cut_cancel, rows)
            happened = np.where(end < cc, end, np.minimum(cc, end))
            happened = np.where(np.isfinite(happened), happened, start)
            val = np.where((start < cs) & np.isfinite(start), happened, -_INF)
            if rows is None:
                np.maximum(last, val, out=last)
            else:
                last[rows] = np.maximum(last[rows], val)
        return last

    def _add(
        self,
        ids: np.ndarray,
        attempts: np.ndarray,
        retries: np.ndarray,
        timeouts: np.ndarray,
    ) -> None:
        self.attempts[ids] += attempts  # ids are distinct, so += adds once per run
        self.retries[ids] += retries
        self.timeouts[ids] += timeouts

    # -- spans of the kept runs --------------------------------------------------------

    @staticmethod
    def _reasons(
        fp: _Plan, keep: int, timed: Any, first_fail: Any, hung: Any, fails: list, ends: list
    ) -> np.ndarray:
        """The error of attempts cancelled by the plan's end, for its first ``keep`` runs."""
        out = np.full(keep, None, dtype=object)
        if first_fail is not None:
            masked = np.stack([np.where(f[:keep], e[:keep], _INF) for f, e in zip(fails, ends)])
            first = masked.argmin(axis=0)
            msgs = np.array(
                [
                    f"cancelled: step '{s.step_id}' failed and the plan is failFast"
                    for s in fp.steps
                ],
                dtype=object,
            )
            has = np.isfinite(masked.min(axis=0))
            out[has] = msgs[first[has]]
        if hung is not None:
            out[hung[:keep]] = HUNG
        if timed is not None:
            out[timed[:keep]] = fp.deadline_msg
        return out

    def _keep(
        self,
        p: int,
        fp: _Plan,
        fs: _Step,
        k: int,
        rows: np.ndarray | None,
        keep: int,
        launched: Any,
        start: np.ndarray,
        end: np.ndarray,
        outc: np.ndarray,
        cancelled: Any,
        reasons: np.ndarray,
        ids: np.ndarray | None,
    ) -> None:
        n = keep if rows is None else int(np.searchsorted(rows, keep))
        if not n:
            return
        local = np.arange(n) if rows is None else rows[:n]
        sel = slice(0, n)
        outc = outc[sel].copy()
        if cancelled is not None:
            outc[cancelled[sel]] = _CANCELLED
        take = None if launched is None else launched[sel]
        start, end = start[sel], end[sel]
        if take is not None:
            local, start, end, outc = local[take], start[take], end[take], outc[take]
        error = np.full(local.size, None, dtype=object)
        error[outc == _ERROR] = fs.error_msg
        if fs.timeout is not None:
            error[outc == _TIMEOUT] = fs.timeout_msg(k)
        canc = outc == _CANCELLED
        if canc.any():
            error[canc] = reasons[local[canc]]
        run_id = self.base + (local if ids is None else ids[local])
        self.pieces.append(
            (run_id, p, fs.index, int(fp.rank[fs.index]), k, start, end, outc, error)
        )


def _outcome(
    fs: _Step, start: np.ndarray, lat: np.ndarray, code: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """End time and outcome code of attempts that start at ``start`` with latency ``lat``
    (inf: hang) and model outcome ``code``."""
    t = fs.timeout
    if t is None:
        return start + lat, code
    timed_out = lat >= t  # the step's timer was scheduled first: it wins a tie
    return start + np.minimum(lat, t), np.where(timed_out, np.int8(_TIMEOUT), code)


# ------------------------------------------------------------------ the entry point


def fast_runs(
    prepared: Prepared,
    seed: int,
    runs: int,
    keep_spans: bool | int = True,
    *,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Simulate ``runs`` independent runs of the study's plan (each alone, from t = 0) with
    the vectorised rules; the plan must satisfy ``supports`` and no agent capacity may bind
    (``choose_method`` says).

    Returns ``(runs_df, spans_df, busy_ms)``: one row per run (``orchkit.RUN_COLUMNS``), one
    row per attempt of the kept runs (``orchkit.SPAN_COLUMNS``; ``keep_spans`` True: all
    runs, an int k: runs 0..k-1, False: none) and each agent's total running time in ms.
    ``progress`` shows a tqdm bar over blocks of ``BLOCK_RUNS`` runs when there are several.
    The same seed and runs give identical frames.
    """
    plan = prepared.plan
    if not supports(plan):
        raise ValueError(
            f"plan '{plan.id}': the fast path needs sequential plans or parallel "
            "ones whose maxConcurrency is not below their number of steps"
        )
    chain = _chain(prepared.compiled[0], prepared.models)
    keep = runs if keep_spans is True else max(0, min(runs, int(keep_spans or 0)))
    busy = {a: 0.0 for fp in chain for a in dict.fromkeys(fp.cp.agent_ids)}
    pieces: list[tuple] = []
    out = _Outputs.zeros(runs)
    blocks = range(0, runs, BLOCK_RUNS)
    bar = tqdm(
        total=runs,
        desc=f"simulating {plan.id} (fast)",
        unit="run",
        disable=not progress or len(blocks) < 2,
    )
    with np.errstate(invalid="ignore"):  # inf - inf of attempts that never started
        for b, base in enumerate(blocks):
            n = min(BLOCK_RUNS, runs - base)
            gen = np.random.default_rng([abs(int(seed)), int(seed < 0), b, _SEED_TAG])
            rows = out.rows(slice(base, base + n))
            _Block(chain, gen, base, rows, max(0, min(n, keep - base)), busy, pieces).run()
            bar.update(n)
    bar.close()
    return (
        _runs_frame(chain, out),
        _spans_frame(chain, pieces),
        busy,
    )


def _runs_frame(chain: list[_Plan], out: _Outputs) -> pd.DataFrame:
    n = len(out.end)
    return columns_frame(
        {
            "run_id": np.arange(n, dtype=np.int64),
            "plan_id": categorical([chain[0].id], np.zeros(n, dtype=np.int8)),
            "status": categorical(list(_STATUS), out.status),
            "arrival_ms": np.zeros(n),
            "start_ms": np.zeros(n),
            "end_ms": out.end,
            "makespan_ms": out.end.copy(),
            "attempts": out.attempts,
            "retries": out.retries,
            "timeouts": out.timeouts,
            "shed": np.zeros(n, dtype=np.int64),  # the fast path declines overload rules
            "fallback_used": out.final > 0,
            "final_plan_id": categorical([fp.id for fp in chain], out.final),
        },
        RUN_COLUMNS,
    )


def _spans_frame(chain: list[_Plan], pieces: list[tuple]) -> pd.DataFrame:
    if not pieces:
        return spans_frame([])
    run_id = np.concatenate([pc[0] for pc in pieces])
    sizes = [len(pc[0]) for pc in pieces]
    plan = np.repeat([pc[1] for pc in pieces], sizes)
    # one code per (plan, step) for the string columns
    offsets = np.cumsum([0] + [fp.n for fp in chain])
    step = np.repeat([offsets[pc[1]] + pc[2] for pc in pieces], sizes)
    rank = np.repeat([pc[3] for pc in pieces], sizes)
    attempt = np.repeat(np.array([pc[4] for pc in pieces], dtype=np.int64), sizes)
    start = np.concatenate([pc[5] for pc in pieces])
    end = np.concatenate([pc[6] for pc in pieces])
    outc = np.concatenate([pc[7] for pc in pieces])
    error = np.concatenate([pc[8] for pc in pieces])
    order = np.lexsort((attempt, rank, start, plan, run_id))
    steps = [s for fp in chain for s in fp.steps]
    step = step[order]
    start = start[order]
    return columns_frame(
        {
            "run_id": run_id[order].astype(np.int64),
            "plan_id": categorical([fp.id for fp in chain for _ in fp.steps], step),
            "step_id": categorical([s.step_id for s in steps], step),
            "agent_id": categorical([s.agent_id for s in steps], step),
            "action": categorical([s.action for s in steps], step),
            "attempt": attempt[order],
            "queued_ms": start,
            "start_ms": start.copy(),
            "end_ms": end[order],
            "outcome": categorical(list(_OUTCOMES), outc[order]),
            "error": str_column(error[order]),
            "hedge": np.zeros(len(order), dtype=bool),  # the fast path declines hedged plans
        },
        SPAN_COLUMNS,
    )
