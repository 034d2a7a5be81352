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
"""

from __future__ import annotations

import asyncio
import contextvars
import fnmatch
import inspect
import json
import logging
import math
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
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
from .._spec.plan import Plan
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
        self.orch = Orchestrator(seed=seed, policies=policies)
        self.metrics = Metrics(self)
        self.publish: Callable[[str, str, dict[str, Any]], Awaitable[None]] | None = None
        self.listening: Callable[[str], bool] = lambda room: True  # has the room a client?
        self._plan = session_plan()
        self._sessions: dict[str, _Session] = {}
        self._owner: dict[str, str] = {}  # agent id -> learner id
        self._locks: dict[str, asyncio.Lock] = {}
        self._runs: dict[str, _LiveRun] = {}
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
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.orch.shutdown()
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
            return coerce_response(value, agent_id, action)
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
            acc = AGENT_MS.get()
            if acc is not None:
                acc[0] += ms

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

    def _lock(self, learner_id: str) -> asyncio.Lock:
        return self._locks.setdefault(learner_id, asyncio.Lock())

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
        """Create (or reuse) the learner's agents and run the session-initialisation plan."""
        _check_session_data(data)
        async with self._lock(learner_id):
            t = now_ms()
            ms = int(t)
            s = self._sessions.get(learner_id)
            if s is None:
                ids = {
                    "learning": f"learning-agent-{learner_id}-{ms}",
                    "tutor": f"tutor-agent-{learner_id}-{ms}",
                }
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
        s = self._require(learner_id)
        s.busy += 1
        try:
            agent_id = s.agents["learning"]
            r = await self._call(agent_id, "process_interaction", {**data, "learnerId": learner_id})
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
        """Release the learner's agents and close the session."""
        async with self._lock(learner_id):
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

    async def _release(self, s: _Session, why: str) -> None:
        self._sessions.pop(s.learner_id, None)
        if s.listener is not None:
            self.orch.off("agent:insight", s.listener)
        for agent_id in s.agents.values():
            await self.orch.unregister_agent(agent_id)
            self._owner.pop(agent_id, None)
        t = now_ms()
        rec = await self.store.get_session(s.learner_id) or {"learnerId": s.learner_id}
        await self.store.save_session(
            {**rec, "sessionId": s.session_id, "status": why, "endedAt": iso(t), "endedMs": t}
        )
        self._locks.pop(s.learner_id, None)

    async def agent_action(
        self, learner_id: str, kind: str, action: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        """Any other action on the learner's ``kind`` agent (speech agents are made on first
        use)."""
        if kind not in KINDS:
            raise UnknownActionError(
                f"field 'agent': {kind!r} is not an agent kind (kinds: {', '.join(KINDS)})"
            )
        s = self._require(learner_id)
        if kind not in s.agents:
            async with self._lock(learner_id):
                if kind not in s.agents:
                    agent_id = f"{kind}-agent-{learner_id}-{int(now_ms())}"
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
        await self.store.add_insight(learner_id, record)
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
        try:
            r = await self._call(
                s.agents["tutor"],
                "prepare_hints",
                {
                    "concept": concept,
                    "learnerId": learner_id,
                    **(
                        {"difficultyLevel": data["difficultyLevel"]}
                        if isinstance(data.get("difficultyLevel"), (int, float))
                        else {}
                    ),
                },
            )
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
        t = now_ms()
        for agent_id in sorted(_agent_ids(plan)):
            if agent_id not in self._owner:
                self._last_used[agent_id] = t
            if self.orch.get_agent(agent_id) is not None:
                continue
            kind = kind_of(agent_id)
            if kind is None:
                raise PlanValidationError(
                    f"plan '{plan.id}': no agent serves '{agent_id}'; the service makes agents "
                    f"whose ids match {', '.join(KINDS.values())} (e.g. learning-agent-123)"
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
        try:
            await asyncio.shield(self.store.save_run(rec))
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
        """Cancel a run in flight; its record ends ``cancelled``."""
        live = self._runs.get(run_id)
        if live is None or live.task is None:
            rec = await self.get_run(run_id)  # raises RunNotFoundError
            raise ServiceError(
                f"run '{run_id}' has already ended ({rec['status']}); only a "
                "running run can be cancelled"
            )
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
                async with self._lock(s.learner_id):
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
