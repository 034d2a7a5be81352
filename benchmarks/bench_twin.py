"""The digital twin's speed (SPEC §16, issue 23): one ``Twin.what_if`` over a 15-minute
window of about 10,000 spans (a point simulation and a bootstrap of B = 20 refits, each
simulated), target < 10 s. The "live" traffic is a simulated workload study.
Run: python benchmarks/bench_twin.py
"""

from __future__ import annotations

import time
import warnings

import orchkit as ok

PLAN = ok.Plan.model_validate(
    {
        "id": "p",
        "steps": [
            {
                "id": "a",
                "agentId": "tutor-agent-1",
                "action": "ask",
                "timeout": 400,
                "retryPolicy": {"maxRetries": 1, "backoffMs": 10},
            },
            {"id": "b", "agentId": "api-1", "action": "look", "dependencies": ["a"]},
        ],
    }
)
MODELS = ok.AgentModels.from_dict(
    {
        "agents": {
            "tutor-agent-*": {
                "capacity": 2,
                "error": 0.05,
                "latency": {"dist": "lognormal", "median": 80, "p95": 250},
            },
            "api-*": {"capacity": 4, "latency": {"dist": "gamma", "mean": 30, "cv": 0.5}},
        }
    }
)
WINDOW = 900_000  # 15 minutes


def main() -> None:
    rate = 10_000 / 2.0 / (WINDOW / 1000)  # ~2.05 spans a run: ~10,000 spans in the window
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mc = ok.monte_carlo(
            PLAN,
            MODELS,
            workload=ok.Workload(rate_per_s=rate, horizon_ms=WINDOW),
            seed=1,
            progress=False,
        )
    t0 = time.perf_counter()
    twin = ok.Twin(mc.spans, PLAN, models=MODELS, window_ms=WINDOW)
    t1 = time.perf_counter()
    p = twin.what_if(load=1.5, latency={"tutor-agent-*": 1.2}, seed=0)
    t2 = time.perf_counter()
    print(
        f"window: {len(twin.window):,} spans, {len(twin.window_runs):,} runs, "
        f"{twin.rate_per_s:.2f} runs/s"
    )
    print(f"Twin (first fit): {t1 - t0:.2f} s")
    print(
        f"what_if (point + B={twin.bootstrap} bootstrap refits and simulations): "
        f"{t2 - t1:.2f} s (target < 10 s)"
    )
    print(p.metrics.loc[["makespan_p95_ms", "success_rate"]].to_string())


if __name__ == "__main__":
    main()
