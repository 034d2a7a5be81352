"""Speed work on the SimPy path (issue 27) must not change a single number: the same seed
gives the same frames, bit for bit. The digests below were computed from the code before
that work (workload studies of the seed plans with breakers, timeouts, hedges, retries,
overload rules, a closed population, a plan mix; independent runs on the SimPy path)."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pandas as pd
import pytest

import orchkit as ok

pytestmark = pytest.mark.timeout(120)

BREAKERS = {
    "tutor-agent-*": {
        "window": 20,
        "minCalls": 5,
        "failureRate": 0.3,
        "openMs": 3000,
        "halfOpenCalls": 2,
    },
    "learning-agent-*": {
        "window": 10,
        "minCalls": 5,
        "failureRate": 0.2,
        "slowCallMs": 200,
        "slowCallRate": 0.5,
        "openMs": 1000,
        "halfOpenCalls": 2,
    },
}
OVERLOAD = {
    "admission": {
        "tutor-agent-*": {
            "limit": {"kind": "aimd", "initialLimit": 3, "minLimit": 1, "maxLimit": 8},
            "discipline": "adaptive_lifo",
            "codel": {"targetMs": 50, "intervalMs": 500},
            "maxLength": 20,
        },
        "learning-agent-*": {
            "limit": {"kind": "gradient2", "initialLimit": 4, "minLimit": 1, "maxLimit": 16},
            "discipline": "lifo",
            "maxLength": 10,
        },
    },
    "throttle": {"k": 1.5, "windowMs": 60000},
    "autoscale": {
        "speech-agent-*": {
            "metric": "in_flight",
            "target": 2,
            "min": 1,
            "max": 6,
            "pollMs": 2000,
            "provisionMs": 3000,
            "scaleDownStabilizationMs": 20000,
        }
    },
}


def one_step() -> tuple[ok.Plan, ok.AgentModels]:
    """The simplest queue a planner writes: one step, M/M/3 (exponential 40 ms)."""
    plan = ok.Plan.model_validate(
        {"id": "one", "steps": [{"id": "s", "agentId": "srv", "action": "x"}]}
    )
    latency = {"dist": "exponential", "mean": 40.0}
    models = ok.AgentModels.from_dict({"agents": {"srv": {"capacity": 3, "latency": latency}}})
    return plan, models


def hedged() -> ok.Plan:
    """Hedges, step timeouts, retries and a plan deadline in one plan."""
    return ok.Plan.model_validate(
        {
            "id": "hedged",
            "parallel": True,
            "timeout": 5000,
            "steps": [
                {
                    "id": "a",
                    "agentId": "tutor-agent-1",
                    "action": "prepare_hints",
                    "timeout": 3000,
                    "hedge": {"delayMs": 1500, "maxHedges": 2},
                    "retryPolicy": {"maxRetries": 2, "backoffMs": 100},
                },
                {
                    "id": "b",
                    "agentId": "learning-agent-1",
                    "action": "fetch_external_data",
                    "timeout": 800,
                    "retryPolicy": {"maxRetries": 3, "backoffMs": 50},
                },
                {
                    "id": "c",
                    "agentId": "speech-agent-1",
                    "action": "analyze_speech",
                    "dependencies": ["a", "b"],
                    "timeout": 2000,
                },
            ],
        }
    )


def study(case: str) -> ok.MonteCarloResult:
    models = ok.examples.models()
    wl = ok.Workload(rate_per_s=4.0, horizon_ms=120_000)
    if case == "mm3":
        return ok.monte_carlo(
            *one_step(),
            seed=1,
            progress=False,
            workload=ok.Workload(rate_per_s=60, horizon_ms=60_000),
        )
    if case == "mm3-replications":
        return ok.monte_carlo(
            *one_step(),
            seed=2,
            progress=False,
            replications=3,
            workload=ok.Workload(rate_per_s=60, horizon_ms=20_000),
        )
    if case.startswith("breakers-"):
        plan = ok.examples.plan(case.removeprefix("breakers-"))
        policies = {"breakers": BREAKERS}
        return ok.monte_carlo(plan, models, seed=11, progress=False, policies=policies, workload=wl)
    if case.startswith("overload-"):
        plan = ok.examples.plan(case.removeprefix("overload-"))
        policies = {**OVERLOAD, "breakers": BREAKERS}
        wl = ok.Workload(rate_per_s=6.0, horizon_ms=120_000)
        return ok.monte_carlo(plan, models, seed=31, progress=False, policies=policies, workload=wl)
    if case == "closed":
        wl = ok.Workload(population=30, think_ms=2000, horizon_ms=100_000)
        plan = ok.examples.plan("ml_with_gpt4_fallback")
        return ok.monte_carlo(plan, models, seed=21, progress=False, workload=wl)
    if case == "mix":
        plans = tuple((ok.examples.plan(n), 1.0 + i) for i, n in enumerate(ok.examples.names()))
        wl = ok.Workload(rate_per_s=5.0, horizon_ms=100_000, plans=plans)
        return ok.monte_carlo(None, models, seed=5, keep_spans=50, progress=False, workload=wl)
    if case == "hedged":
        return ok.monte_carlo(
            hedged(), models, seed=7, progress=False, policies={"breakers": BREAKERS}, workload=wl
        )
    if case == "hedged-closed-overload":
        wl = ok.Workload(population=10, think_ms=500, horizon_ms=100_000, give_up_ms=4000)
        return ok.monte_carlo(
            hedged(), models, seed=8, progress=False, policies=OVERLOAD, workload=wl
        )
    if case == "independent":
        plan = ok.examples.plan("retry_example")
        return ok.monte_carlo(
            plan,
            models,
            runs=700,
            seed=3,
            method="simpy",
            policies={"breakers": BREAKERS},
            progress=False,
        )
    raise AssertionError(case)


def frame_digest(frame: pd.DataFrame) -> str:
    """Every value (floats bit for bit), column name and dtype of ``frame``."""
    h = hashlib.sha256()
    for c in frame.columns:
        col = frame[c]
        h.update(str(c).encode())
        if col.dtype.kind in "biuf":
            h.update(np.ascontiguousarray(col.to_numpy()).tobytes())
        else:
            h.update("\x1f".join(map(str, col.astype(object))).encode())
        h.update(str(col.dtype).encode())
    return h.hexdigest()[:16]


def digests(case: str) -> tuple[str, ...]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mc = study(case)
        metrics = mc.summary().metrics
    frames = (mc.runs, mc.spans, mc.breakers, mc.overload, metrics)
    return tuple(frame_digest(f) for f in frames)


# (runs, spans, breakers, overload, summary metrics)
PINNED: dict[str, tuple[str, ...]] = {
    "mm3": (
        "eea951198f5dbc9c",
        "6e0f79ded0d303fe",
        "f88c61b2f6f48786",
        "d0e957548b95e817",
        "d03b89719f88a231",
    ),
    "mm3-replications": (
        "6c7fc13c4ca5ab1a",
        "4e0b1fba0fc7d6b5",
        "f88c61b2f6f48786",
        "d0e957548b95e817",
        "154a313ac2c5affb",
    ),
    "breakers-graceful_degradation": (
        "207cbc4f4d4b5b22",
        "94f58eb2fff6178e",
        "afeae432f4a112ba",
        "d0e957548b95e817",
        "58ac96633e6da869",
    ),
    "breakers-learning_activity": (
        "a0350b3573ea76a0",
        "4c193e54439c943b",
        "4fcd53f750e11436",
        "d0e957548b95e817",
        "80eb04779b84e6ad",
    ),
    "breakers-ml_with_gpt4_fallback": (
        "5ec96ef251262a95",
        "90449baab6900612",
        "d9ed5c15adb6c451",
        "d0e957548b95e817",
        "0e78d435aaba5967",
    ),
    "breakers-parallel_analysis": (
        "c2d8a325bd877db5",
        "8d4eb86c5ff34ae0",
        "3abc9c3b0b588c0d",
        "d0e957548b95e817",
        "4823c7d44949ad27",
    ),
    "breakers-retry_example": (
        "a3b88dafe61f419a",
        "ef8678ca7588d98e",
        "15d0454444172cda",
        "d0e957548b95e817",
        "25ca04d49ab29205",
    ),
    "breakers-session_initialization": (
        "d2a9702d2581762e",
        "5895eae984ccfc82",
        "f88c61b2f6f48786",
        "d0e957548b95e817",
        "5968958452947110",
    ),
    "overload-parallel_analysis": (
        "6ee0d8bec10f8fba",
        "f246884c072ccdb8",
        "a46e943832cdd4f3",
        "84443fc21a719967",
        "4b41758c00ab3e2a",
    ),
    "overload-graceful_degradation": (
        "bf8206c1dcfca3a8",
        "5dc59b57c6755727",
        "6a6945e73269080b",
        "6eb8fa1175ca66a8",
        "d0a0be0f3b95c50b",
    ),
    "overload-session_initialization": (
        "f0319b8dd6ccead1",
        "7ae2bcf5caba7b7c",
        "f88c61b2f6f48786",
        "4a3549ec2aafbe82",
        "c49d88c68a6f1a0c",
    ),
    "closed": (
        "770134698af9bb0e",
        "9b360e0fb7ca65ec",
        "f88c61b2f6f48786",
        "d0e957548b95e817",
        "d84a8faa4aa0e957",
    ),
    "mix": (
        "10c3c177e431433e",
        "abe6510acf5a7399",
        "f88c61b2f6f48786",
        "d0e957548b95e817",
        "dbdd37901cd6f99d",
    ),
    "hedged": (
        "c637ae20b2a9e74b",
        "a4f829634f83b890",
        "ba01d43b3f5a09b1",
        "d0e957548b95e817",
        "ec441c0ce96aadba",
    ),
    "hedged-closed-overload": (
        "9a0601faa8c00a2d",
        "986c3a0dc8c5f729",
        "f88c61b2f6f48786",
        "e62df4aed270b550",
        "d51ce41612af4b6b",
    ),
    "independent": (
        "a331098d5b7cce0d",
        "7d10e3fad6b10302",
        "f88c61b2f6f48786",
        "d0e957548b95e817",
        "c27389574e79495b",
    ),
}


@pytest.mark.parametrize("case", list(PINNED))
def test_same_seed_gives_the_pinned_frames(case):
    assert digests(case) == PINNED[case]
