"""Plan.with_values and ok.sweep: tuning a plan with Monte-Carlo studies."""

from __future__ import annotations

import pandas as pd
import pytest

import orchkit as ok

PLAN = ok.Plan.model_validate(
    {
        "id": "p",
        "parallel": True,
        "steps": [
            {"id": "slow", "agentId": "x", "action": "slow"},
            {"id": "fast", "agentId": "x", "action": "fast", "dependencies": ["slow"]},
        ],
    }
)
MODELS = ok.AgentModels.from_dict(
    {
        "agents": {
            "x": {
                "latency": {"dist": "exponential", "mean": 100},
                "actions": {"fast": {"latency": {"dist": "constant", "value": 10}}},
            }
        }
    }
)


def test_with_values_sets_fields_by_path_and_validates():
    tuned = PLAN.with_values(
        {
            "timeout": 500,
            "steps.slow.timeout": 150,
            "steps.*.retryPolicy": {"maxRetries": 1, "backoffMs": 20},
        }
    )
    assert tuned.timeout_ms == 500 and tuned.steps[0].timeout_ms == 150
    assert tuned.steps[1].timeout_ms is None
    assert all(s.retry_policy.max_retries == 1 for s in tuned.steps)
    assert PLAN.timeout_ms is None  # the original is unchanged
    with pytest.raises(ok.PlanValidationError, match="names step 'nope'.*steps: slow, fast"):
        PLAN.with_values({"steps.nope.timeout": 1})
    with pytest.raises(
        ok.PlanValidationError, match="unknown field 'timout'.*did you mean 'timeout'"
    ):
        PLAN.with_values({"steps.slow.timout": 1})
    with pytest.raises(ok.PlanValidationError, match="greater than 0"):
        PLAN.with_values({"steps.slow.timeout": -1})


def test_sweep_gives_one_row_per_combination_with_the_closed_form_success_rate():
    grid = {
        "steps.slow.timeout": [50, 100, 200],
        "steps.slow.retryPolicy": [None, {"maxRetries": 1, "backoffMs": 0}],
    }
    df = ok.sweep(PLAN, MODELS, grid, runs=4000, seed=3, progress=False)
    assert len(df) == 6 and list(df.columns[:2]) == list(grid)
    for row in df.itertuples(index=False):
        timeout, policy = row[0], row[1]
        q = 2.718281828459045 ** (-timeout / 100)  # P(one attempt times out)
        p_success = 1 - q ** (2 if policy else 1)
        se = (p_success * (1 - p_success) / 4000) ** 0.5
        assert abs(row.success_rate - p_success) < 4 * se  # 99.99% of seeds
        assert row.success_rate_ci_low <= row.success_rate <= row.success_rate_ci_high
    # common random numbers: a longer timeout never loses a run that a shorter one kept
    no_retry = df[df["steps.slow.retryPolicy"].isna()]
    assert no_retry["success_rate"].is_monotonic_increasing


def test_sweep_reports_bad_paths_before_running():
    with pytest.raises(ok.PlanValidationError, match="names step 'missing'"):
        ok.sweep(PLAN, MODELS, {"steps.missing.timeout": [1]}, runs=10, progress=False)


def test_sweep_prints_short_and_keeps_every_column():
    """A sweep's frame prints the swept values and the headline metrics (SPEC §13.4); it
    is still a DataFrame with every metric and interval, and what it gives (a selection, an
    assign) is a plain DataFrame that prints in full."""
    grid = {
        "steps.slow.timeout": [50, 400],
        "steps.slow.retryPolicy": [None, {"maxRetries": 1, "backoffMs": 0}],
    }
    df = ok.sweep(PLAN, MODELS, grid, runs=300, seed=1, progress=False)
    assert isinstance(df, pd.DataFrame) and df.swept == list(grid)
    text = repr(df)
    head, table = text.split("\n", 1)
    assert "sweep: 4 combination(s) of steps.slow.timeout, steps.slow.retryPolicy" in head
    assert "(.frame)" in head
    columns = table.split("\n")[0]
    for name in (*grid, "makespan_p50_ms", "makespan_p95_ms", "success_rate", "attempts_per_run"):
        assert name in columns
    assert "_ci_low" not in table and "p95 95% interval (ms)" in columns
    assert len(table.strip().split("\n")) == 1 + 4
    assert "<p>sweep: 4 combination(s)" in df._repr_html_()
    full = df.frame
    assert type(full) is pd.DataFrame and full.shape == df.shape and full.equals(df)
    assert "success_rate_ci_low" in df.columns and len(df.columns) > 30
    picked = df[["steps.slow.timeout", "success_rate"]]
    assert type(picked) is pd.DataFrame and "sweep:" not in repr(picked)
    assert type(df.assign(x=1)) is pd.DataFrame and type(pd.concat([df, df])) is pd.DataFrame
    short = df.short()
    assert list(short.columns[:2]) == list(grid) and len(short) == 4
