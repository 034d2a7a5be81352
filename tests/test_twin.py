"""The digital twin (SPEC §16.1, §16.2, §16.4): windows, censored refits, what-if
predictions with simulation and parameter intervals, and their honesty measured on
simulated "live" traffic (spans of a workload study on the study's clock)."""

from __future__ import annotations

import math

import pytest

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
W = 30_000  # ms: a short window keeps the suite fast
RATE = 8.0  # runs/s


def traffic(models, rates, seed):
    """Simulated live traffic: one window per rate, back to back; the spans of each window's
    runs (by arrival), on the study's clock."""
    pieces = [(i * W, r) for i, r in enumerate(rates)]
    mc = ok.monte_carlo(
        PLAN,
        models,
        workload=ok.Workload(rate_per_s=pieces, horizon_ms=len(rates) * W),
        seed=seed,
        progress=False,
    )
    arrival = mc.spans.groupby("run_id")["queued_ms"].transform("min")
    return [mc.spans[(arrival >= i * W) & (arrival < (i + 1) * W)] for i in range(len(rates))]


def test_window_rate_mix_and_assumptions():
    (now,) = traffic(MODELS, [RATE], seed=3)
    twin = ok.Twin(now, {"p": PLAN}, models=MODELS, window_ms=W)
    assert twin.rate_per_s == pytest.approx(RATE, rel=0.2)
    assert twin.mix == {"p": 1.0} and twin.stale == []
    p = twin.what_if(load=1.0, seed=1)
    assert list(p.metrics.columns) == [
        "value",
        "sim_low",
        "sim_high",
        "param_low",
        "param_high",
        "ci_low",
        "ci_high",
    ]
    m = p.metrics
    assert (m["ci_low"] <= m["sim_low"]).all() and (m["ci_low"] <= m["param_low"]).all()
    assert (m["ci_high"] >= m["sim_high"]).all() and (m["ci_high"] >= m["param_high"]).all()
    a = p.assumptions
    assert a["window_ms"] == W and a["spans"] == len(twin.window) and a["censored_spans"] > 0
    assert a["families"][("tutor-agent-1", "ask")] in ("lognormal", "gamma", "weibull")
    assert a["capacity"] == {"api-1": 4, "tutor-agent-1": 2} and not p.unstable
    # capacity={pattern: n} overrides models; latency factors scale the fits
    slow = twin.what_if(latency={"tutor-agent-*": 2}, capacity={"api-*": 8}, seed=1)
    assert slow.assumptions["capacity"]["api-1"] == 8
    assert slow.metrics.at["makespan_p50_ms", "value"] > 1.5 * m.at["makespan_p50_ms", "value"]


def test_stale_groups_keep_their_last_fit_and_a_first_fit_refuses_them():
    (now,) = traffic(MODELS, [RATE], seed=4)
    with pytest.raises(ok.PlanValidationError, match=r"min_samples=100000.*'tutor-agent-1', 'ask'"):
        ok.Twin(now, PLAN, models=MODELS, window_ms=W, min_samples=100_000)
    twin = ok.Twin(now, PLAN, models=MODELS, window_ms=W, min_samples=100)
    before = twin.models.resolve("api-1", "look").latency.mean_ms
    few = now[now["run_id"].isin(now["run_id"].unique()[:30])]  # too few for any group
    twin.refit(few)
    assert sorted(twin.stale) == [("api-1", "look"), ("tutor-agent-1", "ask")]
    assert twin.models.resolve("api-1", "look").latency.mean_ms == before
    assert twin.what_if(seed=2).assumptions["stale"] == twin.stale


def test_offered_load_at_or_over_one_is_unstable_with_no_finite_p95():
    (now,) = traffic(MODELS, [RATE], seed=5)
    twin = ok.Twin(now, PLAN, capacity={"tutor-agent-*": 1, "api-*": 4}, window_ms=W)
    p = twin.what_if(load=3.0, horizon_ms=10_000, seed=0)
    assert p.unstable and max(p.offered_load.values()) >= 1
    for metric in ("makespan_p95_ms", "makespan_p99_ms", "makespan_mean_ms"):
        assert not math.isfinite(p.metrics.at[metric, "value"])
        assert not math.isfinite(p.metrics.at[metric, "ci_high"])
    assert not twin.what_if(load=0.5, seed=0).unstable


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (lambda f: f.iloc[:0], "empty"),
        (lambda f: f.drop(columns=["queued_ms"]), r"lacks columns \['queued_ms'\]"),
        (lambda f: f.assign(plan_id="other"), r"plan\(s\) \['other'\] that plans lacks"),
        (lambda f: "sqlite:///no/such/orchkit.db", r"no SQLite store at 'no/such/orchkit.db'"),
        (lambda f: "ftp://x/spans.csv", "neither a spans frame nor a service store URL"),
        (lambda f: 42, "spans frame"),
    ],
)
def test_bad_input_is_one_plan_validation_error_naming_it(bad, match):
    (frame,) = traffic(MODELS, [2.0], seed=6)
    with pytest.raises(ok.PlanValidationError, match=match):
        ok.Twin(bad(frame), PLAN, models=MODELS, window_ms=W)


def test_a_2x_latency_change_is_not_covered_and_the_next_refit_recovers():
    slow = MODELS.scaled("tutor-agent-*", latency=2)
    (now,) = traffic(MODELS, [RATE], seed=7)
    twin = ok.Twin(now, PLAN, models=MODELS, window_ms=W)
    before = twin.what_if(seed=3)
    changed, after = traffic(slow, [RATE, RATE], seed=8)
    miss = twin.check(before, changed)
    assert not miss.at["makespan_p95_ms", "covered"]
    assert not miss.at["makespan_p50_ms", "covered"]
    assert miss.at["makespan_p50_ms", "relative_error"] < -0.3
    assert miss.at["makespan_p50_ms", "ks_p"] < 1e-6
    twin.refit(changed)
    hit = twin.check(twin.what_if(seed=3), after)
    assert hit.at["makespan_p95_ms", "covered"] and hit.at["makespan_p50_ms", "covered"]
    assert hit.at["success_rate", "covered"]


@pytest.mark.slow
def test_honesty_intervals_cover_the_next_window_in_75_to_100_percent():
    """The 90% interval to read (simulation and parameter half-widths in quadrature) holds
    the next window's value in 75-100% of trials; the simulation interval alone is too
    narrow, and so (less) is a plain union of the two, which the combination must beat."""
    trials, metrics = 20, ("makespan_p95_ms", "success_rate")
    combined = {m: 0 for m in metrics}
    union = {m: 0 for m in metrics}
    sim_only = {m: 0 for m in metrics}
    for t in range(trials):
        now, nxt = traffic(MODELS, [RATE, 1.5 * RATE], seed=100 + t)
        twin = ok.Twin(now, PLAN, models=MODELS, window_ms=W)
        twin.what_if(load=1.0, seed=t)  # the same window, predicted as it is
        p = twin.what_if(load=1.5, seed=t)
        table = twin.check(p, nxt)
        for m in metrics:
            combined[m] += bool(table.at[m, "covered"])
            o, r = table.at[m, "observed"], p.metrics.loc[m]
            union[m] += bool(
                min(r["sim_low"], r["param_low"]) <= o <= max(r["sim_high"], r["param_high"])
            )
            sim_only[m] += bool(r["sim_low"] <= o <= r["sim_high"])
    coverage = {m: combined[m] / trials for m in metrics}
    print("twin coverage over", trials, "trials:", coverage, "union", union, "simulation", sim_only)
    for m in metrics:
        assert 0.75 <= coverage[m] <= 1.0, (m, coverage, union, sim_only)
        assert combined[m] >= union[m] >= sim_only[m], (m, combined, union, sim_only)
    assert sum(combined.values()) > sum(sim_only.values())
