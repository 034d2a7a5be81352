"""Agents on other machines (SPEC §9): ``RemoteAgent``, an ``Agent`` whose attempts are
BullMQ jobs on Redis, served by ``orchkit worker`` (``_worker.py``) or by any BullMQ worker
(Node's ``bullmq`` too) that returns the seed's response shape.

The wire format, shared with workers in any language:

- queue ``<queue>`` (default: the agent id), BullMQ's default key prefix ``bull``; job name
  = the action; job data ``{agentId, action, input, context}`` where ``context`` is
  ``{planId, stepId, attempt, runId, jobId, results: {stepId: response}}`` (JSON only);
  job options ``attempts: 1`` (retries are orchkit's), ``removeOnComplete``.
- the job's return value is the AgentResponse as a camelCase JSON object; a failed job's
  ``failedReason`` is the error message, and a job that failed with BullMQ's
  ``UnrecoverableError`` (whose stack trace names it) is a non-retryable ``AgentError``.
- cancellation: the orchestrator removes the job if it is still waiting and publishes its
  id on the Redis channel ``orchkit:cancel:<queue>``; the worker running it cancels it, and
  a worker that sees the id later skips the job. A late result is ignored.

Queue names are printable ASCII without spaces or ':' (``check_queue_name``), for
RemoteAgents and workers alike. While attempts wait for results, Redis is pinged every
``WATCH_S``; an attempt whose Redis has not answered for its agent's ``redis_timeout_ms``
(default 10 s) fails with a retryable ``AgentError`` instead of waiting for BullMQ's own
reconnections (minutes), so even a step without a timeout ends.

Results reach the orchestrator through ONE ``QueueEvents`` per (event loop, Redis, queue),
shared by every RemoteAgent on that queue, resolving futures keyed by job id; the future
is registered before the job is added (the job id is chosen here), so a fast worker cannot
finish first. ``bullmq`` and ``redis`` are imported only when a RemoteAgent starts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import re
import uuid
import zlib
from typing import Any

from .._base.deps import missing
from .._base.errors import AgentError
from .._runtimes.agent import Agent

log = logging.getLogger("orchkit.remote")

CANCEL_CHANNEL = "orchkit:cancel:{queue}"
JOB_OPTIONS = {"attempts": 1, "removeOnComplete": True, "removeOnFail": {"count": 1000}}
#: How long an attempt of a RemoteAgent waits for a Redis that does not answer before it
#: fails with a retryable ``AgentError`` (ms; ``RemoteAgent(redis_timeout_ms=...)``).
DEFAULT_REDIS_TIMEOUT_MS = 10_000.0
WATCH_S = 0.5  # while attempts wait, Redis is pinged this often (s), each ping bounded by 1 s
_QUEUE_NAME = re.compile(r"^[!-9;-~]+$")  # printable ASCII without space and ':'


def require_bullmq() -> Any:
    """The ``bullmq`` module, or ``MissingDependencyError`` naming the extra to install."""
    try:
        import bullmq  # noqa: F401
        import redis.asyncio  # noqa: F401
    except ImportError as exc:
        raise missing(
            exc.name or "bullmq", "agents on other machines (RemoteAgent, orchkit worker)"
        ) from None
    return bullmq


def check_redis_url(redis: Any, where: str = "redis") -> str:
    """``redis`` if it is a redis:// or rediss:// or unix:// URL, else ``ValueError``."""
    if not isinstance(redis, str) or not redis.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            f"{where} must be a Redis URL such as redis://127.0.0.1:6379/0, got {redis!r}"
        )
    return redis


def check_queue_name(name: Any, where: str) -> str:
    """``name`` if it can name a BullMQ queue served by any worker, else ``ValueError``
    naming it. A queue name is printable ASCII without spaces or ':': a BullMQ worker
    names its Redis connection after its queue, and Redis refuses client names with
    spaces or characters outside ASCII '!'..'~' (the worker would start but never serve);
    Node's BullMQ refuses ':'."""
    if not isinstance(name, str) or not _QUEUE_NAME.match(name):
        raise ValueError(
            f"{where} {name!r:.80} cannot name a queue: use printable ASCII without spaces "
            "or ':' (letters, digits and e.g. - _ . @); Redis refuses other worker "
            "connection names and Node's BullMQ refuses ':'"
        )
    return name


async def probe_redis(redis: str, timeout_s: float = 3.0) -> None:
    """PING ``redis`` once, failing within ``timeout_s`` (BullMQ's own clients retry for
    minutes); ``AgentError`` saying the server cannot be reached."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        await asyncio.wait_for(client.ping(), timeout_s)
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable
        raise AgentError(f"cannot reach Redis at {redis}: {type(exc).__name__}: {exc}") from None
    finally:
        await bounded(client.aclose(), 1.0)


def json_context(context: dict[str, Any]) -> dict[str, Any]:
    """The job's ``context``: the attempt's coordinates and earlier results, JSON only."""
    run_id = context.get("run_id")
    results = context.get("results") or {}
    return {
        "planId": context.get("plan_id"),
        "stepId": context.get("step_id"),
        "attempt": context.get("attempt"),
        "jobId": context.get("job_id"),
        "runId": run_id if isinstance(run_id, (int, str)) or run_id is None else str(run_id),
        "results": {sid: r.to_dict() if hasattr(r, "to_dict") else r for sid, r in results.items()},
    }


class _Link:
    """One queue as seen from one event loop: the BullMQ ``Queue`` that adds jobs, ONE
    ``QueueEvents`` whose completed/failed listeners resolve ``pending`` futures, and the
    cancel channel. Shared by every RemoteAgent of the queue (reference counted)."""

    _open: dict[tuple, _Link] = {}

    def __init__(self, key: tuple, redis: str, queue: str):
        bullmq = require_bullmq()
        self.key, self.redis, self.name = key, redis, queue
        self.users = 0
        self.pending: dict[str, asyncio.Future] = {}
        self.limits: dict[str, tuple[float, float]] = {}  # job id -> (added at, limit), s
        self.watcher: asyncio.Task | None = None
        self.pinger: Any = None  # the watcher's own Redis client (short timeouts), kept
        self.emitters: dict[str, Any] = {}  # job id -> the RemoteAgent's emit
        self.queue = bullmq.Queue(queue, {"connection": redis})
        self.channel = CANCEL_CHANNEL.format(queue=queue)
        self.events: Any = None
        self.ready: asyncio.Future | None = None
        self.last_id = "$"
        self.closing = False
        self._chores: set[asyncio.Task] = set()

    @classmethod
    async def acquire(cls, redis: str, queue: str) -> _Link:
        key = (asyncio.get_running_loop(), redis, queue)
        link = cls._open.get(key)
        if link is None:
            link = cls._open[key] = cls(key, redis, queue)
            link.ready = asyncio.ensure_future(link._listen())
        link.users += 1
        try:
            await asyncio.shield(link.ready)
        except Exception as exc:
            link.users -= 1
            if cls._open.get(key) is link:
                del cls._open[key]
                await bounded(link.queue.close(), 2.0)
            if isinstance(exc, AgentError):
                raise AgentError(f"RemoteAgent queue '{queue}': {exc}") from None
            raise AgentError(
                f"cannot reach Redis at {redis} for queue '{queue}': {type(exc).__name__}: {exc}"
            ) from None
        return link

    async def _listen(self) -> None:
        if self.events is None:
            await probe_redis(self.redis)
        # start reading the events stream at its current end, so that no event of a job
        # added after this point can be missed (QueueEvents' own '$' starts when its
        # first XREAD runs, which may be after our first add)
        if self.last_id == "$":
            last = await self.queue.client.xrevrange(self.queue.keys["events"], count=1)
            self.last_id = last[0][0] if last else "0-0"
        from bullmq import QueueEvents

        events = QueueEvents(self.name, {"connection": self.redis, "lastEventId": self.last_id})
        events.on("completed", self._completed)
        events.on("failed", self._failed)
        events.on("progress", self._progress)
        events.on("error", self._lost)
        self.events = events

    def _completed(self, args: dict, entry_id: str) -> None:
        self.last_id = entry_id
        fut = self.pending.pop(args.get("jobId"), None)
        if fut is not None and not fut.done():
            fut.set_result((True, args.get("returnvalue")))

    def _failed(self, args: dict, entry_id: str) -> None:
        self.last_id = entry_id
        fut = self.pending.pop(args.get("jobId"), None)
        if fut is not None and not fut.done():
            fut.set_result((False, args.get("failedReason") or "the job failed"))

    def _progress(self, args: dict, entry_id: str) -> None:
        """An agent's ``emit`` in the worker, sent as job progress {orchkitEvent, payload}."""
        data, emit = args.get("data"), self.emitters.get(args.get("jobId"))
        if (
            emit is not None
            and isinstance(data, dict)
            and data.get("orchkitEvent") in ("insight", "error")
        ):
            emit(data["orchkitEvent"], data.get("payload"))

    def _lost(self, exc: BaseException) -> None:
        """The events reader stopped on a connection error: reconnect (every 0.5 s until
        Redis answers) and resume from the last event seen, so no completion is missed."""
        if self.closing:
            return
        log.warning("queue '%s': events reader stopped (%s); reconnecting", self.name, exc)

        async def again() -> None:
            old, self.events = self.events, None
            if old is not None:
                await bounded(old.close(), 2.0)
            while not self.closing:
                await asyncio.sleep(0.5)
                try:
                    await self._listen()
                    return
                except Exception as err:  # noqa: BLE001 - Redis still away: try again
                    log.warning("queue '%s': reconnecting: %s", self.name, err)

        self._spawn(again())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def call(
        self, job_id: str, name: str, data: dict, emit: Any, limit_s: float
    ) -> tuple[bool, Any]:
        """Add the job and wait for its outcome: (True, return value) or (False, reason).
        ``AgentError`` if Redis does not answer for ``limit_s`` seconds meanwhile."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.pending[job_id] = fut
        self.limits[job_id] = (loop.time(), limit_s)
        self.emitters[job_id] = emit
        if self.watcher is None or self.watcher.done():
            self.watcher = asyncio.ensure_future(self._watch())
        try:
            try:
                async with asyncio.timeout(limit_s):
                    await self.queue.add(name, data, {**JOB_OPTIONS, "jobId": job_id})
            except TimeoutError:
                raise self._gone(limit_s) from None
            return await fut
        except asyncio.CancelledError:
            self.pending.pop(job_id, None)
            self._spawn(bounded(self.cancel(job_id), 30.0))
            raise
        except BaseException:
            if self.pending.pop(job_id, None) is not None or fut.done():
                self._spawn(bounded(self.cancel(job_id), 30.0))  # added, maybe: remove it
            raise
        finally:
            self.emitters.pop(job_id, None)
            self.limits.pop(job_id, None)

    def _gone(self, limit_s: float) -> AgentError:
        return AgentError(
            f"queue '{self.name}': Redis at {self.redis} did not answer for "
            f"{limit_s * 1000:g} ms (RemoteAgent redis_timeout_ms); attempt abandoned",
            retryable=True,
        )

    async def _watch(self) -> None:
        """While attempts wait, PING Redis every ``WATCH_S`` (each bounded by 1 s); fail
        each waiting attempt once Redis has not answered for its limit since the later of
        its start and the first failed ping."""
        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        if self.pinger is None:
            self.pinger = aioredis.from_url(
                self.redis, socket_connect_timeout=1.0, socket_timeout=1.0
            )
        down_since: float | None = None
        while self.pending and not self.closing:
            await asyncio.sleep(WATCH_S)
            t = loop.time()
            try:
                async with asyncio.timeout(1.0):
                    await self.pinger.ping()
                down_since = None
                continue
            except Exception:  # noqa: BLE001 - any failure: Redis is not answering
                down_since = t if down_since is None else down_since
            now = loop.time()
            for job_id, (start, limit) in list(self.limits.items()):
                fut = self.pending.get(job_id)
                if fut is not None and now - max(start, down_since) >= limit:
                    self.pending.pop(job_id, None)
                    if not fut.done():
                        fut.set_exception(self._gone(limit))

    async def cancel(self, job_id: str) -> None:
        """Remove the job if it is waiting (or its worker died); tell workers to cancel it."""
        try:
            await self.queue.remove(job_id)
            await self.queue.client.publish(self.channel, job_id)
        except Exception as exc:  # noqa: BLE001 - best effort; the result is ignored anyway
            log.warning("queue '%s': could not cancel job %s: %s", self.name, job_id, exc)

    async def unrecoverable(self, job_id: str) -> bool:
        """Did the job fail with BullMQ's UnrecoverableError (Python or Node)?"""
        try:
            trace = await self.queue.client.hget(
                f"{self.queue.qualifiedName}:{job_id}", "stacktrace"
            )
        except Exception:  # noqa: BLE001
            return False
        return bool(trace) and "UnrecoverableError" in trace

    async def release(self) -> None:
        self.users -= 1
        if self.users > 0:
            return
        self.closing = True
        self._open.pop(self.key, None)
        if self.watcher is not None:
            self.watcher.cancel()
        if self.pinger is not None:
            await bounded(self.pinger.aclose(), 1.0)
        if self._chores:
            await asyncio.wait(list(self._chores), timeout=2.0)
        if self.events is not None:
            await bounded(self.events.close(), 2.0)
        await bounded(self.queue.close(), 2.0)


async def bounded(coro: Any, seconds: float) -> None:
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait([task], timeout=seconds)
    if not done:
        task.cancel()
    elif not task.cancelled() and task.exception() is not None:
        log.warning("closing: %s", task.exception())


class RemoteAgent(Agent):
    """An agent served by a worker process behind a BullMQ queue on Redis (SPEC §9).

    To the orchestrator it is an ordinary ``Agent``: every attempt adds one job to queue
    ``queue`` and awaits its result; step timeouts, retries, plan deadlines and
    ``capacity`` stay the orchestrator's. A failed job raises ``AgentError`` with the
    worker's message (non-retryable if the worker raised a non-retryable AgentError or
    BullMQ's UnrecoverableError); so does an attempt whose Redis does not answer for
    ``redis_timeout_ms`` (retryable), whether or not its step has a timeout. A cancelled
    attempt removes its job if still waiting and asks the worker to cancel it if active;
    its late result is ignored. Queue events carry the job id as ``bullJobId``. Serve the
    queue with ``orchkit worker`` or any BullMQ worker (Node's too). Needs the ``queue``
    extra (``pip install 'orchkit[queue]'``); registering the agent connects to Redis and
    raises ``AgentError`` if it cannot be reached.

    Args:
        agent_id: The id steps name in ``agentId``.
        redis: The Redis URL: ``redis://``, ``rediss://`` or ``unix://``.
        queue: The BullMQ queue name, printable ASCII without spaces or ':'; None
            (default): ``agent_id`` (which must then be such a name).
        capacity: The most attempts in flight at once from this orchestrator (the others
            wait, and the wait counts toward the step's timeout); None (default):
            unlimited, the workers' concurrency then bounds the work.
        redis_timeout_ms: How long an attempt waits for a Redis that does not answer
            before it fails with a retryable ``AgentError``, ms (default 10,000).

    Attributes:
        redis (str): The Redis URL.
        queue (str): The queue name.
        capacity (int | None): Attempts in flight at once; None: unlimited.
        redis_timeout_ms (float): As given, ms.

    Raises:
        ValueError: A URL that is not a Redis URL, a queue name that cannot name a queue,
            a ``redis_timeout_ms`` that is not a finite number > 0, or a ``capacity``
            that is not an int >= 1.

    Example:
        ```python
        orch = ok.Orchestrator()
        await orch.register_agent(
            ok.RemoteAgent("tutor-agent-123", "redis://127.0.0.1:6379/0", capacity=4)
        )
        ```
    """

    def __init__(
        self,
        agent_id: str,
        redis: str,
        *,
        queue: str | None = None,
        capacity: int | None = None,
        redis_timeout_ms: float = DEFAULT_REDIS_TIMEOUT_MS,
    ):
        super().__init__(agent_id, capacity=capacity)
        self.redis = check_redis_url(redis, f"RemoteAgent '{agent_id}': redis")
        if queue is not None and (not isinstance(queue, str) or not queue):
            raise ValueError(
                f"RemoteAgent '{agent_id}': queue must be a non-empty string "
                f"or None (the agent id), got {queue!r}"
            )
        self.queue = check_queue_name(
            queue or agent_id,
            f"RemoteAgent '{agent_id}': queue" if queue else "RemoteAgent: the agent id",
        )
        if (
            isinstance(redis_timeout_ms, bool)
            or not isinstance(redis_timeout_ms, (int, float))
            or not 0 < redis_timeout_ms < math.inf
        ):
            raise ValueError(
                f"RemoteAgent '{agent_id}': redis_timeout_ms must be a finite number of ms "
                f"> 0, got {redis_timeout_ms!r}"
            )
        self.redis_timeout_ms = float(redis_timeout_ms)
        self._link: _Link | None = None
        self._ids = (f"ok-{uuid.uuid4().hex[:12]}-{n}" for n in itertools.count(1))
        self._refs: dict[str, str] = {}  # orchkit jobId -> BullMQ job id, until reported

    async def initialize(self) -> None:
        """Open (or share) the queue's connection and its event reader."""
        if self._link is None:
            self._link = await _Link.acquire(self.redis, self.queue)

    async def shutdown(self) -> None:
        """Release the queue's connection (closed when its last RemoteAgent leaves)."""
        link, self._link = self._link, None
        if link is not None:
            await link.release()

    def job_ref(self, job_id: str) -> str | None:
        """The BullMQ job id of attempt ``job_id`` (once: the driver reports it)."""
        return self._refs.pop(job_id, None)

    async def process(self, action: str, input: Any, context: dict[str, Any]) -> Any:
        """Run one attempt as a BullMQ job on ``queue`` and wait for its result.

        Args:
            action: The step's action (the job's name).
            input: The step's input (plain JSON; the job's ``input``).
            context: The attempt's context (``plan_id``, ``step_id``, ``attempt``,
                ``run_id``, ``job_id``, ``results``), sent as the job's camelCase
                ``context`` (JSON only).

        Returns:
            The worker's response: a dict of the ``AgentResponse`` shape.

        Raises:
            AgentError: The job failed (non-retryable if the worker said so), or Redis
                could not be reached or did not answer for ``redis_timeout_ms``.
        """
        if self._link is None:
            await self.initialize()
        bull_id = next(self._ids)
        ref = context.get("job_id")
        if ref is not None:
            self._refs[ref] = bull_id
        data = {
            "agentId": self.agent_id,
            "action": action,
            "input": input,
            "context": json_context(context),
        }
        try:
            ok, value = await self._link.call(
                bull_id, action, data, self.emit, self.redis_timeout_ms / 1000.0
            )
        except asyncio.CancelledError:
            self._refs.pop(ref, None)
            raise
        except (ConnectionError, OSError) as exc:
            raise AgentError(
                f"agent '{self.agent_id}': cannot reach Redis at {self.redis}: {exc}"
            ) from None
        except Exception as exc:
            if type(exc).__module__.startswith("redis"):
                raise AgentError(
                    f"agent '{self.agent_id}': Redis at {self.redis}: {type(exc).__name__}: {exc}"
                ) from None
            raise
        if ok:
            return value
        retryable = not await self._link.unrecoverable(bull_id)
        raise AgentError(str(value), retryable=retryable)

    def __repr__(self) -> str:
        return f"RemoteAgent({self.agent_id!r}, queue={self.queue!r})"


def pool_queue(kind: str, agent_id: str, partitions: int = 1) -> str:
    """The pool queue serving ``agent_id`` of ``kind`` for the service: ``orchkit-<kind>``,
    or with ``partitions`` > 1 ``orchkit-<kind>-<k>``, k = crc32(agent id) mod partitions
    (stable: an agent id, and so a learner's in-memory state, stays on one partition)."""
    if partitions == 1:
        return f"orchkit-{kind}"
    return f"orchkit-{kind}-{zlib.crc32(agent_id.encode()) % partitions}"


def service_factory(redis: str, partitions: int = 1) -> Any:
    """An agent factory for ``orchkit serve --redis``: ``factory(kind, agent_id)`` gives a
    RemoteAgent on the kind's pool queue (see ``pool_queue``)."""
    check_redis_url(redis, "--redis")
    if not isinstance(partitions, int) or partitions < 1:
        raise ValueError(f"--queue-partitions must be an int >= 1, got {partitions!r}")

    def factory(kind: str, agent_id: str) -> RemoteAgent:
        return RemoteAgent(agent_id, redis, queue=pool_queue(kind, agent_id, partitions))

    return factory
