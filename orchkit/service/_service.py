"""The service's work, with no HTTP in it: sessions of per-learner agents, runs, insights.

One ``Orchestrator`` is shared by every agent. ``start_session`` creates (or reuses) the
learner's learning and tutor agents (through the agent factory, the seam that decides what
an agent is: built-in, or remote behind a queue), registers them and runs the seed's
session-initialisation plan on them. A session ends on ``end_session`` or after
``idle_ms`` without a request (default 30 minutes); its agents are then unregistered.
Agents a submitted run needed (by agent id) are released the same way once idle.

Runs are recorded in the store when submitted (``running``) and again when they end, with
their plan, status, result, spans and events. ``start()`` marks the runs a previous
process left ``running`` as ``interrupted`` and its active sessions as ``interrupted``.

Events for clients go through ``publish(room, event, payload)``, a coroutine function the
socket layer installs (rooms: ``learner:<learnerId>`` and ``run:<runId>``) with
``listening(room)``, so that a run nobody subscribed to costs no task per event.

Races and outages (docs/guides/service.md, "Failure semantics in the service and on queues"):

- every operation on one learner (start_session, process_interaction, an agent action,
  end_session, the tutor's follow-up to an insight, the idle release) runs alone, in
  arrival order, under the learner's lock (kept while anyone holds or waits for it): so a
  release waits for the learner's calls in flight, and a call after it finds no session;
- a request's ``data`` is checked (a JSON object with finite numbers) before any agent is
  made or called, and a session that a failing start_session created is undone;
- a run is cancelled once, however many ``cancel_run`` calls ask; each gets its final
  record, and nothing (a second cancel, a shutdown) interrupts the writing of that record;
- a record the store cannot take (down past its own retry window) is kept in an in-memory
  outbox and retried, in order, until written; ``get_run`` answers from it meanwhile and
  ``health()`` says "degraded". A server stopped before the store returns logs what it
  could not write (those runs are ``interrupted`` on the next start).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fnmatch
import functools
import inspect
import json
import logging
import math
import re
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .._base.errors import (
    AgentError,
    NoSessionError,
    OrchkitError,
    PlanValidationError,
    RunNotFoundError,
    ServiceError,
    UnknownActionError,
)
from .._runtimes.agent import Agent, AgentResponse, coerce_response
from .._runtimes.live import Orchestrator
from .._spec.deployment import Deployment
from .._spec.parse import json_value
from .._spec.plan import Plan
from ._analytics import LearningAnalytics, rows_of_call, rows_of_run
from ._metrics import Metrics
from ._store import Store

log = logging.getLogger("orchkit.service")

AgentFactory = Callable[[str, str], Agent]
"""``factory(kind, agent_id) -> Agent``; ``kind`` is "learning", "tutor" or "speech"."""

KINDS = {"learning": "learning-agent-*", "tutor": "tutor-agent-*", "speech": "speech-agent-*"}
SESSION_ACTIONS = ("start_session", "process_interaction", "end_session")
RUN_STATUSES = ("running", "succeeded", "failed", "timed_out", "cancelled", "interrupted")
DEFAULT_IDLE_MS = 30 * 60_000.0
DEFAULT_CALL_TIMEOUT_MS = 30_000.0
STOP_FLUSH_S = 10.0  # how long stop() waits for a returning store to take the outbox
ANSWERS_WRITE_MS = 20.0  # scored answers are written together, at most this long after
_RUN_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

# Agent time spent on behalf of the current request, in ms (a one-element list per request).
AGENT_MS: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "agent_ms", default=None
)


def default_agent_factory(kind: str, agent_id: str) -> Agent:
    """The built-in agent of ``kind`` (learning, tutor, speech) with id ``agent_id``."""
    from .. import agents

    cls = {
        "learning": "PersonalizedLearningAgent",
        "tutor": "AITutorAgent",
        "speech": "SpeechAnalysisAgent",
    }[kind]
    return getattr(agents, cls)(agent_id)


def load_factory(spec: str) -> AgentFactory:
    """The agent factory named ``module:function`` (e.g. ``mypkg.agents:make``)."""
    import importlib

    module, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name) if module and name else None
    except (ImportError, AttributeError) as exc:
        raise ServiceError(
            f"--agent-factory {spec!r}: cannot load it ({type(exc).__name__}: "
            f"{exc}); give module:function on the Python path"
        ) from None
    if not callable(factory):
        raise ServiceError(
            f"--agent-factory {spec!r}: write module:function, where "
            "function(kind, agent_id) returns an orchkit.Agent"
        )
    return factory


def _warm_up() -> None:
    """Import scikit-learn and train the learning agents' shared model once (~1-4 s), so
    that the first start_session does not pay for it."""
    default_agent_factory("learning", "learning-agent-warm-up")._load()


def kind_of(agent_id: str) -> str | None:
    """The agent kind whose id glob matches ``agent_id`` (``learning-agent-*`` …), or None."""
    return next((k for k, pat in KINDS.items() if fnmatch.fnmatchcase(agent_id, pat)), None)


def session_plan() -> Plan:
    """The seed's session-initialisation plan (``init_learning`` -> ``init_tutor``)."""
    from .. import examples

    return examples.plan("session_initialization")


def now_ms() -> float:
    return time.time() * 1000.0


def iso(ms: float) -> str:
    """ISO-8601 UTC with ms, as the seed's ``new Date().toISOString()``."""
    return (
        datetime.fromtimestamp(ms / 1000.0, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def jsonable(obj: Any) -> Any:
    """``obj`` with AgentResponses as dicts and NaN as None: safe for JSON."""
    if isinstance(obj, AgentResponse):  # serialised by pydantic's core, NaN -> None
        return obj.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if hasattr(obj, "model_dump"):
        return jsonable(obj.model_dump(mode="json"))
    return str(obj)


@dataclass
class _Session:
    learner_id: str
    session_id: str
    agents: dict[str, str]  # kind -> agent id
    started_ms: float
    last_ms: float
    busy: int = 0
    listener: Any = None  # the tutor's insight listener, filtered to this learner


@dataclass
class _LiveRun:
    record: dict[str, Any]
    agent_ids: frozenset[str]
    task: asyncio.Task | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    cancelling: bool = False  # a cancel_run has cancelled its task (once)


class _Gate:
    """One learner's lock and how many hold or wait for it: dropped at zero, never while
    anyone waits (a request arriving then queues behind the others)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock, self.users = asyncio.Lock(), 0


class Service:
    """Sessions, agent calls, runs and insights over one orchestrator and one store.

    ``agent_factory(kind, agent_id)`` makes every agent (default: the built-in ones);
    ``idle_ms`` releases a learner's agents after that long without a request; ``seed``
    seeds the backoff jitter; ``policies`` (``ok.Policies``, a dict or a file) puts circuit
    breakers on the agents of plan runs; ``call_timeout_ms`` bounds every request that waits
    for agents — a direct agent call fails after it (HTTP 503, retryable) and the
    session-initialisation plan gets it as its deadline unless it has one — so a request
    never hangs on an agent that does not answer (e.g. a remote agent with no worker).
    Call ``await start()`` before use and ``await stop()`` after.
    """

    def __init__(
        self,
        store: Store,
        *,
        agent_factory: AgentFactory | None = None,
        idle_ms: float = DEFAULT_IDLE_MS,
        seed: int | None = None,
        policies: Any = None,
        call_timeout_ms: float = DEFAULT_CALL_TIMEOUT_MS,
        deployment: Deployment | None = None,
    ):
        if not idle_ms > 0:
            raise ValueError(f"idle_ms must be > 0, got {idle_ms!r}")
        if not 0 < call_timeout_ms < float("inf"):
            raise ValueError(
                f"call_timeout_ms must be a finite number of ms > 0, got {call_timeout_ms!r}"
            )
        self.call_timeout_ms = float(call_timeout_ms)
        self.store = store
        self.agent_factory = agent_factory or default_agent_factory
        self.idle_ms = float(idle_ms)
        if deployment is not None and deployment.policies is not None:
            if policies is not None:
                raise ValueError("policies and a deployment's policies exclude each other")
            policies = deployment.policies
        self.deployment = deployment
        self.orch = Orchestrator(seed=seed, policies=policies)
        self.metrics = Metrics(self)
        self.analytics = LearningAnalytics(
            store, self.metrics.mastery_rate, before_read=self.write_answers
        )
        self.publish: Callable[[str, str, dict[str, Any]], Awaitable[None]] | None = None
        self.listening: Callable[[str], bool] = lambda room: True  # has the room a client?
        # hears every direct agent call: (agent id, ms, outcome); the dashboard's stats
        self.on_call: Callable[[str, float, str], None] | None = None
        self._plan = (
            deployment.plans.get("session_initialization") if deployment is not None else None
        ) or session_plan()
        self._sessions: dict[str, _Session] = {}
        self._owner: dict[str, str] = {}  # agent id -> learner id
        self._gates: dict[str, _Gate] = {}
        self._making = asyncio.Lock()  # registering the agents submitted runs name
        self._runs: dict[str, _LiveRun] = {}
        # writes the store could not take, retried in order until written (the outbox):
        # (what, write, run id or None); the run records among them by run id
        self._outbox: list[tuple[str, Callable[[], Awaitable[None]], str | None]] = []
        self._unsaved: dict[str, dict[str, Any]] = {}
        self._flusher: asyncio.Task | None = None
        self.store_error: str | None = None  # why the outbox's first write last failed
        self._answers: list[dict[str, Any]] = []  # scored answers not yet written
        self._answers_due: asyncio.TimerHandle | None = None
        self._answers_lock = asyncio.Lock()  # one write of them at a time, in order
        self._last_used: dict[str, float] = {}  # agents of submitted runs -> last use (ms)
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False
        self.started_ms = now_ms()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, mark what a previous process left running as interrupted, and
        start the idle reaper."""
        await self.store.open()
        t = now_ms()
        interrupted = await self.store.interrupt_running(t)
        if interrupted:
            log.warning(
                "%d run(s) were in flight when the server last stopped: now interrupted",
                len(interrupted),
            )
        for s in await self.store.list_sessions("active"):
            await self.store.save_session(
                {
                    **s,
                    "status": "interrupted",
                    "endedAt": iso(t),
                    "endReason": "the server restarted",
                }
            )
        self.orch.on("agent:insight", self._on_insight)
        self.orch.on("*", self._on_event)
        self._spawn(self._reaper())
        if self.agent_factory is default_agent_factory:  # train the learning model meanwhile
            self._spawn(asyncio.to_thread(_warm_up))

    async def stop(self) -> None:
        """Mark runs in flight interrupted, release every agent, close the store."""
        self._stopping = True
        for live in list(self._runs.values()):
            if live.task is not None:
                live.task.cancel()
        await asyncio.gather(
            *(lv.task for lv in list(self._runs.values()) if lv.task), return_exceptions=True
        )
        await self.write_answers()  # after the write under way, if any
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.orch.shutdown()
        await self.write_answers()
        if self._flusher is not None and not self._flusher.done():
            await asyncio.wait([self._flusher], timeout=STOP_FLUSH_S)
            if not self._flusher.done():
                self._flusher.cancel()
                log.error(
                    "the store is still unavailable (%s): %d record(s) not written: %s",
                    self.store_error,
                    len(self._outbox),
                    ", ".join(what for what, _, _ in self._outbox[:20]),
                )
        await self.store.close()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.warning("background task failed: %s: %s", type(exc).__name__, exc)

    async def _publish(self, room: str, event: str, payload: dict[str, Any]) -> None:
        if self.publish is not None:
            await self.publish(room, event, payload)

    # -- agents -------------------------------------------------------------------------

    async def _register(self, kind: str, agent_id: str) -> Agent:
        agent = self.agent_factory(kind, agent_id)
        if not isinstance(agent, Agent) or agent.agent_id != agent_id:
            raise OrchkitError(
                f"agent factory returned {agent!r} for {kind} agent '{agent_id}'; "
                "it must return an orchkit.Agent with that agent_id"
            )
        if self.deployment is not None:  # the bundle's capacity, where it sets one
            capacity = self.deployment.capacity(agent_id)
            if capacity is not None:
                agent.capacity = capacity
        await self.orch.register_agent(agent)
        return agent

    async def _call(self, agent_id: str, action: str, input: dict[str, Any]) -> AgentResponse:
        """One attempt of ``action`` on the agent, timed (metrics, ``AGENT_MS``)."""
        agent = self.orch.get_agent(agent_id)
        if agent is None:
            raise NoSessionError(
                f"agent '{agent_id}' is no longer registered (its session "
                "ended); start a new session"
            )
        context = {"plan_id": None, "step_id": None, "attempt": 1, "run_id": None, "results": {}}
        label = kind_of(agent_id) or agent_id
        gauge = self.metrics.agent_calls_in_flight
        gauge.inc()
        t0 = time.perf_counter()
        outcome = "succeeded"
        try:
            async with asyncio.timeout(self.call_timeout_ms / 1000.0):
                value = agent.process(action, input, context)
                if inspect.isawaitable(value):
                    value = await value
            response = coerce_response(value, agent_id, action)
        except TimeoutError:
            outcome = "timeout"
            raise AgentError(
                f"agent '{agent_id}' action '{action}' did not answer within "
                f"{self.call_timeout_ms:g} ms (the service's call_timeout_ms)",
                retryable=True,
            ) from None
        except AgentError:
            outcome = "failed"
            raise
        except Exception as exc:  # noqa: BLE001 - an agent's bug is the agent's error
            outcome = "failed"
            raise AgentError(
                f"agent '{agent_id}' action '{action}' raised {type(exc).__name__}: {exc}"
            ) from None
        finally:
            ms = (time.perf_counter() - t0) * 1000.0
            gauge.dec()
            self.metrics.step_latency.labels(agent=label, outcome=outcome).observe(ms)
            if self.on_call is not None:
                self.on_call(agent_id, ms, outcome)
            acc = AGENT_MS.get()
            if acc is not None:
                acc[0] += ms
        if action == "process_interaction":  # a scored answer: a response row (analytics)
            self._record_answers(rows_of_call(input, response.data, now_ms()))
        return response

    def agents(self) -> list[dict[str, Any]]:
        """Every registered agent: id, kind, capacity, in flight, waiting, breaker, learner."""
        breakers = self.orch.breaker_states()
        out = []
        for a in self.orch.all_agents():
            running, waiting = self.orch.agent_load(a.agent_id)
            out.append(
                {
                    "id": a.agent_id,
                    "kind": kind_of(a.agent_id) or type(a).__name__,
                    "type": type(a).__name__,
                    "capacity": a.capacity,
                    "inFlight": running,
                    "waiting": waiting,
                    "breaker": breakers.get(a.agent_id),
                    "learnerId": self._owner.get(a.agent_id),
                }
            )
        return out

    def queue_depth(self) -> int:
        """Attempts waiting for agent capacity, over every agent."""
        return sum(self.orch.agent_load(a.agent_id)[1] for a in self.orch.all_agents())

    # -- sessions -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _learner(self, learner_id: str) -> AsyncIterator[None]:
        """Hold the learner's lock: every operation on one learner runs alone, in arrival
        order (asyncio's lock is FIFO)."""
        gate = self._gates.get(learner_id)
        if gate is None:
            gate = self._gates[learner_id] = _Gate()
        gate.users += 1
        try:
            async with gate.lock:
                yield
        finally:
            gate.users -= 1
            if gate.users == 0:
                del self._gates[learner_id]

    def _new_ids(self, learner_id: str, kinds: tuple[str, ...], ms: int) -> dict[str, str]:
        """Ids for a learner's new agents, ``<kind>-agent-<learnerId>-<ms>``, with ``ms``
        moved past any id still registered (an ended session's agent a run still uses)."""
        while True:
            ids = {k: f"{k}-agent-{learner_id}-{ms}" for k in kinds}
            if all(self.orch.get_agent(a) is None for a in ids.values()):
                return ids
            ms += 1

    def _require(self, learner_id: str) -> _Session:
        s = self._sessions.get(learner_id)
        if s is None:
            raise NoSessionError(
                f"learner '{learner_id}' has no active session (never started, "
                "ended, or released after "
                f"{self.idle_ms / 60_000:g} min idle); send action "
                "'start_session' first"
            )
        s.last_ms = now_ms()
        return s

    async def start_session(self, learner_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """Create (or reuse) the learner's agents and run the session-initialisation plan.
        ``data`` is checked first; a session this call created is undone if it fails."""
        data = _check_data(data)
        _check_session_data(data)
        async with self._learner(learner_id):
            t = now_ms()
            s = self._sessions.get(learner_id)
            made = s is None
            if s is None:
                ids = self._new_ids(learner_id, ("learning", "tutor"), int(t))
                try:
                    for kind in ("learning", "tutor"):
                        await self._register(kind, ids[kind])
                        self._owner[ids[kind]] = learner_id
                except BaseException:  # no half-made session: release what was registered
                    for agent_id in ids.values():
                        self._owner.pop(agent_id, None)
                        await self.orch.unregister_agent(agent_id)
                    raise
                s = _Session(learner_id, "", ids, t, t)
                s.listener = self._tutor_listener(learner_id, ids["tutor"])
                self._sessions[learner_id] = s
            try:
                return await self._init_session(s, data, t)
            except BaseException:  # e.g. the store refused its record: leave nothing behind
                if made and self._sessions.get(learner_id) is s:
                    await self._release(s, None)
                raise

    async def _init_session(self, s: _Session, data: dict[str, Any], t: float) -> dict[str, Any]:
        """Run the session-initialisation plan on the session's agents and record the
        session (under the learner's lock); the seed's answer."""
        learner_id, ms = s.learner_id, int(t)
        s.session_id, s.started_ms, s.last_ms = f"session_{learner_id}_{ms}", t, t
        plan = self._bind_session_plan(s, data)
        s.busy += 1
        try:
            record = await self._execute(
                f"init_{s.session_id}", plan, t, kind="session", learner_id=learner_id
            )
        finally:
            s.busy -= 1
        status = "ready" if record["status"] == "succeeded" else "failed"
        acc = AGENT_MS.get()
        if acc is not None and record["result"]:  # the plan's time counts as the agents'
            acc[0] += record["result"]["durationMs"]
        await self.store.save_session(
            {
                "learnerId": learner_id,
                "sessionId": s.session_id,
                "status": "active",
                "agents": dict(s.agents),
                "startedAt": iso(t),
                "startedMs": t,
                "initRunId": record["runId"],
                "initStatus": record["status"],
                "data": data,
            }
        )
        res = record["result"] or {}
        steps = {
            sid: {
                "success": res.get("stepStates", {}).get(sid) == "succeeded",
                "data": (res.get("results", {}).get(sid) or {}).get("data"),
                **({"error": res["errors"][sid]} if sid in res.get("errors", {}) else {}),
            }
            for sid in res.get("stepStates", {})
        }
        return {
            "sessionId": s.session_id,
            "agents": dict(s.agents),
            "status": status,
            "orchestration": {
                "success": record["status"] == "succeeded",
                "duration": res.get("durationMs", record["durationMs"]),
                "results": steps,
            },
            "timestamp": iso(now_ms()),
        }

    def _bind_session_plan(self, s: _Session, data: dict[str, Any]) -> Plan:
        """The session plan with the learner's agents and inputs (``Plan.bind``: no round
        trip through a dict, nothing validated twice); no fallback, and a deadline."""
        inputs = {}
        for step in self._plan.steps:
            inp = dict(step.input or {})
            if "sessionId" in inp:
                inp["sessionId"] = s.session_id
            for key in ("subject", "gradeLevel"):
                if key in data and key in inp:
                    inp[key] = data[key]
            inp["learnerId"] = s.learner_id
            inputs[step.id] = inp
        agent_ids = {
            step.agent_id: s.agents[kind]
            for step in self._plan.steps
            if (kind := kind_of(step.agent_id)) in s.agents
        }
        return self._plan.bind(
            agent_ids=agent_ids, inputs=inputs, fallback=False, timeout_ms=self.call_timeout_ms
        )  # a request never waits forever

    def _tutor_listener(self, learner_id: str, tutor_id: str) -> Any:
        """Let the learner's tutor hear only its own learner's insights (one shared bus)."""
        tutor = self.orch.get_agent(tutor_id)
        hear = getattr(tutor, "on_insight", None)
        if hear is None:
            return None
        self.orch.off("agent:insight", hear)

        def listener(payload: dict[str, Any]) -> None:
            if self._owner.get(payload.get("agentId")) == learner_id:
                hear(payload)

        self.orch.on("agent:insight", listener)
        return listener

    async def process_interaction(self, learner_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """Score the learner's answer on their learning agent; answer the seed's shape with
        the next activity and the adaptations."""
        data = _check_data(data)
        async with self._learner(learner_id):
            s = self._require(learner_id)
            s.busy += 1
            try:
                agent_id = s.agents["learning"]
                r = await self._call(
                    agent_id, "process_interaction", {**data, "learnerId": learner_id}
                )
                nxt = await self._call(agent_id, "get_next_activity", {"learnerId": learner_id})
            finally:
                s.busy -= 1
        d = r.data if isinstance(r.data, dict) else {}
        return {
            "success": True,
            "response": {
                "correct": d.get("correct"),
                "nextActivity": (nxt.data or {}).get("activity"),
                "adaptations": {
                    k: d.get(k)
                    for k in (
                        "concept",
                        "difficultyLevel",
                        "difficultyChange",
                        "mastery",
                        "struggling",
                    )
                }
                | {"recommendations": r.recommendations or []},
            },
            "confidence": r.confidence,
            "reasoning": r.reasoning,
            "timestamp": iso(now_ms()),
        }

    async def end_session(self, learner_id: str) -> dict[str, Any]:
        """Release the learner's agents and close the session (after the learner's calls
        in flight: they hold the learner's lock)."""
        async with self._learner(learner_id):
            s = self._require(learner_id)
            await self._release(s, "ended")
            t = now_ms()
            return {
                "success": True,
                "sessionId": s.session_id,
                "status": "ended",
                "durationMs": t - s.started_ms,
                "timestamp": iso(t),
            }

    async def _release(self, s: _Session, why: str | None) -> None:
        """Unregister the session's agents (under the learner's lock) and record its end as
        ``why`` (None: no record, the session never answered). An agent a submitted run
        still uses is released as a run's agent once idle, never while in use."""
        self._sessions.pop(s.learner_id, None)
        if s.listener is not None:
            self.orch.off("agent:insight", s.listener)
        for agent_id in s.agents.values():
            self._owner.pop(agent_id, None)
            if any(self.orch.agent_load(agent_id)):
                self._last_used[agent_id] = now_ms()
                continue
            await self.orch.unregister_agent(agent_id)
        if why is not None:
            end = functools.partial(self._end_record, s.learner_id, s.session_id, why, now_ms())
            await self._write(f"session of {s.learner_id}", end)

    async def _end_record(self, learner_id: str, session_id: str, why: str, t: float) -> None:
        rec = await self.store.get_session(learner_id) or {"learnerId": learner_id}
        if rec.get("sessionId") not in (None, session_id):
            return  # a later session's record is there already: this end is history
        await self.store.save_session(
            {**rec, "sessionId": session_id, "status": why, "endedAt": iso(t), "endedMs": t}
        )

    async def agent_action(
        self, learner_id: str, kind: str, action: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        """Any other action on the learner's ``kind`` agent (speech agents are made on first
        use)."""
        if kind not in KINDS:
            raise UnknownActionError(
                f"field 'agent': {kind!r} is not an agent kind (kinds: {', '.join(KINDS)})"
            )
        data = _check_data(data)
        async with self._learner(learner_id):
            s = self._require(learner_id)
            if kind not in s.agents:
                agent_id = self._new_ids(learner_id, (kind,), int(now_ms()))[kind]
                await self._register(kind, agent_id)
                self._owner[agent_id] = learner_id
                s.agents[kind] = agent_id
            agent_id = s.agents[kind]
            valid = _actions_of(self.orch.get_agent(agent_id))
            if valid is not None and action not in valid:
                raise UnknownActionError(
                    f"action {action!r} is not an action of the {kind} agent "
                    f"(its actions: {', '.join(valid)}; session actions: "
                    f"{', '.join(SESSION_ACTIONS)})"
                )
            s.busy += 1
            try:
                r = await self._call(agent_id, action, {**data, "learnerId": learner_id})
            finally:
                s.busy -= 1
        return {
            "success": True,
            "agent": kind,
            "agentId": agent_id,
            "response": jsonable(r),
            "timestamp": iso(now_ms()),
        }

    async def handle(
        self, action: str, learner_id: str, agent: str | None, data: dict[str, Any]
    ) -> dict[str, Any]:
        """``POST /api/agents``: dispatch by ``action`` (and ``agent`` for agent actions)."""
        if agent is None:
            if action == "start_session":
                return await self.start_session(learner_id, data)
            if action == "process_interaction":
                return await self.process_interaction(learner_id, data)
            if action == "end_session":
                return await self.end_session(learner_id)
            raise UnknownActionError(
                f"field 'action': {action!r} is not a session action (valid: "
                f"{', '.join(SESSION_ACTIONS)}); for an agent's own action also give field "
                f'\'agent\' ({" | ".join(KINDS)}), e.g. {{"action": "prepare_hints", '
                '"agent": "tutor", ...}'
            )
        return await self.agent_action(learner_id, agent, action, data)

    async def insights(self, learner_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The learner's newest insights (from the store)."""
        return await self.store.list_insights(learner_id, limit)

    # -- the struggling-learner flow ------------------------------------------------------

    def _on_insight(self, payload: dict[str, Any]) -> None:
        insight = payload.get("insight")
        if not isinstance(insight, dict):
            return
        agent_id = payload.get("agentId")
        learner_id = self._owner.get(agent_id) or insight.get("learnerId")
        if not isinstance(learner_id, str):
            return
        t = now_ms()
        record = {
            "type": insight.get("type"),
            "learnerId": learner_id,
            "agentId": agent_id,
            "data": jsonable(insight.get("data")),
            "timestamp": iso(t),
            "timeMs": t,
        }
        self._spawn(self._handle_insight(learner_id, record))

    async def _handle_insight(self, learner_id: str, record: dict[str, Any]) -> None:
        add = functools.partial(self.store.add_insight, learner_id, record)
        await self._write(f"insight of {learner_id}", add)
        s = self._sessions.get(learner_id)
        if record["type"] != "struggling_detected" or s is None:
            return
        data = record["data"] if isinstance(record["data"], dict) else {}
        room = f"learner:{learner_id}"
        await self._publish(
            room,
            "tutor:intervention:required",
            {
                "reason": "struggling_detected",
                "context": {
                    **data,
                    "learnerId": learner_id,
                    "sessionId": s.session_id,
                    "agentId": record["agentId"],
                    "timestamp": record["timestamp"],
                },
            },
        )
        concept = data.get("concept")
        if not isinstance(concept, str) or not concept:
            return
        hints = {
            "concept": concept,
            "learnerId": learner_id,
            **(
                {"difficultyLevel": data["difficultyLevel"]}
                if isinstance(data.get("difficultyLevel"), (int, float))
                else {}
            ),
        }
        async with self._learner(learner_id):  # after the call that reported it
            if self._sessions.get(learner_id) is not s:
                return  # the session ended meanwhile: its agents are gone
            try:
                r = await self._call(s.agents["tutor"], "prepare_hints", hints)
            except (AgentError, NoSessionError) as exc:
                log.warning("tutor of %s could not adapt content: %s", learner_id, exc)
                return
        rd = r.data if isinstance(r.data, dict) else {}
        await self._publish(
            room,
            "content:adapted",
            {
                "learnerId": learner_id,
                "sessionId": s.session_id,
                "concept": concept,
                "reason": "struggling_detected",
                "hints": rd.get("hints"),
                "intervention": jsonable(rd.get("intervention")),
                "response": jsonable(r),
                "timestamp": iso(now_ms()),
            },
        )

    # -- runs ---------------------------------------------------------------------------

    @staticmethod
    def validate_plan(body: Any) -> Plan:
        """The plan of ``body`` (a plan or ``{plan, runId}``), or ``PlanValidationError``."""
        return Plan.model_validate(_plan_part(body)[0])

    async def submit_run(self, body: Any) -> str:
        """Validate and start a run of ``body`` (a plan, or ``{plan, runId}``); returns its id
        once the store holds it as ``running``."""
        raw, run_id = _plan_part(body)
        plan = Plan.model_validate(raw)
        if run_id is None:
            run_id = f"run_{int(now_ms())}_{uuid.uuid4().hex[:8]}"
        elif not isinstance(run_id, str) or not _RUN_ID.match(run_id):
            raise ValueError(
                f"field 'runId' must be 1-128 characters of A-Z a-z 0-9 _ . : -, got {run_id!r:.80}"
            )
        if run_id in self._runs or await self.store.get_run(run_id) is not None:
            raise ServiceError(
                f"field 'runId': a run '{run_id}' already exists; choose another "
                "id or leave runId out"
            )
        await self._ensure_agents(plan)
        t = now_ms()
        live = _LiveRun(_new_record(run_id, plan, t, "api"), _agent_ids(plan))
        self._runs[run_id] = live
        try:
            await self.store.save_run(live.record)
        except BaseException:
            self._runs.pop(run_id, None)
            raise
        live.task = asyncio.ensure_future(self._execute(run_id, plan, t, kind="api", live=live))
        return run_id

    async def _ensure_agents(self, plan: Plan) -> None:
        async with self._making:  # two runs needing one new agent make it once
            t = now_ms()
            for agent_id in sorted(_agent_ids(plan)):
                if agent_id not in self._owner:
                    self._last_used[agent_id] = t
                if self.orch.get_agent(agent_id) is not None:
                    continue
                kind = kind_of(agent_id)
                if kind is None:
                    raise PlanValidationError(
                        f"plan '{plan.id}': no agent serves '{agent_id}'; the service makes "
                        f"agents whose ids match {', '.join(KINDS.values())} (e.g. "
                        "learning-agent-123)"
                    )
                await self._register(kind, agent_id)

    async def _execute(
        self,
        run_id: str,
        plan: Plan,
        t0: float,
        *,
        kind: str,
        live: _LiveRun | None = None,
        learner_id: str | None = None,
    ) -> dict[str, Any]:
        if live is None:
            live = _LiveRun(_new_record(run_id, plan, t0, kind, learner_id), _agent_ids(plan))
            self._runs[run_id] = live
        rec = live.record
        try:
            result = await self.orch.orchestrate(plan, run_id=run_id)
        except asyncio.CancelledError:
            rec.update(
                status="interrupted" if self._stopping else "cancelled",
                error=(
                    "the server stopped while this run was in flight"
                    if self._stopping
                    else "cancelled by DELETE /api/runs/" + run_id
                ),
            )
        except Exception as exc:  # noqa: BLE001 - recorded, never lost
            rec.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        else:
            spans = result.span_records()  # plain rows: no DataFrame on the request path
            rec.update(
                status=result.status,
                error=result.error,
                result={
                    "success": result.success,
                    "planId": result.plan_id,
                    "results": jsonable(result.results),
                    "errors": dict(result.errors),
                    "stepStates": dict(result.step_states),
                    "durationMs": result.duration_ms,
                    "fallbackChain": result.fallback_chain,
                },
                spans=jsonable(spans),
            )
            for span in spans:
                if span["start_ms"] == span["start_ms"] and span["end_ms"] == span["end_ms"]:
                    self.metrics.step_latency.labels(  # not NaN: the attempt started and ended
                        agent=kind_of(span["agent_id"]) or span["agent_id"], outcome=span["outcome"]
                    ).observe(span["end_ms"] - span["start_ms"])
        t = now_ms()
        rec.update(events=live.events, finishedMs=t, finishedAt=iso(t), durationMs=t - t0)
        self.metrics.runs.labels(status=rec["status"]).inc()
        self._record_answers(rows_of_run(rec))  # its scored answers (a session's run: none)
        if live.task is None:  # a session's, in its request: no DELETE cancels it midway
            return await self._finish(run_id, live, rec, t)  # (and no shield's loop turns)
        return await _to_the_end(self._finish(run_id, live, rec, t))

    async def _finish(
        self, run_id: str, live: _LiveRun, rec: dict[str, Any], t: float
    ) -> dict[str, Any]:
        """Record the run's end (kept and retried while the store is down) and announce it."""
        try:
            await self._save_run(rec)
        finally:
            self._runs.pop(run_id, None)
            for agent_id in live.agent_ids:
                if agent_id in self._last_used:
                    self._last_used[agent_id] = t
        await self._publish(
            f"run:{run_id}",
            "run:finished",
            {"runId": run_id, "status": rec["status"], "seq": len(live.events) + 1},
        )
        return rec

    # -- the store's outbox ---------------------------------------------------------------

    def _record_answers(self, rows: list[dict[str, Any]]) -> None:
        """Keep learners' scored answers (learning analytics: ``_analytics``) to be written
        together, within ``ANSWERS_WRITE_MS``; never fails the answer or the run."""
        if not rows:
            return
        self._answers.extend(rows)
        if self._answers_due is None:
            self._answers_due = asyncio.get_running_loop().call_later(
                ANSWERS_WRITE_MS / 1000.0, lambda: self._spawn(self.write_answers())
            )

    async def write_answers(self) -> None:
        """Write the scored answers kept so far, in one transaction (kept in the outbox
        while the store is down); every read of the answers waits for it first."""
        async with self._answers_lock:  # a read waits for the write under way, too
            if self._answers_due is not None:
                self._answers_due.cancel()
                self._answers_due = None
            rows, self._answers = self._answers, []
            if not rows:
                return
            write = functools.partial(self.store.add_responses, rows)
            try:
                await self._write(f"{len(rows)} response(s)", write)
            except Exception as exc:  # noqa: BLE001 - analytics never fail an answer or a run
                log.warning("could not record responses: %s: %s", type(exc).__name__, exc)

    async def _save_run(self, rec: dict[str, Any]) -> None:
        """Write a run's final record; while the store is down it waits in the outbox (and
        ``get_run`` answers it from there) until written."""
        run_id = rec["runId"]
        self._unsaved[run_id] = rec
        written = False

        async def write() -> None:
            nonlocal written
            await self.store.save_run(rec)
            written = True
            if self._unsaved.get(run_id) is rec:
                del self._unsaved[run_id]

        try:
            await self._write(f"run {run_id}", write, run_id)
        except BaseException:
            if not written and self._unsaved.get(run_id) is rec:
                del self._unsaved[run_id]
            raise

    async def _write(
        self, what: str, write: Callable[[], Awaitable[None]], run_id: str | None = None
    ) -> None:
        """Do a store write now, or, when the store is down (past its own retries) or
        earlier writes still wait, queue it in the outbox: retried in order until written."""
        if not self._outbox:
            try:
                await write()
                return
            except Exception as exc:
                if not _store_down(exc):
                    raise
                self.store_error = f"{type(exc).__name__}: {exc}"
                log.warning("the store refused %s (%s): kept, retried until written", what, exc)
        self._outbox.append((what, write, run_id))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        """Retry the outbox's writes in order until the store takes them (every 0.5 s,
        backing off to 5 s)."""
        delay = 0.5
        while self._outbox:
            what, write, run_id = self._outbox[0]
            try:
                await write()
            except Exception as exc:
                if _store_down(exc):
                    self.store_error = f"{type(exc).__name__}: {exc}"
                    await asyncio.sleep(delay)
                    delay = min(2.0 * delay, 5.0)
                    continue
                log.error("dropping the write of %s: %s: %s", what, type(exc).__name__, exc)
                if run_id is not None:
                    self._unsaved.pop(run_id, None)
            self._outbox.pop(0)
            delay = 0.5
        self.store_error = None
        log.warning("the store is back: every record it refused is written")

    def health(self) -> dict[str, Any]:
        """``status`` "ok", or "degraded" while records wait for the store
        (``unsavedRecords``; ``storeError``, why the store refused the oldest)."""
        return {
            "status": "degraded" if self._outbox else "ok",
            "unsavedRecords": len(self._outbox),
            "storeError": self.store_error if self._outbox else None,
        }

    def _on_event(self, event: str, payload: dict[str, Any]) -> None:
        live = self._runs.get(payload.get("runId"))
        if live is None:
            return
        ev = {"event": event, "seq": len(live.events) + 1}
        for key, value in payload.items():  # flat: only responses need converting
            ev[key] = value if value is None or type(value) in (str, int, bool) else jsonable(value)
        live.events.append(ev)
        room = f"run:{ev['runId']}"
        if self.publish is not None and self.listening(room):  # no task for an empty room
            self._spawn(self.publish(room, event, ev))

    async def get_run(self, run_id: str) -> dict[str, Any]:
        """The run's record (live ones with their events so far); ``RunNotFoundError`` if none."""
        live = self._runs.get(run_id)
        if live is not None:
            return {**live.record, "events": list(live.events)}
        rec = self._unsaved.get(run_id)  # ended, not yet in the store (it is down)
        if rec is not None:
            return rec
        rec = await self.store.get_run(run_id)
        if rec is None:
            raise RunNotFoundError(f"no run has id '{run_id}' (list them with GET /api/runs)")
        return rec

    async def list_runs(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` runs (1..1000), of ``status`` if given."""
        if status is not None and status not in RUN_STATUSES:
            raise ValueError(
                f"parameter 'status' must be one of {', '.join(RUN_STATUSES)}, got {status!r:.40}"
            )
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ValueError(f"parameter 'limit' must be an integer 1..1000, got {limit!r:.40}")
        return await self.store.list_runs(status, limit)

    async def cancel_run(self, run_id: str) -> dict[str, Any]:
        """Cancel a run in flight; its record ends ``cancelled``. However many ask at once,
        the run is cancelled once and each caller gets its final record."""
        live = self._runs.get(run_id)
        if live is not None and live.task is None:
            raise ServiceError(
                f"run '{run_id}' is a session's initialisation: it ends with its "
                "start_session request (within call_timeout_ms)"
            )
        if live is None or live.task is None:
            rec = await self.get_run(run_id)  # raises RunNotFoundError
            raise ServiceError(
                f"run '{run_id}' has already ended ({rec['status']}); only a "
                "running run can be cancelled"
            )
        if not live.cancelling:
            live.cancelling = True
            live.task.cancel()
        return await asyncio.shield(live.task)

    def run_events(self, run_id: str) -> list[dict[str, Any]] | None:
        """Events so far of a run in flight (None if it is not in flight)."""
        live = self._runs.get(run_id)
        return None if live is None else list(live.events)

    def runs_in_flight(self) -> int:
        return len(self._runs)

    def sessions_active(self) -> int:
        return len(self._sessions)

    # -- idle release -------------------------------------------------------------------

    async def _reaper(self) -> None:
        period = min(self.idle_ms / 4.0, 30_000.0) / 1000.0
        while True:
            await asyncio.sleep(period)
            try:
                await self.release_idle()
            except Exception as exc:  # noqa: BLE001 - keep reaping
                log.warning("idle release failed: %s", exc)

    async def release_idle(self) -> int:
        """Release sessions and run agents idle for ``idle_ms``; returns how many went."""
        cut = now_ms() - self.idle_ms
        gone = 0
        for s in list(self._sessions.values()):
            if s.last_ms < cut and s.busy == 0:
                async with self._learner(s.learner_id):
                    if self._sessions.get(s.learner_id) is s and s.busy == 0 and s.last_ms < cut:
                        await self._release(s, "idle")
                        gone += 1
        busy = {a for lv in self._runs.values() for a in lv.agent_ids}
        for agent_id, last in list(self._last_used.items()):
            if last < cut and agent_id not in busy and agent_id not in self._owner:
                del self._last_used[agent_id]
                await self.orch.unregister_agent(agent_id)
                gone += 1
        return gone


def _check_data(data: Any) -> dict[str, Any]:
    """A request's ``data``: a JSON object of plain values with finite numbers, checked
    before any agent is made or called (``ValueError``, HTTP 422, naming the field)."""
    if not isinstance(data, dict):
        raise ValueError(f"field 'data' must be a JSON object, got {type(data).__name__}")
    try:
        return json_value(data, "field 'data'")
    except PlanValidationError as exc:
        raise ValueError(str(exc)) from None


def _store_down(exc: BaseException) -> bool:
    """Is ``exc`` the store being unavailable (a connection, disk or Redis error), as
    opposed to a bug? Only then is a write kept and retried."""
    return isinstance(exc, (OSError, sqlite3.Error)) or type(exc).__module__.startswith("redis")


async def _to_the_end(aw: Awaitable[Any]) -> Any:
    """Await ``aw`` to its end even if the awaiting task is cancelled meanwhile (a second
    cancel, a shutdown): a run's record is written whatever happens. The cancellation is
    absorbed (the task was being cancelled already, or it is stopping)."""
    task = asyncio.ensure_future(aw)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            if task.done():
                return task.result()
            me = asyncio.current_task()
            if me is not None:
                me.uncancel()


def _check_session_data(data: dict[str, Any]) -> None:
    """start_session's optional fields, checked before any agent is made."""
    grade = data.get("gradeLevel")
    if grade is not None and (
        isinstance(grade, bool) or not isinstance(grade, int) or not 0 <= grade <= 12
    ):
        raise ValueError(f"field 'data.gradeLevel' must be an integer 0..12, got {grade!r:.40}")
    subject = data.get("subject")
    if subject is not None and (not isinstance(subject, str) or not subject.strip()):
        raise ValueError(f"field 'data.subject' must be a non-empty string, got {subject!r:.40}")


def _actions_of(agent: Agent | None) -> tuple[str, ...] | None:
    actions = getattr(agent, "ACTIONS", None)
    if actions is None and agent is not None:
        actions = getattr(sys.modules.get(type(agent).__module__), "ACTIONS", None)
    return tuple(actions) if actions else None


def _agent_ids(plan: Plan) -> frozenset[str]:
    return frozenset(s.agent_id for p in plan.chain() for s in p.steps)


def _plan_part(body: Any) -> tuple[Any, Any]:
    if isinstance(body, dict) and "plan" in body and "steps" not in body:
        extra = set(body) - {"plan", "runId"}
        if extra:
            raise ValueError(
                f"unknown field(s) {', '.join(sorted(map(str, extra)))}: send a plan, "
                "or {plan, runId}"
            )
        return body["plan"], body.get("runId")
    return body, None


def _new_record(
    run_id: str, plan: Plan, t: float, kind: str, learner_id: str | None = None
) -> dict[str, Any]:
    return {
        "runId": run_id,
        "planId": plan.id,
        "status": "running",
        "kind": kind,
        "learnerId": learner_id,
        "plan": json.loads(json.dumps(plan.to_dict(), default=str)),
        "createdMs": t,
        "createdAt": iso(t),
        "result": None,
        "error": None,
        "spans": [],
        "events": [],
    }
