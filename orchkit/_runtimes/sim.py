"""The simulated runtime: a thin SimPy driver around the same scheduling core, and the
only place a simulated clock lives: one run (``simulate``), chunks of independent runs
(``independent_runs``, picklable for any executor) and a workload study whose runs share
the agents (``capacity_study``).

Agents are replaced by their models (§4.1): when the core starts an attempt, the driver
draws its latency and outcome from the run's own ``random.Random`` and schedules the
matching fact on the SimPy clock. Times are simulated ms.
"""

from __future__ import annotations

import gc
import operator
import random
import threading
from collections.abc import Callable
from contextlib import contextmanager
from heapq import heappush
from typing import Any

import pandas as pd
import simpy
from tqdm.auto import tqdm

from .._engine.core import (
    CompiledPlan,
    Emit,
    FinishRun,
    Run,
    Scheduler,
    StartAttempt,
    StartTimer,
    release,
)
from .._engine.prepared import Prepared
from .._engine.result import HUNG, RunCollector, RunResult, runs_frame, spans_frame
from .._spec.inputs import StudyInputs, check_int
from .._spec.models import AgentModels
from .._spec.policies import Policies, breaker_lookup, overload_lookup
from .agent import AgentResponse
from .bus import EventBus
from .tables import TableStudy, declines

BLOCK = 64  # runs share one rng seeding per block of BLOCK run indexes (see run_rng)


def run_rng(seed: int, block: int) -> random.Random:
    """The rng of block ``block`` of a study with ``seed``: runs ``block*BLOCK ..`` draw from it
    in order, so results do not depend on how runs are split into chunks (§4.3)."""
    return random.Random((abs(int(seed)) << 40) ^ (block << 1) ^ (1 if seed < 0 else 0))


_gc_lock = threading.Lock()
_gc_pauses = 0  # simulations running (threads, nesting) while the collector is paused
_gc_was_enabled = False


@contextmanager
def gc_paused():
    """Pause CPython's cyclic garbage collector while a simulation runs; restored when the
    last simulation running (in any thread) ends. The simulator makes no reference cycles
    that outlive a run (``release`` cuts them: every run is freed by reference counting,
    which tests/test_speed.py checks), so the collector would find nothing; yet its scans,
    triggered every 700 allocations, cost 10-25% of a study."""
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


class Fact:
    """A SimPy event that carries only what ``Environment.step`` needs (its callbacks, which
    may be a shared tuple) and one fact for them: an attempt and its response, a timer.
    A third of the cost of a ``simpy.Timeout`` and fewer objects for the cyclic GC."""

    __slots__ = ("callbacks", "driver", "target", "data")
    _ok = True

    def __init__(self, callbacks: tuple, driver: Any = None, target: Any = None, data: Any = None):
        self.callbacks = callbacks
        self.driver = driver
        self.target = target
        self.data = data


# env._now is SimPy's clock itself (its ``now`` property costs a Python call per event)
def _succeeded(ev: Fact) -> None:
    d = ev.driver
    d.apply(d.core.attempt_succeeded(ev.target, d.env._now, ev.data))


def _failed(ev: Fact) -> None:
    d = ev.driver
    message, retryable = ev.data
    d.apply(d.core.attempt_failed(ev.target, d.env._now, message, retryable=retryable))


def _fired(ev: Fact) -> None:
    d = ev.driver
    d.apply(d.core.timer_fired(ev.target, d.env._now))


# shared callback tuples (SimPy only iterates them): no per-event list, no cycle
_SUCCEEDED, _FAILED, _FIRED = (_succeeded,), (_failed,), (_fired,)


def at(
    env: simpy.Environment, delay_ms: float, callback: Callable[[Fact], None], priority: int = 1
) -> None:
    """Call ``callback(event)`` ``delay_ms`` (>= 0) from now on ``env``; at equal times in
    (priority, scheduling) order (SimPy's: 0 urgent, 1 normal)."""
    env.schedule(Fact((callback,)), priority, delay_ms)


class SimDriver:
    """Carries out the core's actions on a SimPy environment."""

    def __init__(
        self,
        env: simpy.Environment,
        core: Scheduler,
        models: AgentModels,
        bus: EventBus | None = None,
        responses: bool = True,
        on_finish: Callable[[Run], None] | None = None,
    ):
        self.env = env
        self.core = core
        self.models = models
        self.bus = bus
        self.responses = responses
        self.on_finish = on_finish  # called with each run as it ends
        self._steps: dict[CompiledPlan, list[tuple]] = {}

    def _compile(self, cp: CompiledPlan) -> list[tuple]:
        out = []
        for i in range(cp.n):
            agent_id, action = cp.agent_ids[i], cp.actions[i]
            response = (
                AgentResponse(
                    action=action,
                    confidence=1.0,
                    reasoning=f"simulated by the model of agent '{agent_id}'",
                )
                if self.responses
                else None
            )
            model = self.models.resolve(agent_id, action)
            error = f"simulated error: agent '{agent_id}' action '{action}' failed"
            out.append(
                (
                    model.draw,
                    response,
                    {"error": (error, True), "fatal": (error, False)},
                    model if getattr(model, "outages", ()) else None,
                )
            )
        self._steps[cp] = out
        return out

    def apply(self, actions: list[Any]) -> None:
        env = self.env
        for action in actions:
            kind = type(action)
            if kind is StartAttempt:
                att = action.attempt
                cp = att.prun.cp
                steps = self._steps.get(cp) or self._compile(cp)
                draw, response, errors, timed = steps[att.step]
                if timed is not None:  # outages: the model of an attempt starting now
                    draw = timed.at(env._now).draw
                latency, outcome = draw(att.run.context)
                if outcome == "ok":
                    env.schedule(Fact(_SUCCEEDED, self, att, response), 1, latency)
                elif outcome != "hang":  # a hung attempt never returns: a timer ends it
                    # "error", or "fatal": an error the agent marks non-retryable
                    env.schedule(Fact(_FAILED, self, att, errors[outcome]), 1, latency)
            elif kind is FinishRun:
                if self.on_finish is not None:
                    self.on_finish(action.run)
            elif kind is StartTimer:
                timer = action.timer
                env.schedule(Fact(_FIRED, self, timer), 1, max(0.0, timer.at_ms - env._now))
            elif kind is Emit:
                if self.bus is not None:
                    self.bus.emit(action.event, action.payload)
            # CancelAttempt / CancelTimer: nothing to undo, the core ignores stale facts

    def finish_hung(self, runs: list[Run]) -> None:
        """Runs still open when no event is left would hang forever: end them as failed at
        the last moment anything happened in them (a plan started, an attempt started or
        ended), cancelling the hung attempts."""
        for run in runs:
            if run.status is None:
                last = max(
                    run.plans[-1].start_ms,
                    max(
                        (
                            a.end_ms if a.end_ms is not None else a.start_ms or a.queued_ms
                            for a in run.attempts
                        ),
                        default=run.start_ms,
                    ),
                )
                self.apply(self.core.abort(run, last, HUNG))


def simulate(
    plan: Any, models: Any, seed: int = 0, *, bus: EventBus | None = None, policies: Any = None
) -> RunResult:
    """Run ``plan`` once in simulated time against agent ``models``; ms from the run's start.

    The same scheduling core as the live ``Orchestrator``, on a SimPy clock: the same
    inputs and seed give the same result.

    Args:
        plan: A ``Plan``, a dict in the plan format or a plan file's path.
        models: ``AgentModels``, a dict in the models format or a models file's path: a
            model for every agent the plan calls.
        seed: Seeds every random draw (latencies, errors, hangs, jitter).
        bus: An ``ok.EventBus`` to receive the live runtime's events, with simulated
            ``timeMs``.
        policies: Circuit breakers and overload rules (SPEC §10.1, §17; a dict, a
            YAML/JSON file path or ``ok.Policies``).

    Returns:
        The run's result, in simulated ms: status, per-step results and errors, spans.

    Raises:
        PlanValidationError: An invalid plan, models or policies, or a step whose agent
            no model matches.

    Warns:
        HangWarning: A step can hang and no step or plan timeout would end it.

    Example:
        ```python
        run = ok.simulate(ok.examples.plan("parallel_analysis"), ok.examples.models(), seed=1)
        run.status, run.duration_ms
        ok.gantt(run)
        ```
    """
    seed = check_int("seed", seed)
    prepared = Prepared.of(StudyInputs.of(plan, models, policies, where="simulate"))
    rng = run_rng(seed, 0)
    env = simpy.Environment()
    core = Scheduler(
        prepared.models.capacity,
        rng,
        breakers=prepared.breakers(),
        overload=prepared.overload(),
        events=False if bus is None else getattr(bus, "wanted", True),
    )
    driver = SimDriver(env, core, prepared.models, bus)
    run, actions = core.submit(prepared.compiled[0], 0.0, 0, rng)
    driver.apply(actions)
    env.run()
    driver.finish_hung([run])
    result = RunResult.from_run(run)
    release(run)
    return result


def simulate_runs(
    cp: CompiledPlan,
    models: AgentModels,
    seed: int,
    start: int,
    stop: int,
    sink: Callable[[Run], None],
    policies: Policies | None = None,
    breaker_log: list | None = None,
    overload_log: list | None = None,
) -> dict[str, float]:
    """Simulate independent runs ``start..stop`` (each alone, from t = 0), feeding each
    finished run to ``sink``; returns each agent's total running time in ms. ``start``
    must be a multiple of BLOCK. With breakers in ``policies`` every run starts with closed,
    empty breakers (runs stay independent); their transitions go to ``breaker_log`` as
    (run index, *transition). Overload rules likewise start afresh in every run; their limit
    and capacity changes go to ``overload_log`` as (run index, *change)."""
    if start % BLOCK:
        raise ValueError(f"start must be a multiple of {BLOCK}")
    capacities = {a: models.capacity(a) for a in _agent_ids(cp)}
    env = simpy.Environment()
    breakers = breaker_lookup(policies)
    overload = overload_lookup(policies)
    core = Scheduler(
        capacities.__getitem__, None, events=False, breakers=breakers, overload=overload
    )
    driver = SimDriver(env, core, models, responses=False)
    with gc_paused():
        for i in range(start, stop):
            if i % BLOCK == 0 or i == start:
                core.rng = run_rng(seed, i // BLOCK)
            env._now = 0.0  # each run alone from t = 0: the queue is empty between runs
            if breakers is not None:
                core.reset_breakers()
                if core.breaker_log:
                    if breaker_log is not None:
                        breaker_log.extend((i - 1, *t) for t in core.breaker_log)
                    core.breaker_log.clear()
            if overload is not None:
                core.reset_overload()
                if core.overload_log:
                    if overload_log is not None:
                        overload_log.extend((i - 1, *t) for t in core.overload_log)
                    core.overload_log.clear()
            run, actions = core.submit(cp, 0.0, i, core.rng)
            driver.apply(actions)
            env.run()
            if run.status is None:
                driver.finish_hung([run])
            sink(run)
            release(run)  # freed at once by reference counting, not by the cyclic GC
    if breaker_log is not None:
        breaker_log.extend((stop - 1, *t) for t in core.breaker_log)
    if overload_log is not None:
        overload_log.extend((stop - 1, *t) for t in core.overload_log)
    return core.busy_ms()


def _agent_ids(cp: CompiledPlan | None) -> set[str]:
    """The agent ids a compiled plan and its fallbacks call."""
    out: set[str] = set()
    while cp is not None:
        out.update(cp.agent_ids)
        cp = cp.fallback
    return out


def independent_runs(
    prepared: Prepared, seed: int, start: int, stop: int, keep_spans: bool | int
) -> tuple[list, list, dict, list]:
    """Independent runs ``start..stop`` of the study's plan (picklable: a chunk for any
    Executor): run rows, span rows, each agent's busy ms, breaker transitions then overload
    changes (``result.policy_frames`` tells them apart)."""
    sink = RunCollector(keep_spans, study_clock=False)
    log: list = []
    changes: list = []
    busy = simulate_runs(
        prepared.compiled[0],
        prepared.models,
        seed,
        start,
        stop,
        sink,
        prepared.policies,
        log,
        changes,
    )
    return sink.rows, sink.spans, busy, log + changes


class _Arrivals:
    """A workload's arrivals on a SimPy clock (SPEC §4.2), for either engine of a workload
    study: ``run(start)`` calls ``start(k, now, i, rng)`` as run ``i`` (of plan ``k`` of the
    mix) arrives, its attempts drawing from ``rng``; in a closed population the engine calls
    ``think_again()`` as each run ends."""

    def __init__(
        self, env: simpy.Environment, workload: Any, seed: int, n_plans: int, progress: bool
    ):
        self.env = env
        self.seed = seed
        self.times = workload.times(random.Random(f"arrivals:{seed}"))
        self.pick = workload.picker(random.Random(f"mix:{seed}"))
        self.closed = workload.population is not None
        if self.closed:  # a user thinks again once their run has ended
            self.think = random.Random(f"think:{seed}")
            self.mean_think = workload.think_ms
        self.single = n_plans == 1
        self.progress = progress
        self.horizon_ms = workload.horizon_ms
        self.arrival: tuple | None = None

    def think_again(self) -> None:
        """A run of a closed population ended now: its user thinks, then arrives again
        (if before the horizon)."""
        delay = self.think.expovariate(1.0 / self.mean_think)
        if self.env._now + delay < self.horizon_ms:
            at(self.env, delay, self.arrival[0], priority=0)  # type: ignore[index]

    def run(self, start: Callable[[int, float, int, random.Random], None]) -> None:
        """Run the study's clock until no event is left."""
        env, times, closed, seed, pick = self.env, self.times, self.closed, self.seed, self.pick
        n = len(times)
        bar = tqdm(
            total=round(self.horizon_ms) if closed else n,
            desc="capacity study",
            unit="ms" if closed else "run",
            disable=not self.progress,
        )
        arrived = 0
        rng = run_rng(seed, 0)  # the rng of the block of runs arriving now (see run_rng)
        single, queue, eid = self.single, env._queue, env._eid

        def arrive(event: Fact) -> None:
            nonlocal arrived, rng
            i = arrived
            arrived += 1
            now = env._now
            if arrived < n and not closed:  # one arrival in the event heap at a time keeps
                # the heap small (and its event serves again); urgent: at equal times
                # arrivals go first, in order
                event.callbacks = arrival  # (SimPy's env.schedule, inline)
                heappush(queue, (now + (times[arrived] - now), 0, next(eid), event))
            if i % BLOCK == 0 and i:  # a new block of runs: its rng; the bar moves on
                rng = run_rng(seed, i // BLOCK)
                if not closed:
                    bar.update(BLOCK)
            start(0 if single else pick(), now, i, rng)

        arrival = self.arrival = (arrive,)  # SimPy only iterates an event's callbacks
        if closed:  # every user's first think; later arrivals come from ended()
            for t in times:
                at(env, t, arrive, priority=0)
            if self.progress:  # the bar follows the study clock, in hundredths of the horizon
                horizon = self.horizon_ms
                for k in range(1, 101):
                    at(env, horizon * k / 100, lambda _e: bar.update(round(horizon / 100)))
        elif n:
            at(env, times[0], arrive, priority=0)
        env.run()
        self.arrival = arrival = arrive = None  # type: ignore[assignment]  # (cycles)
        if not closed:
            bar.update(n - bar.n)
        bar.close()


def capacity_study(
    prepared: Prepared,
    seed: int,
    keep_spans: bool | int,
    progress: bool,
    tables: bool | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict, float, list]:
    """One workload study (SPEC §4.2): the workload's runs arrive over its horizon and share
    each agent's capacity on one SimPy clock (ms from the study's start). Returns the runs
    frame and the spans frame (in run order), each agent's busy ms, the time the last run
    ended and the breaker transitions then the overload changes (limits, capacities;
    ``result.policy_frames`` tells them apart). The table lane (``tables.py``: the same
    frames, faster) runs the study unless it declines it, or ``tables`` says which."""
    env = simpy.Environment()
    arrivals = _Arrivals(env, prepared.workload, seed, len(prepared.compiled), progress)
    jitter = random.Random(f"jitter:{seed}")
    if tables is None:
        tables = declines(prepared) is None
    if tables:
        on_finish = arrivals.think_again if arrivals.closed else None
        lane = TableStudy(env, prepared.compiled, prepared.models, jitter, on_finish)
        with gc_paused():  # (frames too: the collector would scan every record once more)
            arrivals.run(lane.submit)
            runs, spans = lane.frames(keep_spans)
            busy = lane.busy_ms()
            lane.close()
        last_end = float(runs["end_ms"].max()) if len(runs) else 0.0
        return runs, spans, busy, max(last_end, 0.0), []
    core = Scheduler(
        prepared.models.capacity,
        jitter,
        events=False,
        breakers=prepared.breakers(),
        overload=prepared.overload(),
    )
    sink = RunCollector(keep_spans, study_clock=True)
    open_runs: dict[int, Run] = {}  # the runs in flight; a finished run is collected at once
    last_end = 0.0

    def finish(run: Run) -> None:
        nonlocal last_end
        del open_runs[run.run_id]
        if run.end_ms > last_end:  # type: ignore[operator]  # a finished run has an end
            last_end = run.end_ms
        sink(run)
        release(run)  # freed by reference counting: the live heap stays small
        if arrivals.closed:
            arrivals.think_again()

    driver = SimDriver(env, core, prepared.models, responses=False, on_finish=finish)
    cps, submit, apply = prepared.compiled, core.submit, driver.apply

    def start(k: int, now: float, i: int, rng: random.Random) -> None:
        run, actions = submit(cps[k], now, i, rng)
        open_runs[i] = run
        apply(actions)

    with gc_paused():
        arrivals.run(start)
        driver.finish_hung(list(open_runs.values()))
    rows, spans = sink.rows, sink.spans
    key = operator.itemgetter(0)
    rows.sort(key=key)  # run order (runs were collected as they finished)
    spans.sort(key=key)  # stable: each run's attempts stay in order
    log = [(None, *t) for t in core.breaker_log] + [(None, *t) for t in core.overload_log]
    return runs_frame(rows), spans_frame(spans), core.busy_ms(), last_end, log
