"""Live runtime overhead: orchkit vs asyncio's own floor, measured in the same run.

(a) asyncio: gather of N no-op coroutines; a chain of N dependent tasks.
(b) orchkit: a plan of N independent no-op steps (parallel); a chain of N dependent no-op
    steps. Prints us per step and orchkit's overhead over the floor (target <= 50 us per
    step at N = 10,000), and how soon a dependent starts after its dependency succeeded
    (target < 1 ms; the seed polled every 100 ms). Run: python benchmarks/bench_live.py [N]

A chain takes one task, not one per step: the task of an attempt whose end starts exactly
one attempt runs that one next (issue 27), so its per-step cost may be below asyncio's
chain of tasks (a negative overhead), and a dependent starts without a loop turn. The
ratios' target is issue 27's: <= 1.5x the floor (turn 2: 2.5x).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import time

import orchkit as ok

RESPONSE = ok.AgentResponse(action="noop", confidence=1.0)


class NoOp(ok.Agent):
    """Returns at once; with ``clock`` set, records when each step's call began and ended."""

    clock: dict | None = None

    async def process(self, action, input, context):
        if self.clock is not None:
            self.clock[context["step_id"]] = time.perf_counter()
        return RESPONSE


async def floor_gather(n: int) -> float:
    async def noop():
        return None

    gc.collect()  # every timing starts from the same collector state (see timed())
    t = time.perf_counter()
    await asyncio.gather(*(noop() for _ in range(n)))
    return time.perf_counter() - t


async def floor_chain(n: int) -> float:
    async def step(prev):
        if prev is not None:
            await prev

    gc.collect()
    t = time.perf_counter()
    prev = None
    for _ in range(n):
        prev = asyncio.ensure_future(step(prev))
    await prev
    return time.perf_counter() - t


def plans(n: int) -> tuple[ok.Plan, ok.Plan]:
    flat = ok.Plan.model_validate(
        {
            "id": "flat",
            "parallel": True,
            "steps": [{"id": f"s{i}", "agentId": "noop", "action": "noop"} for i in range(n)],
        }
    )
    chain = ok.Plan.model_validate(
        {
            "id": "chain",
            "parallel": True,
            "steps": [
                {
                    "id": f"s{i}",
                    "agentId": "noop",
                    "action": "noop",
                    "dependencies": [f"s{i - 1}"] if i else [],
                }
                for i in range(n)
            ],
        }
    )
    return flat, chain


async def orchkit_run(orch: ok.Orchestrator, plan: ok.Plan) -> tuple[float, ok.RunResult]:
    gc.collect()  # CPython's cyclic GC runs by allocation counts: without this, whether a
    # full collection falls inside a timing (and doubles it) depends on what ran before
    t = time.perf_counter()
    result = await orch.orchestrate(plan)
    return time.perf_counter() - t, result


async def main(n: int) -> None:
    flat, chain = plans(n)
    orch = ok.Orchestrator()
    agent = NoOp("noop")
    await orch.register_agent(agent)
    await orchkit_run(orch, flat)  # warm up (compiles and caches the plans)
    await orchkit_run(orch, chain)
    best = {k: float("inf") for k in ("gather", "chain", "flat", "ochain")}
    for _ in range(3):
        best["gather"] = min(best["gather"], await floor_gather(n))
        best["chain"] = min(best["chain"], await floor_chain(n))
        t, r_flat = await orchkit_run(orch, flat)
        best["flat"] = min(best["flat"], t)
        t, r_chain = await orchkit_run(orch, chain)
        best["ochain"] = min(best["ochain"], t)
    assert r_flat.success and r_chain.success
    us = {k: v / n * 1e6 for k, v in best.items()}
    print(f"N = {n:,} steps, best of 3, us per step")
    print(f"  asyncio gather of no-op coroutines  {us['gather']:8.2f}")
    print(
        f"  orchkit, N independent steps        {us['flat']:8.2f}   "
        f"overhead {us['flat'] - us['gather']:6.2f}"
    )
    print(f"  asyncio chain of dependent tasks    {us['chain']:8.2f}")
    print(
        f"  orchkit, chain of N dependent steps {us['ochain']:8.2f}   "
        f"overhead {us['ochain'] - us['chain']:6.2f}"
    )
    # real wake-up delay: from a step's call returning to its dependent's call beginning
    agent.clock = {}
    await orchkit_run(orch, chain)
    calls = [agent.clock[f"s{i}"] for i in range(n)]
    gaps = [(b - a) * 1e6 for a, b in zip(calls, calls[1:])]
    late = sum(g > 1000 for g in gaps)
    print(
        f"dependent starts after its dependency's call returned: median "
        f"{statistics.median(gaps):.1f} us, p99 {sorted(gaps)[int(0.99 * len(gaps))]:.1f} us, "
        f"max {max(gaps):.1f} us; {late} of {len(gaps)} over 1 ms (target < 1000 us; "
        "the rare outliers are CPython's cyclic GC pauses)"
    )
    worst = max(us["flat"] - us["gather"], us["ochain"] - us["chain"])
    print(f"worst overhead per step: {worst:.2f} us (target <= 50 us)")
    print(f"fan-out of {n:,}: {us['flat'] / us['gather']:4.2f}x the asyncio floor (target <= 1.5)")
    await orch.shutdown()


async def chain_ratio(n: int) -> None:
    """A chain of n dependent steps against asyncio's chain floor (best of 3)."""
    _, chain = plans(n)
    orch = ok.Orchestrator()
    await orch.register_agent(NoOp("noop"))
    await orchkit_run(orch, chain)
    floor = min([await floor_chain(n) for _ in range(3)])
    ours = min([(await orchkit_run(orch, chain))[0] for _ in range(3)])
    print(f"chain of {n:,}: {ours / floor:4.2f}x the asyncio floor (target <= 1.5)")
    await orch.shutdown()


async def scaling() -> None:
    """Per-step cost of a fan-out plan from 10^3 to 10^5 steps (must stay flat), beside
    asyncio's own gather floor at each size: both grow at 10^5, where one plan holds ~10^6
    objects and each of CPython's full (generation-2) collections walks them all."""
    print("live per-step cost as plans grow (fan-out, best of 3; must stay flat):")
    base = None
    for n in (1_000, 10_000, 100_000):
        flat, _ = plans(n)
        orch = ok.Orchestrator()
        await orch.register_agent(NoOp("noop"))
        await orchkit_run(orch, flat)
        us = min([(await orchkit_run(orch, flat))[0] for _ in range(3)]) / n * 1e6
        floor = min([await floor_gather(n) for _ in range(3)]) / n * 1e6
        base = base or us
        gc.disable()  # the same with the cyclic GC off: what is left is orchkit's own cost
        try:
            bare = min([(await orchkit_run(orch, flat))[0] for _ in range(3)]) / n * 1e6
        finally:
            gc.enable()
        print(
            f"  {n:>7,} steps  {us:6.2f} us/step  ({us / base:4.2f}x the 1,000-step cost; "
            f"{us / floor:4.2f}x asyncio's gather floor of {floor:5.2f}); GC off: {bare:5.2f}"
        )
        await orch.shutdown()


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    asyncio.run(main(n))
    asyncio.run(chain_ratio(2_000))
    asyncio.run(scaling())
