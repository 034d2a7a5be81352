"""Studies beyond one machine (SPEC §20): parallel efficiency T1 / (n·Tn) of a sweep of 16
cells on n = 2 workers (a process pool, a Dask LocalCluster, Ray when installed), against
the same sweep in one process; and capacity_for on 2 workers (its candidates run ahead
while it waits), against one process. Every executor is started and warmed before it is
timed (its start-up is reported apart); best of REPEATS. Nothing is asserted: this machine
is shared, and the figures move from run to run (NOTES: 0.33-0.85 for a toy study).

Run: python benchmarks/bench_scale.py [REPEATS]   (default 3)
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib.util
import os
import shutil
import sys
import tempfile
import time

import orchkit as ok

WORKERS = 2
MODELS = {
    "agents": {
        "fast-*": {
            "latency": {"dist": "lognormal", "median": 50, "p95": 200},
            "error": 0.1,
            "capacity": 4,
        },
        "slow": {"latency": {"dist": "gamma", "mean": 120, "cv": 0.8}, "capacity": 2},
    }
}
PLAN = {
    "id": "bench-scale",
    "parallel": True,
    "steps": [
        {"id": "a", "agentId": "fast-1", "action": "a", "timeout": 300,
         "retryPolicy": {"maxRetries": 2, "backoffMs": 20, "jitter": 0.5}},
        {"id": "b", "agentId": "fast-2", "action": "b", "timeout": 250,
         "retryPolicy": {"maxRetries": 1, "backoffMs": 10}},
        {"id": "c", "agentId": "slow", "action": "c", "dependencies": ["a", "b"]},
    ],
}  # fmt: skip
GRID = {"steps.a.timeout": [150, 200, 300, 400], "steps.b.timeout": [150, 200, 250, 300]}
RUNS = 20_000  # per cell, on the SimPy path (the fast path would make a cell too short)


def sweep(executor) -> float:
    t = time.perf_counter()
    ok.sweep(
        PLAN, MODELS, GRID, runs=RUNS, seed=1, method="simpy", progress=False, executor=executor
    )
    return time.perf_counter() - t


def capacity(executor) -> float:
    t = time.perf_counter()
    ok.capacity_for(
        PLAN,
        MODELS,
        slo={"makespan_p95_ms": 520},
        workload=ok.Workload(rate_per_s=20, horizon_ms=900_000),
        agents="slow",
        seed=1,
        progress=False,
        executor=executor,
    )
    return time.perf_counter() - t


def best(fn, executor, repeats: int) -> float:
    return min(fn(executor) for _ in range(repeats))


def main(repeats: int) -> None:
    cells = len(GRID["steps.a.timeout"]) * len(GRID["steps.b.timeout"])
    print(f"sweep: {cells} cells of {RUNS:,} runs; {WORKERS} workers; best of {repeats}")
    t1 = best(sweep, None, repeats)
    c1 = best(capacity, None, repeats)
    print(f"  one process            sweep {t1:6.2f} s   capacity_for {c1:6.2f} s")

    def report(name: str, executor, started: float) -> None:
        sweep(executor)  # warm: the workers import orchkit once
        tn, cn = best(sweep, executor, repeats), best(capacity, executor, repeats)
        print(
            f"  {name:<22} sweep {tn:6.2f} s   efficiency T1/(n·Tn) = {t1 / (WORKERS * tn):.2f}"
            f"   capacity_for {cn:6.2f} s (speed-up {c1 / cn:.2f}x)   start-up {started:.1f} s"
        )

    t = time.perf_counter()
    with cf.ProcessPoolExecutor(WORKERS) as pool:
        report("process pool", pool, time.perf_counter() - t)
    t = time.perf_counter()
    with ok.executors.dask(n_workers=WORKERS, threads_per_worker=1) as client:
        report("Dask LocalCluster", client, time.perf_counter() - t)  # (tasks not pure)
    if importlib.util.find_spec("ray") is None:
        print("  Ray                    not installed (pip install ray)")
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token under $HOME
    tmp = tempfile.mkdtemp(prefix="okray")
    t = time.perf_counter()
    ray = ok.executors.ray(num_cpus=WORKERS, _temp_dir=tmp)
    try:
        report("Ray", ray, time.perf_counter() - t)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # the guard a process pool or cluster needs in a script
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
