"""The live runtime: a thin asyncio driver around the scheduling core."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import random
from types import MappingProxyType
from typing import Any, Callable

from ._agent import Agent, coerce_response
from ._core import (CancelAttempt, CancelTimer, Emit, FinishRun, Scheduler, StartAttempt,
                    StartTimer, _job_id, compile_plan)
from ._errors import AgentError, OrchkitError, PlanValidationError
from ._plan import Plan
from ._result import RunResult

log = logging.getLogger("orchkit")
_QUEUE_EVENTS = frozenset({"queue:completed", "queue:failed"})
Listener = Callable[..., Any]


class EventBus:
    """Named events to listeners (SPEC §3.10).

    ``on(event, cb)`` calls ``cb(payload)`` for every ``event``; ``on("*", cb)`` calls
    ``cb(event, payload)`` for every event. Coroutine listeners are scheduled as tasks. A
    listener that raises is logged and reported as ``listener:error`` {event, listener,
    error}; it never breaks the run.
    """

    def __init__(self) -> None:
        self._listeners: dict[str, list[tuple[Listener, bool]]] = {}

    def on(self, event: str, listener: Listener) -> Listener:
        """Call ``listener`` on every ``event``; returns it (usable as a decorator)."""
        self._listeners.setdefault(event, []).append((listener, False))
        return listener

    def once(self, event: str, listener: Listener) -> Listener:
        """Call ``listener`` on the next ``event`` only."""
        self._listeners.setdefault(event, []).append((listener, True))
        return listener

    def off(self, event: str, listener: Listener | None = None) -> None:
        """Remove ``listener`` from ``event`` (all of the event's listeners if None)."""
        if listener is None:
            self._listeners.pop(event, None)
            return
        entries = self._listeners.get(event, [])
        self._listeners[event] = [e for e in entries if e[0] != listener]  # == : bound methods

    def clear(self) -> None:
        """Remove every listener."""
        self._listeners.clear()

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        """Call the listeners of ``event`` (then the ``"*"`` listeners) with ``payload``."""
        for key in (event, "*"):
            entries = self._listeners.get(key)
            if not entries:
                continue
            if any(once for _, once in entries):
                self._listeners[key] = [e for e in entries if not e[1]]
            for listener, _ in entries:
                try:
                    out = listener(payload) if key != "*" else listener(event, payload)
                    if inspect.isawaitable(out):
                        task = asyncio.ensure_future(out)
                        task.add_done_callback(
                            lambda t, l=listener: self._check(t, event, l))
                except Exception as exc:  # noqa: BLE001 - a listener never breaks a run
                    self._failed(event, listener, exc)

    def _check(self, task: asyncio.Future, event: str, listener: Listener) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._failed(event, listener, task.exception())

    def _failed(self, event: str, listener: Listener, exc: BaseException) -> None:
        log.warning("listener %r of %s raised %s: %s", listener, event, type(exc).__name__, exc)
        if event != "listener:error":
            self.emit("listener:error", {"event": event, "listener": repr(listener),
                                         "error": f"{type(exc).__name__}: {exc}"})


class Orchestrator:
    """Runs plans live on registered agents (SPEC §6).

    ``seed`` seeds the backoff jitter. Use from a notebook (top-level ``await``) or a script
    (``asyncio.run``). Concurrent ``orchestrate`` calls share each agent's capacity.
    """

    def __init__(self, *, seed: int | None = None):
        self._agents: dict[str, Agent] = {}
        self._bus = EventBus()
        self._core = Scheduler(self._capacity_of, random.Random(seed))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._tasks: dict[Any, asyncio.Task] = {}
        self._timers: dict[Any, asyncio.TimerHandle] = {}
        self._runs = itertools.count(1)
        self.on, self.once, self.off, self.emit = (
            self._bus.on, self._bus.once, self._bus.off, self._bus.emit)

    # -- agents -----------------------------------------------------------------------

    async def register_agent(self, agent: Agent) -> None:
        """Initialise ``agent`` and make it serve its ``agent_id``; emits ``agent:registered``."""
        if not isinstance(agent, Agent):
            raise TypeError(f"register_agent() takes an orchkit.Agent, got {type(agent).__name__}")
        agent_id = agent.agent_id
        if agent_id in self._agents:
            raise OrchkitError(f"agent '{agent_id}' is already registered; give each agent a "
                               "unique id or unregister the old one first")
        agent.orchestrator = self
        agent._listeners.append(
            lambda kind, payload: self._bus.emit(f"agent:{kind}", {
                "agentId": agent_id, kind: payload, "timeMs": self._now()}))
        await agent.initialize()
        self._agents[agent_id] = agent
        self._bus.emit("agent:registered", {"agentId": agent_id})

    def get_agent(self, agent_id: str) -> Agent | None:
        """The registered agent with this id, or None."""
        return self._agents.get(agent_id)

    def all_agents(self) -> list[Agent]:
        """Every registered agent, in registration order."""
        return list(self._agents.values())

    async def unregister_agent(self, agent_id: str) -> None:
        """Shut ``agent_id``'s agent down and forget it; emits ``agent:unregistered``.

        Raises ``OrchkitError`` while an attempt of a run is queued at or running on it.
        """
        agent = self._agents.get(agent_id)
        if agent is None:
            return
        running, waiting = self.agent_load(agent_id)
        if running or waiting:
            raise OrchkitError(f"agent '{agent_id}' still has {running} attempt(s) running and "
                               f"{waiting} waiting; unregister it once its runs have ended")
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
        """(attempts running, attempts waiting for capacity) on ``agent_id`` now."""
        slots = self._core._agents.get(agent_id)
        if slots is None:
            return 0, 0
        return slots.busy, sum(1 for a in slots.queue if a.live)

    def _capacity_of(self, agent_id: str) -> int | None:
        return self._agents[agent_id].capacity

    # -- runs -------------------------------------------------------------------------

    async def orchestrate(self, plan: Plan | dict, *, run_id: Any = None) -> RunResult:
        """Run ``plan`` (and its fallbacks) to the end; never raises for step failures.

        Raises ``PlanValidationError`` before anything runs if a step names an agent that
        is not registered.
        """
        plan = Plan.model_validate(plan)
        self._check_agents(plan)
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._tasks:
                raise OrchkitError("this Orchestrator is running plans in another event loop")
            self._loop, self._t0 = loop, loop.time()
        done = loop.create_future()
        run_id = next(self._runs) if run_id is None else run_id
        run, actions = self._core.submit(compile_plan(plan), self._now(), run_id, done)
        self._apply(actions)
        try:
            await done
        except asyncio.CancelledError:
            self._apply(self._core.abort(run, self._now(), "cancelled: the caller cancelled the run"))
            raise
        result = RunResult.from_run(run)
        for agent_id in dict.fromkeys(s.agent_id for p in plan.chain() for s in p.steps):
            scale = getattr(self._agents[agent_id], "time_scale", 1.0)
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
                        "await orchestrator.register_agent(agent) or fix the step's agentId")

    async def shutdown(self) -> None:
        """Cancel attempts in flight, shut every agent down, drop agents and listeners."""
        for task in list(self._tasks.values()):
            task.cancel()
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        results = await asyncio.gather(*(a.shutdown() for a in self._agents.values()),
                                       return_exceptions=True)
        for agent, res in zip(list(self._agents.values()), results):
            if isinstance(res, Exception):
                log.warning("agent %s failed to shut down: %s", agent.agent_id, res)
        self._agents.clear()
        self._bus.clear()

    # -- the driver loop --------------------------------------------------------------

    def _now(self) -> float:
        return (self._loop.time() - self._t0) * 1000.0 if self._loop else 0.0

    def _apply(self, actions: list[Any]) -> None:
        for action in actions:
            kind = type(action)
            if kind is Emit:
                if action.event in _QUEUE_EVENTS:  # an agent behind a queue names its job
                    agent = self._agents.get(action.payload["agentId"])
                    ref = agent.job_ref(action.payload["jobId"]) if agent else None
                    if ref is not None:
                        action.payload["bullJobId"] = ref
                self._bus.emit(action.event, action.payload)
            elif kind is StartAttempt:
                att = action.attempt
                self._tasks[att] = self._loop.create_task(self._call(att))
            elif kind is StartTimer:
                timer = action.timer
                self._timers[timer] = self._loop.call_at(
                    self._t0 + timer.at_ms / 1000.0, self._fire, timer)
            elif kind is CancelTimer:
                handle = self._timers.pop(action.timer, None)
                if handle is not None:
                    handle.cancel()
            elif kind is CancelAttempt:
                task = self._tasks.pop(action.attempt, None)
                if task is not None:
                    task.cancel()
            elif kind is FinishRun:
                done = action.run.context
                if not done.done():
                    done.set_result(None)

    def _fire(self, timer: Any) -> None:
        self._timers.pop(timer, None)
        self._apply(self._core.timer_fired(timer, self._now()))

    async def _call(self, att: Any) -> None:
        agent = self._agents[att.agent_id]
        action = att.action
        context = {"plan_id": att.prun.cp.id, "step_id": att.step_id, "attempt": att.number,
                   "run_id": att.run.run_id, "job_id": _job_id(att),
                   "results": MappingProxyType(att.prun.results)}
        try:
            value = agent.process(action, att.input, context)
            if inspect.isawaitable(value):  # a plain def process() may return directly
                value = await value
            response = coerce_response(value, agent.agent_id, action)
        except asyncio.CancelledError:
            if att.live:  # not cancelled by the core: the loop itself is going away
                raise
            return
        except AgentError as exc:
            actions = self._core.attempt_failed(att, self._now(), str(exc), retryable=exc.retryable)
        except Exception as exc:  # noqa: BLE001 - an agent's bug fails the attempt, not the run
            actions = self._core.attempt_failed(
                att, self._now(),
                f"agent '{agent.agent_id}' action '{action}' raised {type(exc).__name__}: {exc}")
        else:
            actions = self._core.attempt_succeeded(att, self._now(), response)
        self._tasks.pop(att, None)
        self._apply(actions)
