"""Hardening, round 2 (issue 19): policies are input like plans, and fitting and comparing
never compute on garbage — bad rows are an error naming the column, the count and the
first rows, never a silent number."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import orchkit as ok
from orchkit._studies.tune import parse_constraints

# ------------------------------------------------------------------ policies


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("failureRate", True, "a bool or a string is not a number"),
        ("failureRate", "0.5", "a bool or a string is not a number"),
        ("slowCallRate", False, "a bool or a string is not a number"),
        ("openMs", "30000", "a bool or a string is not a number"),
        ("openMs", math.inf, "finite"),
        ("openMs", math.nan, "finite"),
        ("openMs", 1e300, "<= 1e+12"),
        ("slowCallMs", 1e13, "<= 1e+12"),
        ("slowCallMs", "2000", "a bool or a string is not a number"),
        ("window", True, "whole number"),
        ("window", 20.0, "whole number"),
        ("minCalls", "10", "whole number"),
        ("halfOpenCalls", "3", "whole number"),
    ],
)
def test_breaker_settings_have_strict_types_and_the_plans_time_bound(key, value, says):
    with pytest.raises(ok.PlanValidationError) as err:
        ok.Policies.from_dict({"breakers": {"tutor-agent-*": {key: value}}})
    text = str(err.value)
    assert "breakers 'tutor-agent-*'" in text and f"'{key}'" in text and says in text, text


def test_breaker_settings_in_range_still_load_from_numbers_and_numpy_scalars():
    pol = ok.Policies.from_dict(
        {
            "breakers": {
                "a-*": {"window": np.int64(20), "failureRate": 1, "openMs": np.float64(3e4)},
                "b": {"slowCallMs": 1e12, "openMs": 1, "halfOpenCalls": 2, "minCalls": 5},
            }
        }
    )
    a, b = pol.breaker("a-1"), pol.breaker("b")
    assert (a.window, a.failure_rate, a.open_ms) == (20, 1.0, 30_000.0)
    assert (b.slow_call_ms, b.half_open_calls, b.min_calls) == (1e12, 2, 5)


def test_a_sweep_path_cannot_smuggle_a_coerced_or_unbounded_breaker_setting():
    pol = ok.Policies.from_dict({"breakers": {"T": {"openMs": 100}}})
    for value in ("100", True, math.inf, 1e300):
        with pytest.raises(ok.PlanValidationError, match="'openMs'"):
            pol.with_values({"breakers.T.openMs": value})


@pytest.mark.parametrize(
    "hedge",
    [{"delayMs": True}, {"delayMs": "50"}, {"delayMs": math.inf}, {"delayMs": 1e300}]
    + [{"delayMs": 5, "maxHedges": v} for v in (True, 2.0, "2")],
)
def test_hedge_settings_are_strict_and_bounded_too(hedge):
    step = {"id": "a", "agentId": "x", "action": "y", "hedge": hedge}
    with pytest.raises(ok.PlanValidationError, match="hedge"):
        ok.Plan.model_validate({"id": "p", "steps": [step]})


@pytest.mark.parametrize("bound", [">= 1e999", "<= -1e400", "<=1E309"])
def test_tune_constraints_that_overflow_to_infinity_are_refused_naming_the_constraint(bound):
    with pytest.raises(ValueError) as err:
        parse_constraints({"makespan_p95_ms": bound})
    text = str(err.value)
    assert "makespan_p95_ms" in text and repr(bound) in text and "finite" in text, text


def test_tune_refuses_an_infinite_constraint_before_any_trial_runs():
    plan = ok.examples.plan("parallel_analysis")
    with pytest.raises(ValueError, match="success_rate.*finite"):
        ok.tune(
            plan,
            ok.examples.models(),
            {"steps.*.timeout": ok.Float(100, 5000)},
            minimize="makespan_p95_ms",
            constraints={"success_rate": ">= 1e999"},
            trials=2,
            runs=10,
            progress=False,
        )


# ------------------------------------------------------------------ fitting


def spans(n: int = 200, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "agent_id": "a",
            "action": "act",
            "start_ms": 5.0,
            "end_ms": 5.0 + rng.lognormal(3.0, 0.5, n),
            "outcome": "succeeded",
        }
    )


def _set(frame: pd.DataFrame, column: str, rows: list[int], value) -> pd.DataFrame:
    frame = frame.copy()
    if isinstance(value, str):
        frame[column] = frame[column].astype(object)
    for r in rows:
        frame.loc[r, column] = value
    return frame


@pytest.mark.parametrize(
    "column, rows, value, says",
    [
        ("end_ms", [7], math.inf, "infinite"),  # was: a constant model (inf <= inf)
        ("end_ms", [3, 150], math.nan, "missing"),  # was: "no family could be fitted"
        ("end_ms", [2, 4, 6, 8, 10, 12], -1.0, "end_ms < start_ms"),  # was: clamped to 1e-6
        ("end_ms", [9], "12ms", "not a number"),  # was: TypeError
        ("start_ms", [11], -math.inf, "infinite"),
        ("start_ms", [12], "soon", "not a number"),
    ],
)
def test_fit_names_the_column_the_count_and_the_first_rows_of_bad_times(column, rows, value, says):
    bad = _set(spans(), column, rows, value)
    with pytest.raises(ok.PlanValidationError) as err:
        ok.fit_models(bad)
    text = str(err.value)
    first = ", ".join(str(r) for r in rows[:5])
    assert f"column '{column}'" in text and says in text, text
    assert f"{len(rows)} bad value(s) in 200 spans" in text and f"row(s) {first}" in text, text
    if len(rows) > 5:
        assert "…" in text


def test_never_started_attempts_and_other_outcomes_may_have_no_times():
    frame = spans()
    extra = pd.DataFrame(
        {
            "agent_id": "a",
            "action": "act",
            "start_ms": [math.nan, math.nan, 3.0],
            "end_ms": [math.nan, 40.0, math.nan],
            "outcome": ["cancelled", "timeout", "rejected"],
        }
    )
    fit = ok.fit_models(pd.concat([frame, extra], ignore_index=True))
    assert fit.report["n"].iloc[0] == 200


def test_fit_refuses_a_non_finite_or_non_positive_time_scale():
    for scale in (math.inf, 0.0, True, -2.0):
        with pytest.raises(ValueError, match="time_scale"):
            ok.fit_models(spans(), time_scale=scale)
    bad = spans().assign(time_scale=1.0)
    bad.loc[5, "time_scale"] = math.inf
    with pytest.raises(ok.PlanValidationError, match="column 'time_scale'.*row\\(s\\) 5"):
        ok.fit_models(bad)


def test_cli_fit_on_a_csv_with_a_unit_in_a_time_is_one_error_line_naming_the_line(tmp_path, capsys):
    from orchkit.cli import main

    frame = _set(spans(20), "end_ms", [4], "12ms")
    path = tmp_path / "spans.csv"
    frame.to_csv(path, index=False)
    code = main(["fit", str(path), "-o", str(tmp_path / "models.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: fit:"), err
    assert "column 'end_ms'" in err and "'12ms'" in err and "line(s) 6" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "models.yaml").exists()


def test_cli_fit_on_a_csv_with_an_infinite_time_exits_2(tmp_path, capsys):
    from orchkit.cli import main

    frame = _set(spans(200), "end_ms", [0], math.inf)
    path = tmp_path / "spans.csv"
    frame.to_csv(path, index=False)
    assert main(["fit", str(path), "-o", str(tmp_path / "m.yaml")]) == 2
    assert "infinite" in capsys.readouterr().err


# ------------------------------------------------------------------ compare


def runs(values) -> pd.DataFrame:
    return pd.DataFrame({"makespan_ms": values, "status": "succeeded"})


GOOD = np.linspace(10.0, 20.0, 50)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1.0, "12ms"])
@pytest.mark.parametrize("side", ["observed", "predicted"])
def test_compare_refuses_non_finite_or_negative_makespans_naming_the_rows(side, value):
    bad = runs(np.r_[GOOD, 1.0, 2.0].astype(object))
    bad.loc[50, "makespan_ms"] = value
    bad.loc[51, "makespan_ms"] = value
    args = (bad, runs(GOOD)) if side == "observed" else (runs(GOOD), bad)
    with pytest.raises(ValueError) as err:
        ok.compare(*args)
    text = str(err.value)
    assert text.startswith(side) and "column 'makespan_ms'" in text, text
    assert "2 bad value(s) in 52 runs" in text and "row(s) 50, 51" in text, text


def test_compare_of_run_results_with_a_nan_duration_is_refused():
    class R:  # a RunResult-like record (duration_ms, status)
        def __init__(self, ms):
            self.duration_ms, self.status, self.time_scale = ms, "succeeded", None

    with pytest.raises(ValueError, match="row\\(s\\) 1"):
        ok.compare([R(10.0), R(math.nan), R(12.0)], runs(GOOD))
    with pytest.raises(ValueError, match="time_scale"):
        ok.compare(runs(GOOD), runs(GOOD), time_scale=math.inf)


def test_compare_of_good_runs_is_finite():
    table = ok.compare(runs(GOOD), runs(GOOD * 1.01))
    assert np.isfinite(table[["observed", "predicted"]].to_numpy(dtype=float)).all()
    assert math.isfinite(table.ks_p)
