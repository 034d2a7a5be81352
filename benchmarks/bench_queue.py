"""Agents on other machines: orchkit's RemoteAgent vs BullMQ's own Python round trip, on
loopback, measured in the same run (starts and stops its own redis-server and workers).

(a) BullMQ floor: a Python producer adds an echo job and waits for its `completed` event
    (one QueueEvents, futures keyed by job id: the fastest correct pattern in Python),
    served by a bare bullmq Worker process returning the seed's response shape.
(b) orchkit: a one-step plan on a RemoteAgent, served by `orchkit worker` (a SyntheticAgent
    with zero latency): the same round trip plus the core, validation and events.
    Sequential round trips (p50/p95, ms) and throughput with 50 in flight (jobs/s), each
    worker at concurrency 10. Target: orchkit's p50 <= 2x BullMQ's.
(c) 1,000 concurrent plans (the seed's parallel-analysis shape: 3 parallel steps and one
    that depends on them; 4,000 jobs) through two `orchkit worker` processes: plans/s,
    makespan p95, and that every plan succeeded with exactly one job per step.

Run: python benchmarks/bench_queue.py [ROUND_TRIPS]   (default 300)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import orchkit as ok

ROOT = Path(__file__).resolve().parent.parent
MODELS = """agents:
  "bench-*":
    latency: {dist: constant, value: 0}
"""
BARE_WORKER = textwrap.dedent("""
    import asyncio, signal, sys
    from bullmq import Worker

    async def echo(job, token):
        return {"action": job.name, "confidence": 1.0, "reasoning": "echo",
                "data": {"input": job.data.get("input")}}

    async def main():
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        worker = Worker(sys.argv[2], echo, {"connection": sys.argv[1], "concurrency": 10})
        print("ready", flush=True)
        await stop.wait()
        await asyncio.wait([asyncio.ensure_future(worker.close(force=True))], timeout=3)

    asyncio.run(main())
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    for line in proc.stdout:
        if "ready" in line:
            return proc
    raise RuntimeError(f"{args[:4]} exited before it was ready")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def pct(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


async def bullmq_floor(redis: str, queue: str, n: int) -> tuple[list[float], float]:
    from bullmq import Queue, QueueEvents

    q = Queue(queue, {"connection": redis})
    last = await q.client.xrevrange(q.keys["events"], count=1)
    events = QueueEvents(queue, {"connection": redis, "lastEventId": last[0][0] if last else "0-0"})
    pending: dict[str, asyncio.Future] = {}

    def done(args, _id):
        fut = pending.pop(args.get("jobId"), None)
        if fut is not None:
            fut.set_result(args.get("returnvalue"))

    events.on("completed", done)
    counter = iter(range(10**9))

    async def one() -> float:
        job_id = f"b-{next(counter)}"
        fut = pending[job_id] = asyncio.get_running_loop().create_future()
        t = time.perf_counter()
        await q.add(
            "echo",
            {"input": {"i": job_id}},
            {"jobId": job_id, "attempts": 1, "removeOnComplete": True},
        )
        await fut
        return (time.perf_counter() - t) * 1000

    for _ in range(20):  # warm-up
        await one()
    lat = [await one() for _ in range(n)]
    rate = await throughput(one, 4 * n)
    await events.close()
    await q.close()
    return lat, rate


async def throughput(one, total: int, in_flight: int = 50) -> float:
    left = iter(range(total))

    async def lane():
        for _ in left:
            await one()

    t = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    return total / (time.perf_counter() - t)


async def orchkit_round_trip(redis: str, agent_id: str, n: int) -> tuple[list[float], float]:
    orch = ok.Orchestrator()
    await orch.register_agent(ok.RemoteAgent(agent_id, redis))
    plan = ok.Plan.model_validate(
        {
            "id": "one",
            "steps": [{"id": "s", "agentId": agent_id, "action": "echo", "input": {"i": 1}}],
        }
    )

    async def one() -> float:
        t = time.perf_counter()
        result = await orch.orchestrate(plan)
        assert result.success, result.errors
        return (time.perf_counter() - t) * 1000

    for _ in range(20):
        await one()
    lat = [await one() for _ in range(n)]
    rate = await throughput(one, 4 * n)
    await orch.shutdown()
    return lat, rate


async def many_plans(redis: str, plans: int) -> dict:
    ids = ["bench-learning", "bench-speech", "bench-tutor"]
    plan = ok.Plan.model_validate(
        {
            "id": "analysis",
            "parallel": True,
            "timeout": 120_000,
            "steps": [
                {"id": "learning", "agentId": ids[0], "action": "analyze"},
                {"id": "speech", "agentId": ids[1], "action": "analyze"},
                {"id": "tutor", "agentId": ids[2], "action": "analyze"},
                {
                    "id": "report",
                    "agentId": ids[0],
                    "action": "report",
                    "dependencies": ["learning", "speech", "tutor"],
                },
            ],
        }
    )
    orch = ok.Orchestrator()
    completed = []
    orch.on("queue:completed", lambda p: completed.append(p["bullJobId"]))
    for agent_id in ids:
        await orch.register_agent(ok.RemoteAgent(agent_id, redis))
    t = time.perf_counter()
    results = await asyncio.gather(*(orch.orchestrate(plan) for _ in range(plans)))
    wall = time.perf_counter() - t
    await orch.shutdown()
    makespans = [r.duration_ms for r in results]
    return {
        "plans": plans,
        "succeeded": sum(r.success for r in results),
        "jobs": len(completed),
        "unique_jobs": len(set(completed)),
        "attempts": sum(len(r.spans) for r in results),
        "plans_per_s": plans / wall,
        "p50_ms": pct(makespans, 50),
        "p95_ms": pct(makespans, 95),
        "wall_s": wall,
    }


def main(n: int = 300) -> None:
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server not found (apt-get install -y redis-server)")
    port = free_port()
    redis = f"redis://127.0.0.1:{port}/0"
    procs: list[subprocess.Popen] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_queue_"))
    server = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    env = {"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.02)
        (tmp / "models.yaml").write_text(MODELS)
        worker = [
            sys.executable,
            "-m",
            "orchkit",
            "worker",
            "--redis",
            redis,
            "--models",
            str(tmp / "models.yaml"),
        ]
        procs.append(start([sys.executable, "-c", BARE_WORKER, redis, "bench-floor"], env))
        procs.append(start(worker + ["--agents", "bench-echo", "--concurrency", "10"], env))
        floor_lat, ok_lat, floor_rates, ok_rates = [], [], [], []
        for _ in range(2):  # alternate, so that neither side always runs first
            lat, rate = asyncio.run(bullmq_floor(redis, "bench-floor", n // 2))
            floor_lat += lat
            floor_rates.append(rate)
            lat, rate = asyncio.run(orchkit_round_trip(redis, "bench-echo", n // 2))
            ok_lat += lat
            ok_rates.append(rate)
        floor_rate, ok_rate = statistics.mean(floor_rates), statistics.mean(ok_rates)
        for p in procs:
            stop(p)
        procs.clear()
        print(
            f"one remote attempt, loopback, {n} sequential round trips (two alternating "
            "blocks); throughput with 50 in flight (worker concurrency 10)"
        )
        print(f"  {'':<34}{'p50 ms':>8}{'p95 ms':>8}{'jobs/s':>9}")
        print(
            f"  {'BullMQ Python producer -> worker':<34}{pct(floor_lat, 50):8.2f}"
            f"{pct(floor_lat, 95):8.2f}{floor_rate:9.0f}"
        )
        print(
            f"  {'orchkit RemoteAgent -> worker':<34}{pct(ok_lat, 50):8.2f}"
            f"{pct(ok_lat, 95):8.2f}{ok_rate:9.0f}"
        )
        ratio = pct(ok_lat, 50) / pct(floor_lat, 50)
        print(
            f"  orchkit / BullMQ: p50 x{ratio:.2f}, throughput x{ok_rate / floor_rate:.2f} "
            f"(target: p50 <= x2) -> {'OK' if ratio <= 2 else 'OVER TARGET'}"
        )

        ids = "bench-learning,bench-speech,bench-tutor"
        for _ in range(2):
            procs.append(start(worker + ["--agents", ids, "--concurrency", "50"], env))
        many = asyncio.run(many_plans(redis, 1000))
        lost = many["plans"] - many["succeeded"]
        print("\n1,000 concurrent 4-step plans through two workers (concurrency 50 per queue):")
        print(
            f"  {many['plans_per_s']:.0f} plans/s ({many['wall_s']:.1f} s), makespan p50 "
            f"{many['p50_ms']:.0f} ms, p95 {many['p95_ms']:.0f} ms; succeeded "
            f"{many['succeeded']}/{many['plans']}; jobs completed {many['jobs']} (unique "
            f"{many['unique_jobs']}), attempts {many['attempts']} -> "
            f"{'nothing lost' if lost == 0 and many['jobs'] == 4000 else 'LOST WORK'}"
        )
    finally:
        for p in procs:
            stop(p)
        stop(server)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
