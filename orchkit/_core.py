"""The scheduling core: every rule of SPEC §3, and nothing else.

Everything that decides what runs when lives in this module. It does no I/O, reads no
clock and imports no event loop: a driver tells it the time and what happened, and it
answers with what to do. The live runtime (asyncio) and the simulated runtime (SimPy) are
two small loops around it::

    core = Scheduler(capacity=lambda agent_id: None, rng=random.Random(0))
    run, actions = core.submit(compile_plan(plan), now_ms=0.0, run_id="r1")
    while ...:                       # the driver's loop
        for action in actions:       # StartAttempt, CancelAttempt, StartTimer, CancelTimer,
            ...                      # Emit, FinishRun: carry them out, in order
        actions = core.attempt_succeeded(attempt, now_ms, response)   # or attempt_failed,
                                                                      # timer_fired

Facts about attempts or timers the core no longer cares about (an attempt it cancelled, a
timer it dropped) are ignored, so a driver never has to race the core.

The core decides by the time it is told, not by the order facts reach it: before it
handles any fact at ``now_ms`` it fires, in (time, creation) order, every timer of its own
that is due (``at_ms <= now_ms``) and not yet fired. So a result that arrives after its step
timeout or its plan deadline (an agent blocked the event loop) is late, whatever order the
driver's callbacks ran in; the driver's own call for such a timer later is a stale fact.

A driver that cannot stop an attempt at once (asyncio: a coroutine may ignore
cancellation) creates the core with ``hold_slots=True``: an attempt the core cancels then
keeps its agent slot until the driver reports ``attempt_exited``.

Timers: the plan deadline starts when the plan starts; a step's timeout starts when its
attempt is queued at the agent (the wait for capacity counts); a retry waits its backoff
from the moment the failed attempt ended. One core may serve many runs at once (a live
orchestrator, a workload study): they share each agent's capacity, FIFO.
"""

from __future__ import annotations

import random
import weakref
from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from heapq import heapify, heappop, heappush
from typing import Any, Callable

from ._plan import Plan


class StepState(IntEnum):
    PENDING = 0
    RUNNING = 1  # an attempt is queued at the agent or running
    BACKING_OFF = 2
    SUCCEEDED = 3
    FAILED = 4
    SKIPPED = 5
    CANCELLED = 6


PENDING, RUNNING, BACKING_OFF, SUCCEEDED, FAILED, SKIPPED, CANCELLED = StepState
_TERMINAL = (SUCCEEDED, FAILED, SKIPPED, CANCELLED)

_ATTEMPT_TIMEOUT, _RETRY, _DEADLINE = 0, 1, 2


class CompiledPlan:
    """A plan compiled once into indexed, plain structures (step i = i-th step in plan order)."""

    __slots__ = ("id", "n", "step_ids", "agent_ids", "actions", "inputs", "deps",
                 "deps_count", "dependents", "retry", "timeout_ms", "limit", "deadline_ms",
                 "fail_fast", "fallback", "roots")

    def __init__(self, plan: Plan):
        self.id = plan.id
        steps = plan.steps
        self.n = len(steps)
        self.step_ids = [s.id for s in steps]
        index = {sid: i for i, sid in enumerate(self.step_ids)}
        self.agent_ids = [s.agent_id for s in steps]
        self.actions = [s.action for s in steps]
        self.inputs = [s.input for s in steps]
        self.deps = [tuple(index[d] for d in dict.fromkeys(s.dependencies)) for s in steps]
        self.deps_count = [len(d) for d in self.deps]
        self.dependents: list[list[int]] = [[] for _ in steps]
        for i, ds in enumerate(self.deps):
            for d in ds:
                self.dependents[d].append(i)
        self.roots = [i for i, c in enumerate(self.deps_count) if c == 0]
        # retry: (max_retries, delay_ms, jitter, on_error, on_timeout), where delay_ms(k) is
        # the delay after failed attempt k before jitter (RetryPolicy.delay_ms, on demand:
        # a budget of 10**8 retries costs nothing until used)
        self.retry = []
        for s in steps:
            rp = s.retry_policy
            self.retry.append(None if rp is None or rp.max_retries == 0 else (
                rp.max_retries, rp.delay_ms,
                rp.jitter, "error" in rp.retry_on, "timeout" in rp.retry_on))
        self.timeout_ms = [s.timeout_ms for s in steps]
        self.limit = (plan.max_concurrency or self.n) if plan.parallel else 1
        self.deadline_ms = plan.timeout_ms
        self.fail_fast = plan.fail_fast
        self.fallback = None if plan.fallback_plan is None else compile_plan(plan.fallback_plan)


_COMPILED: dict[int, tuple[weakref.ref, CompiledPlan]] = {}


def compile_plan(plan: Plan) -> CompiledPlan:
    """The plan's compiled form, built once per Plan object (cached while the plan lives)."""
    key = id(plan)
    hit = _COMPILED.get(key)
    if hit is not None and hit[0]() is plan:
        return hit[1]
    cp = CompiledPlan(plan)
    _COMPILED[key] = (weakref.ref(plan, lambda _ref: _COMPILED.pop(key, None)), cp)
    return cp


# ------------------------------------------------------------------ state the core owns


class Attempt:
    """One call of a step's action. Times in ms on the driver's clock; ``start_ms`` is None
    while the attempt waits for agent capacity (and stays None if it never started)."""

    __slots__ = ("run", "prun", "step", "number", "queued_ms", "start_ms", "end_ms",
                 "outcome", "error", "timer", "live", "held")

    def __init__(self, run: Run, prun: PlanRun, step: int, number: int, queued_ms: float):
        self.run = run
        self.prun = prun
        self.step = step
        self.number = number
        self.queued_ms = queued_ms
        self.start_ms: float | None = None
        self.end_ms: float | None = None
        self.outcome: str | None = None
        self.error: str | None = None
        self.timer: Timer | None = None
        self.live = True
        self.held = False  # cancelled, still holding its agent slot until attempt_exited

    @property
    def step_id(self) -> str:
        return self.prun.cp.step_ids[self.step]

    @property
    def agent_id(self) -> str:
        return self.prun.cp.agent_ids[self.step]

    @property
    def action(self) -> str:
        return self.prun.cp.actions[self.step]

    @property
    def input(self) -> Any:
        return self.prun.cp.inputs[self.step]

    def __repr__(self) -> str:
        return f"<Attempt {self.prun.cp.id}/{self.step_id}#{self.number} {self.outcome or 'live'}>"


class Timer:
    """A wake-up the core asked for at ``at_ms``; the driver calls ``timer_fired`` then."""

    __slots__ = ("at_ms", "kind", "target", "live")

    def __init__(self, at_ms: float, kind: int, target: Any):
        self.at_ms = at_ms
        self.kind = kind
        self.target = target
        self.live = True


class PlanRun:
    """The state of one plan of a run's fallback chain."""

    __slots__ = ("cp", "run", "start_ms", "end_ms", "state", "remaining", "ready", "busy",
                 "left", "current", "results", "errors", "deadline", "status", "failed")

    def __init__(self, cp: CompiledPlan, run: Run, now: float):
        self.cp = cp
        self.run = run
        self.start_ms = now
        self.end_ms: float | None = None
        self.state = [PENDING] * cp.n
        self.remaining = cp.deps_count.copy()
        self.ready = cp.roots.copy()  # a heap of step indexes: plan order breaks ties
        self.busy = 0  # steps holding one of the plan's slots (running or backing off)
        self.left = cp.n  # steps not yet in a terminal state
        self.current: list[Any] = [None] * cp.n  # live Attempt, or the retry Timer
        self.results: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.deadline: Timer | None = None
        self.status: str | None = None
        self.failed = False


class Run:
    """One call of ``orchestrate``/``simulate``: a plan and, if it did not succeed, its
    fallbacks. ``plans`` lists the PlanRuns tried; ``attempts`` every attempt, in order."""

    __slots__ = ("run_id", "start_ms", "end_ms", "plans", "attempts", "status", "context",
                 "retries", "timeouts")

    def __init__(self, run_id: Any, now: float, context: Any = None):
        self.run_id = run_id
        self.start_ms = now
        self.end_ms: float | None = None
        self.plans: list[PlanRun] = []
        self.attempts: list[Attempt] = []
        self.status: str | None = None
        self.context = context  # the driver's own data (a future, an rng...)
        self.retries = 0  # attempts after a step's first
        self.timeouts = 0  # attempts that ended in a step timeout


class _AgentSlots:
    __slots__ = ("capacity", "busy", "queue", "busy_ms")

    def __init__(self, capacity: int | None):
        self.capacity = capacity
        self.busy = 0  # attempts running now
        self.queue: deque[Attempt] = deque()  # attempts waiting, FIFO
        self.busy_ms = 0.0  # total running time of the attempts that ended


# ------------------------------------------------------------------ actions


@dataclass(slots=True)
class StartAttempt:
    """Call the agent for ``attempt`` now; report its end with attempt_succeeded/failed."""
    attempt: Attempt


@dataclass(slots=True)
class CancelAttempt:
    """Stop ``attempt`` (it timed out, or its plan ended); the core has recorded it. With
    ``hold_slots``, report ``attempt_exited`` once it has really stopped."""
    attempt: Attempt


@dataclass(slots=True)
class StartTimer:
    """Call ``timer_fired(timer, now)`` at ``timer.at_ms``."""
    timer: Timer


@dataclass(slots=True)
class CancelTimer:
    """``timer`` is no longer needed (firing it anyway is harmless)."""
    timer: Timer


@dataclass(slots=True)
class Emit:
    """Publish ``event`` with ``payload`` on the bus."""
    event: str
    payload: dict[str, Any]


@dataclass(slots=True)
class FinishRun:
    """``run`` is over: ``run.status`` and ``run.end_ms`` are set."""
    run: Run


# ------------------------------------------------------------------ the scheduler


class Scheduler:
    """The one scheduling core (SPEC §3), shared by every driver.

    ``capacity(agent_id)`` gives an agent's capacity (None: unlimited), asked once per
    agent; ``rng`` (a ``random.Random``) draws the backoff jitter; ``events=False`` skips
    building bus events (Monte-Carlo studies); ``hold_slots=True``: a cancelled attempt
    keeps its agent slot until ``attempt_exited``. Each fact method takes the driver's
    current time in ms (never decreasing) and returns the actions to carry out, in order.
    """

    def __init__(self, capacity: Callable[[str], int | None] = lambda agent_id: None,
                 rng: random.Random | None = None, *, events: bool = True,
                 hold_slots: bool = False):
        self._capacity = capacity
        self.rng = rng if rng is not None else random.Random(0)
        self._events = events
        self._hold = hold_slots
        self._agents: dict[str, _AgentSlots] = {}
        self._out: list[Any] = []
        self._freed: list[_AgentSlots] = []  # agents with a free slot and a queue
        self._timers: list[tuple[float, int, Timer]] = []  # heap of (at_ms, seq, timer)
        self._seq = 0
        self._stale = 0  # timers in the heap that no longer fire

    # -- facts ------------------------------------------------------------------------

    def submit(self, cp: CompiledPlan, now_ms: float, run_id: Any,
               context: Any = None) -> tuple[Run, list[Any]]:
        """Start a run of ``cp`` at ``now_ms``; returns the run and the first actions."""
        out = self._out = []
        self._due(now_ms)
        run = Run(run_id, now_ms, context)
        self._start_plan(run, cp, now_ms)
        if self._freed:
            self._settle(now_ms)
        return run, out

    def attempt_succeeded(self, attempt: Attempt, now_ms: float, response: Any) -> list[Any]:
        """The agent returned a valid ``response`` for ``attempt``."""
        out = self._out = []
        self._due(now_ms)
        if not attempt.live:
            return out
        self._end_attempt(attempt, now_ms, "succeeded", None)
        pr = attempt.prun
        cp = pr.cp
        i = attempt.step
        sid = cp.step_ids[i]
        pr.state[i] = SUCCEEDED
        pr.current[i] = None
        pr.results[sid] = response
        pr.busy -= 1
        pr.left -= 1
        if self._events:
            job = _job_id(attempt)
            self._emit("step:completed", attempt, now_ms, jobId=job, response=response)
            self._emit("queue:completed", attempt, now_ms, jobId=job, result=response)
        remaining, state, ready = pr.remaining, pr.state, pr.ready
        for j in cp.dependents[i]:
            remaining[j] -= 1
            if remaining[j] == 0 and state[j] == PENDING:
                heappush(ready, j)
        if pr.left == 0:
            self._finish_plan(pr, now_ms, "failed" if pr.failed else "succeeded")
        elif ready:
            self._pump(pr, now_ms)
        if self._freed:
            self._settle(now_ms)
        return out

    def attempt_failed(self, attempt: Attempt, now_ms: float, error: str, *,
                       retryable: bool = True) -> list[Any]:
        """The agent raised, or returned something that is not a valid response."""
        out = self._out = []
        self._due(now_ms)
        if attempt.live:
            self._fail_attempt(attempt, now_ms, "error", str(error), retryable)
            if self._freed:
                self._settle(now_ms)
        return out

    def timer_fired(self, timer: Timer, now_ms: float) -> list[Any]:
        """A timer the core started is due."""
        out = self._out = []
        self._due(now_ms)
        if timer.live:  # a driver may call a little before ``timer.at_ms`` (clock ticks)
            self._stale += 1  # it stays in the heap
            self._fire(timer, now_ms)
            if self._freed:
                self._settle(now_ms)
        return out

    def attempt_exited(self, attempt: Attempt, now_ms: float) -> list[Any]:
        """An attempt the core cancelled has really stopped (``hold_slots``): its agent slot
        is free from ``now_ms``."""
        out = self._out = []
        self._due(now_ms)
        if attempt.held:
            attempt.held = False
            self._release(attempt, now_ms)
            if self._freed:
                self._settle(now_ms)
        return out

    def _due(self, now: float) -> None:
        """Fire, in (time, creation) order, the timers due at ``now`` that have not fired."""
        heap = self._timers
        while heap and heap[0][0] <= now:
            timer = heappop(heap)[2]
            if not timer.live:
                self._stale -= 1
                continue
            self._fire(timer, now)
            if self._freed:
                self._settle(now)

    def _fire(self, timer: Timer, now_ms: float) -> None:
        out = self._out
        timer.live = False
        kind, target = timer.kind, timer.target
        if kind == _ATTEMPT_TIMEOUT:
            att = target
            if att.start_ms is not None:
                self._cancel(att)
            limit = att.prun.cp.timeout_ms[att.step]
            where = "waiting for agent capacity" if att.start_ms is None else "running"
            self._fail_attempt(att, now_ms, "timeout",
                               f"step '{att.step_id}' attempt {att.number} timed out after "
                               f"{_ms(limit)} ms ({where})", True)
        elif kind == _RETRY:
            pr, i, number = target
            pr.current[i] = None
            pr.state[i] = RUNNING
            self._launch(pr, i, number, now_ms)
        else:
            pr = target
            pr.deadline = None
            self._finish_plan(pr, now_ms, "timed_out")

    def abort(self, run: Run, now_ms: float, reason: str) -> list[Any]:
        """End ``run`` now with status "failed" (its caller gave up): what is in flight is
        cancelled and no fallback runs."""
        out = self._out = []
        self._due(now_ms)
        if run.status is None:
            self._finish_plan(run.plans[-1], now_ms, "failed", reason, fallback=False)
            if self._freed:
                self._settle(now_ms)
        return out

    def busy_ms(self) -> dict[str, float]:
        """Per agent: total ms its attempts spent running (ended attempts only)."""
        return {agent_id: slots.busy_ms for agent_id, slots in self._agents.items()}

    # -- rules ------------------------------------------------------------------------

    def _start_plan(self, run: Run, cp: CompiledPlan, now: float) -> None:
        pr = PlanRun(cp, run, now)
        run.plans.append(pr)
        if self._events:
            self._out.append(Emit("plan:started", {
                "planId": cp.id, "runId": run.run_id, "timeMs": now - run.start_ms}))
        if cp.deadline_ms is not None:
            pr.deadline = self._timer(now + cp.deadline_ms, _DEADLINE, pr)
        self._pump(pr, now)

    def _pump(self, pr: PlanRun, now: float) -> None:
        """§3.1/3.2: start ready steps, first in plan order, while the plan has free slots."""
        ready, limit, state = pr.ready, pr.cp.limit, pr.state
        while ready and pr.busy < limit:
            i = heappop(ready)
            pr.busy += 1
            state[i] = RUNNING
            self._launch(pr, i, 1, now)

    def _launch(self, pr: PlanRun, i: int, number: int, now: float) -> None:
        """Queue attempt ``number`` of step ``i`` at its agent (§3.3a)."""
        run = pr.run
        att = Attempt(run, pr, i, number, now)
        pr.current[i] = att
        run.attempts.append(att)
        if number > 1:
            run.retries += 1
        cp = pr.cp
        t = cp.timeout_ms[i]
        if t is not None:
            att.timer = self._timer(now + t, _ATTEMPT_TIMEOUT, att)
        agent_id = cp.agent_ids[i]
        slots = self._agents.get(agent_id)
        if slots is None:
            slots = self._agents[agent_id] = _AgentSlots(self._capacity(agent_id))
        queue = slots.queue
        while queue and not queue[0].live:
            queue.popleft()
        if slots.capacity is None or (slots.busy < slots.capacity and not queue):
            slots.busy += 1
            att.start_ms = now
            if self._events:
                self._emit_started(att, now)
            self._out.append(StartAttempt(att))
        else:
            queue.append(att)

    def _begin(self, att: Attempt, now: float) -> None:
        att.start_ms = now
        if self._events:
            self._emit_started(att, now)
        self._out.append(StartAttempt(att))

    def _emit_started(self, att: Attempt, now: float) -> None:
        self._emit("step:started", att, now, jobId=_job_id(att), attempt=att.number,
                   queuedMs=att.queued_ms - att.run.start_ms)

    def _end_attempt(self, att: Attempt, now: float, outcome: str, error: str | None) -> None:
        """Record the attempt's end and free its agent slot. The slot goes to the next
        queued attempt once the current fact is fully processed (``_settle``), so that an
        attempt of a plan this fact ends is never started."""
        att.live = False
        att.end_ms = now
        att.outcome = outcome
        att.error = error
        if att.timer is not None and att.timer.live:
            self._drop(att.timer)
        if att.start_ms is None or att.held:
            return  # still waiting: the queue drops it at its turn; held: attempt_exited frees it
        self._release(att, now)

    def _cancel(self, att: Attempt) -> None:
        """Ask the driver to stop a started attempt (before ``_end_attempt`` records it)."""
        att.held = self._hold
        self._out.append(CancelAttempt(att))

    def _release(self, att: Attempt, now: float) -> None:
        slots = self._agents[att.prun.cp.agent_ids[att.step]]
        slots.busy -= 1
        slots.busy_ms += now - att.start_ms
        if slots.queue:
            self._freed.append(slots)

    def _settle(self, now: float) -> None:
        """Give the agent slots freed by the current fact to queued attempts, FIFO."""
        freed, self._freed = self._freed, []
        for slots in freed:
            queue = slots.queue
            while queue and slots.busy < slots.capacity:
                nxt = queue.popleft()
                if nxt.live:
                    slots.busy += 1
                    self._begin(nxt, now)

    def _fail_attempt(self, att: Attempt, now: float, outcome: str, error: str,
                      retryable: bool) -> None:
        """§3.4/3.5: retry after the backoff, or fail the step and skip its dependents."""
        self._end_attempt(att, now, outcome, error)
        pr = att.prun
        cp = pr.cp
        i = att.step
        if outcome == "timeout":
            att.run.timeouts += 1
        if self._events:
            job = _job_id(att)
            self._emit("queue:failed", att, now, jobId=job, error=error)
            if outcome == "error":
                self._emit("agent:error", att, now, jobId=job, error=error)
        rp = cp.retry[i]
        k = att.number
        if (rp is not None and k <= rp[0] and retryable
                and (rp[3] if outcome == "error" else rp[4])):
            delay = rp[1](k)
            jitter = rp[2]
            if jitter:
                delay *= 1.0 - jitter + 2.0 * jitter * self.rng.random()
            if self._events:
                self._emit("step:retrying", att, now, jobId=_job_id(att), attempt=k + 1,
                           delayMs=delay, error=error)
            if delay > 0:
                pr.state[i] = BACKING_OFF
                pr.current[i] = self._timer(now + delay, _RETRY, (pr, i, k + 1))
            else:
                self._launch(pr, i, k + 1, now)
            return
        sid = cp.step_ids[i]
        pr.state[i] = FAILED
        pr.current[i] = None
        pr.errors[sid] = error
        pr.busy -= 1
        pr.left -= 1
        pr.failed = True
        if self._events:
            self._emit("step:failed", att, now, jobId=_job_id(att), attempt=k,
                       outcome=outcome, error=error)
        if cp.fail_fast:
            self._finish_plan(pr, now, "failed",
                              f"cancelled: step '{sid}' failed and the plan is failFast")
            return
        self._skip_dependents(pr, i, now)
        if pr.left == 0:
            self._finish_plan(pr, now, "failed")
        elif pr.ready:
            self._pump(pr, now)

    def _skip_dependents(self, pr: PlanRun, failed: int, now: float) -> None:
        cp, state = pr.cp, pr.state
        cause = cp.step_ids[failed]
        stack = list(reversed(cp.dependents[failed]))
        while stack:
            j = stack.pop()
            if state[j] != PENDING:
                continue
            state[j] = SKIPPED
            pr.left -= 1
            sid = cp.step_ids[j]
            pr.errors[sid] = f"skipped: dependency '{cause}' did not succeed"
            if self._events:
                self._out.append(Emit("step:skipped", {
                    "planId": cp.id, "stepId": sid, "agentId": cp.agent_ids[j],
                    "dependencyId": cause, "runId": pr.run.run_id,
                    "timeMs": now - pr.run.start_ms}))
            stack.extend(reversed(cp.dependents[j]))

    def _finish_plan(self, pr: PlanRun, now: float, status: str, reason: str | None = None,
                     fallback: bool = True) -> None:
        """§3.6–3.8: cancel what is unfinished, then run the fallback or finish the run."""
        cp, run = pr.cp, pr.run
        if status == "timed_out":
            reason = f"cancelled: Orchestration plan {cp.id} timed out"
        if pr.left:
            attempts = []
            for i, cur in enumerate(pr.current):
                if cur is None:
                    continue
                if isinstance(cur, Timer):  # a waiting retry is dropped
                    self._drop(cur)
                else:
                    cur.live = False  # first, so that no slot freed below goes to this plan
                    attempts.append(cur)
                pr.current[i] = None
            for att in attempts:
                if att.start_ms is not None:
                    self._cancel(att)
                self._end_attempt(att, now, "cancelled", reason)
            state = pr.state
            for i in range(cp.n):
                if state[i] not in _TERMINAL:
                    state[i] = CANCELLED
                    pr.errors[cp.step_ids[i]] = reason or "cancelled"
            pr.left = 0
        if pr.deadline is not None:
            self._drop(pr.deadline)
            pr.deadline = None
        pr.status = status
        pr.end_ms = now
        if self._events:
            self._out.append(Emit("plan:completed", {
                "planId": cp.id, "runId": run.run_id, "status": status,
                "success": status == "succeeded", "duration": now - pr.start_ms,
                "timeMs": now - run.start_ms}))
        if status != "succeeded" and fallback and cp.fallback is not None:
            if self._events:
                self._out.append(Emit("plan:fallback", {
                    "planId": cp.id, "fallbackPlanId": cp.fallback.id, "runId": run.run_id,
                    "timeMs": now - run.start_ms}))
            self._start_plan(run, cp.fallback, now)
            return
        run.status = status
        run.end_ms = now
        self._out.append(FinishRun(run))

    # -- helpers ----------------------------------------------------------------------

    def _timer(self, at: float, kind: int, target: Any) -> Timer:
        timer = Timer(at, kind, target)
        heap = self._timers
        if self._stale > 64 and 2 * self._stale > len(heap):  # compact the cancelled ones
            heap[:] = [e for e in heap if e[2].live]
            heapify(heap)
            self._stale = 0
        self._seq += 1
        heappush(heap, (at, self._seq, timer))
        self._out.append(StartTimer(timer))
        return timer

    def _drop(self, timer: Timer) -> None:
        timer.live = False
        self._stale += 1
        self._out.append(CancelTimer(timer))

    def _emit(self, event: str, att: Attempt, now: float, **extra: Any) -> None:
        pr = att.prun
        payload = {"planId": pr.cp.id, "stepId": pr.cp.step_ids[att.step],
                   "agentId": pr.cp.agent_ids[att.step], "runId": pr.run.run_id,
                   "timeMs": now - pr.run.start_ms}
        payload.update(extra)
        self._out.append(Emit(event, payload))


def _job_id(att: Attempt) -> str:
    return f"{att.run.run_id}:{att.prun.cp.id}:{att.prun.cp.step_ids[att.step]}:{att.number}"


def _ms(value: float) -> str:
    return f"{value:g}"
