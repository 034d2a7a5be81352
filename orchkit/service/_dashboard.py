"""What the dashboard (SPEC §15) reads, with no HTTP in it: pages of runs from the store
and each agent's health (capacity, load, breaker, p95 and error rate over the last five
minutes, the workers serving it).

``AgentStats`` hears every attempt: plan attempts from the orchestrator's bus
(``step:started`` opens one by its job id, ``step:completed`` / ``queue:failed`` close it;
breaker rejections never reached the agent and are not counted) and the service's direct
agent calls through ``Service.on_call``. It keeps, per agent, the attempts that ended in the
last ``window_ms`` (at most ``max_samples`` of them).
"""

from __future__ import annotations

import math
import os
import socket
import time
import weakref
from collections import deque
from datetime import datetime
from typing import Any

from ..agents.remote import RemoteAgent
from ._service import RUN_STATUSES, Service, kind_of

WINDOW_MS = 5 * 60_000.0
MAX_SAMPLES = 10_000  # per agent: memory stays bounded under any load
DEFAULT_PAGE = 100
MAX_PAGE = 1000


def parse_since(since: str | float | None) -> float | None:
    """``since`` as ms since the epoch: a number of ms, or an ISO-8601 timestamp."""
    if since is None or since == "":
        return None
    if isinstance(since, (int, float)) and not isinstance(since, bool):
        value = float(since)
    else:
        text = str(since).strip()
        try:
            value = float(text)
        except ValueError:
            try:
                stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(
                    f"parameter 'since': {text!r:.60} is neither ms since the epoch nor an "
                    "ISO-8601 timestamp (e.g. 2026-01-31T12:00:00Z)"
                ) from None
            if stamp.tzinfo is None:
                raise ValueError(
                    f"parameter 'since': {text!r:.60} has no time zone; add Z for UTC"
                ) from None
            value = stamp.timestamp() * 1000.0
    if not math.isfinite(value):
        raise ValueError(f"parameter 'since' must be finite, got {since!r:.40}")
    return value


async def run_page(
    service: Service,
    *,
    status: str | None = None,
    plan_id: str | None = None,
    learner_id: str | None = None,
    since: str | float | None = None,
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
) -> dict[str, Any]:
    """``{runs, nextCursor}``: one page of run summaries, newest first (SPEC §15.4)."""
    if status is not None and status not in RUN_STATUSES:
        raise ValueError(
            f"parameter 'status' must be one of {', '.join(RUN_STATUSES)}, got {status!r:.40}"
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"parameter 'limit' must be an integer 1..{MAX_PAGE}, got {limit!r:.40}")
    runs, nxt = await service.store.page_runs(
        status=status,
        plan_id=plan_id or None,
        learner_id=learner_id or None,
        since_ms=parse_since(since),
        limit=limit,
        cursor=cursor or None,
    )
    return {"runs": runs, "nextCursor": nxt}


class AgentStats:
    """Per-agent attempts that ended in the last ``window_ms``: (end time, ms, failed)."""

    def __init__(self, window_ms: float = WINDOW_MS, max_samples: int = MAX_SAMPLES):
        self.window_ms = float(window_ms)
        self.max_samples = max_samples
        self._done: dict[str, deque[tuple[float, float, bool]]] = {}
        self._open: dict[str, tuple[float, float]] = {}  # job id -> (started wall ms, run ms)

    def attach(self, service: Service) -> None:
        service.orch.on("*", self.on_event)
        service.on_call = self.observe

    def observe(self, agent_id: str, ms: float, outcome: str, at_ms: float | None = None) -> None:
        """One attempt of ``agent_id`` ended after ``ms`` with ``outcome``."""
        at = time.time() * 1000.0 if at_ms is None else at_ms
        q = self._done.get(agent_id)
        if q is None:
            q = self._done[agent_id] = deque(maxlen=self.max_samples)
        q.append((at, float(ms), outcome != "succeeded"))

    def on_event(self, event: str, payload: dict[str, Any]) -> None:
        if event == "step:started":
            job = payload.get("jobId")
            if isinstance(job, str):
                self._open[job] = (time.time() * 1000.0, float(payload.get("timeMs", 0.0)))
                if len(self._open) > 4 * self.max_samples:
                    self._prune_open()
        elif event in ("step:completed", "queue:failed"):
            started = self._open.pop(payload.get("jobId"), None)
            if started is None:  # a rejection (never started) or a run we did not see start
                return
            ms = max(0.0, float(payload.get("timeMs", started[1])) - started[1])
            failed = event == "queue:failed"
            self.observe(str(payload.get("agentId")), ms, "error" if failed else "succeeded")

    def _prune_open(self) -> None:
        cut = time.time() * 1000.0 - 2 * self.window_ms  # cancelled attempts send no end
        self._open = {j: v for j, v in self._open.items() if v[0] >= cut}

    def window(self, agent_id: str, now_ms: float | None = None) -> tuple[float | None, float]:
        """(p95 ms or None, error rate) of the attempts that ended in the window."""
        q = self._done.get(agent_id)
        if not q:
            return None, 0.0
        cut = (time.time() * 1000.0 if now_ms is None else now_ms) - self.window_ms
        while q and q[0][0] < cut:
            q.popleft()
        if not q:
            return None, 0.0
        times = sorted(ms for _, ms, _ in q)
        p95 = times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)]  # nearest rank
        return p95, sum(1 for *_, failed in q if failed) / len(q)

    def forget(self, agent_ids: set[str]) -> None:
        """Drop the samples of agents no longer registered."""
        for agent_id in list(self._done):
            if agent_id not in agent_ids:
                del self._done[agent_id]


_STATS: weakref.WeakKeyDictionary[Service, AgentStats] = weakref.WeakKeyDictionary()


def stats_of(service: Service) -> AgentStats:
    """The service's ``AgentStats`` (made and attached on first use)."""
    stats = _STATS.get(service)
    if stats is None:
        stats = _STATS[service] = AgentStats()
        stats.attach(service)
    return stats


_HERE = f"{socket.gethostname()}:{os.getpid()}"


async def queue_workers(redis_url: str, queue: str, now_ms: float) -> list[dict[str, Any]]:
    """The BullMQ workers connected to ``queue`` now, from Redis' CLIENT LIST: workers name
    their connections ``bull:<queue>`` (Python) or ``bull:<base64 queue>`` (Node), plus
    ``:w:<name>`` when given a name. One entry per worker name and address; its last
    command's age gives ``lastSeenMs``. BullMQ does not publish a worker's concurrency."""
    import base64

    import redis.asyncio as aioredis

    prefixes = (f"bull:{queue}", f"bull:{base64.b64encode(queue.encode()).decode()}")
    client = aioredis.from_url(redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        clients = await client.client_list()
    finally:
        await client.aclose()
    seen: dict[str, dict[str, Any]] = {}
    for c in clients:
        name = c.get("name") or ""
        if not any(name == p or name.startswith(p + ":w:") for p in prefixes):
            continue
        host = str(c.get("addr", "?")).rsplit(":", 1)[0]
        suffix = name.split(":w:", 1)[1] if ":w:" in name else ""
        wid = f"{host} {suffix}".strip()
        last = now_ms - float(c.get("idle", 0)) * 1000.0
        w = seen.setdefault(wid, {"id": wid, "lastSeenMs": last, "concurrency": None})
        w["lastSeenMs"] = max(w["lastSeenMs"], last)
    return sorted(seen.values(), key=lambda w: w["id"])


async def agent_health(service: Service) -> list[dict[str, Any]]:
    """``GET /api/agents/health`` (SPEC §15.4): one row per registered agent."""
    stats = stats_of(service)
    breakers = service.orch.breaker_states()
    limits = service.orch.admission_limits()  # SPEC §17: agents with overload rules only
    scaled = {a: None if math.isinf(c) else int(c) for a, c in service.orch.capacities().items()}
    now = time.time() * 1000.0
    out = []
    agents = sorted(service.orch.all_agents(), key=lambda a: a.agent_id)
    stats.forget({a.agent_id for a in agents})
    for a in agents:
        running, waiting = service.orch.agent_load(a.agent_id)
        p95, err = stats.window(a.agent_id, now)
        if isinstance(a, RemoteAgent):  # behind a queue: the workers connected to it
            try:
                workers = await queue_workers(a.redis, a.queue, now)
            except Exception as exc:  # noqa: BLE001 - health must answer; say why it cannot
                workers = [{"id": f"unknown: {type(exc).__name__}: {exc}"[:200]}]
        else:  # in process: the server itself serves it
            workers = [{"id": f"in-process {_HERE}", "lastSeenMs": now, "concurrency": a.capacity}]
        out.append(
            {
                "agentId": a.agent_id,
                "kind": kind_of(a.agent_id) or type(a).__name__,
                "type": type(a).__name__,
                "capacity": a.capacity,
                # with overload rules: the capacity in force (autoscaled) and the usable
                # admission limit; None where no rule applies or the agent is not called yet
                "capacityNow": scaled.get(a.agent_id, a.capacity),
                "admissionLimit": limits.get(a.agent_id),
                "inFlight": running,
                "waiting": waiting,
                "breaker": breakers.get(a.agent_id),
                "p95Ms5m": p95,
                "errorRate5m": err,
                "workers": workers,
            }
        )
    return out
