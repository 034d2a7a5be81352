"""Goodput as clients see it (SPEC §17.2): ``Workload(give_up_ms=...)`` marks a run useful
only if it succeeded within that time of its arrival, cancels nothing, and the summary
reports ``useful_rate`` and ``goodput_per_s`` with honest intervals."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest

import orchkit as ok

ONE = ok.Plan.model_validate({"id": "one", "steps": [{"id": "s", "agentId": "srv", "action": "x"}]})


def _models(capacity, mean_ms):
    return ok.AgentModels.from_dict(
        {
            "agents": {
                "srv": {"capacity": capacity, "latency": {"dist": "exponential", "mean": mean_ms}}
            }
        }
    )


def _study(rate, give_up_ms, *, capacity=1, mean_ms=100.0, horizon_ms=200_000, seed=0, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ok.OverloadWarning)
        return ok.monte_carlo(
            ONE,
            _models(capacity, mean_ms),
            seed=seed,
            progress=False,
            workload=ok.Workload(rate_per_s=rate, horizon_ms=horizon_ms, give_up_ms=give_up_ms),
            **kw,
        )


def test_useful_rate_counts_runs_that_succeeded_within_give_up_ms():
    mc = _study(8, 250, warmup_ms=0)
    runs = mc.runs
    useful = (runs["status"] == "succeeded") & (runs["makespan_ms"] <= 250)
    s = mc.summary()
    assert s["useful_rate"] == pytest.approx(useful.mean())
    assert 0.3 < s["useful_rate"] < 0.95  # a give-up time that bites, not a formality
    assert s["useful_rate"] < s["success_rate"]
    # the workload fixes the arrival rate: goodput = 8 runs/s x the useful share
    assert s["goodput_per_s"] == pytest.approx(8 * useful.mean())
    lo, hi = s.metrics.loc["goodput_per_s", ["ci_low", "ci_high"]]
    assert lo < s["goodput_per_s"] < hi


def test_giving_up_cancels_nothing():
    patient = _study(8, None, horizon_ms=60_000)
    impatient = _study(8, 100, horizon_ms=60_000)
    pd.testing.assert_frame_equal(patient.runs, impatient.runs)
    pd.testing.assert_frame_equal(patient.spans, impatient.spans)
    assert patient.summary()["useful_rate"] == patient.summary()["success_rate"]
    assert impatient.summary()["useful_rate"] < patient.summary()["useful_rate"]


def test_independent_runs_have_no_goodput_per_second():
    mc = ok.monte_carlo(ONE, _models(1, 100), runs=300, seed=0, progress=False)
    s = mc.summary()
    assert math.isnan(s["goodput_per_s"])
    assert s["useful_rate"] == s["success_rate"]
    assert s.to_dict()["metrics"]["goodput_per_s"]["value"] is None  # NaN is JSON null


def test_fifo_under_overload_delivers_almost_no_goodput():
    """4 servers of 100 ms, arrivals at 1.5x capacity, clients give up after 1 s: a FIFO
    queue grows without bound and serves only requests already given up on."""
    mc = _study(60, 1000, capacity=4, horizon_ms=120_000)
    s = mc.summary()
    assert s["success_rate"] > 0.99  # the server works hard...
    assert s["goodput_per_s"] <= 0.1 * 40  # ...for clients who left: <= 10% of capacity


@pytest.mark.slow
def test_goodput_interval_covers_the_mm1_closed_form():
    """M/M/1, lambda = 5/s, mu = 10/s: the response time is exponential with rate
    mu - lambda, so goodput = lambda (1 - exp(-(mu - lambda) g)). The 95% intervals of 40
    seeded studies cover it in most of them (batch means and replications alike)."""
    lam, mu, g = 5.0, 10.0, 0.15  # per s, per s, s
    truth = lam * (1 - math.exp(-(mu - lam) * g))
    hits = {"batch means": 0, "replications": 0}
    for seed in range(40):
        for method, kw in (("batch means", {}), ("replications", {"replications": 5})):
            horizon = 200_000 if method == "batch means" else 40_000
            s = _study(lam, 1000 * g, horizon_ms=horizon, seed=seed, warmup_ms=0, **kw).summary()
            assert s.method == method
            lo, hi = s.metrics.loc["goodput_per_s", ["ci_low", "ci_high"]]
            hits[method] += lo <= truth <= hi
    for method, k in hits.items():
        assert k >= 33, f"{method}: the 95% interval covered the closed form {k}/40 times"


@pytest.mark.parametrize(
    "bad, error, words",
    [
        (-5, ok.PlanValidationError, "give_up_ms must be > 0"),
        (0, ok.PlanValidationError, "give_up_ms must be > 0"),
        (math.inf, ok.PlanValidationError, "give_up_ms must be finite"),
        ("1s", TypeError, "give_up_ms must be a number"),
        (True, TypeError, "give_up_ms must be a number"),
    ],
)
def test_bad_give_up_ms_names_the_field(bad, error, words):
    with pytest.raises(error, match=words):
        ok.Workload(rate_per_s=1, horizon_ms=1000, give_up_ms=bad)


def test_capacity_for_meets_a_goodput_slo():
    """useful_rate is a lower bound: the smallest capacity whose interval clears it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ok.OverloadWarning)
        cap = ok.capacity_for(
            ONE,
            _models(1, 100),
            slo={"useful_rate": 0.9},
            workload=ok.Workload(rate_per_s=20, horizon_ms=100_000, give_up_ms=300),
            seed=0,
            progress=False,
        )
    n = cap.capacities["srv"]
    assert n >= 3  # at capacity 2 (rho = 1) or less clients give up
    row = cap.summary.metrics.loc["useful_rate"]
    assert row["ci_low"] >= 0.9
    lower = ok.monte_carlo(
        ONE,
        _models(n - 1, 100),
        seed=0,
        progress=False,
        workload=ok.Workload(rate_per_s=20, horizon_ms=100_000, give_up_ms=300),
    )
    assert lower.summary().metrics.loc["useful_rate", "ci_low"] < 0.9
    assert np.isfinite(cap.summary["goodput_per_s"])
