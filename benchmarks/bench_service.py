"""Load benchmark of `orchkit serve` (loopback only; stops by itself).

N learners at once (arriving spread over the first think time), each: start_session
(REST), then K answers (process_interaction),
half of the learners over REST and half over Socket.IO, with a think time between answers
(seeded, uniform in [0.5, 1.5] x --think-ms; 0 = as fast as possible). The server is a real
process (SQLite store in a temp folder, the built-in agents) on a free port.

Prints requests/s and latency p50/p95/p99 as the client saw it, the agents' own time (the
server reports it: `Server-Timing: agent;dur=` / the ack's `agentMs`), and the overhead
per request over the agents' own time, two ways:
- client: round trip seen by the client - agents' time (includes loopback, HTTP/Socket.IO
  framing, uvicorn, and the client's own event loop, which shares the 2 cores)
- server: time inside the app (`Server-Timing: app;dur=` / the ack's `serverMs`) - agents' time

Then, next to a baseline in the same run: the server's CPU per REST `process_interaction`
of `orchkit serve` with instant agents against a minimal FastAPI app under the same uvicorn
settings that answers the same JSON (both servers up at once; rounds of --cpu-learners
learners x --cpu-answers answers, alternating between them; medians). Goals: `start_session`
in-app overhead p95 < 2 ms at 200 learners; server CPU per REST request <= 1.25x the
minimal app's.

    python benchmarks/bench_service.py                     # 200 learners x 10 answers
    python benchmarks/bench_service.py --agents instant    # the service's own cost alone
    python benchmarks/bench_service.py --learners 50 --answers 20 --think-ms 0
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import socketio

ROOT = Path(__file__).resolve().parent.parent
TIMING = re.compile(r"(\w+);dur=([0-9.]+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def instant_agent(kind: str, agent_id: str):
    """``--agents instant``: agents that answer at once in the built-in agents' shapes, so
    that what is measured is the service alone."""
    import orchkit as ok

    class Instant(ok.Agent):
        async def process(self, action, input, context):
            data = {
                "learnerId": (input or {}).get("learnerId"),
                "correct": False,
                "activity": {
                    "activityId": "addition-d1-01",
                    "concept": "addition",
                    "difficulty": 1,
                    "prompt": "1 + 1",
                },
                "concept": "addition",
                "difficultyLevel": 1,
                "difficultyChange": "same",
                "mastery": 0.5,
                "struggling": False,
            }
            return ok.AgentResponse(action=action, confidence=0.9, reasoning="instant", data=data)

    return Instant(agent_id)


INSTANT_ANSWER = {
    "success": True,
    "response": {
        "correct": False,
        "nextActivity": {
            "activityId": "addition-d1-01",
            "concept": "addition",
            "difficulty": 1,
            "prompt": "1 + 1",
        },
        "adaptations": {
            "concept": "addition",
            "difficultyLevel": 1,
            "difficultyChange": "same",
            "mastery": 0.5,
            "struggling": False,
            "recommendations": [],
        },
    },
    "confidence": 0.9,
    "reasoning": "instant",
}


def minimal_app():
    """The baseline: a minimal FastAPI app answering ``POST /api/agents`` with the JSON
    orchkit answers a process_interaction with instant agents (and /healthz)."""
    from datetime import UTC, datetime
    from typing import Any

    from fastapi import Body, FastAPI

    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> Any:
        return {"status": "ok"}

    @app.post("/api/agents")
    async def agents(body: dict[str, Any] = Body(...)) -> Any:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {**INSTANT_ANSWER, "timestamp": now}

    return app


def serve_minimal(port: int) -> None:
    """Run ``minimal_app`` as ``orchkit serve`` runs its app (uvicorn.run, same options)."""
    import uvicorn

    uvicorn.run(
        minimal_app(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_keep_alive=30,
    )


def start_server(port: int, folder: str, agents: str, minimal: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")])}
    env.pop("ORCHKIT_API_KEY", None)
    env.pop("ORCHKIT_LLM_BASE_URL", None)
    command = (
        ["-c", f"import bench_service; bench_service.serve_minimal({port})"]
        if minimal
        else [
            "-m",
            "orchkit",
            "serve",
            "--port",
            str(port),
            "--store",
            f"sqlite:///{folder}/bench.db",
            "--log-level",
            "warning",
            *(["--agent-factory", "bench_service:instant_agent"] if agents == "instant" else []),
        ]
    )
    proc = subprocess.Popen(
        [sys.executable, *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"orchkit serve exited with code {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    stop(proc)
    raise SystemExit("orchkit serve did not start within 60 s")


def cpu_ms(pid: int) -> float | None:
    """CPU time (user + system) of process ``pid`` so far, in ms (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)


class Stats:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float, float]] = []  # route, total, agent, app (ms)
        self.errors: list[str] = []

    def add(self, route: str, total_ms: float, agent_ms: float, app_ms: float) -> None:
        self.rows.append((route, total_ms, agent_ms, app_ms))


def timings(headers: httpx.Headers) -> dict[str, float]:
    return {k: float(v) for k, v in TIMING.findall(", ".join(headers.get_list("server-timing")))}


async def rest_learner(
    i: int,
    url: str,
    http: httpx.AsyncClient,
    answers: int,
    think_ms: float,
    rng: random.Random,
    stats: Stats,
) -> None:
    learner = f"bench-rest-{i}"
    await think(think_ms, rng)  # learners arrive spread over the first think time
    await start_session(http, learner, stats)
    r = await http.post(
        "/api/agents",
        json={"action": "get_next_activity", "agent": "learning", "learnerId": learner},
    )
    activity = r.json()["response"]["data"]["activity"]["activityId"]
    for _ in range(answers):
        await think(think_ms, rng)
        t0 = time.perf_counter()
        r = await http.post(
            "/api/agents",
            json={
                "action": "process_interaction",
                "learnerId": learner,
                "data": {"activityId": activity, "response": {"answer": str(rng.randint(0, 20))}},
            },
        )
        total = (time.perf_counter() - t0) * 1000.0
        r.raise_for_status()
        t = timings(r.headers)
        stats.add("rest", total, t["agent"], t["app"])
        activity = r.json()["response"]["nextActivity"]["activityId"]


async def socket_learner(
    i: int,
    url: str,
    http: httpx.AsyncClient,
    answers: int,
    think_ms: float,
    rng: random.Random,
    stats: Stats,
) -> None:
    learner = f"bench-sock-{i}"
    await think(think_ms, rng)
    await start_session(http, learner, stats)
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(url, auth={"learnerId": learner}, transports=["websocket"], wait_timeout=30)
    try:
        ack = await sio.call("agent:learning", {"action": "get_next_activity"}, timeout=60)
        activity = ack["response"]["data"]["activity"]["activityId"]
        for _ in range(answers):
            await think(think_ms, rng)
            t0 = time.perf_counter()
            ack = await sio.call(
                "agent:learning",
                {
                    "action": "process_interaction",
                    "data": {
                        "activityId": activity,
                        "response": {"answer": str(rng.randint(0, 20))},
                    },
                },
                timeout=60,
            )
            total = (time.perf_counter() - t0) * 1000.0
            if not ack.get("success"):
                raise RuntimeError(f"socket answer failed: {ack}")
            stats.add("socket", total, ack["agentMs"], ack["serverMs"])
            ack = await sio.call("agent:learning", {"action": "get_next_activity"}, timeout=60)
            activity = ack["response"]["data"]["activity"]["activityId"]
    finally:
        await sio.disconnect()


async def start_session(http: httpx.AsyncClient, learner: str, stats: Stats) -> None:
    t0 = time.perf_counter()
    r = await http.post(
        "/api/agents",
        json={"action": "start_session", "learnerId": learner, "data": {"gradeLevel": 5}},
    )
    total = (time.perf_counter() - t0) * 1000.0
    r.raise_for_status()
    t = timings(r.headers)
    stats.add("start_session", total, t.get("agent", 0.0), t["app"])


async def think(think_ms: float, rng: random.Random) -> None:
    if think_ms > 0:
        await asyncio.sleep(think_ms * rng.uniform(0.5, 1.5) / 1000.0)


def pct(values: np.ndarray) -> str:
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return f"p50 {p50:7.2f}   p95 {p95:7.2f}   p99 {p99:7.2f}"


async def answers_cpu(url: str, pid: int, tag: str, learners: int, answers: int) -> float:
    """Server CPU (ms) per REST process_interaction: ``learners`` learners start a session
    (not counted), then answer ``answers`` times each, all at once (think time 0.5-1.5 ms)."""
    limits = httpx.Limits(max_connections=learners, max_keepalive_connections=learners)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        ids = [f"cpu-{tag}-{i}" for i in range(learners)]
        for learner in ids:
            r = await http.post(
                "/api/agents",
                json={"action": "start_session", "learnerId": learner, "data": {"gradeLevel": 5}},
            )
            r.raise_for_status()

        async def answer(learner: str, rng: random.Random) -> None:
            for _ in range(answers):
                await asyncio.sleep(rng.uniform(0.5, 1.5) / 1000.0)
                r = await http.post(
                    "/api/agents",
                    json={
                        "action": "process_interaction",
                        "learnerId": learner,
                        "data": {
                            "activityId": "addition-d1-01",
                            "response": {"answer": str(rng.randint(0, 20))},
                        },
                    },
                )
                r.raise_for_status()

        cpu0 = cpu_ms(pid)
        await asyncio.gather(*(answer(x, random.Random(i)) for i, x in enumerate(ids)))
        cpu1 = cpu_ms(pid)
    assert cpu0 is not None and cpu1 is not None
    return (cpu1 - cpu0) / (learners * answers)


async def cpu_versus_minimal(args: argparse.Namespace) -> None:
    """Server CPU per REST answer: orchkit serve (instant agents) vs the minimal FastAPI app,
    in alternating rounds, both servers up at once."""
    with tempfile.TemporaryDirectory() as folder:
        ports = free_port(), free_port()
        ours = start_server(ports[0], folder, "instant")
        base = start_server(ports[1], folder, "instant", minimal=True)
        try:
            ratios, mine, theirs = [], [], []
            for r in range(args.cpu_rounds + 1):  # round 0 warms both up, not counted
                a = await answers_cpu(
                    f"http://127.0.0.1:{ports[0]}",
                    ours.pid,
                    f"o{r}",
                    args.cpu_learners,
                    args.cpu_answers,
                )
                b = await answers_cpu(
                    f"http://127.0.0.1:{ports[1]}",
                    base.pid,
                    f"m{r}",
                    args.cpu_learners,
                    args.cpu_answers,
                )
                if r:
                    mine.append(a)
                    theirs.append(b)
                    ratios.append(a / b)
        finally:
            stop(ours)
            stop(base)
    ratio = float(np.median(ratios))
    print(
        f"server CPU per REST process_interaction ({args.cpu_learners} learners x "
        f"{args.cpu_answers} answers, {args.cpu_rounds} alternating rounds, load average "
        f"{os.getloadavg()[0]:.1f}): orchkit serve (instant agents) {np.median(mine):.3f} ms, "
        f"minimal FastAPI app {np.median(theirs):.3f} ms: {ratio:.2f}x "
        f"(rounds {', '.join(f'{x:.2f}' for x in ratios)}; goal <= 1.25x: "
        f"{'met' if ratio <= 1.25 else 'not met'})"
    )


async def main(args: argparse.Namespace) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as folder:
        proc = start_server(port, folder, args.agents)
        try:
            limits = httpx.Limits(
                max_connections=args.learners, max_keepalive_connections=args.learners
            )
            async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
                # warm-up: the first session trains the learning model (not measured)
                await start_session(http, "bench-warm-up", Stats())
                gc.collect()
                # the client's own start-up heap: no full-collection pauses in its timings
                gc.freeze()
                stats = Stats()
                rng = random.Random(args.seed)
                learners = []
                for i in range(args.learners):
                    kind = rest_learner if i % 2 == 0 else socket_learner
                    learners.append(
                        kind(
                            i,
                            url,
                            http,
                            args.answers,
                            args.think_ms,
                            random.Random(rng.random()),
                            stats,
                        )
                    )
                t0, cpu0, mine0 = time.perf_counter(), cpu_ms(proc.pid), time.process_time()
                outcomes = await asyncio.wait_for(
                    asyncio.gather(*learners, return_exceptions=True), args.max_seconds
                )
                wall = time.perf_counter() - t0
                cpu1, mine = cpu_ms(proc.pid), (time.process_time() - mine0) * 1000.0
                stats.errors = [
                    f"{type(e).__name__}: {e}" for e in outcomes if isinstance(e, BaseException)
                ]
        finally:
            stop(proc)
    rows = np.array([(t, a, s) for _, t, a, s in stats.rows])
    routes = np.array([r for r, *_ in stats.rows])
    print(
        f"orchkit serve, {args.agents} agents, {args.learners} concurrent learners x "
        f"{args.answers} answers (half REST, half Socket.IO), think time {args.think_ms:g} ms; "
        "loopback, times in ms"
    )
    print(
        f"  {len(rows)} requests in {wall:.1f} s = {len(rows) / wall:.0f} requests/s; "
        f"{len(stats.errors)} learner(s) stopped by an error"
        + (f" (first: {stats.errors[0]})" if stats.errors else "")
    )
    print(f"  load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if cpu0 is not None and cpu1 is not None:
        n = len(rows) + args.learners + int((routes == "socket").sum())  # + get_next_activity
        print(
            f"  server CPU: {cpu1 - cpu0:,.0f} ms for {n} requests = {(cpu1 - cpu0) / n:.2f} ms "
            "per request, agents included (with --agents instant: the service's own cost); "
            f"this client used {mine:,.0f} ms"
        )
    for name in ("start_session", "rest", "socket", None):
        sel = rows if name is None else rows[routes == name]
        if not len(sel):
            continue
        label = name or "all requests"
        print(f"  {label:<14} n={len(sel):5d}")
        print(f"    latency (client)            {pct(sel[:, 0])}")
        print(f"    agents' own time            {pct(sel[:, 1])}")
        print(f"    overhead, client - agents   {pct(sel[:, 0] - sel[:, 1])}")
        print(f"    overhead, in app - agents   {pct(sel[:, 2] - sel[:, 1])}")
    starts = rows[routes == "start_session"]
    if len(starts):
        p95 = float(np.percentile(starts[:, 2] - starts[:, 1], 95))
        print(
            f"  start_session in-app overhead p95 at {args.learners} learners: {p95:.2f} ms "
            f"(goal < 2 ms: {'met' if p95 < 2 else 'not met'})"
        )
    if args.cpu_rounds:
        await cpu_versus_minimal(args)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--learners", type=int, default=200)
    ap.add_argument("--answers", type=int, default=10, help="process_interaction per learner")
    ap.add_argument(
        "--think-ms",
        type=float,
        default=1000.0,
        help="mean think time between a learner's answers (default 1000)",
    )
    ap.add_argument(
        "--agents",
        choices=["builtin", "instant"],
        default="builtin",
        help="the built-in agents (scikit-learn, offline tutor) or agents that "
        "answer at once (the service's own cost alone)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--cpu-rounds",
        type=int,
        default=7,
        help="rounds of the CPU comparison with the minimal FastAPI app (0: skip it)",
    )
    ap.add_argument("--cpu-learners", type=int, default=50)
    ap.add_argument("--cpu-answers", type=int, default=30)
    ap.add_argument("--max-seconds", type=float, default=300.0, help="give up after this long")
    asyncio.run(main(ap.parse_args()))
