"""Live beyond one machine (SPEC §20, §9): several workers, Python `orchkit worker`
processes and a Node BullMQ worker, share one queue on one real redis-server; a few hundred
runs; one Python worker is killed with SIGKILL mid-run. Every job runs exactly once, except
those the killed worker had in hand: their attempts end by the step timeout and the plan's
retry policy sends them again (to the workers left). The throughput observed lies in the
interval simulated for that many worker slots (a workload study of the same plan, agent
latency from the attempts observed, capacity = the slots before and after the kill)."""

from __future__ import annotations

import asyncio
import collections
import math
import random
import shutil
import signal
import statistics
import sys
import time

import pytest
from test_remote import PYENV, ROOT, spawn, uid  # noqa: F401 - spawn is a fixture

import orchkit as ok
from orchkit import RemoteAgent

NODE_MODULES = ROOT / "tests" / "node" / "node_modules"
RUNS = 300  # two steps each: 600 jobs
SLOTS = {"python-1": 4, "python-2": 4, "node": 4}  # jobs each worker serves at once
KILLED = "python-1"
KILL_AFTER = 100  # runs finished when it is killed
WORK_MS = 50  # each job's work
THINK_MS = 20  # each user's mean think time between its runs (exponential, seeded)
USERS = sum(SLOTS.values())  # a closed loop: as many users as worker slots

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def plan(log: str) -> dict:
    retry = {"maxRetries": 2, "backoffMs": 0}
    step = {"agentId": "soak-1", "action": "work", "input": {"ms": WORK_MS, "log": log}}
    return {
        "id": "soak",
        "steps": [
            {"id": "fetch", **step, "timeout": 1000, "retryPolicy": retry},
            {
                "id": "answer",
                **step,
                "timeout": 1000,
                "retryPolicy": retry,
                "dependencies": ["fetch"],
            },
        ],
    }


@pytest.fixture
def workers(spawn, redis_server):  # noqa: F811
    """The workers of one soak queue: {name: Proc}, each ready; killed at teardown."""
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "bullmq").is_dir():
        pytest.fail("the soak needs node and tests/node/node_modules (npm ci in tests/node)")
    queue = uid("soak")
    procs = {}
    for name, slots in SLOTS.items():
        if name == "node":
            procs[name] = spawn(
                [node, "soak_worker.mjs"],
                cwd=ROOT / "tests" / "node",
                env={"REDIS_URL": redis_server.url, "QUEUE": queue, "CONCURRENCY": str(slots)},
            )
        else:
            procs[name] = spawn(
                [
                    sys.executable,
                    "-m",
                    "orchkit",
                    "worker",
                    "--redis",
                    redis_server.url,
                    "--queue",
                    queue,
                    "--agents",
                    "soak-*",
                    "--factory",
                    "soak_agents:make",
                    "--concurrency",
                    str(slots),
                ],
                env={**PYENV, "SOAK_REDIS": redis_server.url},
            )
    for p in procs.values():
        p.wait_ready()
    return queue, procs


async def soak(redis: str, queue: str, procs: dict, log: str) -> tuple[list, float, float]:
    """USERS users run RUNS runs back to back (thinking between them); KILLED is killed
    when KILL_AFTER runs have finished. Returns the runs, the seconds they took and when
    (seconds from the start) the worker was killed."""
    orch = ok.Orchestrator(seed=0)
    await orch.register_agent(RemoteAgent("soak-1", redis, queue=queue))
    the_plan = ok.Plan.model_validate(plan(log))
    results: list = []
    started = iter(range(RUNS))
    killed_at = math.nan
    t0 = time.perf_counter()

    async def user(k: int) -> None:
        nonlocal killed_at
        think = random.Random(f"think:{k}")
        for _ in started:
            results.append(await orch.orchestrate(the_plan))
            if len(results) == KILL_AFTER:
                procs[KILLED].kill(signal.SIGKILL)
                killed_at = time.perf_counter() - t0
            await asyncio.sleep(think.expovariate(1 / THINK_MS) / 1000)

    try:
        await asyncio.gather(*(user(k) for k in range(USERS)))
    finally:
        await orch.shutdown()
    return results, time.perf_counter() - t0, killed_at


def simulated_throughput(durations: list[float], slots: int, horizon_ms: float) -> tuple:
    """Runs per second of the same plan under the same closed loop, agent latency drawn
    from the attempts observed, ``slots`` attempts at once: mean and 95% interval over 8
    replications."""
    models = {
        "agents": {
            "soak-*": {"capacity": slots, "latency": {"dist": "empirical", "samples": durations}}
        }
    }
    users = ok.Workload(population=USERS, think_ms=THINK_MS, horizon_ms=horizon_ms)
    mc = ok.monte_carlo(plan("-"), models, workload=users, replications=8, progress=False)
    per = [n / (horizon_ms / 1000) for n in mc.runs.groupby("replication").size()]
    mean, half = statistics.mean(per), 2.365 * statistics.stdev(per) / math.sqrt(len(per))
    return mean, mean - half, mean + half


def test_workers_in_two_languages_share_a_queue_and_survive_a_kill(workers, redis_server):
    import redis

    queue, procs = workers
    log = f"{queue}:starts"
    started = time.perf_counter()
    runs, seconds, killed_at = asyncio.run(soak(redis_server.url, queue, procs, log))
    pid = procs[KILLED].proc.pid

    # every run succeeded, each step by exactly one attempt that succeeded
    assert len(runs) == RUNS and {r.status for r in runs} == {"succeeded"}
    spans = [row for r in runs for row in r.spans.to_dict("records")]
    outcomes = collections.Counter(s["outcome"] for s in spans)
    assert set(outcomes) <= {"succeeded", "timeout"}, outcomes
    assert outcomes["succeeded"] == 2 * RUNS
    done = [r.results[s] for r in runs for s in ("fetch", "answer")]
    done_ids = [d.data["jobId"] for d in done]
    assert len(set(done_ids)) == 2 * RUNS
    by_worker = collections.Counter(d.data["worker"] for d in done)
    assert by_worker["node"] > 0 and by_worker["python"] > 0

    # every job ran exactly once: no job started twice, anywhere
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        starts = [line.split() for line in client.lrange(log, 0, -1)]
        client.delete(log)
    counts = collections.Counter(job for job, _ in starts)
    assert max(counts.values()) == 1, counts.most_common(3)
    # ... and the only jobs that did not finish are the ones the killed worker had in hand:
    # their attempts ended by the step timeout and were retried by the plan's policy
    in_hand = {job for job, p in starts if int(p) == pid} - set(done_ids)
    assert in_hand, "the worker was killed while it had no job: nothing was tested"
    assert set(counts) == set(done_ids) | in_hand
    assert outcomes["timeout"] == len(in_hand) <= SLOTS[KILLED]
    timed_out = {
        f"{r.run_id}:soak:{s['step_id']}:{s['attempt']}"
        for r in runs
        for s in r.spans.to_dict("records")
        if s["outcome"] == "timeout"
    }
    assert timed_out == in_hand

    # the throughput lies between the simulated ones with the slots after and before the kill
    ok_spans = [s for s in spans if s["outcome"] == "succeeded"]
    durations = [s["end_ms"] - s["start_ms"] for s in ok_spans]
    horizon = seconds * 1000
    all_slots = simulated_throughput(durations, sum(SLOTS.values()), horizon)
    survivors = simulated_throughput(durations, sum(SLOTS.values()) - SLOTS[KILLED], horizon)
    observed = RUNS / seconds
    print(
        f"\nsoak: {RUNS} runs ({2 * RUNS} jobs + {len(in_hand)} retried) on {len(SLOTS)} workers "
        f"({sum(SLOTS.values())} slots; {KILLED} killed at {killed_at:.2f} s) in {seconds:.2f} s: "
        f"{observed:.1f} runs/s; simulated {survivors[0]:.1f} [{survivors[1]:.1f}, "
        f"{survivors[2]:.1f}] runs/s with {sum(SLOTS.values()) - SLOTS[KILLED]} slots, "
        f"{all_slots[0]:.1f} [{all_slots[1]:.1f}, {all_slots[2]:.1f}] with "
        f"{sum(SLOTS.values())}; attempt median {statistics.median(durations):.1f} ms "
        f"(work {WORK_MS} ms); by worker {dict(by_worker)}; whole test "
        f"{time.perf_counter() - started:.1f} s"
    )
    assert survivors[1] <= observed <= all_slots[2]
