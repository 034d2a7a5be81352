"""``orchkit worker``: serve agents' BullMQ queues on Redis for RemoteAgents (SPEC §9).

One BullMQ ``Worker`` per queue: the queue of each agent id given (``--agents a,b``), or one
pool queue (``--queue NAME``) for every agent id matching the ``--agents`` globs, each agent
created on first use (the seed's getOrCreateAgent). Agents come from ``--factory
module:function`` (``function(agent_id) -> ok.Agent``) or are the built-in ones
(``orchkit.agents.BUILTIN``; SyntheticAgents of ``--models`` for other ids). A queue name
must be printable ASCII without spaces or ':' (``check_queue_name``): another is refused at
start (exit 2, naming it), never "ready" and then silently not served.

Per job: the agent's ``process(action, input, context)`` runs as a task; its response is
the job's return value (camelCase JSON); an ``AgentError`` fails the job with its message
(a non-retryable one as BullMQ's ``UnrecoverableError``); a cancel message on
``orchkit:cancel:<queue>`` cancels the task (or skips the job if it has not started).
``agent.emit("insight", …)`` reaches the orchestrator as job progress.

Stalled jobs: BullMQ's lock (``--lock-ms``, renewed every half of it) marks a job as owned;
a worker killed with -9 stops renewing it and, after at most lock + ``--stalled-interval-ms``,
another worker's stall check FAILS the job (``maxStalledCount`` 0: BullMQ never re-runs a
job behind the orchestrator's back) and the step's retry policy decides. A step timeout
shorter than that recovers sooner: it cancels the attempt and its retry is a new job.
``--lock-ms`` must exceed the longest time an agent blocks the worker's event loop (a
synchronous ``process``), or a busy job is declared stalled.

Pool agents are released (``Agent.shutdown``) after ``--idle-ms`` without a job (default 30
minutes, as the service's sessions); the next job for that id makes a fresh agent, so its
in-memory state (a learner's history) starts over, as after a worker restart.

Shutdown on SIGTERM/SIGINT: stop taking jobs, give active ones ``--grace-ms`` to finish,
then fail the rest (retryable: "worker shutting down") and close, with a hard bound
(BullMQ's ``Worker.close`` can hang: it is abandoned after a few seconds, then forced).
"""

from __future__ import annotations

import asyncio
import contextvars
import fnmatch
import importlib
import inspect
import logging
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from ._base.errors import AgentError, OrchkitError
from ._runtimes.agent import Agent, AgentResponse, coerce_response
from ._spec.deployment import Deployment
from .agents.remote import (
    CANCEL_CHANNEL,
    bounded,
    check_queue_name,
    check_redis_url,
    probe_redis,
    require_bullmq,
)

log = logging.getLogger("orchkit.worker")
DEFAULT_IDLE_MS = 30 * 60_000.0  # a pool agent is released after this long without a job
_JOB: contextvars.ContextVar[Any] = contextvars.ContextVar("orchkit_job", default=None)


def load_factory(spec: str) -> Callable[[str], Any]:
    """``module:function`` -> the function; ``OrchkitError`` saying what is wrong."""
    module, sep, name = (spec or "").partition(":")
    if not sep or not module or not name.isidentifier():
        raise OrchkitError(
            f"--factory {spec!r}: use module:function, e.g. "
            "mypkg.agents:make_agent (function(agent_id) -> orchkit.Agent)"
        )
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - ImportError, a relative name, the module's own bug
        raise OrchkitError(
            f"--factory {spec!r}: cannot import module '{module}': {type(exc).__name__}: {exc}"
        ) from None
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise OrchkitError(f"--factory {spec!r}: module '{module}' has no function '{name}'")
    return fn


def parse_agents(text: str) -> list[str]:
    """``a,b , c`` -> ['a', 'b', 'c'] (order kept, duplicates dropped); ValueError if empty."""
    ids = list(dict.fromkeys(p.strip() for p in (text or "").split(",") if p.strip()))
    if not ids:
        raise ValueError(f"--agents {text!r}: give one or more agent ids, comma-separated")
    return ids


class WorkerProcess:
    """The agents and BullMQ workers of one ``orchkit worker`` process."""

    def __init__(
        self,
        redis: str,
        agents: Sequence[str],
        *,
        queue: str | None = None,
        concurrency: int = 1,
        factory: Callable[[str], Any] | None = None,
        models: Any = None,
        time_scale: float = 1.0,
        lock_ms: int = 30_000,
        stalled_interval_ms: int = 30_000,
        grace_ms: int = 10_000,
        idle_ms: float = DEFAULT_IDLE_MS,
        verbose: bool = False,
    ):
        self.redis = check_redis_url(redis, "--redis")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"--concurrency must be an int >= 1, got {concurrency!r}")
        for name, value in (("--lock-ms", lock_ms), ("--stalled-interval-ms", stalled_interval_ms)):
            if not isinstance(value, int) or value < 100:
                raise ValueError(f"{name} must be an int >= 100 (ms), got {value!r}")
        self.patterns = list(agents)
        self.pool = queue
        for name in self.queues:  # refused here, not "ready" and then never serving
            check_queue_name(name, "--queue" if queue else "--agents: agent id (its queue)")
        self.concurrency = concurrency
        self.factory, self.models, self.time_scale = factory, models, time_scale
        if not 0 < idle_ms < float("inf"):
            raise ValueError(f"--idle-ms must be a number of ms > 0, got {idle_ms!r}")
        self.lock_ms, self.stalled_interval_ms, self.grace_s = (
            lock_ms,
            stalled_interval_ms,
            grace_ms / 1000,
        )
        self.idle_ms = float(idle_ms)
        self.verbose = verbose
        self.agents: dict[str, Agent] = {}
        self.busy: dict[str, int] = {}  # agent id -> jobs in flight
        self.last_used: dict[str, float] = {}  # agent id -> end of its last job (monotonic s)
        self._making: dict[str, asyncio.Future] = {}
        self.active: dict[str, asyncio.Task] = {}
        self.why: dict[str, str] = {}
        self.cancelled: OrderedDict[str, None] = OrderedDict()  # ids cancelled before they ran
        self.workers: list[Any] = []
        self.jobs_done = 0

    @property
    def queues(self) -> list[str]:
        return [self.pool] if self.pool else self.patterns

    # -- agents -----------------------------------------------------------------------

    def _serves(self, agent_id: str) -> bool:
        if self.pool:
            return any(fnmatch.fnmatchcase(agent_id, p) for p in self.patterns)
        return agent_id in self.patterns

    async def agent(self, agent_id: Any) -> Agent:
        """The agent serving ``agent_id``, created and initialised on first use."""
        agent = self.agents.get(agent_id)
        if agent is not None:
            return agent
        if not isinstance(agent_id, str) or not self._serves(agent_id):
            raise AgentError(
                f"this worker serves {', '.join(self.patterns)}, not agent {agent_id!r}",
                retryable=False,
            )
        making = self._making.get(agent_id)
        if making is None:
            making = self._making[agent_id] = asyncio.ensure_future(self._make(agent_id))
        try:
            return await asyncio.shield(making)
        finally:
            if making.done():
                self._making.pop(agent_id, None)

    async def _make(self, agent_id: str) -> Agent:
        try:
            if self.factory is not None:
                agent = self.factory(agent_id)
                if inspect.isawaitable(agent):
                    agent = await agent
                if not isinstance(agent, Agent):
                    raise AgentError(
                        f"the factory returned {type(agent).__name__} for agent "
                        f"'{agent_id}', not an orchkit.Agent",
                        retryable=False,
                    )
            else:
                from .agents import make_agent

                agent = make_agent(agent_id, self.models, self.time_scale)
            agent._listeners.append(_forward)
            await agent.initialize()
        except AgentError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported on the job, the worker goes on
            raise AgentError(
                f"cannot create agent '{agent_id}': {type(exc).__name__}: {exc}", retryable=False
            ) from None
        self.agents[agent_id] = agent
        self.last_used[agent_id] = time.monotonic()
        return agent

    async def release_idle(self) -> list[str]:
        """Shut down and forget the pool's agents idle for ``idle_ms`` (no job in flight);
        returns their ids."""
        now = time.monotonic()
        idle = [
            a
            for a, t in self.last_used.items()
            if not self.busy.get(a) and (now - t) * 1000.0 >= self.idle_ms
        ]
        for agent_id in idle:
            del self.last_used[agent_id]
            agent = self.agents.pop(agent_id)
            await bounded(agent.shutdown(), 5.0)
        if idle and self.verbose:
            print(f"released {len(idle)} idle agent(s)", flush=True)
        return idle

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(self.idle_ms / 4000.0, 60.0))
            try:
                await self.release_idle()
            except Exception as exc:  # noqa: BLE001 - an agent's shutdown bug; go on
                log.warning("releasing idle agents: %s: %s", type(exc).__name__, exc)

    # -- jobs -------------------------------------------------------------------------

    async def process(self, job: Any, token: str) -> dict:
        """BullMQ processor: run the job's attempt on its agent; return the response dict."""
        from bullmq import UnrecoverableError

        data = job.data if isinstance(job.data, dict) else {}
        agent_id, action = data.get("agentId"), data.get("action") or job.name
        if job.id in self.cancelled:
            raise UnrecoverableError("cancelled by the orchestrator before it started")
        try:
            agent = await self.agent(agent_id)
            task = asyncio.ensure_future(
                self._call(
                    job, agent, action, data.get("input"), agent_context(data.get("context"))
                )
            )
            self.active[job.id] = task
            self.busy[agent_id] = self.busy.get(agent_id, 0) + 1
            try:
                response = await task
            except asyncio.CancelledError:
                why = self.why.pop(job.id, None)
                if why is None or not task.cancelled():
                    raise  # the worker itself is being torn down
                raise RuntimeError(why) from None
            finally:
                self.active.pop(job.id, None)
                self._done_with(agent_id)
        except AgentError as exc:
            if self.verbose:
                print(f"job {job.id} {agent_id}/{action} failed: {exc}", flush=True)
            if not exc.retryable:
                raise UnrecoverableError(str(exc)) from None
            raise
        self.jobs_done += 1
        if self.verbose:
            print(f"job {job.id} {agent_id}/{action} completed", flush=True)
        return response.to_dict()

    def _done_with(self, agent_id: str) -> None:
        left = self.busy.pop(agent_id) - 1
        if left:
            self.busy[agent_id] = left
        if agent_id in self.last_used:
            self.last_used[agent_id] = time.monotonic()

    async def _call(
        self, job: Any, agent: Agent, action: str, input: Any, context: dict
    ) -> AgentResponse:
        sent: list[asyncio.Future] = []  # the agent's emits, sent before the job ends
        _JOB.set((job, sent))
        try:
            value = agent.process(action, input, context)
            if inspect.isawaitable(value):
                value = await value
        except (AgentError, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - an agent's bug fails the job, as live
            raise AgentError(
                f"agent '{agent.agent_id}' action '{action}' raised {type(exc).__name__}: {exc}"
            ) from None
        finally:
            if sent:
                await asyncio.wait(sent, timeout=5.0)
        return coerce_response(value, agent.agent_id, action)

    def cancel(self, job_id: str, why: str) -> None:
        """Cancel job ``job_id`` if it runs here; else remember not to start it."""
        task = self.active.get(job_id)
        if task is not None:
            self.why[job_id] = why
            task.cancel()
        else:
            self.cancelled[job_id] = None
            while len(self.cancelled) > 10_000:
                self.cancelled.popitem(last=False)

    # -- life cycle -------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then shut down cleanly (see the module docstring)."""
        bullmq = require_bullmq()
        import redis.asyncio as aioredis

        if not self.pool and self.factory is None:
            for agent_id in self.patterns:  # fail at start, not on the first job
                await self.agent(agent_id)
        await probe_redis(self.redis)
        client = aioredis.from_url(self.redis, decode_responses=True)
        pubsub = client.pubsub()
        await pubsub.subscribe(*(CANCEL_CHANNEL.format(queue=q) for q in self.queues))
        listener = asyncio.ensure_future(self._listen(pubsub))
        reaper = asyncio.ensure_future(self._reap()) if self.pool else None
        opts = {
            "connection": self.redis,
            "concurrency": self.concurrency,
            "lockDuration": self.lock_ms,
            "stalledInterval": self.stalled_interval_ms,
            "maxStalledCount": 0,
            "runRetryDelay": 1000,
        }
        self.workers = [bullmq.Worker(q, self.process, dict(opts)) for q in self.queues]
        print(
            f"orchkit worker ready: queue(s) {', '.join(self.queues)}; agents "
            f"{', '.join(self.patterns)}; concurrency {self.concurrency}; lock "
            f"{self.lock_ms} ms, stall check every {self.stalled_interval_ms} ms",
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            if reaper is not None:
                reaper.cancel()
            await self._close()
            listener.cancel()
            await bounded(pubsub.aclose(), 2.0)
            await bounded(client.aclose(), 2.0)

    async def _listen(self, pubsub: Any) -> None:
        while True:
            try:
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.cancel(str(message["data"]), "cancelled by the orchestrator")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect and go on listening
                log.warning("cancel channel: %s; resubscribing", exc)
                await asyncio.sleep(0.5)

    async def _close(self) -> None:
        closers = [asyncio.ensure_future(w.close()) for w in self.workers]
        if self.active:
            print(
                f"stopping: waiting up to {self.grace_s:g} s for {len(self.active)} active job(s)",
                flush=True,
            )
            await asyncio.wait(list(self.active.values()), timeout=self.grace_s)
        for job_id in list(self.active):
            self.cancel(job_id, "the worker is shutting down")
        done, pending = await asyncio.wait(closers, timeout=3.0) if closers else (set(), set())
        if pending:
            forced = [asyncio.ensure_future(w.close(force=True)) for w in self.workers]
            await asyncio.wait(forced, timeout=3.0)
        await asyncio.gather(*(bounded(a.shutdown(), 5.0) for a in self.agents.values()))
        print(f"orchkit worker stopped after {self.jobs_done} job(s)", flush=True)


def _forward(kind: str, payload: Any) -> None:
    """An agent's ``emit`` during a job becomes the job's progress {orchkitEvent, payload}."""
    current = _JOB.get()
    if current is not None:
        job, sent = current
        sent.append(
            asyncio.ensure_future(job.updateProgress({"orchkitEvent": kind, "payload": payload}))
        )


def agent_context(ctx: Any) -> dict[str, Any]:
    """The job's JSON context as the live runtime gives it to ``process``."""
    ctx = ctx if isinstance(ctx, dict) else {}
    results = {}
    for sid, value in (ctx.get("results") or {}).items():
        try:
            results[sid] = AgentResponse.model_validate(value)
        except Exception:  # noqa: BLE001 - a foreign producer's odd value is passed as is
            results[sid] = value
    return {
        "plan_id": ctx.get("planId"),
        "step_id": ctx.get("stepId"),
        "attempt": ctx.get("attempt"),
        "run_id": ctx.get("runId"),
        "job_id": ctx.get("jobId"),
        "results": results,
    }


def deployment_concurrency(bundle: Deployment, patterns: Sequence[str]) -> int:
    """The jobs at once a worker serving ``patterns`` takes from a bundle: the capacity it
    gives them (the largest, if they differ); a pattern it gives none is an error."""
    caps = {p: bundle.capacity(p) for p in patterns}
    unset = [p for p, c in caps.items() if c is None]
    if unset:
        raise ValueError(
            f"--deployment {bundle.source} gives no capacity to {', '.join(unset)} "
            f"(its agents: {', '.join(bundle.agents) or 'none'}); set one there or pass "
            "--concurrency instead"
        )
    return max(c for c in caps.values() if c is not None)


def main(args: Any) -> int:
    """``orchkit worker`` (argparse namespace from cli.py); returns the exit code."""
    require_bullmq()
    factory = load_factory(args.factory) if args.factory else None
    try:
        agents = parse_agents(args.agents)
        concurrency = 1 if args.concurrency is None else args.concurrency
        if args.deployment is not None:
            if args.concurrency is not None:
                raise ValueError("--concurrency and --deployment exclude each other")
            concurrency = deployment_concurrency(Deployment.load(args.deployment), agents)
        proc = WorkerProcess(
            args.redis,
            agents,
            queue=args.queue,
            concurrency=concurrency,
            factory=factory,
            models=args.models,
            time_scale=args.time_scale,
            lock_ms=args.lock_ms,
            stalled_interval_ms=args.stalled_interval_ms,
            grace_ms=args.grace_ms,
            idle_ms=args.idle_ms,
            verbose=args.verbose,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await proc.serve(stop)

    try:
        asyncio.run(go())
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
