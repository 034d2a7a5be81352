"""The live runtime: a thin asyncio driver around the scheduling core.

What the driver guarantees whatever agents and listeners do (docs/guides/live.md):
every run ends, with the status the core gives it; an agent's slot is given back only when
its coroutine has really finished; a listener's exception never reaches the run.
``KeyboardInterrupt`` and ``SystemExit`` are never swallowed: they propagate.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import random
import time
from collections.abc import Iterator
from pathlib import Path
from types import CoroutineType, MappingProxyType
from typing import Any

from .._base.errors import AgentError, OrchkitError, PlanValidationError
from .._engine.core import (
    Attempt,
    CancelAttempt,
    CancelTimer,
    CompiledPlan,
    Emit,
    FinishRun,
    Run,
    Scheduler,
    StartAttempt,
    StartTimer,
    compile_plan,
    job_id_of,
    release,
)
from .._engine.result import RunResult
from .._spec.plan import Plan, as_plan
from .._spec.policies import Policies, as_policies, breaker_lookup, overload_lookup
from .agent import Agent, AgentResponse, agent_event, coerce_response, describe
from .bus import FATAL, EventBus, log, wait_tasks

_QUEUE_EVENTS = frozenset({"queue:completed", "queue:failed"})
SHUTDOWN = "cancelled: the orchestrator shut down"
_BURST_STEPS = 64  # a trampolining attempt task yields to the loop at least this often
_BURST_MS = 1.0  # and at least every this many ms
_TASK_NAME = "orchkit attempt"  # (asyncio would format a "Task-<n>" per task)


class Orchestrator:
    """Runs plans live on registered agents (SPEC §6).

    Use from a notebook (top-level ``await``) or a script (``asyncio.run``). Concurrent
    ``orchestrate`` calls share each agent's capacity and breakers. Listen to the run's
    events with ``on(event, listener)``, ``once``, ``off`` (the ``EventBus`` methods;
    ``on("*", listener)`` hears every event as ``(event, payload)``).

    Args:
        seed: Seeds the backoff jitter (None: unseeded).
        grace_ms: How long a cancelled attempt's coroutine may take to stop before it is
            reported as a straggler (a warning naming the agent), and how long ``shutdown``
            waits for coroutines, async listeners and agents' ``shutdown``, ms (default
            1000). A cancelled attempt keeps its agent slot until its coroutine has really
            finished, so an agent that ignores cancellation never serves more than
            ``capacity`` attempts at once.
        policies: Circuit breakers and overload rules per agent-id pattern (SPEC §10.1,
            §17; a dict, a YAML/JSON file path or ``ok.Policies``), shared by every run of
            this orchestrator; their ``breaker:*``, ``admission:limit_changed`` and
            ``autoscale:scaled`` events carry ``timeMs`` on the orchestrator's clock. An
            autoscaler scales the capacity the orchestrator grants the agent (starting from
            the agent's own ``capacity``, clamped to its min and max).

    Raises:
        ValueError: ``grace_ms`` is not a finite number >= 0.
        PlanValidationError: ``policies`` is invalid.

    Example:
        ```python
        orch = ok.Orchestrator(seed=0)
        for agent in ok.agents.for_plan(plan):
            await orch.register_agent(agent)
        orch.on("step:completed", lambda e: print(e["stepId"], e["timeMs"]))
        result = await orch.orchestrate(plan)
        await orch.shutdown()
        ```
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        grace_ms: float = 1000.0,
        policies: Policies | dict | str | Path | None = None,
    ):
        if (
            isinstance(grace_ms, bool)
            or not isinstance(grace_ms, (int, float))
            or not (0 <= grace_ms < float("inf"))
        ):
            raise ValueError(f"grace_ms must be a finite number of ms >= 0, got {grace_ms!r}")
        self._agents: dict[str, Agent] = {}
        self._bus = EventBus()
        self.policies = as_policies(policies)
        self._core = Scheduler(
            self._capacity_of,
            random.Random(seed),
            hold_slots=True,
            breakers=breaker_lookup(self.policies),
            overload=overload_lookup(self.policies),
            events=self._bus.wanted,
        )  # only events someone hears
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = self._loop_t0 = 0.0  # the same instant on the clock and on the loop's
        self._floor = 0.0  # the core is never told a time earlier than one it was told
        self.grace_ms = float(grace_ms)
        self._tasks: dict[Attempt, asyncio.Task] = {}  # every attempt coroutine not finished
        self._stragglers: dict[Attempt, float] = {}  # cancelled, still running: -> cancel time
        self._timers: dict[Any, asyncio.TimerHandle] = {}
        self._open: set[Run] = set()  # runs whose orchestrate() is waiting
        self._runs = itertools.count(1)
        self.on, self.once, self.off, self.emit = (
            self._bus.on,
            self._bus.once,
            self._bus.off,
            self._bus.emit,
        )

    # -- agents -----------------------------------------------------------------------

    async def register_agent(self, agent: Agent) -> None:
        """Initialise ``agent`` (its ``initialize()``) and make it serve its ``agent_id``;
        emits ``agent:registered``.

        Args:
            agent: An ``ok.Agent`` (a built-in agent, a ``RemoteAgent`` or your own).

        Raises:
            TypeError: ``agent`` is not an ``ok.Agent``.
            OrchkitError: An agent with that id is already registered.
        """
        if not isinstance(agent, Agent):
            raise TypeError(f"register_agent() takes an orchkit.Agent, got {type(agent).__name__}")
        agent_id = agent.agent_id
        if agent_id in self._agents:
            raise OrchkitError(
                f"agent '{agent_id}' is already registered; give each agent a "
                "unique id or unregister the old one first"
            )
        agent.orchestrator = self
        agent._listeners.append(
            lambda kind, payload: self._bus.emit(
                agent_event(agent_id, kind),
                {kind: payload, "agentId": agent_id, "timeMs": self._now()},
            )
        )
        await agent.initialize()
        self._agents[agent_id] = agent
        self._bus.emit("agent:registered", {"agentId": agent_id})

    def get_agent(self, agent_id: str) -> Agent | None:
        """The registered agent with id ``agent_id``, or None."""
        return self._agents.get(agent_id)

    def all_agents(self) -> list[Agent]:
        """Every registered agent, in registration order."""
        return list(self._agents.values())

    async def unregister_agent(self, agent_id: str) -> None:
        """Shut ``agent_id``'s agent down and forget it; emits ``agent:unregistered``. An id
        that is not registered is ignored.

        Raises:
            OrchkitError: An attempt of a run is queued at or running on the agent.
        """
        agent = self._agents.get(agent_id)
        if agent is None:
            return
        running, waiting = self.agent_load(agent_id)
        if running or waiting:
            raise OrchkitError(
                f"agent '{agent_id}' still has {running} attempt(s) running and "
                f"{waiting} waiting; unregister it once its runs have ended"
            )
        del self._agents[agent_id]
        self._core._agents.pop(agent_id, None)  # its capacity is asked again if re-registered
        try:
            await agent.shutdown()
        except Exception as exc:  # noqa: BLE001 - a failing shutdown must not keep the agent
            log.warning("agent %s failed to shut down: %s", agent_id, exc)
        agent._listeners.clear()
        agent.orchestrator = None
        self._bus.emit("agent:unregistered", {"agentId": agent_id})

    def agent_load(self, agent_id: str) -> tuple[int, int]:
        """How busy ``agent_id`` is now.

        Returns:
            (attempts running, attempts waiting for capacity); (0, 0) for an agent never
            called.
        """
        slots = self._core._agents.get(agent_id)
        if slots is None:
            return 0, 0
        return slots.busy, sum(1 for a in slots.queue if a.live)

    def _capacity_of(self, agent_id: str) -> int | None:
        return self._agents[agent_id].capacity

    def breaker_states(self) -> dict[str, str]:
        """Agent id -> its circuit breaker's state ("closed", "open", "half_open"), for the
        agents with a breaker that have been called."""
        return self._core.breaker_states()

    def admission_limits(self) -> dict[str, int]:
        """Agent id -> its usable admission limit now (SPEC §17), for the agents with a
        limit (``admission.<pattern>.limit``) that have been called."""
        return self._core.admission_limits()

    def capacities(self) -> dict[str, float]:
        """Agent id -> its capacity now (an autoscaler's in effect; inf: unlimited), for the
        agents with overload rules that have been called."""
        return self._core.capacities()

    # -- runs -------------------------------------------------------------------------

    async def orchestrate(self, plan: Plan | dict, *, run_id: Any = None) -> RunResult:
        """Run ``plan`` (and its fallbacks) to the end; never raises for step failures.

        Args:
            plan: A ``Plan``, a dict in the plan format, or a plan file's path.
            run_id: The run's id in events and spans (default: 1, 2, ... per orchestrator).

        Returns:
            The run's result: ``status`` ``"succeeded"``, ``"failed"`` or ``"timed_out"``,
            per-step results and errors, and the spans (ms from the run's start). Call
            ``raise_for_status()`` on it to turn a failure into an exception.

        Raises:
            PlanValidationError: Before anything runs: the plan is invalid, or a step names
                an agent that is not registered.
            OrchkitError: This orchestrator is running plans in another event loop.
            asyncio.CancelledError: The caller cancelled the call; the run is recorded as
                ``failed`` ("cancelled: the caller cancelled the run").
        """
        plan = as_plan(plan)
        cp = compile_plan(plan)
        agent_ids = dict.fromkeys(  # every agent of the plan and its fallbacks, in order
            itertools.chain.from_iterable(c.agent_ids for c in _compiled_chain(cp))
        )
        if not agent_ids.keys() <= self._agents.keys():
            self._check_agents(plan)  # raises, naming the first step whose agent is missing
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._tasks:
                raise OrchkitError("this Orchestrator is running plans in another event loop")
            # Times come from perf_counter, not loop.time(): uvloop's clock ticks in whole
            # ms, which would round every span; timers are still the loop's (call_at).
            self._loop, self._t0, self._loop_t0 = loop, time.perf_counter(), loop.time()
        done = loop.create_future()
        run_id = next(self._runs) if run_id is None else run_id
        run, actions = self._core.submit(cp, self._now(), run_id, done)
        self._open.add(run)
        try:
            self._apply(actions)
            await done
        except asyncio.CancelledError:
            self._apply(
                self._core.abort(run, self._now(), "cancelled: the caller cancelled the run")
            )
            raise
        finally:
            self._open.discard(run)
        result = RunResult.from_run(run)
        release(run)
        for agent_id in agent_ids:
            # .get: shutdown() may have dropped the agents while the run was in flight
            scale = getattr(self._agents.get(agent_id), "time_scale", 1.0)
            if scale != 1.0:  # e.g. SyntheticAgent: the trace is `scale` x its model's times
                result.time_scale[agent_id] = scale
        return result

    def _check_agents(self, plan: Plan) -> None:
        for p in plan.chain():
            for step in p.steps:
                if step.agent_id not in self._agents:
                    known = ", ".join(self._agents) or "none"
                    raise PlanValidationError(
                        f"plan '{p.id}' step '{step.id}': agent '{step.agent_id}' is not "
                        f"registered (registered: {known}); register it with "
                        "await orchestrator.register_agent(agent) or fix the step's agentId"
                    )

    async def shutdown(self) -> None:
        """End every run in flight, stop their attempts, shut every agent down, drop agents
        and listeners.

        Each run in flight ends at once with status "failed" (no fallback runs); its
        unfinished steps are "cancelled" with the error "cancelled: the orchestrator shut
        down", and its ``orchestrate()`` call returns that result. Attempt coroutines are
        cancelled (again, every 50 ms) for up to ``grace_ms``; those still running after
        that are logged as warnings naming their agent and left to the event loop. Async
        listeners and agents' ``shutdown`` get ``grace_ms`` each too.
        """
        for run in sorted(self._open, key=lambda r: r.start_ms):
            self._apply(self._core.abort(run, self._now(), SHUTDOWN))
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        await self._stop_attempts()
        agents = list(self._agents.values())
        tasks = [asyncio.ensure_future(_agent_shutdown(a)) for a in agents]
        await wait_tasks(set(tasks), self.grace_ms)
        for agent, task in zip(agents, tasks):
            if not task.done():
                task.cancel()
                log.warning(
                    "agent '%s' did not shut down within %g ms", agent.agent_id, self.grace_ms
                )
            elif not task.cancelled() and task.exception() is not None:
                log.warning(
                    "agent '%s' failed to shut down: %s", agent.agent_id, describe(task.exception())
                )
        self._agents.clear()
        await self._bus.close(self.grace_ms)

    async def _stop_attempts(self) -> None:
        """Cancel every attempt coroutine still running, until they end or ``grace_ms``."""
        deadline = self._now() + self.grace_ms
        while self._tasks:
            for att, task in self._tasks.items():
                task.cancel()
                self._stragglers.setdefault(att, self._now())
            left = deadline - self._now()
            await wait_tasks(set(self._tasks.values()), max(0.0, min(50.0, left)))  # >= 1 loop turn
            if left <= 0:
                break
        for att in self._tasks:
            log.warning(
                "agent '%s' is still running step '%s' attempt %d (plan '%s', run %s) "
                "%g ms after shutdown() cancelled it: it ignores cancellation",
                att.agent_id,
                att.step_id,
                att.number,
                att.prun.cp.id,
                att.run.run_id,
                self.grace_ms,
            )

    # -- the driver loop --------------------------------------------------------------

    def _now(self) -> float:
        t = (time.perf_counter() - self._t0) * 1000.0 if self._loop else 0.0
        return t if t > self._floor else self._floor

    def _apply(self, actions: list[Any], handed: StartAttempt | None = None) -> None:
        for action in actions:
            kind = type(action)
            if kind is StartAttempt:
                if action is handed:  # _hand_off: the ending task runs it
                    continue
                self._spawn(action.attempt)
            elif kind is Emit:
                if action.event in _QUEUE_EVENTS:  # an agent behind a queue names its job
                    agent = self._agents.get(action.payload["agentId"])
                    ref = agent.job_ref(action.payload["jobId"]) if agent else None
                    if ref is not None:
                        action.payload["bullJobId"] = ref
                self._bus.emit(action.event, action.payload)
            elif kind is StartTimer:
                timer = action.timer
                self._timers[timer] = self._loop.call_at(
                    self._loop_t0 + timer.at_ms / 1000.0, self._fire, timer
                )
            elif kind is CancelTimer:
                handle = self._timers.pop(action.timer, None)
                if handle is not None:
                    handle.cancel()
            elif kind is CancelAttempt:
                att = action.attempt
                task = self._tasks.get(att)
                if task is None:  # its coroutine already ended: give the slot back now
                    self._loop.call_soon(self._exited, att)
                elif task is not asyncio.current_task():  # (the current one is ending)
                    if inspect.getcoroutinestate(task.get_coro()) == inspect.CORO_CREATED:
                        # cancelled before it ran: its coroutine never runs, the slot is free
                        self._loop.call_soon(self._exited, att)
                    task.cancel()
                    self._stragglers[att] = self._now()
                    self._loop.call_later(self.grace_ms / 1000.0, self._straggling, att)
            elif kind is FinishRun:
                done = action.run.context
                if not done.done():
                    done.set_result(None)
        # Done with them: the core keeps this list until its next fact, so a FinishRun in it
        # would keep a finished run alive (and the next run would free it), a submit's
        # StartAttempts their attempts' objects.
        actions.clear()

    def _fire(self, timer: Any) -> None:
        self._timers.pop(timer, None)
        now = self._now()
        if now < timer.at_ms:  # a coarse loop clock (uvloop: whole ms) woke it early
            now = self._floor = timer.at_ms
        self._apply(self._core.timer_fired(timer, now))

    def _exited(self, att: Attempt) -> None:
        """An attempt's coroutine has ended: a cancelled attempt's agent slot is free now."""
        self._tasks.pop(att, None)
        cancelled_ms = self._stragglers.pop(att, None) if self._stragglers else None
        if cancelled_ms is not None and self._now() - cancelled_ms > self.grace_ms:
            log.warning(
                "agent '%s' stopped step '%s' attempt %d %.0f ms after it was cancelled",
                att.agent_id,
                att.step_id,
                att.number,
                self._now() - cancelled_ms,
            )
        if att.held:
            self._apply(self._core.attempt_exited(att, self._now()))
        elif att.live:  # its task was cancelled by someone else (the agent itself?)
            self._apply(
                self._core.attempt_failed(
                    att,
                    self._now(),
                    (
                        f"agent '{att.agent_id}' action '{att.action}' was cancelled, not by the "
                        "orchestrator"
                    ),
                )
            )

    def _straggling(self, att: Attempt) -> None:
        cancelled_ms = self._stragglers.get(att)
        if cancelled_ms is not None and att in self._tasks:
            log.warning(
                "agent '%s' ignores cancellation: step '%s' attempt %d (plan '%s', run "
                "%s) is still running %.0f ms after it was cancelled; its slot stays "
                "taken until it ends",
                att.agent_id,
                att.step_id,
                att.number,
                att.prun.cp.id,
                att.run.run_id,
                self._now() - cancelled_ms,
            )

    def _hand_off(self, actions: list[Any]) -> Attempt | None:
        """Carry out ``actions`` as ``_apply`` does, for an attempt's task that is ending;
        but if they start exactly one attempt, give it no task: return it, for the ending
        task to run next (a chain of steps then takes one task, not one per step)."""
        start = None
        for action in actions:
            if type(action) is StartAttempt:
                if start is not None:  # two or more: each gets its task
                    start = None
                    break
                start = action
        if start is None:
            self._apply(actions)
            return None
        try:
            self._apply(actions, start)
        except BaseException:  # a listener raised KeyboardInterrupt: the attempt still runs
            self._spawn(start.attempt)
            raise
        return start.attempt

    def _spawn(self, att: Attempt) -> None:
        """Run ``att``'s agent call in a task of its own."""
        loop = self._loop
        assert loop is not None, "orchestrate() sets the loop before any attempt starts"
        self._tasks[att] = loop.create_task(self._call(att), name=_TASK_NAME)

    async def _call(self, att: Attempt) -> None:
        """Call ``att``'s agent and report how it ended. While the answer starts exactly one
        attempt (a dependent step, a retry without backoff), run that one next in this task
        rather than in a new one (a trampoline), yielding to the event loop at least every
        ``_BURST_STEPS`` calls and every ``_BURST_MS`` ms."""
        nxt: Attempt | None = None
        task: asyncio.Task | None = None
        steps = 0  # attempts run since this task last yielded to the event loop
        now = mark = 0.0  # when the last attempt ended, when this task last yielded (ms)
        tasks = self._tasks
        last = results = None
        try:
            while True:
                try:
                    if steps >= _BURST_STEPS or now - mark >= _BURST_MS:
                        await asyncio.sleep(0)  # cancelled here: att never called its agent
                        mark, steps = self._now(), 0
                    pr, i = att.prun, att.step
                    if pr is not last:  # attempts of one plan run share its results' view
                        last, results = pr, MappingProxyType(pr.results)
                    cp = pr.cp
                    agent = self._agents[cp.agent_ids[i]]
                    action = cp.actions[i]
                    job_id = job_id_of(att)
                    context = {
                        "plan_id": cp.id,
                        "step_id": cp.step_ids[i],
                        "attempt": att.number,
                        "run_id": att.run.run_id,
                        "job_id": job_id,
                        "results": results,
                    }
                    try:
                        value = agent.process(action, cp.inputs[i], context)
                        # a plain def process() may return directly
                        if type(value) is CoroutineType or inspect.isawaitable(value):
                            value = await value
                        response = (
                            value
                            if type(value) is AgentResponse
                            else coerce_response(value, agent.agent_id, action)
                        )
                    except FATAL:
                        raise
                    except asyncio.CancelledError:
                        if asyncio.current_task().cancelling():  # we (or the loop's owner) did
                            raise
                        actions = self._core.attempt_failed(  # the agent raised it itself
                            att,
                            now := self._now(),
                            f"agent '{agent.agent_id}' action '{action}' raised "
                            "CancelledError without being cancelled",
                        )
                    except AgentError as exc:
                        actions = self._core.attempt_failed(
                            att, now := self._now(), describe(exc, str), retryable=exc.retryable
                        )
                    except BaseException as exc:  # noqa: BLE001 - an agent's bug fails the attempt, not the run
                        actions = self._core.attempt_failed(
                            att,
                            now := self._now(),
                            f"agent '{agent.agent_id}' action '{action}' raised {describe(exc)}",
                        )
                    else:
                        actions = self._core.attempt_succeeded(att, now := self._now(), response)
                    try:
                        if len(actions) == 1 and type(actions[0]) is StartAttempt:
                            nxt = actions[0].attempt  # the common case (no event anyone hears)
                        elif actions:
                            nxt = self._hand_off(actions)
                    finally:  # if no queue:* event reported the agent's job ref (nobody listens to
                        agent.job_ref(job_id)  # it, or the run ended), the agent forgets it now
                finally:  # however it ended (cancelled too), the attempt's coroutine has stopped
                    if att.live or att.held or self._stragglers:
                        self._exited(att)
                    else:  # (_exited with nothing to report)
                        tasks.pop(att, None)
                if nxt is None:
                    return
                if not nxt.live:  # cancelled before it began: _apply gave its slot back
                    nxt = None
                    return
                if task is None:
                    task = asyncio.current_task()
                    assert task is not None
                    mark = now
                if task.cancelling():  # an agent swallowed this task's cancel: nxt gets a
                    return  # fresh task (here its own CancelledError would pass for ours)
                att, nxt = nxt, None
                tasks[att] = task
                steps += 1
        finally:
            if nxt is not None:  # handed off, then this task stopped: nxt gets its own task
                self._spawn(nxt)


def _compiled_chain(cp: CompiledPlan) -> Iterator[CompiledPlan]:
    """``cp`` and its fallbacks, in the order they would run."""
    c: CompiledPlan | None = cp
    while c is not None:
        yield c
        c = c.fallback


async def _agent_shutdown(agent: Agent) -> None:
    await agent.shutdown()
