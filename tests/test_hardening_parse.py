"""Hardening (issue 7), the input half: every bad plan file, plan dict, agent model, CLI
argument or API argument is an orchkit error (or a TypeError/ValueError naming the
parameter) or a valid object, never a hang, an overflow or a raw traceback."""

from __future__ import annotations

import time

import pytest

import orchkit as ok
from orchkit._core import compile_plan
from orchkit._plan import MAX_RETRY_DELAY_MS, RetryPolicy

CONST = {"agents": {"*": {"latency": {"dist": "constant", "value": 10}, "error": 1.0}}}


def retry_plan(max_retries: int, strategy: str = "linear", **rp) -> ok.Plan:
    return ok.Plan.model_validate({"id": "r", "steps": [
        {"id": "s", "agentId": "a", "action": "x",
         "retryPolicy": {"maxRetries": max_retries, "backoffMs": 5, "strategy": strategy, **rp}}]})


# ------------------------------------------------------------------ retry budgets


def test_huge_retry_budget_costs_nothing_until_used():
    plan = retry_plan(10**8)
    t0 = time.perf_counter()
    compile_plan(plan)
    # the fast path builds its per-step tables too; three failing attempts, then success
    models = {"agents": {"*": {"latency": {"dist": "constant", "value": 10}, "error": 0.0}}}
    res = ok.monte_carlo(plan, models, runs=20, seed=1, method="fast", progress=False)
    assert time.perf_counter() - t0 < 2.0
    assert (res.runs["status"] == "succeeded").all()


@pytest.mark.parametrize("method", ["fast", "simpy"])
def test_huge_retry_budget_runs_on_both_paths(method):
    # every attempt fails; the plan's deadline ends the run long before the budget does
    plan = ok.Plan.model_validate({**retry_plan(10**8).to_dict(), "timeout": 1000})
    res = ok.monte_carlo(plan, CONST, runs=5, seed=1, method=method, progress=False)
    assert (res.runs["status"] == "timed_out").all()
    # attempts of 10 ms, backoff 5·k ms: attempt n starts at 10(n-1) + 2.5·n(n-1) ms,
    # so attempt 18 starts at 935 ms and attempt 19 (1,035 ms) is past the deadline
    assert (res.runs["attempts"] == 18).all()


def test_exponential_backoff_never_overflows():
    rp = RetryPolicy(max_retries=10**6, backoff_ms=5, strategy="exponential")
    for k in (1, 1024, 1025, 5000, 10**6):
        d = rp.delay_ms(k)
        assert d == d and d < float("inf")
    capped = RetryPolicy(max_retries=10**6, backoff_ms=5, strategy="exponential",
                         max_backoff_ms=60_000)
    assert capped.delay_ms(10**6) == 60_000
    assert capped.delay_ms(3) == 20
    # the default cap is documented and reached smoothly
    assert rp.delay_ms(10**6) == MAX_RETRY_DELAY_MS


@pytest.mark.parametrize("method", ["fast", "simpy"])
def test_exponential_budget_beyond_1024_simulates(method):
    plan = ok.Plan.model_validate({**retry_plan(2000, "exponential", maxBackoffMs=1).to_dict()})
    res = ok.monte_carlo(plan, CONST, runs=3, seed=1, method=method, progress=False)
    assert (res.runs["status"] == "failed").all()
    assert (res.runs["attempts"] == 2001).all()
