"""The table lane of workload studies: the core's rules compiled for the plans most studies
run, on the same SimPy clock, as plain records and callbacks.

A workload study (``capacity_study``) spends most of its time in the general core's
bookkeeping: per run a ``Run``, a ``PlanRun`` and ``Attempt`` objects, a list of actions per
fact that a driver dispatches, then row tuples and frames. This lane keeps what the frames
need: a record per run, one per attempt that is also the SimPy event of its end (no
separate fact object, no action list), agents as records the compiled steps point to (no
dict look-up per event), and frames built once from whole columns.

It is the core's rules, compiled: for every study it takes, its frames equal the core's bit
for bit (the same draws from the same generators in the same order, the same event order,
ties included), which ``tests/test_tables.py`` checks against the core on random plans,
models and workloads. It takes plans without hedges, agents without circuit breakers or
overload rules, and models whose hangs a step timeout or the plan's deadline ends; it
declines anything else (``declines`` says why) and the core runs the study. Times in ms on
the study's clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any

import numpy as np
import pandas as pd

from .._engine.core import (
    ATTEMPT_TIMEOUT,
    BACKING_OFF,
    DEADLINE,
    FAILED,
    PENDING,
    RETRY,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    CompiledPlan,
)
from .._engine.prepared import Prepared
from .._engine.result import (
    RUN_COLUMNS,
    SPAN_COLUMNS,
    categorical,
    columns_frame,
    spans_frame,
    str_column,
)
from .._spec.models import ActionModel, AgentModels

STATUSES = ["succeeded", "failed", "timed_out"]
OUTCOMES = ["succeeded", "error", "timeout", "cancelled"]
_OK, _ERROR, _TIMEOUT, _CANCELLED = 0, 1, 2, 3


def declines(prepared: Prepared) -> str | None:
    """Why the table lane does not take this workload study (None: it does)."""
    if prepared.breakers() is not None or prepared.overload() is not None:
        return "circuit breakers and overload rules run in the core"
    models = prepared.models
    for cp in _chain_of(prepared.compiled):
        if cp.hedge is not None:
            return f"plan '{cp.id}' hedges"
        for i in range(cp.n):
            model = models.resolve(cp.agent_ids[i], cp.actions[i])
            if type(model) is not ActionModel:
                return "agent models other than ok.AgentModels' run in the core"
            hangs = model.hang > 0 or any(o.model.hang > 0 for o in model.outages)
            if hangs and cp.timeout_ms[i] is None and cp.deadline_ms is None:
                return f"step '{cp.step_ids[i]}' of plan '{cp.id}' can hang for ever"
    return None


def _chain_of(cps: tuple[CompiledPlan, ...]) -> list[CompiledPlan]:
    """Every compiled plan of the mix and of their fallback chains, each once, in order."""
    out: list[CompiledPlan] = []
    for cp in cps:
        while cp is not None and cp not in out:
            out.append(cp)
            cp = cp.fallback
    return out


class _Agent:
    __slots__ = ("id", "capacity", "busy", "queue", "busy_ms", "used")

    def __init__(self, agent_id: str, capacity: int | None):
        self.id = agent_id
        self.capacity: float = math.inf if capacity is None else capacity
        self.busy = 0
        self.queue: deque[_Job] = deque()
        self.busy_ms = 0.0
        self.used = False


class _Step:
    """One step of a compiled plan, with everything its attempts need at hand."""

    __slots__ = (
        "plan",
        "i",
        "code",
        "sid",
        "action",
        "agent",
        "sample",
        "hang",
        "fail",
        "timed",
        "error",
        "timeout",
        "retry",
        "dependents",
    )


class _Plan:
    __slots__ = (
        "id",
        "code",
        "n",
        "steps",
        "fresh",
        "deps_count",
        "roots",
        "flat",
        "limit",
        "deadline",
        "fail_fast",
        "fallback",
    )


class _Run:
    """One run, with the state of the plan of its fallback chain that runs now (``state``,
    the steps' states, only where a step waits on others: None in a flat plan)."""

    __slots__ = (
        "id",
        "rng",
        "start",
        "end",
        "status",
        "first",
        "plan",
        "nplans",
        "state",
        "remaining",
        "ready",
        "busy",
        "left",
        "current",
        "failed",
        "deadline",
    )
    id: int
    rng: Any
    start: float
    end: float
    status: int
    first: int
    plan: _Plan
    nplans: int
    state: list[int]  # (None in a flat plan's run)
    remaining: list[int]
    ready: list[int]
    busy: int
    left: int
    current: list[Any]
    failed: bool
    deadline: _Timer | None


class _Job:
    """One attempt; scheduled on the SimPy clock, it is the event of its own end."""

    __slots__ = (
        "callbacks",
        "run",
        "step",
        "number",
        "queued",
        "start",
        "end",
        "outcome",
        "error",
        "live",
        "timer",
    )
    _ok = True  # what SimPy's Environment.step asks of an event
    # (no __init__: _launch sets its fields, a Python call less per attempt)
    callbacks: tuple | None
    run: _Run
    step: _Step
    number: int
    queued: float
    start: float | None
    end: float
    outcome: int
    error: str | None
    live: bool
    timer: _Timer | None


class _Timer:
    """A timer; scheduled on the SimPy clock, it is the event that fires it."""

    __slots__ = ("callbacks", "at", "kind", "target", "live")
    _ok = True

    def __init__(self, at: float, kind: int, target: Any, callbacks: tuple):
        self.callbacks = callbacks
        self.at = at
        self.kind = kind
        self.target = target
        self.live = True


class TableStudy:
    """The table lane on SimPy environment ``env``: ``submit(k, now, i, rng)`` starts run
    ``i`` of plan ``k`` of ``cps``; ``on_finish()``, if given, is called as each run ends."""

    def __init__(
        self,
        env: Any,
        cps: tuple[CompiledPlan, ...],
        models: AgentModels,
        rng: Any,
        on_finish: Callable[[], None] | None,
    ):
        self.env = env
        self.rng = rng  # the backoff jitter's
        self.on_finish = on_finish
        self.runs: list[_Run] = []
        self.jobs: list[_Job] = []
        self.timers: list[tuple[float, int, _Timer]] = []
        self.seq = 0
        self.freed: list[_Agent] = []
        self.order: list[_Agent] = []  # agents in the order of their first attempt
        self.failures = False  # an attempt ended other than in success
        self._push = env._queue
        self._eid = env._eid
        self._ok_cb = (self._succeeded,)
        self._fail_cb = (self._failed,)
        self._fire_cb = (self._fired,)
        agents: dict[str, _Agent] = {}
        self.steps: list[_Step] = []  # every step of every plan: the spans' step codes
        compiled: dict[CompiledPlan, _Plan] = {}
        chain = _chain_of(cps)
        self.plan_ids = [cp.id for cp in chain]
        for code, cp in enumerate(chain):
            p = compiled[cp] = _Plan()
            p.id, p.code, p.n = cp.id, code, cp.n
            p.fresh = cp.fresh[0]
            p.deps_count, p.roots = cp.deps_count, cp.roots
            # no dependency and no limit: every step starts at once, nothing is ever ready
            # later (no ready heap, no dependency counts to copy per run)
            p.flat = cp.n == len(cp.roots) and cp.limit >= cp.n
            p.limit, p.deadline, p.fail_fast = cp.limit, cp.deadline_ms, cp.fail_fast
            p.steps = []
            for i in range(cp.n):
                agent_id, action = cp.agent_ids[i], cp.actions[i]
                ag = agents.get(agent_id)
                if ag is None:
                    ag = agents[agent_id] = _Agent(agent_id, models.capacity(agent_id))
                model = models.resolve(agent_id, action)
                s = _Step()
                s.plan, s.i, s.code, s.sid, s.action = p, i, len(self.steps), cp.step_ids[i], action
                s.agent = ag
                # ActionModel.draw, inline: its latency, then one rng.random() for the outcome
                s.sample, s.hang, s.fail = model.latency.sample, model.hang, model._fail
                s.timed = model if model.outages else None
                s.error = f"simulated error: agent '{agent_id}' action '{action}' failed"
                s.timeout, s.retry, s.dependents = cp.timeout_ms[i], cp.retry[i], cp.dependents[i]
                p.steps.append(s)
                self.steps.append(s)
        for cp, p in compiled.items():
            p.fallback = None if cp.fallback is None else compiled[cp.fallback]
        self.plans = [compiled[cp] for cp in cps]

    # -- facts ------------------------------------------------------------------------

    def submit(self, k: int, now: float, i: int, rng: Any) -> None:
        """Run ``i`` of plan ``k`` arrives at ``now``; its attempts draw from ``rng``."""
        if self.timers and self.timers[0][0] <= now:
            self._due(now)
        run = _Run()
        plan = self.plans[k]
        run.id = i
        run.rng = rng
        run.start = now
        run.first = plan.code
        run.nplans = 0
        self.runs.append(run)
        self._start_plan(run, plan, now)
        if self.freed:
            self._settle(now)

    def _succeeded(self, job: _Job) -> None:
        now = self.env._now
        if self.timers and self.timers[0][0] <= now:
            self._due(now)
        if not job.live:
            return
        job.live = False  # (the core's _end_attempt)
        job.end = now
        job.outcome = _OK
        job.error = None
        if job.timer is not None:
            self._drop_timer(job)
        run, step = job.run, job.step
        ag = step.agent
        ag.busy -= 1
        ag.busy_ms += now - job.start  # type: ignore[operator]  # it started
        if ag.queue:
            self.freed.append(ag)
        run.busy -= 1
        run.left -= 1
        if run.left == 0:  # its last step: the run ends (its step states, unwritten, go)
            if run.failed or run.deadline is not None:
                self._finish(run, now, "failed" if run.failed else "succeeded")
            else:  # (the common end, inline)
                run.status = 0
                run.end = now
                run.state = run.remaining = run.ready = run.current = None  # type: ignore[assignment]
                if self.on_finish is not None:
                    self.on_finish()
        else:
            i = step.i
            run.current[i] = None
            state = run.state
            if state is not None:
                state[i] = SUCCEEDED
                if step.dependents:
                    remaining, ready = run.remaining, run.ready
                    for j in step.dependents:
                        remaining[j] -= 1
                        if remaining[j] == 0 and state[j] == PENDING:
                            heappush(ready, j)
                if run.ready:
                    self._pump(run, now)
        if self.freed:
            self._settle(now)

    def _failed(self, job: _Job) -> None:
        now = self.env._now
        if self.timers and self.timers[0][0] <= now:
            self._due(now)
        if job.live:
            self._fail(job, now, _ERROR, job.step.error, True)
            if self.freed:
                self._settle(now)

    def _fired(self, timer: _Timer) -> None:
        now = self.env._now
        if self.timers and self.timers[0][0] <= now:
            self._due(now)
        if timer.live:  # SimPy's time may be a rounding before timer.at
            self._fire(timer, now)
            if self.freed:
                self._settle(now)

    def _due(self, now: float) -> None:
        heap = self.timers
        while heap and heap[0][0] <= now:
            timer = heappop(heap)[2]
            if timer.live:
                self._fire(timer, now)
                if self.freed:
                    self._settle(now)

    def _fire(self, timer: _Timer, now: float) -> None:
        timer.live = False
        kind, target = timer.kind, timer.target
        if kind == ATTEMPT_TIMEOUT:
            job = target
            step = job.step
            where = "waiting for agent capacity" if job.start is None else "running"
            self._fail(
                job,
                now,
                _TIMEOUT,
                f"step '{step.sid}' attempt {job.number} timed out after "
                f"{step.timeout:g} ms ({where})",
                True,
            )
        elif kind == RETRY:
            run, i, number = target
            run.current[i] = None
            if run.state is not None:
                run.state[i] = RUNNING
            self._launch(run, run.plan.steps[i], number, now)
        else:
            target.deadline = None
            self._finish(target, now, "timed_out")

    # -- rules (the core's, for the plans this lane takes) ------------------------------

    def _start_plan(self, run: _Run, plan: _Plan, now: float) -> None:
        run.plan = plan
        run.nplans += 1
        run.left, run.failed = plan.n, False
        run.current = [None] * plan.n
        run.deadline = None
        if plan.deadline is not None:
            run.deadline = self._timer(now + plan.deadline, DEADLINE, run)
        steps = plan.steps
        if plan.flat:  # no step waits on another: no step's state is ever asked
            run.state = None  # type: ignore[assignment]
            run.remaining = run.ready = ()  # type: ignore[assignment]
            run.busy = plan.n
            for step in steps:  # in plan order, as the core's ready heap gives them
                self._launch(run, step, 1, now)
            return
        run.state = state = plan.fresh.copy()
        run.remaining = plan.deps_count.copy()
        run.ready = ready = plan.roots.copy()
        limit, busy = plan.limit, 0  # (the core's _pump, inline)
        while ready and busy < limit:
            i = heappop(ready)
            busy += 1
            state[i] = RUNNING
            self._launch(run, steps[i], 1, now)
        run.busy = busy

    def _pump(self, run: _Run, now: float) -> None:
        ready, limit, state, steps = run.ready, run.plan.limit, run.state, run.plan.steps
        while ready and run.busy < limit:
            i = heappop(ready)
            run.busy += 1
            state[i] = RUNNING
            self._launch(run, steps[i], 1, now)

    def _launch(self, run: _Run, step: _Step, number: int, now: float) -> None:
        job = _Job()
        job.run = run
        job.step = step
        job.number = number
        job.queued = now
        job.start = None
        job.live = True
        job.timer = None
        run.current[step.i] = job
        self.jobs.append(job)
        ag = step.agent
        if not ag.used:
            ag.used = True
            self.order.append(ag)
        if step.timeout is not None:
            job.timer = self._timer(now + step.timeout, ATTEMPT_TIMEOUT, job)
        queue = ag.queue
        while queue and not queue[0].live:
            queue.popleft()
        if ag.busy < ag.capacity and not queue:
            ag.busy += 1
            self._begin(job, now)
        else:
            queue.append(job)

    def _begin(self, job: _Job, now: float) -> None:
        job.start = now
        step = job.step
        rng = job.run.rng
        if step.timed is None:
            latency = step.sample(rng)
            u = rng.random()
            hang, fail = step.hang, step.fail
        else:  # an outage: the model of an attempt starting now
            model = step.timed.at(now)
            latency = model.latency.sample(rng)
            u = rng.random()
            hang, fail = model.hang, model._fail
        if u >= fail:
            job.callbacks = self._ok_cb
        elif u >= hang:
            job.callbacks = self._fail_cb
        else:
            return  # a hung attempt never returns: its timer ends it
        heappush(self._push, (now + latency, 1, next(self._eid), job))

    def _end(self, job: _Job, now: float, outcome: int, error: str | None) -> None:
        self.failures = True  # (every other end is an attempt's success, inline)
        job.live = False
        job.end = now
        job.outcome = outcome
        job.error = error
        if job.timer is not None:
            self._drop_timer(job)
        if job.start is None:
            return  # still waiting: the queue drops it at its turn
        ag = job.step.agent
        ag.busy -= 1
        ag.busy_ms += now - job.start
        if ag.queue:
            self.freed.append(ag)

    @staticmethod
    def _drop_timer(job: _Job) -> None:
        """The attempt ended: its timeout timer, if still to fire, no longer will."""
        timer = job.timer
        if timer.live:  # type: ignore[union-attr]
            timer.live = False  # type: ignore[union-attr]
            timer.target = None  # type: ignore[union-attr]
        job.timer = None

    def _settle(self, now: float) -> None:
        """Give the agent slots the current fact freed to queued attempts, FIFO (starting
        an attempt frees nothing: no agent joins ``freed`` meanwhile)."""
        freed = self.freed
        for ag in freed:
            queue = ag.queue
            while queue and ag.busy < ag.capacity:
                nxt = queue.popleft()
                if nxt.live:
                    ag.busy += 1
                    self._begin(nxt, now)
        freed.clear()

    def _fail(self, job: _Job, now: float, outcome: int, error: str, retryable: bool) -> None:
        self._end(job, now, outcome, error)
        run, step = job.run, job.step
        i = step.i
        k = job.number
        rp = step.retry
        if (
            rp is not None
            and k <= rp[0]
            and retryable
            and (rp[3] if outcome != _TIMEOUT else rp[4])
        ):
            delay = rp[1](k)
            jitter = rp[2]
            if jitter:
                delay *= 1.0 - jitter + 2.0 * jitter * self.rng.random()
            if delay > 0:
                if run.state is not None:
                    run.state[i] = BACKING_OFF
                run.current[i] = self._timer(now + delay, RETRY, (run, i, k + 1))
            else:
                self._launch(run, step, k + 1, now)
            return
        if run.state is not None:
            run.state[i] = FAILED
        run.current[i] = None
        run.busy -= 1
        run.left -= 1
        run.failed = True
        plan = run.plan
        if plan.fail_fast:
            reason = f"cancelled: step '{step.sid}' failed and the plan is failFast"
            self._finish(run, now, "failed", reason)
            return
        state, stack = run.state, list(reversed(step.dependents))
        while stack:  # skip what depends on it
            j = stack.pop()
            if state[j] != PENDING:
                continue
            state[j] = SKIPPED
            run.left -= 1
            stack.extend(reversed(plan.steps[j].dependents))
        if run.left == 0:
            self._finish(run, now, "failed")
        elif run.ready:
            self._pump(run, now)

    def _finish(self, run: _Run, now: float, status: str, reason: str | None = None) -> None:
        plan = run.plan
        if status == "timed_out":
            reason = f"cancelled: Orchestration plan {plan.id} timed out"
        if run.left:
            jobs = []
            current = run.current
            for i, cur in enumerate(current):
                if cur is None:
                    continue
                if type(cur) is _Timer:  # a waiting retry
                    cur.live = False
                    cur.target = None
                else:
                    cur.live = False
                    jobs.append(cur)
                current[i] = None
            for job in jobs:
                self._end(job, now, _CANCELLED, reason)
            run.left = 0
        if run.deadline is not None:
            run.deadline.live = False
            run.deadline.target = None
            run.deadline = None
        if status != "succeeded" and plan.fallback is not None:
            self._start_plan(run, plan.fallback, now)
            return
        run.status = STATUSES.index(status)
        run.end = now
        run.state = run.remaining = run.ready = run.current = None  # type: ignore[assignment]
        if self.on_finish is not None:
            self.on_finish()

    def _timer(self, at: float, kind: int, target: Any) -> _Timer:
        timer = _Timer(at, kind, target, self._fire_cb)
        self.seq += 1
        heappush(self.timers, (at, self.seq, timer))
        now = self.env._now
        heappush(self._push, (now + max(0.0, at - now), 1, next(self._eid), timer))
        return timer

    def close(self) -> None:
        """Let go of what the study made (its records, and the cycles through its own
        callbacks), so that reference counting frees it all."""
        self.runs, self.jobs = [], []
        self._ok_cb = self._fail_cb = self._fire_cb = ()

    # -- what it leaves -----------------------------------------------------------------

    def busy_ms(self) -> dict[str, float]:
        """Per agent (in the order of its first attempt): ms its attempts spent running."""
        return {ag.id: ag.busy_ms for ag in self.order}

    def frames(self, keep_spans: bool | int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The runs frame and the spans frame (the core's ``runs_frame``/``spans_frame``
        of the same runs, built from whole columns)."""
        runs, jobs, steps = self.runs, self.jobs, self.steps
        n, m = len(runs), len(jobs)
        assert not runs or runs[-1].id == n - 1, "runs are numbered as they arrive"
        # per attempt, in the order attempts were made: what the run counts come from
        # one attempt per run (every run makes one as it arrives): attempt k is run k's,
        # queued as it arrived and ended as it ended
        one_each = m == n
        if one_each:
            run_of = np.arange(n, dtype=np.int64)
        else:
            run_of = np.array([j.run.id for j in jobs], dtype=np.int64)
        if self.failures:
            number = np.array([j.number for j in jobs], dtype=np.int64)
            outcome = _codes([j.outcome for j in jobs])
            status = _codes([r.status for r in runs])
        else:  # every attempt succeeded (so none was a retry) and so did every run
            number = np.ones(m, dtype=np.int64)
            outcome = np.full(m, _OK, dtype=np.int32)
            status = np.zeros(n, dtype=np.int32)
        start = np.array([r.start for r in runs], dtype=float)
        end = np.array([r.end for r in runs], dtype=float)
        if len(self.plan_ids) == 1:  # (no mix, no fallback)
            first, final, fallback = np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, bool)
        else:
            first = _codes([r.first for r in runs])
            final = _codes([r.plan.code for r in runs])
            fallback = np.array([r.nplans > 1 for r in runs], dtype=bool)
        run_frame = columns_frame(
            {
                "run_id": np.arange(n, dtype=np.int64),
                "plan_id": categorical(self.plan_ids, first),
                "status": categorical(STATUSES, status),
                "arrival_ms": start,
                "start_ms": start.copy(),
                "end_ms": end,
                "makespan_ms": end - start,
                "attempts": np.bincount(run_of, minlength=n).astype(np.int64),
                "retries": np.bincount(run_of[number > 1], minlength=n).astype(np.int64),
                "timeouts": np.bincount(run_of[outcome == _TIMEOUT], minlength=n).astype(np.int64),
                "shed": np.zeros(n, dtype=np.int64),
                "fallback_used": fallback,
                "final_plan_id": categorical(self.plan_ids, final),
            },
            RUN_COLUMNS,
        )
        if keep_spans is not True:  # the attempts of runs 0 .. keep_spans - 1
            kept = np.flatnonzero(run_of < keep_spans) if keep_spans else np.empty(0, np.intp)
            jobs = [jobs[k] for k in kept]
            run_of, number, outcome = run_of[kept], number[kept], outcome[kept]
        if not jobs:
            return run_frame, spans_frame([])
        if (run_of[1:] < run_of[:-1]).any():  # each run's attempts in order, runs in order
            order = np.argsort(run_of, kind="stable")
            jobs = [jobs[k] for k in order]
            run_of, number, outcome = run_of[order], number[order], outcome[order]
        m = len(jobs)  # (the spans kept)
        code = np.zeros(m, np.int32) if len(steps) == 1 else _codes([j.step.code for j in jobs])
        span_frame = columns_frame(
            {
                "run_id": run_of,
                "plan_id": categorical([s.plan.id for s in steps], code),
                "step_id": categorical([s.sid for s in steps], code),
                "agent_id": categorical([s.agent.id for s in steps], code),
                "action": categorical([s.action for s in steps], code),
                "attempt": number,
                "queued_ms": start[run_of]
                if one_each
                else np.array([j.queued for j in jobs], dtype=float),
                "start_ms": np.array([j.start for j in jobs], dtype=float),  # None: NaN
                "end_ms": end[run_of] if one_each else np.array([j.end for j in jobs], dtype=float),
                "outcome": categorical(OUTCOMES, outcome),
                "error": _errors([j.error for j in jobs])
                if self.failures
                else np.full(m, None, dtype=object),
                "hedge": np.zeros(m, dtype=bool),
            },
            SPAN_COLUMNS,
        )
        return run_frame, span_frame


def _codes(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int32)


def _errors(values: list[str | None]) -> Any:
    """The error column as ``spans_frame`` infers it (str with NaN; object if all None)."""
    return str_column(np.array(values, dtype=object))
