"""The simulator against closed-form results: this is how we know it is right.

Every statistical assertion compares a closed form with an estimate from a seeded study,
with a tolerance from the central limit theorem: |estimate - truth| <= Z * SE, where
Z = 3.29 is the 99.9% two-sided normal quantile and SE the standard error (known in closed
form where possible, else from batch means with a Student-t quantile). The seed is fixed,
so each test is deterministic; the run counts make a real bug (a wrong rule, an off-by-one
in capacity, a biased draw) show up as many standard errors.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest
from scipy import stats

import orchkit as ok
from orchkit.testing import Fail, Ok, ScriptedAgent, ScriptedModels

Z999 = 3.2905  # two-sided 99.9% normal quantile


def _plan(steps, **kw):
    return ok.Plan.model_validate({"id": kw.pop("id", "p"), "steps": steps, **kw})


def _models(agents):
    return ok.AgentModels.from_dict({"agents": agents})


def _study(plan, models, runs, seed=1):
    return ok.monte_carlo(plan, models, runs=runs, seed=seed, method="simpy", progress=False)


# ------------------------------------------------------------------ M/M/c queue


def erlang_c(c: int, a: float) -> float:
    """P(an arrival waits) in M/M/c with offered load a = lambda * mean (Erlang C)."""
    head = sum(a**k / math.factorial(k) for k in range(c))
    tail = a**c / math.factorial(c) * c / (c - a)
    return tail / (head + tail)


def _batch_se(x: np.ndarray, batches: int = 30) -> float:
    means = np.array([b.mean() for b in np.array_split(x, batches)])
    return float(means.std(ddof=1) / math.sqrt(batches))


@pytest.mark.parametrize("c, horizon_ms", [(1, 2_000_000.0), (3, 600_000.0)])
def test_mmc_queue_wait_matches_erlang_c(c, horizon_ms):
    """Poisson arrivals into one exponential agent with capacity c at utilisation 0.7.

    ~130k customers each. The queue wait's closed form (Erlang C) must lie within a 99.9%
    batch-means interval; P(wait > 0) = C(c, a) likewise; the agent's utilisation from the
    summary must be lambda * mean / c within 3.29 SE; and every wait must equal the FIFO
    recursion of the simulator's own arrivals and service times (exactly).
    """
    mean, rho = 10.0, 0.7
    lam = rho * c / mean  # arrivals per ms
    models = _models({"srv": {"capacity": c, "latency": {"dist": "exponential", "mean": mean}}})
    plan = _plan([{"id": "serve", "agentId": "srv", "action": "serve"}], id="mmc")
    mc = ok.monte_carlo(
        plan,
        models,
        seed=7,
        progress=False,
        workload=ok.Workload(rate_per_s=lam * 1000, horizon_ms=horizon_ms),
    )
    sp = mc.spans.sort_values("run_id")
    assert (sp["outcome"] == "succeeded").all()
    arrival = sp["queued_ms"].to_numpy()
    start = sp["start_ms"].to_numpy()
    service = sp["end_ms"].to_numpy() - start
    n = len(sp)
    assert n == pytest.approx(lam * horizon_ms, rel=5 * (lam * horizon_ms) ** -0.5)

    # 1. FIFO with c servers, exactly (Kiefer-Wolfowitz recursion on the same draws)
    free = [0.0] * c
    expected_start = np.empty(n)
    for i in range(n):
        s = max(arrival[i], heapq.heappop(free))
        expected_start[i] = s
        heapq.heappush(free, s + service[i])
    np.testing.assert_allclose(start, expected_start, rtol=0, atol=1e-6)
    assert stats.kstest(service, "expon", args=(0, mean)).pvalue > 1e-3

    # 2. mean queue wait vs Erlang C, after a warm-up of 5% of the customers
    wait = (start - arrival)[n // 20 :]
    pw = erlang_c(c, lam * mean)
    wq = pw * mean / (c - lam * mean)
    t999 = stats.t.ppf(0.9995, 29)
    se = _batch_se(wait)
    assert abs(wait.mean() - wq) <= t999 * se, (wait.mean(), wq, se)
    assert se < 0.05 * wq  # the interval is tight enough to mean something
    waited = (wait > 1e-9).astype(float)
    assert abs(waited.mean() - pw) <= t999 * _batch_se(waited), (waited.mean(), pw)

    # 3. utilisation: busy time / observed time / capacity = lambda * mean / c
    agents = mc.summary().agents.set_index("agent_id")
    util = agents.loc["srv", "utilisation"]
    assert agents.loc["srv", "capacity"] == c
    # busy time is a compound Poisson sum: relative SE = sqrt(E[S^2] / (lambda H E[S]^2))
    rel_se = math.sqrt(2.0 / (lam * horizon_ms))
    assert abs(util - rho) <= Z999 * rel_se * rho, util
    assert agents.loc["srv", "busy_ms"] == pytest.approx(service.sum())


def test_confidence_interval_helpers_cover_at_95_percent():
    """mean_ci, quantile_ci and wilson_ci: over 400 independent samples, each interval holds
    the true value in 95% of them (within 3.29 binomial SE)."""
    from orchkit._base.stats import mean_ci, quantile_ci, wilson_ci

    gen = np.random.default_rng(0)
    reps, n, mean = 400, 300, 10.0
    p95 = -mean * math.log(0.05)
    hits = {"mean": 0, "p50": 0, "p95": 0, "wilson": 0}
    for _ in range(reps):
        x = gen.exponential(mean, n)
        _, lo, hi = mean_ci(x)
        hits["mean"] += lo <= mean <= hi
        _, lo, hi = quantile_ci(x, 0.5)
        hits["p50"] += lo <= mean * math.log(2) <= hi
        _, lo, hi = quantile_ci(x, 0.95)
        hits["p95"] += lo <= p95 <= hi
        _, lo, hi = wilson_ci(int((gen.random(n) < 0.1).sum()), n)
        hits["wilson"] += lo <= 0.1 <= hi
    tol = Z999 * math.sqrt(0.95 * 0.05 / reps)
    for name, h in hits.items():
        assert abs(h / reps - 0.95) <= tol, (name, h / reps)
    assert wilson_ci(0, 50)[1] == 0.0 and 0 < wilson_ci(0, 50)[2] < 0.1
    assert math.isnan(mean_ci(np.array([1.0]))[1])


# ------------------------------------------------------------------ parallel maximum


@pytest.mark.parametrize("k", [1, 3, 5])
def test_mean_of_max_of_k_exponentials_is_mean_times_harmonic_number(k):
    """k independent exponential steps in parallel: makespan = max; E = mean * H_k,
    Var = mean^2 * sum(1/i^2); the whole distribution is (1 - e^(-x/mean))^k."""
    mean, runs = 100.0, 20_000
    models = _models({"w*": {"latency": {"dist": "exponential", "mean": mean}}})
    plan = _plan(
        [{"id": f"s{i}", "agentId": f"w{i}", "action": "work"} for i in range(k)], parallel=True
    )
    res = _study(plan, models, runs)
    mk = res.runs["makespan_ms"].to_numpy()
    h_k = sum(1.0 / i for i in range(1, k + 1))
    se = mean * math.sqrt(sum(1.0 / i**2 for i in range(1, k + 1)) / runs)
    assert abs(mk.mean() - mean * h_k) <= Z999 * se, (mk.mean(), mean * h_k, se)
    ks = stats.kstest(mk, lambda x: (1.0 - np.exp(-np.maximum(x, 0) / mean)) ** k)
    assert ks.pvalue > 1e-3, ks
    # the summary's quantiles: true value within the 95% interval widened to 99.9%
    metrics = res.summary().metrics
    for q in (0.5, 0.95, 0.99):
        true = -mean * math.log(1.0 - q ** (1.0 / k))
        est, lo, hi = metrics.loc[f"makespan_p{round(q * 100)}_ms", ["value", "ci_low", "ci_high"]]
        assert est == pytest.approx(np.quantile(mk, q))
        widen = Z999 / 1.96
        assert est - widen * (est - lo) <= true <= est + widen * (hi - est), (q, lo, true, hi)


def test_parallel_maximum_is_not_the_sequential_sum():
    """Power check for the test above: the same steps run sequentially add up (mean * k)."""
    mean, runs, k = 100.0, 4_000, 3
    models = _models({"w*": {"latency": {"dist": "exponential", "mean": mean}}})
    steps = [{"id": f"s{i}", "agentId": f"w{i}", "action": "work"} for i in range(k)]
    mk = _study(_plan(steps, parallel=False), models, runs).runs["makespan_ms"].to_numpy()
    se = mean * math.sqrt(k / runs)
    assert abs(mk.mean() - k * mean) <= Z999 * se


# ------------------------------------------------------------------ retries


@pytest.mark.parametrize("p, r", [(0.3, 0), (0.3, 2), (0.6, 3)])
def test_retries_success_probability_and_attempts(p, r):
    """Error probability p, r retries: P(success) = 1 - p^(r+1), E[attempts] =
    (1 - p^(r+1)) / (1 - p), P(attempts = j) = p^(j-1)(1-p) for j <= r, p^r for j = r+1;
    with constant latency the makespan follows from the attempts exactly."""
    runs, lat, backoff = 20_000, 4.0, 10.0
    models = _models({"a": {"latency": {"dist": "constant", "value": lat}, "error": p}})
    plan = _plan(
        [
            {
                "id": "s",
                "agentId": "a",
                "action": "x",
                "retryPolicy": {"maxRetries": r, "backoffMs": backoff},
            }
        ]
    )
    res = _study(plan, models, runs)
    df = res.runs
    q = 1.0 - p ** (r + 1)
    succ = (df["status"] == "succeeded").mean()
    assert abs(succ - q) <= Z999 * math.sqrt(q * (1 - q) / runs), (succ, q)
    summary = res.summary()
    assert summary["success_rate"] == pytest.approx(succ)

    pmf = np.array([p ** (j - 1) * (1 - p) for j in range(1, r + 1)] + [p**r])
    js = np.arange(1, r + 2)
    e_att = (1 - p ** (r + 1)) / (1 - p)
    assert float(pmf @ js) == pytest.approx(e_att)
    sd_att = math.sqrt(float(pmf @ js**2) - e_att**2)
    att = df["attempts"].to_numpy()
    if r:
        assert abs(att.mean() - e_att) <= Z999 * sd_att / math.sqrt(runs), (att.mean(), e_att)
        counts = np.bincount(att, minlength=r + 2)[1:]
        assert counts.sum() == runs
        assert stats.chisquare(counts, pmf * runs).pvalue > 1e-3
    else:
        assert (att == 1).all()
    assert summary["attempts_per_run"] == pytest.approx(att.mean())
    assert (df["retries"] == df["attempts"] - 1).all()
    # linear backoff: after failed attempt j the wait is backoff * j
    expected_mk = att * lat + backoff * (att - 1) * att / 2
    np.testing.assert_array_equal(df["makespan_ms"].to_numpy(), expected_mk)
    # a run fails exactly when it used every attempt and the last one failed too
    assert ((df["status"] == "failed") <= (df["attempts"] == r + 1)).all()


# ------------------------------------------------------------------ step timeouts


def test_step_timeout_probability_is_exp_minus_t_over_mean():
    """An exponential step with timeout T, no retries: P(timeout) = e^(-T/mean); a timed-out
    run ends exactly at T; E[makespan] = mean (1 - e^(-T/mean))."""
    mean, timeout, runs = 100.0, 150.0, 20_000
    models = _models({"a": {"latency": {"dist": "exponential", "mean": mean}}})
    plan = _plan([{"id": "s", "agentId": "a", "action": "x", "timeout": timeout}])
    res = _study(plan, models, runs)
    df = res.runs
    q = math.exp(-timeout / mean)
    timed_out = df["timeouts"] == 1
    assert abs(timed_out.mean() - q) <= Z999 * math.sqrt(q * (1 - q) / runs), timed_out.mean()
    assert ((df["status"] == "failed") == timed_out).all()
    assert (df.loc[timed_out, "makespan_ms"] == timeout).all()
    assert (df.loc[~timed_out, "makespan_ms"] < timeout).all()
    # E[min(X, T)] and Var[min(X, T)] = mean^2 (1 - 2 (T/mean) q - q^2)
    e_min = mean * (1 - q)
    sd_min = mean * math.sqrt(1 - 2 * (timeout / mean) * q - q * q)
    mk = df["makespan_ms"].to_numpy()
    assert abs(mk.mean() - e_min) <= Z999 * sd_min / math.sqrt(runs), (mk.mean(), e_min)
    sp = res.spans
    assert set(sp["outcome"]) == {"succeeded", "timeout"}
    assert sp.loc[sp["outcome"] == "timeout", "error"].str.contains("timed out after 150 ms").all()


def test_step_timeout_with_hangs_and_retry_on_timeout():
    """Hang probability h adds to the timeout probability: per attempt
    P(timeout) = h + (1 - h) e^(-T/mean); one retry on timeout squares it."""
    mean, timeout, h, runs = 100.0, 100.0, 0.2, 20_000
    models = _models({"a": {"latency": {"dist": "exponential", "mean": mean}, "hang": h}})
    plan = _plan(
        [
            {
                "id": "s",
                "agentId": "a",
                "action": "x",
                "timeout": timeout,
                "retryPolicy": {"maxRetries": 1, "backoffMs": 0, "retryOn": ["timeout"]},
            }
        ]
    )
    df = _study(plan, models, runs).runs
    q = h + (1 - h) * math.exp(-timeout / mean)
    fail = (df["status"] == "failed").mean()
    assert abs(fail - q * q) <= Z999 * math.sqrt(q * q * (1 - q * q) / runs), (fail, q * q)
    assert abs(df["timeouts"].mean() - (q + q * q)) <= Z999 * 1.0 / math.sqrt(runs)
    assert (df.loc[df["status"] == "failed", "makespan_ms"] == 2 * timeout).all()


# ------------------------------------------------------------------ constant-latency DAGs

# steps in plan order: (id, action, dependencies, retryPolicy, timeout)
_DAG = [
    ("fetch", "fast", [], None, None),
    ("slow", "slow", ["fetch"], None, None),
    ("flaky", "broken", ["fetch"], {"maxRetries": 3, "backoffMs": 7}, None),
    ("report", "report", ["slow"], None, None),
    ("after_flaky", "fast", ["flaky"], None, None),
    (
        "expo",
        "broken",
        ["fetch"],
        {"maxRetries": 4, "backoffMs": 4, "strategy": "exponential", "maxBackoffMs": 10},
        None,
    ),
    ("hangs", "hang", ["fetch"], {"maxRetries": 1, "backoffMs": 3, "strategy": "fixed"}, 12.0),
]
_DAG_IDS = [d[0] for d in _DAG]
_LATENCY = {"fast": 10.0, "slow": 30.0, "broken": 5.0, "report": 25.0}
_CONST_MODELS = {
    "const": {
        "latency": {"dist": "constant", "value": 10},
        "actions": {
            "fast": {"latency": {"dist": "constant", "value": 10}},
            "slow": {"latency": {"dist": "constant", "value": 30}},
            "report": {"latency": {"dist": "constant", "value": 25}},
            "broken": {"latency": {"dist": "constant", "value": 5}, "error": 1.0},
            "hang": {"hang": 1.0},
        },
    }
}


def _dag_plan(parallel: bool) -> ok.Plan:
    steps = []
    for sid, action, deps, retry, timeout in _DAG:
        s = {"id": sid, "agentId": "const", "action": action, "dependencies": deps}
        if retry:
            s["retryPolicy"] = retry
        if timeout:
            s["timeout"] = timeout
        steps.append(s)
    return _plan(steps, id="dag", parallel=parallel)


def _step_time(sid: str) -> tuple[float, bool]:
    """A reference: (time from a step's first start to its end, succeeded?) by SPEC §3.4."""
    _, action, _, retry, timeout = next(d for d in _DAG if d[0] == sid)
    if action != "broken" and action != "hang":
        return _LATENCY[action], True
    per_attempt = timeout if action == "hang" else _LATENCY[action]
    rp = ok.RetryPolicy.model_validate(retry)
    total = per_attempt
    for k in range(1, rp.max_retries + 1):
        total += rp.delay_ms(k) + per_attempt
    return total, False


def test_constant_dag_parallel_makespan_is_the_critical_path():
    """Parallel plan: each step starts when its last dependency ends; failing steps retry
    with linear / capped exponential / fixed backoff; the makespan is the longest path."""
    res = ok.simulate(_dag_plan(parallel=True), _models(_CONST_MODELS), seed=3)
    # by hand: flaky 10-15, 22-27, 41-46, 67-72 (backoffs 7, 14, 21); report 40-65;
    # expo 10-15, 19-24, 32-37, 47-52, 62-67 (4, 8, then capped at 10); hangs 10-22, 25-37
    assert res.duration_ms == 72.0
    assert res.status == "failed"
    assert res.step_states == {
        "fetch": "succeeded",
        "slow": "succeeded",
        "flaky": "failed",
        "report": "succeeded",
        "after_flaky": "skipped",
        "expo": "failed",
        "hangs": "failed",
    }
    end: dict[str, float] = {}  # the reference: longest path over the steps that ran
    succeeded: dict[str, bool] = {}
    for sid, _, deps, _, _ in _DAG:  # dependencies come earlier in _DAG
        if all(succeeded.get(d) for d in deps):
            t, succeeded[sid] = _step_time(sid)
            end[sid] = max((end[d] for d in deps), default=0.0) + t
    assert set(end) == set(_DAG_IDS) - {"after_flaky"}
    assert res.duration_ms == max(end.values())
    sp = res.spans.set_index(["step_id", "attempt"])
    assert sp.loc[("flaky", 4), ["queued_ms", "start_ms", "end_ms"]].tolist() == [67.0, 67.0, 72.0]
    assert sp.loc[("expo", 5), ["start_ms", "end_ms"]].tolist() == [62.0, 67.0]
    assert sp.loc[("hangs", 2), ["start_ms", "end_ms", "outcome"]].tolist() == [
        25.0,
        37.0,
        "timeout",
    ]
    assert sp.loc[("report", 1), ["start_ms", "end_ms"]].tolist() == [40.0, 65.0]
    assert "after_flaky" not in res.spans["step_id"].tolist()


def test_constant_dag_sequential_makespan_is_the_sum():
    """Sequential plan: one step at a time in plan order (a retry's backoff holds the plan's
    slot, as in the seed); the makespan is the sum of the steps that ran."""
    res = ok.simulate(_dag_plan(parallel=False), _models(_CONST_MODELS), seed=3)
    ran = [sid for sid, *_ in _DAG if sid != "after_flaky"]
    assert res.duration_ms == sum(_step_time(sid)[0] for sid in ran) == 211.0
    firsts = res.spans[res.spans["attempt"] == 1]
    assert firsts["step_id"].tolist() == ran  # plan order
    # no two attempts overlap
    s = res.spans.sort_values("start_ms")
    assert (s["start_ms"].to_numpy()[1:] >= s["end_ms"].to_numpy()[:-1]).all()


def test_seed_backoff_rule_with_scripted_failures():
    """The seed's rule (linear, backoffMs 1000: waits 1 s, 2 s, 3 s) with scripted failures
    of different latencies: the makespan is every latency plus every backoff, exactly."""
    agent = ScriptedAgent("a", {"x": [Fail(100), Fail(200), Fail(300), Ok(50)]})
    plan = _plan(
        [
            {
                "id": "s",
                "agentId": "a",
                "action": "x",
                "retryPolicy": {"maxRetries": 3, "backoffMs": 1000},
            },
            {"id": "t", "agentId": "a", "action": "y", "dependencies": ["s"]},
        ]
    )
    res = ok.simulate(plan, ScriptedModels([agent]))
    assert res.success
    assert res.duration_ms == 100 + 1000 + 200 + 2000 + 300 + 3000 + 50 + 0
    assert res.spans["start_ms"].tolist() == [0, 1100, 3300, 6600, 6650]


def _longest_path(durations, deps):
    end = {}
    for i in range(len(durations)):  # deps point to earlier steps only
        end[i] = max((end[d] for d in deps[i]), default=0.0) + durations[i]
    return max(end.values())


@pytest.mark.parametrize("seed", range(5))
def test_random_constant_dags_makespan_equals_longest_path(seed):
    """Random DAGs of 12 steps with integer latencies, all succeeding: makespan = longest
    path; each step starts exactly when its last dependency ends."""
    rng = np.random.default_rng(seed)
    n = 12
    lat = rng.integers(1, 50, n).astype(float)
    deps = [
        sorted(set(rng.choice(i, rng.integers(0, min(i, 3) + 1), replace=False).tolist()))
        if i
        else []
        for i in range(n)
    ]
    models = _models(
        {f"a{i}": {"latency": {"dist": "constant", "value": float(lat[i])}} for i in range(n)}
    )
    order = rng.permutation(n)  # plan order need not be topological
    steps = [
        {
            "id": f"s{i}",
            "agentId": f"a{i}",
            "action": "x",
            "dependencies": [f"s{d}" for d in deps[i]],
        }
        for i in order
    ]
    res = ok.simulate(_plan(steps, parallel=True), models)
    assert res.success
    assert res.duration_ms == _longest_path(lat, deps)
    sp = res.spans.set_index("step_id")
    for i in range(n):
        ready = max((sp.loc[f"s{d}", "end_ms"] for d in deps[i]), default=0.0)
        assert sp.loc[f"s{i}", "start_ms"] == ready
    seq = ok.simulate(_plan(steps, parallel=False), models)
    assert seq.duration_ms == lat.sum()
