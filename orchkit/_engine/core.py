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

Resilience policies (SPEC §10) are rules of this core too, so both drivers get them alike:

- Circuit breaker per agent (``breakers(agent_id)`` -> a policy or None; Resilience4j's
  count-based sliding window). It is consulted when an attempt is queued at the agent:
  CLOSED admits it; OPEN rejects it at once (outcome ``rejected``, the agent is not called;
  for ``retryOn`` a rejection counts as an ``error``); HALF_OPEN admits ``halfOpenCalls``
  trial attempts and rejects the rest. An admitted attempt that called the agent is recorded
  when it ends: a failure if it ended in ``error`` or ``timeout``, slow if it ran (start to
  end, queue wait excluded) longer than ``slowCallMs``. An attempt that never started, or was
  cancelled, is not recorded (in HALF_OPEN its trial permit is given back). CLOSED opens when
  at least ``minCalls`` of the last ``window`` calls are recorded and their failure rate
  >= ``failureRate`` (or slow-call rate >= ``slowCallRate``); OPEN becomes HALF_OPEN by a core
  timer exactly ``openMs`` later; HALF_OPEN decides on its ``halfOpenCalls`` trial outcomes
  with the same thresholds: OPEN again, or CLOSED with an empty window. Outcomes of attempts
  admitted before the last transition are not counted.
- Hedged attempts per step (``hedge: {delayMs, maxHedges}``; Polly's hedging): when an
  attempt of the step starts running and no attempt succeeds within ``delayMs`` of the last
  start, one more attempt (a hedge) is queued, at most ``maxHedges`` per try. The first
  success wins and the others are cancelled. Each attempt has its own step ``timeout``. A
  try fails when its last attempt in flight fails (a non-retryable error fails it at once,
  cancelling the others); then the retry policy decides, counting tries, not hedges.

Overload control (SPEC §17; ``overload(agent_id)`` -> the agent's (admission, throttle,
autoscale) rules or None; the state classes live in ``overload``). An agent without rules
costs one ``is None`` test per attempt queued and one per attempt ended. With rules:

- Order at queueing: client-side throttle, then the breaker, then the queue bound; an
  attempt that passes starts at once if a slot is free and nobody waits, else waits.
- Shed and throttled attempts fail at once, outcome ``shed`` (error "shed: ..." or
  "throttled: ..."; retryable, an ``error`` for ``retryOn``), through the same deferred
  failure as breaker rejections (``_rejects``, failed in ``_settle``). ``Run.shed`` counts them.
- Concurrency: the agent runs at most min(capacity, usable limit) attempts. ``fixed``: a
  constant. ``aimd``: a timeout of a *running* attempt, or a shed by this agent's admission
  (queue bound, CoDel), sets limit = max(minLimit, floor(limit x backoffRatio)); a success
  while in flight >= limit / 2 (in flight: attempts running when it ended, itself included)
  adds one, up to maxLimit; errors and cancellations change nothing. A timeout while still
  waiting says nothing of the agent's concurrency and a throttled attempt never reached it:
  neither counts. ``gradient2``: Netflix's Gradient2Limit with tolerance 1, fed the running
  time (start to end) of every success and running timeout (see ``Gradient2Limiter``: the
  long RTT is a mean of its first 10 samples then an exponential average over
  ``longWindow``; it decays by 0.95 when long/short > 2; no change while in flight <
  limit / 2); the usable limit is floor(limit), at least 1. A lower limit never stops
  running attempts; a higher one starts waiting attempts at once.
  ``admission:limit_changed {agentId, limit, timeMs}`` is emitted when the usable integer
  limit changes.
- Queue discipline: ``fifo``; ``lifo`` (the newest waiting attempt first);
  ``adaptive_lifo``: FIFO, but LIFO while the queue has been non-empty (some attempt
  waiting) continuously for longer than ``lifoAfterMs`` (default: CoDel's ``intervalMs``,
  else 100 ms). The queue keeps a live count (``Overload.waiting``); dead entries (attempts
  that timed out or were cancelled while waiting) are skipped, dropped when the count
  reaches 0 and compacted when they outnumber the live ones.
- ``maxLength``: an attempt that would wait while ``maxLength`` attempts already wait is
  shed at once (running attempts are not counted; 0: no queue at all).
- CoDel (folly's variant): a sample is taken whenever an attempt leaves the queue or
  starts without waiting: the queue's age, i.e. the wait of the oldest attempt waiting
  (the leaving one included; in FIFO its own wait; 0 for an attempt that did not wait).
  Windows of ``intervalMs`` follow one another, each opened by the first sample after the
  previous one closed; that sample judges the closed window: overloaded if its minimum
  sample exceeded ``targetMs``. While overloaded, an attempt leaving the queue that waited
  over 2 x ``targetMs`` is shed and the next one is taken at once (until one starts or
  the queue is empty); under ``lifo``/``adaptive_lifo`` the oldest attempts would never
  leave, so those that waited over 2 x ``targetMs`` are shed at that moment too (the
  queue timeouts of Facebook's adaptive LIFO with CoDel).
- ``throttle`` (Google SRE client-side adaptive throttling, every agent its own counts):
  before an attempt is queued, p = max(0, (requests - k x accepts) / (requests + 1)) over
  the requests and accepts of the last ``windowMs`` (times older than that leave it), the
  attempt is counted as a request and refused if p > 0 and ``rng.random() < p`` (no draw
  when p = 0). Requests are every attempt asked for (throttled ones included); accepts
  the attempts the agent took (started running: not throttled, not rejected by a breaker,
  not shed). With a backend accepting a share a of what it is sent and R requests per
  window, the share sent settles at 1 / (1 + R (1 - k a)) when k a < 1 (else 1).
- Autoscale: one core timer per autoscaled agent on the grid k x ``pollMs`` of the core's
  clock, running only while the core has runs in flight: a poll that finds none is the
  last, and the next submitted run restarts polling at the first grid point after its
  arrival (so an idle simulation ends). A poll computes desired = ceil(metric / target)
  (``in_flight``: running + waiting; ``queue_length``: waiting), clamped to [min, max];
  above the capacity asked for, that capacity is provisioned ``provisionMs`` later (0: at
  once); otherwise the capacity asked for drops to the largest desired value of the last
  ``scaleDownStabilizationMs`` (this poll's included), at once, cancelling provisioning
  above it (the HPA rule). The initial capacity is the agent's (model or live) capacity
  clamped to [min, max] (unlimited: max); it counts as a desired value at the agent's
  first call, so nothing scales down within the window after it.
  ``autoscale:scaled {agentId, capacity, timeMs}`` is emitted when a capacity takes
  effect. Lowering capacity never stops running attempts.
- ``overload_log`` keeps every limit change and every capacity that took effect, events
  built or not; ``reset_overload`` restarts every rule (independent runs of a study).
"""

from __future__ import annotations

import math
import random
import weakref
from collections import deque
from collections.abc import Callable, Container
from dataclasses import dataclass
from enum import IntEnum
from heapq import heapify, heappop, heappush
from typing import Any

from .._spec.plan import Plan
from .overload import ADAPTIVE_LIFO, FIFO, Overload, next_grid


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

ATTEMPT_TIMEOUT, RETRY, DEADLINE, HEDGE, BREAKER, POLL, PROVISION = 0, 1, 2, 3, 4, 5, 6
LIMIT_CHANGED, SCALED = "admission:limit_changed", "autoscale:scaled"
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"  # breaker states


class CompiledPlan:
    """A plan compiled once into indexed, plain structures (step i = i-th step in plan order)."""

    __slots__ = (
        "id",
        "n",
        "step_ids",
        "agent_ids",
        "actions",
        "inputs",
        "deps",
        "deps_count",
        "dependents",
        "retry",
        "timeout_ms",
        "limit",
        "deadline_ms",
        "fail_fast",
        "fallback",
        "roots",
        "hedge",
        "fresh",
    )

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
        self.fresh = ([PENDING] * self.n, [None] * self.n)  # a plan run's first states, slots
        # retry: (max_retries, delay_ms, jitter, on_error, on_timeout), where delay_ms(k) is
        # the delay after failed attempt k before jitter (RetryPolicy.delay_ms, on demand:
        # a budget of 10**8 retries costs nothing until used)
        self.retry = []
        for s in steps:
            rp = s.retry_policy
            self.retry.append(
                None
                if rp is None or rp.max_retries == 0
                else (
                    rp.max_retries,
                    rp.delay_ms,
                    rp.jitter,
                    "error" in rp.retry_on,
                    "timeout" in rp.retry_on,
                )
            )
        self.timeout_ms = [s.timeout_ms for s in steps]
        # hedge: None if no step hedges, else per step None or (delay_ms, max_hedges)
        hedges = [
            None if s.hedge is None else (s.hedge.delay_ms, s.hedge.max_hedges) for s in steps
        ]
        self.hedge = hedges if any(h is not None for h in hedges) else None
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

    __slots__ = (
        "run",
        "prun",
        "step",
        "number",
        "queued_ms",
        "start_ms",
        "end_ms",
        "outcome",
        "error",
        "timer",
        "live",
        "held",
        "hedge",
        "gen",
        "waiting",
    )

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
        self.hedge = False  # a hedged attempt (SPEC §10.2), not the first of its try
        self.gen: int | None = None  # the breaker generation that admitted it, if any
        self.waiting = False  # in the queue of an agent with overload rules

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

    __slots__ = (
        "cp",
        "run",
        "start_ms",
        "end_ms",
        "state",
        "remaining",
        "ready",
        "busy",
        "left",
        "current",
        "results",
        "errors",
        "deadline",
        "status",
        "failed",
        "hedged",
    )

    def __init__(self, cp: CompiledPlan, run: Run, now: float):
        self.cp = cp
        self.run = run
        self.start_ms = now
        self.end_ms: float | None = None
        self.state = cp.fresh[0].copy()
        self.remaining = cp.deps_count.copy()
        self.ready = cp.roots.copy()  # a heap of step indexes: plan order breaks ties
        self.busy = 0  # steps holding one of the plan's slots (running or backing off)
        self.left = cp.n  # steps not yet in a terminal state
        # live Attempt, the retry Timer, or the _Hedged state of a hedged step's try
        self.current: list[Any] = cp.fresh[1].copy()
        self.results: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.deadline: Timer | None = None
        self.status: str | None = None
        self.failed = False
        self.hedged = (
            None if cp.hedge is None else [None if h is None else _Hedged(*h) for h in cp.hedge]
        )


class _Hedged:
    """A hedged step of one plan run: its current try and the attempts of it in flight."""

    __slots__ = ("delay_ms", "max_hedges", "round", "calls", "used", "live", "timer")

    def __init__(self, delay_ms: float, max_hedges: int):
        self.delay_ms = delay_ms
        self.max_hedges = max_hedges
        self.round = 0  # the try (1 = first), as the retry policy counts
        self.calls = 0  # attempts of the step so far, hedges included (attempt numbers)
        self.used = 0  # hedges started in this try
        self.live: list[Attempt] = []
        self.timer: Timer | None = None


class Run:
    """One call of ``orchestrate``/``simulate``: a plan and, if it did not succeed, its
    fallbacks. ``plans`` lists the PlanRuns tried; ``attempts`` every attempt, in order."""

    __slots__ = (
        "run_id",
        "start_ms",
        "end_ms",
        "plans",
        "attempts",
        "status",
        "context",
        "retries",
        "timeouts",
        "shed",
    )

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
        self.shed = 0  # attempts shed or throttled (SPEC §17)


class _AgentSlots:
    __slots__ = ("capacity", "busy", "queue", "busy_ms", "breaker", "ov")

    def __init__(self, capacity: int | None, breaker: _Breaker | None):
        # inf: unlimited; with overload rules, min(its capacity, its usable limit)
        self.capacity: float = math.inf if capacity is None else capacity
        self.busy = 0  # attempts running now
        self.queue: deque[Attempt] = deque()  # attempts waiting, FIFO (or as ov says)
        self.busy_ms = 0.0  # total running time of the attempts that ended
        self.breaker = breaker
        self.ov: Overload | None = None  # overload rules (SPEC §17), if any


class _Breaker:
    """One agent's circuit breaker (see the module docstring). ``policy`` has window,
    min_calls, failure_rate, slow_call_ms, slow_call_rate, open_ms, half_open_calls."""

    __slots__ = (
        "agent_id",
        "window",
        "min_calls",
        "failure_rate",
        "slow_ms",
        "slow_rate",
        "open_ms",
        "half_calls",
        "state",
        "gen",
        "ring",
        "pos",
        "n",
        "fails",
        "slows",
        "permits",
        "timer",
        "rates",
    )

    def __init__(self, agent_id: str, policy: Any):
        self.agent_id = agent_id
        self.window = policy.window
        self.min_calls = policy.min_calls
        self.failure_rate = policy.failure_rate
        self.slow_ms = policy.slow_call_ms
        self.slow_rate = policy.slow_call_rate
        self.open_ms = policy.open_ms
        self.half_calls = policy.half_open_calls
        self.timer: Timer | None = None
        self.rates = (0.0, 0.0)  # failure and slow-call rates at the last transition
        self._enter(CLOSED, 0)

    def _enter(self, state: str, gen: int) -> None:
        self.state = state
        self.gen = gen
        self.ring = [0] * (self.window if state == CLOSED else self.half_calls)
        self.pos = self.n = self.fails = self.slows = self.permits = 0


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

#: Every event the core emits (SPEC §3.10, §10): ``Scheduler(events=...)`` filters these.
CORE_EVENTS = frozenset(
    {
        "plan:started",
        "plan:completed",
        "plan:fallback",
        "step:started",
        "step:completed",
        "step:retrying",
        "step:failed",
        "step:skipped",
        "queue:completed",
        "queue:failed",
        "agent:error",
        "breaker:opened",
        "breaker:half_open",
        "breaker:closed",
        LIMIT_CHANGED,
        SCALED,
    }
)
_NO_EVENTS: frozenset[str] = frozenset()


class Scheduler:
    """The one scheduling core (SPEC §3), shared by every driver.

    ``capacity(agent_id)`` gives an agent's capacity (None: unlimited), asked once per
    agent; ``rng`` (a ``random.Random``) draws the backoff jitter; ``events=False`` skips
    building bus events (Monte-Carlo studies); ``events`` may also be a container of event
    names the driver wants (``EventBus.wanted``, kept current as listeners come and go): the
    core builds an event's payload only if its name is ``in`` it when it happens;
    ``hold_slots=True``: a cancelled attempt keeps its agent slot until ``attempt_exited``;
    ``breakers(agent_id)`` gives an agent's circuit-breaker policy or None, asked once per
    agent (None: no breakers at all). Each fact method takes the driver's current time in ms
    (never decreasing) and returns the actions to carry out, in order. ``breaker_log`` lists
    every breaker transition as (time_ms, agent_id, event, failure_rate, slow_call_rate),
    events built or not. ``overload(agent_id)`` gives an agent's overload rules (admission,
    throttle, autoscale; ``Policies.overload``) or None, asked once per agent (None: no
    overload rules at all); ``overload_log`` lists every change of a usable admission limit
    and every capacity an autoscaler put in effect as (time_ms, agent_id, event, value).
    """

    def __init__(
        self,
        capacity: Callable[[str], int | None] = lambda agent_id: None,
        rng: random.Random | None = None,
        *,
        events: bool | Container[str] = True,
        hold_slots: bool = False,
        breakers: Callable[[str], Any] | None = None,
        overload: Callable[[str], Any] | None = None,
    ):
        self._capacity = capacity
        self.rng = rng if rng is not None else random.Random(0)
        self._wants: Container[str] = (
            CORE_EVENTS if events is True else _NO_EVENTS if events is False else events
        )
        self._hold = hold_slots
        self._agents: dict[str, _AgentSlots] = {}
        self._out: list[Any] = []
        self._freed: list[_AgentSlots] = []  # agents with a free slot and a queue
        self._timers: list[tuple[float, int, Timer]] = []  # heap of (at_ms, seq, timer)
        self._seq = 0
        self._stale = 0  # timers in the heap that no longer fire
        self._breakers = breakers
        # attempts refused (breaker, shed, throttled) as (attempt, outcome, error), failed
        # in _settle, never re-entrantly
        self._rejects: list[tuple[Attempt, str, str]] = []
        self.breaker_log: list[tuple[float, str, str, float, float]] = []
        self._overload = overload
        self._ov_on = overload is not None
        self._scalers: list[_AgentSlots] = []  # agents with an autoscaler
        self._open_runs = 0  # runs submitted and not finished (autoscalers poll meanwhile)
        self.overload_log: list[tuple[float, str, str, float]] = []

    # -- facts ------------------------------------------------------------------------

    def submit(
        self, cp: CompiledPlan, now_ms: float, run_id: Any, context: Any = None
    ) -> tuple[Run, list[Any]]:
        """Start a run of ``cp`` at ``now_ms``; returns the run and the first actions."""
        out = self._out = []
        if self._timers and self._timers[0][0] <= now_ms:
            self._due(now_ms)
        run = Run(run_id, now_ms, context)
        self._open_runs += 1
        if self._scalers:
            for slots in self._scalers:
                self._start_poll(slots, now_ms)
        self._start_plan(run, cp, now_ms)
        if self._freed or self._rejects:
            self._settle(now_ms)
        return run, out

    def attempt_succeeded(self, attempt: Attempt, now_ms: float, response: Any) -> list[Any]:
        """The agent returned a valid ``response`` for ``attempt``."""
        out = self._out = []
        if self._timers and self._timers[0][0] <= now_ms:
            self._due(now_ms)
        if not attempt.live:
            return out
        self._end_attempt(attempt, now_ms, "succeeded", None)
        pr = attempt.prun
        cp = pr.cp
        i = attempt.step
        sid = cp.step_ids[i]
        h = pr.hedged[i] if pr.hedged is not None else None
        if h is not None:
            self._end_try(
                h,
                attempt,
                now_ms,
                f"cancelled: attempt {attempt.number} of step '{sid}' succeeded first",
            )
        pr.state[i] = SUCCEEDED
        pr.current[i] = None
        pr.results[sid] = response
        pr.busy -= 1
        pr.left -= 1
        wants = self._wants
        if "step:completed" in wants:
            self._emit(
                "step:completed", attempt, now_ms, jobId=job_id_of(attempt), response=response
            )
        if "queue:completed" in wants:
            self._emit(
                "queue:completed", attempt, now_ms, jobId=job_id_of(attempt), result=response
            )
        remaining, state, ready = pr.remaining, pr.state, pr.ready
        for j in cp.dependents[i]:
            remaining[j] -= 1
            if remaining[j] == 0 and state[j] == PENDING:
                heappush(ready, j)
        if pr.left == 0:
            self._finish_plan(pr, now_ms, "failed" if pr.failed else "succeeded")
        elif ready:
            self._pump(pr, now_ms)
        if self._freed or self._rejects:
            self._settle(now_ms)
        return out

    def attempt_failed(
        self, attempt: Attempt, now_ms: float, error: str, *, retryable: bool = True
    ) -> list[Any]:
        """The agent raised, or returned something that is not a valid response."""
        out = self._out = []
        if self._timers and self._timers[0][0] <= now_ms:
            self._due(now_ms)
        if attempt.live:
            self._fail_attempt(attempt, now_ms, "error", str(error), retryable)
            if self._freed or self._rejects:
                self._settle(now_ms)
        return out

    def timer_fired(self, timer: Timer, now_ms: float) -> list[Any]:
        """A timer the core started is due."""
        out = self._out = []
        if self._timers and self._timers[0][0] <= now_ms:
            self._due(now_ms)
        if timer.live:  # a driver may call a little before ``timer.at_ms`` (clock ticks)
            self._stale += 1  # it stays in the heap
            self._fire(timer, now_ms)
            if self._freed or self._rejects:
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
            if self._freed or self._rejects:
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
            if self._freed or self._rejects:
                self._settle(now)

    def _fire(self, timer: Timer, now_ms: float) -> None:
        timer.live = False
        kind, target = timer.kind, timer.target
        if kind == ATTEMPT_TIMEOUT:
            att = target
            if att.start_ms is not None:
                self._cancel(att)
            limit = att.prun.cp.timeout_ms[att.step]
            where = "waiting for agent capacity" if att.start_ms is None else "running"
            self._fail_attempt(
                att,
                now_ms,
                "timeout",
                f"step '{att.step_id}' attempt {att.number} timed out after "
                f"{_ms(limit)} ms ({where})",
                True,
            )
        elif kind == RETRY:
            pr, i, number = target
            pr.current[i] = None
            pr.state[i] = RUNNING
            self._launch(pr, i, number, now_ms)
        elif kind == DEADLINE:
            pr = target
            pr.deadline = None
            self._finish_plan(pr, now_ms, "timed_out")
        elif kind == HEDGE:
            pr, i = target
            self._hedge(pr, i, now_ms)
        elif kind == BREAKER:
            self._half_open(target, now_ms)
        elif kind == POLL:
            self._poll(target, timer.at_ms, now_ms)
        else:
            self._provisioned(timer, now_ms)

    def abort(self, run: Run, now_ms: float, reason: str) -> list[Any]:
        """End ``run`` now with status "failed" (its caller gave up): what is in flight is
        cancelled and no fallback runs."""
        out = self._out = []
        self._due(now_ms)
        if run.status is None:
            self._finish_plan(run.plans[-1], now_ms, "failed", reason, fallback=False)
            if self._freed or self._rejects:
                self._settle(now_ms)
        return out

    def busy_ms(self) -> dict[str, float]:
        """Per agent: total ms its attempts spent running (ended attempts only)."""
        return {agent_id: slots.busy_ms for agent_id, slots in self._agents.items()}

    def breaker_states(self) -> dict[str, str]:
        """Per agent with a breaker: "closed", "open" or "half_open"."""
        return {
            agent_id: slots.breaker.state
            for agent_id, slots in self._agents.items()
            if slots.breaker is not None
        }

    def reset_breakers(self) -> list[Any]:
        """Close every breaker with an empty window (between independent runs of a study);
        returns the CancelTimer actions of open breakers' timers."""
        out = self._out = []
        for slots in self._agents.values():
            br = slots.breaker
            if br is not None:
                if br.timer is not None:
                    self._drop(br.timer)
                    br.timer = None
                br._enter(CLOSED, br.gen + 1)
        return out

    def reset_overload(self) -> list[Any]:
        """Put every agent's overload rules back in their initial state (between independent
        runs of a study): limits, CoDel, throttle counts, autoscaled capacity; returns the
        CancelTimer actions of autoscalers' timers."""
        out = self._out = []
        for slots in self._agents.values():
            ov = slots.ov
            if ov is None:
                continue
            sc = ov.scaler
            if sc is not None:
                for timer in [sc.timer, *sc.pending]:
                    if timer is not None and timer.live:
                        self._drop(timer)
                sc.timer, sc.pending = None, []
            ov.reset()
            slots.capacity = ov.effective()
            slots.queue.clear()
        return out

    def admission_limits(self) -> dict[str, int]:
        """Per agent with an admission limit: its usable limit now."""
        return {
            agent_id: int(slots.ov.usable)
            for agent_id, slots in self._agents.items()
            if slots.ov is not None and slots.ov.limiter is not None
        }

    def capacities(self) -> dict[str, float]:
        """Per agent with overload rules: its own capacity now (an autoscaler's in effect;
        inf: unlimited), before the admission limit."""
        return {
            agent_id: slots.ov.capacity
            for agent_id, slots in self._agents.items()
            if slots.ov is not None
        }

    # -- rules ------------------------------------------------------------------------

    def _start_plan(self, run: Run, cp: CompiledPlan, now: float) -> None:
        pr = PlanRun(cp, run, now)
        run.plans.append(pr)
        if "plan:started" in self._wants:
            self._out.append(
                Emit(
                    "plan:started",
                    {"planId": cp.id, "runId": run.run_id, "timeMs": now - run.start_ms},
                )
            )
        if cp.deadline_ms is not None:
            pr.deadline = self._timer(now + cp.deadline_ms, DEADLINE, pr)
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
        """Queue the first attempt of try ``number`` of step ``i`` at its agent (§3.3a)."""
        run = pr.run
        if number > 1:
            run.retries += 1
        h = pr.hedged[i] if pr.hedged is not None else None
        if h is None:
            att = Attempt(run, pr, i, number, now)
            pr.current[i] = att
        else:  # attempts of a hedged step are numbered across tries, hedges included
            h.round = number
            h.used = 0
            h.calls += 1
            att = Attempt(run, pr, i, h.calls, now)
            h.live.append(att)
            pr.current[i] = h
        run.attempts.append(att)
        self._queue(att, now)

    def _hedge(self, pr: PlanRun, i: int, now: float) -> None:
        """§10.2: no attempt of the try succeeded ``delayMs`` after the last start."""
        h = pr.hedged[i] if pr.hedged is not None else None
        assert h is not None, "a hedge timer belongs to a hedged step"
        h.timer = None
        h.used += 1
        h.calls += 1
        att = Attempt(pr.run, pr, i, h.calls, now)
        att.hedge = True
        h.live.append(att)
        pr.run.attempts.append(att)
        self._queue(att, now)

    def _queue(self, att: Attempt, now: float) -> None:
        pr = att.prun
        cp = pr.cp
        i = att.step
        agent_id = cp.agent_ids[i]
        slots = self._agents.get(agent_id)
        if slots is None:
            slots = self._new_agent(agent_id, now)
        if slots.ov is not None:
            self._queue_ov(att, slots, now)
            return
        br = slots.breaker
        if br is not None and not self._admit(br, att):
            self._rejects.append((att, "rejected", ""))  # failed once the fact is processed
            return
        t = cp.timeout_ms[i]
        if t is not None:
            att.timer = self._timer(now + t, ATTEMPT_TIMEOUT, att)
        queue = slots.queue
        while queue and not queue[0].live:
            queue.popleft()
        if slots.busy < slots.capacity and not queue:
            slots.busy += 1
            self._begin(att, now)
        else:
            queue.append(att)

    def _new_agent(self, agent_id: str, now: float) -> _AgentSlots:
        slots = self._agents[agent_id] = _AgentSlots(
            self._capacity(agent_id),
            None
            if self._breakers is None
            else _optional_breaker(agent_id, self._breakers(agent_id)),
        )
        if self._overload is not None:
            rules = self._overload(agent_id)
            if rules is not None:
                ov = slots.ov = Overload(agent_id, rules, slots.capacity, now)
                slots.capacity = ov.effective()
                if ov.scaler is not None:
                    self._scalers.append(slots)
                    if self._open_runs:
                        self._start_poll(slots, now)
        return slots

    def _begin(self, att: Attempt, now: float) -> None:
        att.start_ms = now
        if "step:started" in self._wants:
            self._emit_started(att, now)
        self._out.append(StartAttempt(att))
        hedged = att.prun.hedged
        if hedged is not None:
            h = hedged[att.step]
            if h is not None and h.used < h.max_hedges:  # the delay runs from the last start
                if h.timer is not None:
                    self._drop(h.timer)
                h.timer = self._timer(now + h.delay_ms, HEDGE, (att.prun, att.step))

    def _emit_started(self, att: Attempt, now: float) -> None:
        self._emit(
            "step:started",
            att,
            now,
            jobId=job_id_of(att),
            attempt=att.number,
            queuedMs=att.queued_ms - att.run.start_ms,
        )

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
        if att.gen is not None:
            self._record(att, now, outcome)
        if self._ov_on:
            self._ov_end(att, now, outcome)
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
        assert att.start_ms is not None, "only a started attempt holds a slot"
        slots.busy_ms += now - att.start_ms
        if slots.queue:
            self._freed.append(slots)

    def _settle(self, now: float) -> None:
        """Fail the attempts a breaker rejected, then give the agent slots freed by the
        current fact to queued attempts, FIFO (until neither is left). A queued attempt
        whose breaker changed state since it was admitted is asked again: one that
        waited while the breaker opened is rejected, not sent to the failing agent."""
        while self._rejects or self._freed:
            rejects, self._rejects = self._rejects, []
            for att, outcome, error in rejects:
                if att.live:  # else its plan ended meanwhile
                    if outcome == "shed":
                        att.run.shed += 1
                    else:
                        error = f"circuit open for agent {att.agent_id}"
                    self._fail_attempt(att, now, outcome, error, True)
            freed, self._freed = self._freed, []
            for slots in freed:
                if slots.ov is not None:
                    self._drain(slots, slots.ov, now)
                    continue
                queue, br = slots.queue, slots.breaker
                while queue and slots.busy < slots.capacity:
                    nxt = queue.popleft()
                    if not nxt.live:
                        continue
                    if br is not None and nxt.gen != br.gen and not self._admit(br, nxt):
                        self._rejects.append((nxt, "rejected", ""))  # it opened meanwhile
                        continue
                    slots.busy += 1
                    self._begin(nxt, now)

    def _fail_attempt(
        self, att: Attempt, now: float, outcome: str, error: str, retryable: bool
    ) -> None:
        """§3.4/3.5: retry after the backoff, or fail the step and skip its dependents."""
        self._end_attempt(att, now, outcome, error)
        pr = att.prun
        cp = pr.cp
        i = att.step
        if outcome == "timeout":
            att.run.timeouts += 1
        wants = self._wants
        if "queue:failed" in wants:
            self._emit("queue:failed", att, now, jobId=job_id_of(att), error=error)
        if outcome == "error" and "agent:error" in wants:
            self._emit("agent:error", att, now, jobId=job_id_of(att), error=error)
        k = att.number
        h = pr.hedged[i] if pr.hedged is not None else None
        if h is not None:
            h.live.remove(att)
            if h.live and retryable:
                return  # the try goes on while one of its attempts is in flight
            self._end_try(
                h,
                att,
                now,
                f"cancelled: attempt {k} of step '{cp.step_ids[i]}' "
                "failed with a non-retryable error",
            )
            k = h.round
        rp = cp.retry[i]
        if (
            rp is not None
            and k <= rp[0]
            and retryable
            and (rp[3] if outcome != "timeout" else rp[4])
        ):
            delay = rp[1](k)
            jitter = rp[2]
            if jitter:
                delay *= 1.0 - jitter + 2.0 * jitter * self.rng.random()
            if "step:retrying" in self._wants:
                self._emit(
                    "step:retrying",
                    att,
                    now,
                    jobId=job_id_of(att),
                    attempt=(k if h is None else h.calls) + 1,
                    delayMs=delay,
                    error=error,
                )
            if delay > 0:
                pr.state[i] = BACKING_OFF
                pr.current[i] = self._timer(now + delay, RETRY, (pr, i, k + 1))
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
        if "step:failed" in self._wants:
            self._emit(
                "step:failed",
                att,
                now,
                jobId=job_id_of(att),
                attempt=att.number,
                outcome=outcome,
                error=error,
            )
        if cp.fail_fast:
            self._finish_plan(
                pr, now, "failed", f"cancelled: step '{sid}' failed and the plan is failFast"
            )
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
            if "step:skipped" in self._wants:
                self._out.append(
                    Emit(
                        "step:skipped",
                        {
                            "planId": cp.id,
                            "stepId": sid,
                            "agentId": cp.agent_ids[j],
                            "dependencyId": cause,
                            "runId": pr.run.run_id,
                            "timeMs": now - pr.run.start_ms,
                        },
                    )
                )
            stack.extend(reversed(cp.dependents[j]))

    def _finish_plan(
        self, pr: PlanRun, now: float, status: str, reason: str | None = None, fallback: bool = True
    ) -> None:
        """§3.6–3.8: cancel what is unfinished, then run the fallback or finish the run."""
        cp, run = pr.cp, pr.run
        if status == "timed_out":
            reason = f"cancelled: Orchestration plan {cp.id} timed out"
        if pr.left:
            attempts = []
            for i, cur in enumerate(pr.current):
                if cur is None:
                    continue
                if type(cur) is _Hedged:
                    for att in cur.live:
                        att.live = False
                    attempts.extend(cur.live)
                    cur.live = []
                    if cur.timer is not None:
                        self._drop(cur.timer)
                        cur.timer = None
                elif isinstance(cur, Timer):  # a waiting retry is dropped
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
        if "plan:completed" in self._wants:
            self._out.append(
                Emit(
                    "plan:completed",
                    {
                        "planId": cp.id,
                        "runId": run.run_id,
                        "status": status,
                        "success": status == "succeeded",
                        "duration": now - pr.start_ms,
                        "timeMs": now - run.start_ms,
                    },
                )
            )
        if status != "succeeded" and fallback and cp.fallback is not None:
            if "plan:fallback" in self._wants:
                self._out.append(
                    Emit(
                        "plan:fallback",
                        {
                            "planId": cp.id,
                            "fallbackPlanId": cp.fallback.id,
                            "runId": run.run_id,
                            "timeMs": now - run.start_ms,
                        },
                    )
                )
            self._start_plan(run, cp.fallback, now)
            return
        run.status = status
        run.end_ms = now
        self._open_runs -= 1
        self._out.append(FinishRun(run))

    # -- hedging (§10.2) --------------------------------------------------------------

    def _end_try(self, h: _Hedged, winner: Attempt, now: float, reason: str) -> None:
        """The try of a hedged step is over (``winner`` ended it): cancel its other
        attempts in flight and its hedge timer."""
        if h.timer is not None:
            self._drop(h.timer)
            h.timer = None
        others = [a for a in h.live if a is not winner]
        h.live = []
        for att in others:
            att.live = False
        for att in others:
            if att.start_ms is not None:
                self._cancel(att)
            self._end_attempt(att, now, "cancelled", reason)

    # -- circuit breakers (§10.1) -----------------------------------------------------

    def _admit(self, br: _Breaker, att: Attempt) -> bool:
        state = br.state
        if state is CLOSED:
            att.gen = br.gen
            return True
        if state is HALF_OPEN and br.permits < br.half_calls:
            br.permits += 1
            att.gen = br.gen
            return True
        return False

    def _record(self, att: Attempt, now: float, outcome: str) -> None:
        """An admitted attempt ended: count it in its breaker's window."""
        br = self._agents[att.prun.cp.agent_ids[att.step]].breaker
        assert br is not None, "only an agent with a breaker admits attempts to record"
        gen, att.gen = att.gen, None
        if gen != br.gen:
            return  # admitted before the last transition
        if att.start_ms is None or outcome == "cancelled":  # the agent did not answer
            if br.state is HALF_OPEN:
                br.permits -= 1
            return
        failed = outcome != "succeeded"
        slow = br.slow_ms is not None and now - att.start_ms > br.slow_ms
        ring, pos = br.ring, br.pos
        if br.n == len(ring):  # the window is full: the oldest call leaves it
            old = ring[pos]
            br.fails -= old & 1
            br.slows -= old >> 1
        else:
            br.n += 1
        ring[pos] = failed | (slow << 1)
        br.pos = (pos + 1) % len(ring)
        br.fails += failed
        br.slows += slow
        if br.state is CLOSED:
            if br.n < br.min_calls:
                return
        elif br.n < br.half_calls:
            return
        n = br.n
        if br.fails / n >= br.failure_rate or (
            br.slow_ms is not None and br.slows / n >= br.slow_rate
        ):
            self._breaker_to(br, OPEN, now)
            br.timer = self._timer(now + br.open_ms, BREAKER, br)
        elif br.state is HALF_OPEN:
            self._breaker_to(br, CLOSED, now)

    def _half_open(self, br: _Breaker, now: float) -> None:
        br.timer = None
        self._breaker_to(br, HALF_OPEN, now)

    def _breaker_to(self, br: _Breaker, state: str, now: float) -> None:
        n = br.n
        if state is not HALF_OPEN:  # half-open reports the rates that opened it
            br.rates = (br.fails / n, br.slows / n)
        rates = br.rates
        br._enter(state, br.gen + 1)
        event = f"breaker:{_BREAKER_EVENT[state]}"
        self.breaker_log.append((now, br.agent_id, event, *rates))
        if event in self._wants:
            payload = {"agentId": br.agent_id, "failureRate": rates[0], "timeMs": now}
            if br.slow_ms is not None:
                payload["slowCallRate"] = rates[1]
            self._out.append(Emit(event, payload))

    # -- overload control (§17) ------------------------------------------------------

    def _queue_ov(self, att: Attempt, slots: _AgentSlots, now: float) -> None:
        """``_queue`` for an agent with overload rules: throttle, breaker, queue bound, then
        start at once or wait."""
        ov = slots.ov
        assert ov is not None
        th = ov.throttle
        if th is not None:
            p = th.probability(now)
            th.request(now)
            if p > 0.0 and self.rng.random() < p:
                self._rejects.append(
                    (
                        att,
                        "shed",
                        f"throttled: client-side throttling refused the call to agent "
                        f"{ov.agent_id} (refusal probability {p:.2f})",
                    )
                )
                return
        br = slots.breaker
        if br is not None and not self._admit(br, att):
            self._rejects.append((att, "rejected", ""))
            return
        waits = ov.waiting or slots.busy >= slots.capacity
        if waits and ov.max_length is not None and ov.waiting >= ov.max_length:
            self._shed(
                slots,
                att,
                f"shed: agent {ov.agent_id} already has {ov.waiting} attempts waiting "
                f"(maxLength {ov.max_length})",
                now,
            )
            return
        t = att.prun.cp.timeout_ms[att.step]
        if t is not None:
            att.timer = self._timer(now + t, ATTEMPT_TIMEOUT, att)
        if waits:
            if not ov.waiting:
                ov.since = now
            ov.waiting += 1
            att.waiting = True
            slots.queue.append(att)
            return
        if ov.codel is not None:
            ov.codel.observe(0.0, now)  # the queue is empty: a sample of 0
        slots.busy += 1
        if th is not None:
            th.accept(now)
        self._begin(att, now)

    def _drain(self, slots: _AgentSlots, ov: Overload, now: float) -> None:
        """Give free slots to waiting attempts in the agent's discipline; CoDel sheds as
        they leave the queue (the next one is tried at once)."""
        queue, br, codel, th = slots.queue, slots.breaker, ov.codel, ov.throttle
        while ov.waiting and slots.busy < slots.capacity:
            if ov.discipline == FIFO or (
                ov.discipline == ADAPTIVE_LIFO and now - ov.since <= ov.lifo_after
            ):
                nxt = queue.popleft()
                if not nxt.live:
                    continue
                if codel is not None:
                    codel.observe(now - nxt.queued_ms, now)
            else:
                if codel is not None:  # the queue's age: its oldest live attempt's wait
                    while not queue[0].live:
                        queue.popleft()
                    codel.observe(now - queue[0].queued_ms, now)
                nxt = queue.pop()
                if not nxt.live:
                    continue
            nxt.waiting = False
            ov.waiting -= 1
            if not ov.waiting:
                queue.clear()  # only dead entries are left
            if codel is not None and codel.overloaded:
                wait = now - nxt.queued_ms
                if codel.sheds(wait):
                    self._shed(slots, nxt, _codel_error(wait, ov.agent_id, codel.target), now)
                    continue
                if ov.discipline != FIFO:
                    self._purge(slots, ov, codel.target, now)
            if br is not None and nxt.gen != br.gen and not self._admit(br, nxt):
                self._rejects.append((nxt, "rejected", ""))
                continue
            slots.busy += 1
            if th is not None:
                th.accept(now)
            self._begin(nxt, now)

    def _purge(self, slots: _AgentSlots, ov: Overload, target: float, now: float) -> None:
        """LIFO under an overloaded CoDel: the oldest waiting attempts would never leave the
        queue, so those that waited over 2 x target are shed now, oldest first."""
        queue = slots.queue
        while queue and (not queue[0].live or now - queue[0].queued_ms > 2 * target):
            old = queue.popleft()
            if old.live:
                old.waiting = False
                ov.waiting -= 1
                self._shed(slots, old, _codel_error(now - old.queued_ms, ov.agent_id, target), now)

    def _shed(self, slots: _AgentSlots, att: Attempt, error: str, now: float) -> None:
        """The agent's admission sheds ``att`` (failed in ``_settle``); AIMD backs off."""
        self._rejects.append((att, "shed", error))
        ov = slots.ov
        assert ov is not None
        if ov.limiter is not None:
            ov.limiter.drop()
            self._limit_moved(slots, ov, now)

    def _ov_end(self, att: Attempt, now: float, outcome: str) -> None:
        """An attempt of an agent with overload rules ended: it leaves the queue's count,
        or its running time is a sample for the limiter."""
        slots = self._agents.get(att.prun.cp.agent_ids[att.step])
        ov = None if slots is None else slots.ov
        if ov is None:
            return
        if att.start_ms is None:
            if att.waiting:
                att.waiting = False
                ov.waiting -= 1
                queue = slots.queue  # type: ignore[union-attr]
                if not ov.waiting:
                    queue.clear()
                elif len(queue) > 2 * ov.waiting + 32:  # LIFO keeps dead entries below
                    live = [a for a in queue if a.live]
                    queue.clear()
                    queue.extend(live)
            return
        if ov.limiter is not None:
            ov.limiter.ended(outcome, now - att.start_ms, slots.busy)  # type: ignore[union-attr]
            self._limit_moved(slots, ov, now)  # type: ignore[arg-type]

    def _limit_moved(self, slots: _AgentSlots, ov: Overload, now: float) -> None:
        usable = ov.limit()
        if usable == ov.usable:
            return
        up = usable > ov.usable
        ov.usable = usable
        slots.capacity = ov.effective()
        self.overload_log.append((now, ov.agent_id, LIMIT_CHANGED, usable))
        if LIMIT_CHANGED in self._wants:
            self._out.append(
                Emit(LIMIT_CHANGED, {"agentId": ov.agent_id, "limit": usable, "timeMs": now})
            )
        if up and ov.waiting:
            self._freed.append(slots)

    def _start_poll(self, slots: _AgentSlots, now: float) -> None:
        sc = slots.ov.scaler  # type: ignore[union-attr]
        if sc is not None and sc.timer is None:
            sc.timer = self._timer(next_grid(now, sc.poll_ms), POLL, slots)

    def _poll(self, slots: _AgentSlots, at_ms: float, now: float) -> None:
        """An autoscaler's poll: desired capacity from the metric, scale up (after
        provisioning) or down (HPA stabilisation); poll again while runs are in flight."""
        ov = slots.ov
        assert ov is not None and ov.scaler is not None
        sc = ov.scaler
        sc.timer = None
        if self._agents.get(ov.agent_id) is not slots:
            self._scalers.remove(slots)  # unregistered meanwhile
            return
        goal = sc.poll(now, sc.desired(slots.busy, ov.waiting))
        if goal > sc.goal:
            sc.goal = goal
            if sc.provision_ms > 0:
                sc.pending.append(self._timer(now + sc.provision_ms, PROVISION, (slots, goal)))
            else:
                self._scale(slots, ov, goal, now)
        elif goal < sc.goal:
            sc.goal = goal
            keep = []
            for timer in sc.pending:
                if timer.live and timer.target[1] > goal:
                    self._drop(timer)  # a scale-up not needed any more
                elif timer.live:
                    keep.append(timer)
            sc.pending = keep
            if sc.capacity > goal:
                self._scale(slots, ov, goal, now)
        if self._open_runs:
            sc.timer = self._timer(at_ms + sc.poll_ms, POLL, slots)

    def _provisioned(self, timer: Timer, now: float) -> None:
        slots, value = timer.target
        ov = slots.ov
        sc = ov.scaler
        if timer in sc.pending:
            sc.pending.remove(timer)
        if value > sc.capacity:
            self._scale(slots, ov, value, now)

    def _scale(self, slots: _AgentSlots, ov: Overload, capacity: int, now: float) -> None:
        """``capacity`` takes effect now (running attempts are never stopped)."""
        assert ov.scaler is not None
        ov.scaler.capacity = capacity
        ov.capacity = capacity
        before = slots.capacity
        slots.capacity = ov.effective()
        self.overload_log.append((now, ov.agent_id, SCALED, capacity))
        if SCALED in self._wants:
            self._out.append(
                Emit(SCALED, {"agentId": ov.agent_id, "capacity": capacity, "timeMs": now})
            )
        if slots.capacity > before and ov.waiting:
            self._freed.append(slots)

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
        timer.target = None  # it may wait in the heap long after: keep nothing alive
        self._stale += 1
        self._out.append(CancelTimer(timer))

    def _emit(self, event: str, att: Attempt, now: float, **extra: Any) -> None:
        pr = att.prun
        payload = {
            "planId": pr.cp.id,
            "stepId": pr.cp.step_ids[att.step],
            "agentId": pr.cp.agent_ids[att.step],
            "runId": pr.run.run_id,
            "timeMs": now - pr.run.start_ms,
        }
        payload.update(extra)
        self._out.append(Emit(event, payload))


_BREAKER_EVENT = {OPEN: "opened", HALF_OPEN: "half_open", CLOSED: "closed"}


def release(run: Run) -> None:
    """Cut the references a finished ``run``'s objects hold back to one another (plan run
    -> run, attempt -> run, attempt <-> its timeout timer), so that reference counting frees
    them as soon as the driver and its result let go, without the cyclic GC. The run keeps
    its plans and attempts (results and spans are built from them); an attempt whose
    coroutine is still stopping (``held``) keeps its run for the driver's warnings."""
    for pr in run.plans:
        pr.run = None  # type: ignore[assignment]  # released: never read again
    for att in run.attempts:
        att.timer = None
        if not att.held:
            att.run = None  # type: ignore[assignment]


def _optional_breaker(agent_id: str, policy: Any) -> _Breaker | None:
    return None if policy is None else _Breaker(agent_id, policy)


def _codel_error(wait: float, agent_id: str, target: float) -> str:
    return (
        f"shed: waited {_ms(wait)} ms at agent {agent_id}, over twice CoDel's target of "
        f"{_ms(target)} ms while its queue stood"
    )


def job_id_of(att: Attempt) -> str:
    return f"{att.run.run_id}:{att.prun.cp.id}:{att.prun.cp.step_ids[att.step]}:{att.number}"


def _ms(value: float) -> str:
    return f"{value:g}"
