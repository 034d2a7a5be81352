"""The vectorised fast path (orchkit._runtimes.fast) against the SimPy path of the scheduling core:
statistical agreement on stochastic plans, exact agreement on deterministic ones, exact
critical paths, closed forms, determinism and frame shapes."""

from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

import orchkit as ok

# hangs without timeouts are exercised on purpose here
from orchkit import PlanValidationError
from orchkit._engine.prepared import Prepared
from orchkit._runtimes.fast import BLOCK_RUNS, fast_runs, supports
from orchkit._spec.inputs import StudyInputs

pytestmark = pytest.mark.filterwarnings("ignore::orchkit.HangWarning")


def fast(plan, models, *args, **kwargs):
    """The fast path on a plan and models through the front door."""
    return fast_runs(Prepared.of(StudyInputs.of(plan, models)), *args, **kwargs)


ROOT = Path(__file__).resolve().parents[1]
LOGN = {"dist": "lognormal", "median": 250, "p95": 900}


def uncapped_default_models() -> ok.AgentModels:
    """data/agents/default.yaml without capacity limits (the fast path's domain)."""
    data = yaml.safe_load((ROOT / "data" / "agents" / "default.yaml").read_text())
    for entry in data["agents"].values():
        entry.pop("capacity", None)
    return ok.AgentModels.from_dict(data)


def mc(plan, models, method, runs, seed=7, keep_spans=False):
    return ok.monte_carlo(
        plan, models, runs=runs, seed=seed, method=method, keep_spans=keep_spans, progress=False
    )


# ------------------------------------------------------------------ statistical agreement

STAT_PLANS = {
    "seed_parallel_analysis": (
        ok.Plan.load(ROOT / "data" / "plans" / "parallel_analysis.json"),
        uncapped_default_models(),
    ),
    "sequential_dependency_listed_after_dependent": (
        ok.Plan.model_validate(
            {
                "id": "seq",
                "parallel": False,
                "steps": [
                    {
                        "id": "report",
                        "agentId": "a",
                        "action": "slow",
                        "dependencies": ["fetch", "score"],
                    },
                    {
                        "id": "score",
                        "agentId": "a",
                        "action": "fast",
                        "dependencies": ["fetch"],
                        "retryPolicy": {"maxRetries": 1, "backoffMs": 30},
                    },
                    {
                        "id": "fetch",
                        "agentId": "b",
                        "action": "io",
                        "retryPolicy": {"maxRetries": 2, "backoffMs": 50},
                    },
                    {"id": "audit", "agentId": "b", "action": "fast"},
                ],
            }
        ),
        ok.AgentModels.from_dict(
            {
                "agents": {
                    "*": {
                        "latency": LOGN,
                        "error": 0.1,
                        "actions": {
                            "fast": {"latency": {"dist": "gamma", "mean": 40, "cv": 0.5}},
                            "io": {"latency": {"dist": "exponential", "mean": 120}, "error": 0.3},
                        },
                    }
                }
            }
        ),
    ),
    "timeouts_hangs_exponential_jitter": (
        ok.Plan.model_validate(
            {
                "id": "tmo",
                "parallel": True,
                "steps": [
                    {
                        "id": s,
                        "agentId": "a",
                        "action": s,
                        "timeout": 400,
                        "dependencies": ["x"] if s == "z" else [],
                        "retryPolicy": {
                            "maxRetries": 3,
                            "backoffMs": 50,
                            "strategy": "exponential",
                            "maxBackoffMs": 150,
                            "jitter": 0.5,
                        },
                    }
                    for s in ("x", "y", "z")
                ],
            }
        ),
        ok.AgentModels.from_dict(
            {
                "agents": {
                    "a": {
                        "latency": LOGN,
                        "error": 0.1,
                        "hang": 0.05,
                        "actions": {"y": {"hang": 0.2}},
                    }
                }
            }
        ),
    ),
    "deadline_often_fires": (
        ok.Plan.model_validate(
            {
                "id": "dl",
                "parallel": True,
                "timeout": 700,
                "steps": [
                    {
                        "id": "a",
                        "agentId": "a",
                        "action": "x",
                        "retryPolicy": {"maxRetries": 2, "backoffMs": 100},
                    },
                    {"id": "b", "agentId": "a", "action": "x", "dependencies": ["a"]},
                    {"id": "c", "agentId": "a", "action": "x"},
                ],
            }
        ),
        ok.AgentModels.from_dict({"agents": {"a": {"latency": LOGN, "error": 0.1}}}),
    ),
    "fail_fast": (
        ok.Plan.model_validate(
            {
                "id": "ff",
                "parallel": True,
                "failFast": True,
                "steps": [
                    {
                        "id": "a",
                        "agentId": "a",
                        "action": "x",
                        "retryPolicy": {"maxRetries": 1, "backoffMs": 100, "strategy": "fixed"},
                    },
                    {"id": "b", "agentId": "a", "action": "x"},
                    {"id": "c", "agentId": "a", "action": "x", "dependencies": ["a"]},
                    {"id": "d", "agentId": "a", "action": "x", "dependencies": ["b", "c"]},
                ],
            }
        ),
        ok.AgentModels.from_dict({"agents": {"a": {"latency": LOGN, "error": 0.15}}}),
    ),
    "fallback_chain": (
        ok.Plan.model_validate(
            {
                "id": "main",
                "timeout": 600,
                "steps": [
                    {
                        "id": "m",
                        "agentId": "a",
                        "action": "x",
                        "retryPolicy": {"maxRetries": 1, "backoffMs": 50},
                    }
                ],
                "fallbackPlan": {
                    "id": "fb1",
                    "timeout": 800,
                    "parallel": True,
                    "steps": [
                        {"id": "f1", "agentId": "a", "action": "x"},
                        {"id": "f2", "agentId": "a", "action": "x"},
                    ],
                    "fallbackPlan": {
                        "id": "fb2",
                        "steps": [{"id": "g", "agentId": "a", "action": "cheap"}],
                    },
                },
            }
        ),
        ok.AgentModels.from_dict(
            {
                "agents": {
                    "a": {
                        "latency": LOGN,
                        "error": 0.25,
                        "actions": {
                            "cheap": {
                                "latency": {"dist": "uniform", "low": 5, "high": 20},
                                "error": 0.01,
                            }
                        },
                    }
                }
            }
        ),
    ),
    "hangs_without_any_timeout": (  # runs that never end: failed at the driver's last event
        ok.Plan.model_validate(
            {
                "id": "hung",
                "parallel": True,
                "steps": [
                    {
                        "id": "a",
                        "agentId": "a",
                        "action": "x",
                        "timeout": 500,
                        "retryPolicy": {"maxRetries": 1, "backoffMs": 10},
                    },
                    {"id": "b", "agentId": "a", "action": "h"},
                ],
            }
        ),
        ok.AgentModels.from_dict(
            {"agents": {"a": {"latency": LOGN, "error": 0.1, "actions": {"h": {"hang": 0.15}}}}}
        ),
    ),
}

RATES = ("success_rate", "timeout_rate", "fallback_rate")
MEANS = (
    "makespan_mean_ms",
    "makespan_p50_ms",
    "makespan_p95_ms",
    "attempts_per_run",
    "retries_per_run",
)


def _close(metrics_a: pd.DataFrame, metrics_b: pd.DataFrame, metric: str, k: float) -> bool:
    """|a - b| <= k * sqrt(h_a^2 + h_b^2), h = half-width of each 95% interval."""
    (va, la, ha), (vb, lb, hb) = (
        m.loc[metric, ["value", "ci_low", "ci_high"]].astype(float) for m in (metrics_a, metrics_b)
    )
    half = math.hypot((ha - la) / 2, (hb - lb) / 2)
    return abs(va - vb) <= k * half + 1e-9


@pytest.mark.parametrize("name", list(STAT_PLANS))
def test_fast_and_simpy_agree_statistically(name):
    plan, models = STAT_PLANS[name]
    slow = mc(plan, models, "simpy", 6000, seed=11)
    fast = mc(plan, models, "fast", 60_000, seed=12)
    assert (slow.method, fast.method) == ("simpy", "fast")
    a, b = slow.summary().metrics, fast.summary().metrics
    # 2 combined half-widths ~ 4 standard errors: meaningful, and no false alarm in practice
    bad = [m for m in MEANS + RATES if not _close(a, b, m, 2.0)]
    assert not bad, f"{name}: {bad}\n{a}\n{b}"
    # the whole makespan distribution (two-sample Kolmogorov-Smirnov)
    ks = stats.ks_2samp(slow.runs["makespan_ms"], fast.runs["makespan_ms"])
    assert ks.pvalue > 1e-3, (name, ks)
    # the same mix of statuses, final plans and step timeouts per run
    for col in ("status", "final_plan_id"):
        pa = slow.runs[col].astype(str).value_counts(normalize=True)
        pb = fast.runs[col].astype(str).value_counts(normalize=True)
        both = pa.index.union(pb.index)
        pa, pb = pa.reindex(both, fill_value=0.0), pb.reindex(both, fill_value=0.0)
        tol = 4 * np.sqrt(pa * (1 - pa) / len(slow.runs) + pb * (1 - pb) / len(fast.runs))
        assert ((pa - pb).abs() <= tol + 1e-3).all(), (name, col, pa, pb)
    ta, tb = slow.runs["timeouts"].mean(), fast.runs["timeouts"].mean()
    sa = slow.runs["timeouts"].std() / math.sqrt(len(slow.runs))
    assert abs(ta - tb) <= 5 * sa + 1e-9, (name, ta, tb)
    # utilisation: each agent's busy time per run
    for agent, busy in slow.busy_ms.items():
        per_a, per_b = busy / len(slow.runs), fast.busy_ms[agent] / len(fast.runs)
        assert per_b == pytest.approx(per_a, rel=0.05), (name, agent)


# ------------------------------------------------------------------ exact agreement


def _random_plan(r: random.Random, pid: str, depth: int = 0) -> tuple[dict, dict]:
    """A random small plan and per-action deterministic models (constant latency, error and
    hang probabilities 0 or 1), so that both paths are deterministic and comparable."""
    n = r.randint(1, 5)
    steps, actions = [], {}
    rank = list(range(n))
    r.shuffle(rank)  # dependencies follow a random order: often listed after the dependent
    for i in range(n):
        action = f"{pid}_s{i}"
        error = r.choice([0, 0, 1])
        actions[action] = {
            "latency": {"dist": "constant", "value": round(r.uniform(1, 100), 3)},
            "error": error,
            "hang": 1 if error == 0 and r.random() < 0.15 else 0,
        }
        step = {
            "id": f"s{i}",
            "agentId": f"agent-{r.randint(0, 1)}",
            "action": action,
            "dependencies": [f"s{j}" for j in range(n) if rank[j] < rank[i] and r.random() < 0.4],
        }
        if r.random() < 0.5:
            step["retryPolicy"] = {
                "maxRetries": r.randint(0, 3),
                "backoffMs": round(r.uniform(0, 30), 3),
                "strategy": r.choice(["linear", "exponential", "fixed"]),
                **({"maxBackoffMs": 20} if r.random() < 0.3 else {}),
                **({"retryOn": [r.choice(["error", "timeout"])]} if r.random() < 0.3 else {}),
            }
        if r.random() < 0.4:
            step["timeout"] = round(r.uniform(1, 100), 3)
        steps.append(step)
    plan = {"id": pid, "steps": steps, "parallel": r.random() < 0.5, "failFast": r.random() < 0.3}
    if r.random() < 0.5:
        plan["timeout"] = round(r.uniform(20, 300), 3)
    if depth < 2 and r.random() < 0.4:
        plan["fallbackPlan"], more = _random_plan(r, pid + "f", depth + 1)
        actions.update(more)
    return plan, actions


def test_fast_equals_simpy_exactly_on_deterministic_plans():
    seen = set()
    for k in range(200):
        data, actions = _random_plan(random.Random(k), "p")
        plan = ok.Plan.model_validate(data)
        models = ok.AgentModels.from_dict(
            {
                "agents": {
                    "agent-*": {"latency": {"dist": "constant", "value": 1}, "actions": actions}
                }
            }
        )
        s, f = (
            mc(plan, models, "simpy", 1, keep_spans=True),
            mc(plan, models, "fast", 1, keep_spans=True),
        )
        a, b = s.runs.iloc[0], f.runs.iloc[0]
        for col in ("status", "attempts", "retries", "timeouts", "fallback_used", "final_plan_id"):
            assert a[col] == b[col], (k, col, data)
        assert b["end_ms"] == pytest.approx(a["end_ms"], abs=1e-9), (k, data)
        key = ["plan_id", "start_ms", "step_id", "attempt"]
        sa = s.spans.sort_values(key).reset_index(drop=True)
        sb = f.spans.sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(sa, sb, check_exact=False, rtol=0, atol=1e-9, obj=str(k))
        assert f.busy_ms == pytest.approx(
            {**dict.fromkeys(f.busy_ms, 0.0), **s.busy_ms}, abs=1e-9
        ), k
        seen.add(a["status"])
        seen.update(sa["outcome"])
        seen.update(e.split(":")[0] for e in sa["error"].dropna())
    # the generator reaches every outcome and every reason for a cancellation
    assert seen >= {
        "succeeded",
        "failed",
        "timed_out",
        "error",
        "timeout",
        "cancelled",
        "never finished",
        "simulated error",
    }


def test_hung_run_ends_failed_at_the_last_thing_that_happened_in_it():
    """A run that can never end is failed at the last moment anything happened in it: here
    the fallback's hung attempt starting at 50 ms (the main plan's deadline); the retry
    timer the deadline dropped (due at 110 ms) does not count."""
    plan = ok.Plan.model_validate(
        {
            "id": "main",
            "timeout": 50,
            "steps": [
                {
                    "id": "a",
                    "agentId": "x",
                    "action": "flaky",
                    "retryPolicy": {"maxRetries": 3, "backoffMs": 100},
                }
            ],
            "fallbackPlan": {"id": "fb", "steps": [{"id": "h", "agentId": "x", "action": "hang"}]},
        }
    )
    models = ok.AgentModels.from_dict(
        {
            "agents": {
                "x": {
                    "latency": {"dist": "constant", "value": 10},
                    "error": 1,
                    "actions": {"hang": {"hang": 1, "error": 0}},
                }
            }
        }
    )
    for method in ("simpy", "fast"):
        r = mc(plan, models, method, 3, keep_spans=True)
        assert list(r.runs["status"].astype(str)) == ["failed"] * 3
        assert list(r.runs["end_ms"]) == [50.0] * 3
        last = r.spans[r.spans["run_id"] == 0].iloc[-1]
        assert (last["step_id"], last["outcome"], last["start_ms"], last["end_ms"]) == (
            "h",
            "cancelled",
            50.0,
            50.0,
        )
        assert last["error"].startswith("never finished")
        assert r.busy_ms["x"] == pytest.approx(3 * 10)


# ------------------------------------------------------------------ exact critical paths

CONST = {"dist": "constant", "value": 1}


def const_models(**latency_ms: float) -> ok.AgentModels:
    """Constant latencies per action; actions named 'fail*' always error, others never."""
    return ok.AgentModels.from_dict(
        {
            "agents": {
                "w": {
                    "latency": CONST,
                    "actions": {
                        a: {
                            "latency": {"dist": "constant", "value": v},
                            "error": 1 if a.startswith("fail") else 0,
                        }
                        for a, v in latency_ms.items()
                    },
                }
            }
        }
    )


def test_constant_latency_dag_makespan_is_its_critical_path():
    plan = ok.Plan.model_validate(
        {
            "id": "dag",
            "parallel": True,
            "steps": [
                {"id": "e", "agentId": "w", "action": "e", "dependencies": ["c", "d"]},
                {"id": "a", "agentId": "w", "action": "a"},
                {"id": "b", "agentId": "w", "action": "b"},
                {"id": "c", "agentId": "w", "action": "c", "dependencies": ["a"]},
                {"id": "d", "agentId": "w", "action": "d", "dependencies": ["b"]},
            ],
        }
    )
    r = mc(plan, const_models(a=100, b=30, c=50, d=200, e=400), "fast", 5, keep_spans=True)
    assert list(r.runs["makespan_ms"]) == [630.0] * 5  # b -> d -> e: 30 + 200 + 400
    starts = r.spans[r.spans["run_id"] == 4].set_index("step_id")["start_ms"].to_dict()
    assert starts == {"a": 0, "b": 0, "c": 100, "d": 30, "e": 230}
    # the same plan, sequential: one at a time in "first ready step in plan order"
    seq = plan.model_copy(update={"parallel": False})
    r = mc(seq, const_models(a=100, b=30, c=50, d=200, e=400), "fast", 2, keep_spans=True)
    assert list(r.spans[r.spans["run_id"] == 0]["step_id"]) == ["a", "b", "c", "d", "e"]
    assert list(r.runs["makespan_ms"]) == [780.0] * 2


@pytest.mark.parametrize(
    "policy, delays",
    [
        ({"strategy": "linear"}, [100, 200, 300]),
        ({"strategy": "exponential"}, [100, 200, 400]),
        ({"strategy": "fixed"}, [100, 100, 100]),
        ({"strategy": "exponential", "maxBackoffMs": 150}, [100, 150, 150]),
    ],
)
def test_backoff_delays_are_on_the_critical_path(policy, delays):
    """A step that always errors exhausts its retries (attempt k+1 starts after the k-th
    delay); the plan fails then, and its fallback (which never errors) runs from there."""
    plan = ok.Plan.model_validate(
        {
            "id": "main",
            "parallel": True,
            "steps": [
                {
                    "id": "flaky",
                    "agentId": "w",
                    "action": "fail",
                    "retryPolicy": {"maxRetries": 3, "backoffMs": 100, **policy},
                },
                {"id": "after", "agentId": "w", "action": "ok", "dependencies": ["flaky"]},
                {"id": "side", "agentId": "w", "action": "ok"},
            ],
            "fallbackPlan": {"id": "fb", "steps": [{"id": "g", "agentId": "w", "action": "ok"}]},
        }
    )
    for method in ("fast", "simpy"):
        r = mc(plan, const_models(fail=10, ok=25), method, 3, keep_spans=True)
        fail_end = 4 * 10 + sum(delays)
        assert list(r.runs["makespan_ms"]) == [fail_end + 25.0] * 3, method
        row = r.runs.iloc[0]
        assert (str(row["status"]), row["final_plan_id"], row["attempts"], row["retries"]) == (
            "succeeded",
            "fb",
            6,
            3,
        )
        spans = r.spans[r.spans["run_id"] == 0]
        flaky = spans[spans["step_id"] == "flaky"]
        assert list(flaky["start_ms"]) == list(np.cumsum([0] + [10 + d for d in delays]))
        assert "after" not in set(spans["step_id"])  # skipped: never started


def test_step_timeout_and_deadline_exact():
    models = const_models(slow=100)
    steps = [
        {
            "id": "s",
            "agentId": "w",
            "action": "slow",
            "timeout": 60,
            "retryPolicy": {"maxRetries": 1, "backoffMs": 10},
        }
    ]
    r = mc(ok.Plan.model_validate({"id": "p", "steps": steps}), models, "fast", 1, keep_spans=True)
    assert (str(r.runs.loc[0, "status"]), r.runs.loc[0, "end_ms"], r.runs.loc[0, "timeouts"]) == (
        "failed",
        130.0,
        2,
    )
    assert list(r.spans["outcome"]) == ["timeout", "timeout"]
    assert r.spans["error"].iloc[1] == "step 's' attempt 2 timed out after 60 ms (running)"
    r = mc(
        ok.Plan.model_validate({"id": "p", "timeout": 100, "steps": steps}),
        models,
        "fast",
        1,
        keep_spans=True,
    )
    assert (str(r.runs.loc[0, "status"]), r.runs.loc[0, "end_ms"], r.runs.loc[0, "timeouts"]) == (
        "timed_out",
        100.0,
        1,
    )
    assert list(r.spans["outcome"]) == ["timeout", "cancelled"]
    assert list(r.spans["end_ms"]) == [60.0, 100.0]
    assert r.spans["error"].iloc[1] == "cancelled: Orchestration plan p timed out"
    assert r.busy_ms["w"] == 60 + 30


# ------------------------------------------------------------------ closed forms


def test_closed_forms_of_retries_timeouts_and_parallel_maxima():
    n = 400_000
    p, retries = 0.3, 2
    plan = ok.Plan.model_validate(
        {
            "id": "r",
            "steps": [
                {
                    "id": "s",
                    "agentId": "a",
                    "action": "x",
                    "retryPolicy": {"maxRetries": retries, "backoffMs": 0},
                }
            ],
        }
    )
    models = ok.AgentModels.from_dict({"agents": {"a": {"latency": CONST, "error": p}}})
    runs = mc(plan, models, "fast", n).runs
    success = 1 - p ** (retries + 1)
    assert (runs["status"] == "succeeded").mean() == pytest.approx(
        success, abs=5 * math.sqrt(success * (1 - success) / n)
    )
    assert runs["attempts"].mean() == pytest.approx((1 - p ** (retries + 1)) / (1 - p), rel=0.01)
    # P(timeout) = exp(-T / mean) for an exponential step
    mean, limit = 200.0, 300.0
    plan = ok.Plan.model_validate(
        {"id": "t", "steps": [{"id": "s", "agentId": "a", "action": "x", "timeout": limit}]}
    )
    models = ok.AgentModels.from_dict(
        {"agents": {"a": {"latency": {"dist": "exponential", "mean": mean}}}}
    )
    runs = mc(plan, models, "fast", n).runs
    q = math.exp(-limit / mean)
    assert runs["timeouts"].mean() == pytest.approx(q, abs=5 * math.sqrt(q * (1 - q) / n))
    # the mean of the max of k i.i.d. exponentials is mean * H_k
    k = 5
    plan = ok.Plan.model_validate(
        {
            "id": "m",
            "parallel": True,
            "steps": [{"id": f"s{i}", "agentId": "a", "action": "x"} for i in range(k)],
        }
    )
    runs = mc(plan, models, "fast", n).runs
    assert runs["makespan_ms"].mean() == pytest.approx(
        mean * sum(1 / i for i in range(1, k + 1)), rel=0.01
    )


# ------------------------------------------------------------------ frames, determinism


def test_same_seed_identical_frames_and_blocks_are_independent():
    plan, models = STAT_PLANS["fallback_chain"]
    runs = BLOCK_RUNS + 300
    a = fast(plan, models, 5, runs, 500, progress=False)
    b = fast(plan, models, 5, runs, 500, progress=False)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    assert a[2] == b[2]
    assert list(a[0]["run_id"]) == list(range(runs))
    assert a[1]["run_id"].max() == 499 and a[1]["run_id"].is_monotonic_increasing
    # keep_spans does not change the runs; kept spans are those of keep_spans=True
    c = fast(plan, models, 5, 2000, False, progress=False)
    d = fast(plan, models, 5, 2000, True, progress=False)
    pd.testing.assert_frame_equal(c[0], d[0])
    assert c[1].empty and list(c[1].columns) == ok.SPAN_COLUMNS
    more = fast(plan, models, 5, runs, 1000, progress=False)[1]
    pd.testing.assert_frame_equal(a[1], more[more["run_id"] < 500].reset_index(drop=True))
    # another seed, another result; the second block is not a copy of the first
    e = fast(plan, models, 6, 2000, False, progress=False)
    assert not e[0]["makespan_ms"].equals(c[0]["makespan_ms"])
    mk = a[0]["makespan_ms"].to_numpy()
    assert not np.array_equal(mk[:300], mk[BLOCK_RUNS:])
    # spans are consistent with the runs: attempts per run, and ends
    kept = a[0][a[0]["run_id"] < 500]
    counts = a[1].groupby("run_id").size()
    assert (counts.to_numpy() == kept["attempts"].to_numpy()).all()
    assert (a[1].groupby("run_id")["end_ms"].max() <= kept["end_ms"].to_numpy() + 1e-9).all()


def test_frames_have_the_simpy_paths_columns_and_dtypes():
    plan, models = STAT_PLANS["fail_fast"]
    s = mc(plan, models, "simpy", 3000, keep_spans=True)
    f = mc(plan, models, "fast", 3000, keep_spans=True)
    assert list(f.runs.columns) == ok.RUN_COLUMNS and list(f.spans.columns) == ok.SPAN_COLUMNS
    pd.testing.assert_series_equal(s.runs.dtypes, f.runs.dtypes)
    pd.testing.assert_series_equal(s.spans.dtypes, f.spans.dtypes)
    assert (f.spans["queued_ms"] == f.spans["start_ms"]).all()
    assert (f.runs[["arrival_ms", "start_ms"]] == 0).all().all()
    assert (f.runs["end_ms"] == f.runs["makespan_ms"]).all()
    assert set(f.spans["outcome"]) == set(s.spans["outcome"])
    assert set(f.spans["error"].dropna()) == set(s.spans["error"].dropna())


def test_supports_and_automatic_choice():
    steps = [{"id": f"s{i}", "agentId": "a", "action": "x"} for i in range(3)]
    models = ok.AgentModels.from_dict({"agents": {"a": {"latency": LOGN}}})
    capped = ok.AgentModels.from_dict({"agents": {"a": {"latency": LOGN, "capacity": 2}}})
    fine = ok.Plan.model_validate(
        {"id": "p", "parallel": True, "maxConcurrency": 3, "steps": steps}
    )
    limited = ok.Plan.model_validate(
        {"id": "p", "parallel": True, "maxConcurrency": 2, "steps": steps}
    )
    behind = ok.Plan.model_validate({"id": "q", "steps": steps, "fallbackPlan": limited})
    assert supports(fine) and supports(fine.model_copy(update={"parallel": False}))
    assert not supports(limited) and not supports(behind)
    assert mc(fine, models, "auto", 10).method == "fast"
    assert mc(limited, models, "auto", 10).method == "simpy"
    assert mc(fine, capped, "auto", 10).method == "simpy"
    with pytest.raises(PlanValidationError, match="does not apply"):
        mc(behind, models, "fast", 10)
    with pytest.raises(ValueError, match="maxConcurrency"):
        fast(limited, models, 0, 10)


def test_default_keeps_a_sample_of_spans_and_every_run():
    """By default an independent-run study keeps the spans of its first SPAN_SAMPLE_RUNS runs
    (a fair sample of i.i.d. runs) and every run row; a workload study keeps every span."""
    from orchkit._studies.montecarlo import SPAN_SAMPLE_RUNS

    plan = ok.Plan.model_validate(
        {"id": "p", "steps": [{"id": "a", "agentId": "x", "action": "go"}]}
    )
    models = ok.AgentModels.from_dict({"agents": {"x": {"latency": LOGN}}})
    n = SPAN_SAMPLE_RUNS + 500
    for method in ("fast", "simpy"):
        res = ok.monte_carlo(plan, models, runs=n, seed=3, method=method, progress=False)
        assert len(res.runs) == n
        assert sorted(res.spans["run_id"].unique()) == list(range(SPAN_SAMPLE_RUNS))
        full = ok.monte_carlo(
            plan, models, runs=n, seed=3, method=method, keep_spans=True, progress=False
        )
        assert full.spans["run_id"].nunique() == n
        pd.testing.assert_frame_equal(res.runs, full.runs)
    study = ok.monte_carlo(
        plan,
        {"agents": {"x": {"latency": LOGN, "capacity": 1}}},
        seed=3,
        workload=ok.Workload(rate_per_s=1, horizon_ms=60_000),
        progress=False,
    )
    assert study.spans["run_id"].nunique() == len(study.runs)
    with pytest.raises(TypeError, match="keep_spans"):
        ok.monte_carlo(plan, models, runs=10, keep_spans="all", progress=False)


# ------------------------------------------------------------------ pinned frames

# Digests of the frames these studies gave before the fast path's frame building was
# reworked (turn 3: views instead of per-block copies, no re-categorising, frames that take
# their arrays): an optimisation must leave every value and dtype as it was. A deliberate
# change of the draws or of the rules must update them (and say so).
PINNED = {
    ("graceful_degradation", 0, 3000, None): ("1660b6871ceee4d7", "2e1ef1f1d82b91bf"),
    ("learning_activity", 0, 3000, None): ("2146f29758efbcb3", "fdcfa427aee91133"),
    ("ml_with_gpt4_fallback", 0, 3000, None): ("0897a6ee7bf9d394", "ac684c4484cf7fae"),
    ("parallel_analysis", 0, 3000, None): ("98e36bf8e46990f2", "459f797f2b8f9e20"),
    ("retry_example", 0, 3000, None): ("f7b73f7743b994da", "618c4e61cd850979"),
    ("session_initialization", 0, 3000, None): ("1209e927aae5d91f", "a55fc80d48148e51"),
    # several blocks, spans kept across them, fallback chains
    ("graceful_degradation", -5, 70000, 70000): ("25f96d41ceb86777", "3e650cc3bb9a15e2"),
    ("ml_with_gpt4_fallback", -5, 70000, 70000): ("d5b8cbd565b5525c", "bcebceb30d4e50f4"),
    # the light plan of the speed goals: the default span sample, and a tiny one
    ("light", 0, 200_000, None): ("acd123d7e9a2fbfe", "a4213a6b42413b5c"),
    ("light", 4, 20_000, 3): ("3304bd58c6dc67bd", "2d55ba91b63cf6a8"),
}
PINNED_RUN_COLUMNS = [
    "run_id", "plan_id", "status", "arrival_ms", "start_ms", "end_ms", "makespan_ms",
    "attempts", "retries", "timeouts", "fallback_used", "final_plan_id",
]  # fmt: skip
PINNED_SPAN_COLUMNS = [
    "run_id", "plan_id", "step_id", "agent_id", "action", "attempt", "queued_ms",
    "start_ms", "end_ms", "outcome", "error", "hedge",
]  # fmt: skip


def frame_digest(frame: pd.DataFrame, columns: list[str]) -> str:
    """Every value (floats bit for bit) and dtype of ``columns``."""
    h = hashlib.sha256()
    for c in columns:
        col = frame[c]
        if col.dtype.kind in "biuf":
            h.update(np.ascontiguousarray(col.to_numpy()).tobytes())
        else:
            h.update("\x1f".join(map(str, col.astype(object))).encode())
        h.update(str(col.dtype).encode())
    return h.hexdigest()[:16]


def light_plan() -> tuple[ok.Plan, ok.AgentModels]:
    """Three lognormal steps in parallel, then a fourth; 5% errors, no retries."""
    lat = {"learning": (250, 900), "speech": (400, 1500), "tutor": (1200, 4000)}
    steps = [{"id": f"{k}_analysis", "agentId": f"{k}-agent-1", "action": "analyze"} for k in lat]
    steps.append(
        {
            "id": "combine",
            "agentId": "combine-agent-1",
            "action": "combine",
            "dependencies": [s["id"] for s in steps],
        }
    )
    lat["combine"] = (250, 900)
    agents = {
        f"{k}-agent-*": {"latency": {"dist": "lognormal", "median": m, "p95": p}, "error": 0.05}
        for k, (m, p) in lat.items()
    }
    plan = ok.Plan.model_validate({"id": "multi", "parallel": True, "steps": steps})
    return plan, ok.AgentModels.from_dict({"agents": agents})


@pytest.mark.parametrize("case", list(PINNED), ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
def test_same_seed_gives_the_pinned_frames(case):
    name, seed, runs, keep = case
    plan, models = (
        light_plan() if name == "light" else (ok.examples.plan(name), ok.examples.models())
    )
    res = ok.monte_carlo(plan, models, runs=runs, seed=seed, keep_spans=keep, progress=False)
    assert res.method == "fast"
    got = (frame_digest(res.runs, PINNED_RUN_COLUMNS), frame_digest(res.spans, PINNED_SPAN_COLUMNS))
    assert got == PINNED[case]


def test_frame_columns_do_not_share_memory():
    """The frames take the fast path's arrays as they are: no two columns may be one array
    (writing one would change the other)."""
    plan, models = light_plan()
    res = ok.monte_carlo(plan, models, runs=100, seed=1, progress=False)
    runs, spans = res.runs, res.spans
    end, queued = runs["end_ms"].copy(), spans["queued_ms"].copy()
    runs.loc[0, "arrival_ms"] = 5.0
    runs.loc[0, "makespan_ms"] = -1.0
    spans.loc[0, "start_ms"] = -1.0
    assert runs.loc[0, "start_ms"] == 0.0 and runs["end_ms"].equals(end)
    assert spans["queued_ms"].equals(queued)
