"""Simulation speed: runs per second of the seed's parallel-analysis plan (3 parallel
lognormal steps, then a combine step; p = 0.05 errors; 2 retries, linear backoff), as
  (a) a direct hand-written SimPy model,   (b) orchkit's SimPy path,
  (c) a hand-written numpy version,        (d) orchkit's fast path,
  (e) a capacity study (Poisson arrivals sharing capacity-4 agents) against
  (f) the same workload written directly in SimPy (simpy.Resource per agent), and the
      simplest queue (one step, M/M/3) both ways; each also on the general core (the
      engine the table lane replaces, for plans it takes),
  (g) per-run cost of the SimPy path from 10^3 to 10^5 runs (it must stay flat).
(b), (d) and (e) use monte_carlo's default arguments (what a user pays).
Prints runs/s and the ratios the targets are stated in. Run: python benchmarks/bench_sim.py
"""

from __future__ import annotations

import gc
import math
import random
import sys
import time

import numpy as np
import simpy

import orchkit as ok

MEDIAN, P95, P_ERR, RETRIES, BACKOFF = 250.0, 900.0, 0.05, 2, 100.0
MU, SIGMA = math.log(MEDIAN), math.log(P95 / MEDIAN) / 1.6448536269514722
STEPS = ["learning_analysis", "speech_analysis", "tutor_analysis"]

PLAN = ok.Plan.model_validate(
    {
        "id": "bench_parallel_analysis",
        "parallel": True,
        "steps": [
            {
                "id": s,
                "agentId": f"agent-{i}",
                "action": "analyze",
                "retryPolicy": {"maxRetries": RETRIES, "backoffMs": BACKOFF},
            }
            for i, s in enumerate(STEPS)
        ]
        + [
            {
                "id": "combine",
                "agentId": "agent-0",
                "action": "combine",
                "dependencies": STEPS,
                "retryPolicy": {"maxRetries": RETRIES, "backoffMs": BACKOFF},
            }
        ],
    }
)
LAT = {"dist": "lognormal", "median": MEDIAN, "p95": P95}
MODELS = ok.AgentModels.from_dict({"agents": {"agent-*": {"latency": LAT, "error": P_ERR}}})
CAP_MODELS = ok.AgentModels.from_dict(
    {"agents": {"agent-*": {"latency": LAT, "error": P_ERR, "capacity": 4}}}
)


def hand_simpy(n: int, seed: int) -> np.ndarray:
    """The plan written directly in SimPy: one Environment per run, a process per step."""
    rng = random.Random(seed)
    out = np.empty(n)

    def step(env):
        for k in range(1, RETRIES + 2):
            yield env.timeout(rng.lognormvariate(MU, SIGMA))
            if rng.random() >= P_ERR:
                return True
            if k <= RETRIES:
                yield env.timeout(BACKOFF * k)
        return False

    def plan(env):
        procs = [env.process(step(env)) for _ in STEPS]
        yield env.all_of(procs)
        if all(p.value for p in procs):
            yield env.process(step(env))

    for i in range(n):
        env = simpy.Environment()
        env.process(plan(env))
        env.run()
        out[i] = env.now
    return out


def hand_numpy(n: int, seed: int) -> np.ndarray:
    """The same statistic fully vectorised."""
    gen = np.random.default_rng(seed)

    def step():
        total = np.zeros(n)
        ok_ = np.zeros(n, dtype=bool)
        for k in range(1, RETRIES + 2):
            lat = gen.lognormal(MU, SIGMA, n)
            err = gen.random(n) < P_ERR
            total += np.where(ok_, 0.0, lat)
            newly = ~ok_ & ~err
            if k <= RETRIES:
                total += np.where(ok_ | newly, 0.0, BACKOFF * k)
            ok_ |= newly
        return total, ok_

    parts = [step() for _ in STEPS]
    first = np.max([p[0] for p in parts], axis=0)
    all_ok = np.logical_and.reduce([p[1] for p in parts])
    comb, _ = step()
    return first + np.where(all_ok, comb, 0.0)


def hand_simpy_capacity(rate_per_s: float, horizon_ms: float, seed: int) -> np.ndarray:
    """The capacity study written directly in SimPy: Poisson arrivals, one Resource of
    capacity 4 per agent (FIFO), the plan's steps as processes. Returns makespans."""
    rng = random.Random(seed)
    env = simpy.Environment()
    agents = [simpy.Resource(env, capacity=4) for _ in STEPS]
    out: list[float] = []

    def step(agent):
        for k in range(1, RETRIES + 2):
            with agent.request() as req:
                yield req
                yield env.timeout(rng.lognormvariate(MU, SIGMA))
            if rng.random() >= P_ERR:
                return True
            if k <= RETRIES:
                yield env.timeout(BACKOFF * k)
        return False

    def plan(env):
        t0 = env.now
        procs = [env.process(step(agents[i])) for i in range(len(STEPS))]
        yield env.all_of(procs)
        if all(p.value for p in procs):
            yield env.process(step(agents[0]))
        out.append(env.now - t0)

    def arrivals(env):
        mean_gap = 1000.0 / rate_per_s
        while True:
            yield env.timeout(rng.expovariate(1.0 / mean_gap))
            if env.now >= horizon_ms:
                return
            env.process(plan(env))

    env.process(arrivals(env))
    env.run()
    return np.asarray(out)


MM3_PLAN = ok.Plan.model_validate(
    {"id": "one", "steps": [{"id": "s", "agentId": "srv", "action": "x"}]}
)
MM3_MODELS = ok.AgentModels.from_dict(
    {"agents": {"srv": {"capacity": 3, "latency": {"dist": "exponential", "mean": 40.0}}}}
)


def hand_simpy_mm3(horizon_ms: float, seed: int) -> int:
    """The simplest queue a planner writes, directly in SimPy: Poisson 60/s, one Resource
    of capacity 3, exponential 40 ms (rho = 0.8). Returns the jobs served."""
    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    res = simpy.Resource(env, 3)
    served = []

    def job(env, t0):
        with res.request() as req:
            yield req
            start = env.now
            yield env.timeout(rng.exponential(40.0))
            served.append((t0, start, env.now))

    def source(env):
        while True:
            yield env.timeout(rng.exponential(1000.0 / 60.0))
            if env.now > horizon_ms:
                return
            env.process(job(env, env.now))

    env.process(source(env))
    env.run()
    return len(served)


def core_study(plan, models, workload, seed):
    """The same workload study on the general core (what the table lane replaces)."""
    from orchkit._engine.prepared import Prepared
    from orchkit._runtimes.sim import capacity_study
    from orchkit._spec.inputs import StudyInputs

    p = Prepared.of(StudyInputs.of(plan, models, None, workload, where="bench"))
    return capacity_study(p, seed, True, False, tables=False)[0]


def rate(fn, n: int, repeat: int = 3) -> tuple[float, object]:
    """``n`` / the best of ``repeat`` timings of ``fn(n, seed)``, and its last output."""
    best, out = math.inf, None
    for r in range(repeat):
        out = None
        gc.collect()  # each timing starts from the same collector state
        t = time.perf_counter()
        out = fn(n, r + 1)
        best = min(best, time.perf_counter() - t)
    return n / best, out


def main(scale: float = 1.0) -> None:
    n_sim, n_fast = int(20_000 * scale), int(1_000_000 * scale)
    r_hand, hs = rate(hand_simpy, n_sim)
    r_sim, mc = rate(
        lambda n, s: ok.monte_carlo(PLAN, MODELS, runs=n, seed=s, method="simpy", progress=False),
        n_sim,
    )
    r_np, hn = rate(hand_numpy, n_fast)
    r_fast, mf = rate(
        lambda n, s: ok.monte_carlo(PLAN, MODELS, runs=n, seed=s, method="fast", progress=False),
        n_fast,
    )
    r_fast_bare, _ = rate(
        lambda n, s: ok.monte_carlo(
            PLAN, MODELS, runs=n, seed=s, method="fast", keep_spans=False, progress=False
        ),
        n_fast,
    )
    horizon = 2_500_000 * scale  # 4 runs/s: agent-0 ~66% busy, ~10,000 runs
    r_hcap, hc = rate(lambda n, s: hand_simpy_capacity(4.0, horizon, s), 1, repeat=3)
    r_hcap *= len(hc)
    wl = ok.Workload(rate_per_s=4.0, horizon_ms=horizon)
    r_cap, cap = rate(
        lambda n, s: ok.monte_carlo(PLAN, CAP_MODELS, workload=wl, seed=s, progress=False),
        1,
        repeat=3,
    )
    r_cap *= len(cap.runs)
    r_core, core = rate(lambda n, s: core_study(PLAN, CAP_MODELS, wl, s), 1, repeat=3)
    r_core *= len(core)
    mm3_h = 200_000 * scale
    r_hmm3, hm = rate(lambda n, s: hand_simpy_mm3(mm3_h, s), 1, repeat=5)
    r_hmm3 *= hm
    mm3_wl = ok.Workload(rate_per_s=60.0, horizon_ms=mm3_h)
    r_mm3, mm3 = rate(
        lambda n, s: ok.monte_carlo(MM3_PLAN, MM3_MODELS, workload=mm3_wl, seed=s, progress=False),
        1,
        repeat=5,
    )
    r_mm3 *= len(mm3.runs)
    r_mm3_core, mc3 = rate(lambda n, s: core_study(MM3_PLAN, MM3_MODELS, mm3_wl, s), 1, repeat=5)
    r_mm3_core *= len(mc3)
    print(f"{'':40}{'runs/s':>12}  mean makespan ms")
    print(f"{'hand-written SimPy':40}{r_hand:12,.0f}  {np.mean(hs):8.1f}")
    print(
        f"{'orchkit SimPy path (defaults)':40}{r_sim:12,.0f}  {mc.runs['makespan_ms'].mean():8.1f}"
    )
    print(f"{'hand-written numpy':40}{r_np:12,.0f}  {np.mean(hn):8.1f}")
    print(
        f"{'orchkit fast path (defaults)':40}{r_fast:12,.0f}  {mf.runs['makespan_ms'].mean():8.1f}"
    )
    print(f"{'orchkit fast path (keep_spans=False)':40}{r_fast_bare:12,.0f}")
    print(f"{'hand-written SimPy capacity study':40}{r_hcap:12,.0f}  {np.mean(hc):8.1f}")
    print(
        f"{'orchkit capacity study (defaults)':40}{r_cap:12,.0f}  "
        f"{cap.runs['makespan_ms'].mean():8.1f}"
    )
    print(f"{'  the same on the general core':40}{r_core:12,.0f}")
    print(f"{'hand-written SimPy M/M/3 (jobs/s)':40}{r_hmm3:12,.0f}")
    print(f"{'orchkit capacity study M/M/3 (defaults)':40}{r_mm3:12,.0f}")
    print(f"{'  the same on the general core':40}{r_mm3_core:12,.0f}")
    print()
    print("SimPy path, per-run cost as the study grows (defaults; must stay flat):")
    base = None
    for n in (1_000, 10_000, int(100_000 * scale)):
        us = (
            1e6
            / rate(
                lambda n, s: ok.monte_carlo(
                    PLAN, MODELS, runs=n, seed=s, method="simpy", progress=False
                ),
                n,
            )[0]
        )
        base = base or us
        print(f"  {n:>9,} runs  {us:7.2f} us/run  ({us / base:4.2f}x the 1,000-run cost)")
    print()
    print(f"SimPy path / hand SimPy          = {r_sim / r_hand:5.2f}   (target >= 0.75)")
    print(f"capacity study / hand SimPy      = {r_cap / r_hcap:5.2f}   (target >= 3, fork-join)")
    print(f"capacity study / hand SimPy      = {r_mm3 / r_hmm3:5.2f}   (target >= 3, M/M/3)")
    print(f"table lane / general core        = {r_cap / r_core:5.2f}   (fork-join)")
    print(f"table lane / general core        = {r_mm3 / r_mm3_core:5.2f}   (M/M/3)")
    print(f"fast path (defaults) / hand numpy = {r_fast / r_np:5.2f}   (target >= 0.5)")
    print(f"fast path runs/s (defaults)      = {r_fast:,.0f}   (target >= 1,000,000)")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
