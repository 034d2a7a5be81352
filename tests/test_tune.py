"""ok.tune (SPEC §7.1), the plan's free-form ``meta`` (§7.2), ok.compare (§7.4) and
``orchkit tune`` (§7.5)."""

from __future__ import annotations

import json
import re
import warnings

import pandas as pd
import pytest
import yaml

import orchkit as ok

# ------------------------------------------------------------------ Plan.meta (§7.2)

META_PLAN = {
    "id": "m",
    "steps": [{"id": "a", "agentId": "x", "action": "go"}],
    "meta": {"tunedBy": "orchkit", "predicted": {"success_rate": [0.99, 0.98, 1.0]}},
}


def test_meta_is_kept_by_save_and_load_in_json_and_yaml(tmp_path):
    plan = ok.Plan.model_validate(META_PLAN)
    for name in ("p.json", "p.yaml"):
        plan.save(tmp_path / name)
        back = ok.Plan.load(tmp_path / name)
        assert back.meta == META_PLAN["meta"]
        assert back.to_dict() == plan.to_dict()
    assert ok.Plan.model_validate({k: v for k, v in META_PLAN.items() if k != "meta"}).meta is None


def test_meta_is_dropped_by_the_seed_export_and_named():
    plan = ok.Plan.model_validate(META_PLAN)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = plan.to_dict(compat="seed")
    assert "meta" not in data
    assert any("meta" in str(w.message) for w in caught)


def test_meta_must_be_a_json_object():
    with pytest.raises(ok.PlanValidationError, match="plan 'm'.*'meta'"):
        ok.Plan.model_validate({**META_PLAN, "meta": [1, 2]})
    with pytest.raises(ok.PlanValidationError, match="plan 'm'.*'meta' must be a JSON object"):
        ok.Plan.model_validate({**META_PLAN, "meta": {"x": float("nan")}})
    with pytest.raises(ok.PlanValidationError, match="did you mean 'meta'"):
        ok.Plan.model_validate({**{k: v for k, v in META_PLAN.items() if k != "meta"}, "mata": {}})


def test_meta_is_ignored_by_the_simulator():
    models = {"agents": {"x": {"latency": {"dist": "constant", "value": 5}}}}
    bare = {k: v for k, v in META_PLAN.items() if k != "meta"}
    with_meta = ok.monte_carlo(META_PLAN, models, runs=50, seed=1, progress=False)
    without = ok.monte_carlo(bare, models, runs=50, seed=1, progress=False)
    assert with_meta.runs.equals(without.runs)
    assert json.loads(json.dumps(ok.Plan.model_validate(META_PLAN).to_dict()))["meta"]


# ------------------------------------------------------------------ ok.tune (§7.1)

P_ERR = 0.3
RETRY = ok.Plan.model_validate(
    {
        "id": "retry",
        "steps": [
            {
                "id": "call",
                "agentId": "x",
                "action": "go",
                "retryPolicy": {"maxRetries": 0, "backoffMs": 0},
            }
        ],
    }
)
FLAKY = {"agents": {"x": {"latency": {"dist": "constant", "value": 10}, "error": P_ERR}}}
RETRIES = "steps.call.retryPolicy.maxRetries"


def tune_retries(**kw):
    args = dict(
        minimize="attempts_per_run",
        constraints={"success_rate": ">= 0.99"},
        trials=16,
        runs=2000,
        seed=0,
        progress=False,
    )
    return ok.tune(RETRY, FLAKY, {RETRIES: ok.Int(0, 8)}, **{**args, **kw})


def test_tune_finds_the_smallest_retry_count_whose_interval_meets_the_target():
    from orchkit._base.stats import wilson_ci

    res = tune_retries()
    # closed form: success = 1 - p^(r+1); feasible when the 95% interval's low end of a
    # study of 2000 runs at that rate clears 0.99: r = 3 (0.9919) is not enough, r = 4 is
    need = next(
        r for r in range(9) if wilson_ci(round(2000 * (1 - P_ERR ** (r + 1))), 2000)[1] >= 0.99
    )
    assert need == 4 and 1 - P_ERR**4 > 0.99  # the point estimate alone would take r = 3
    assert res.best.steps[0].retry_policy.max_retries == need
    t = res.trials
    assert set(t.columns) >= {
        "trial",
        RETRIES,
        "success_rate",
        "success_rate_ci_low",
        "success_rate_ci_high",
        "attempts_per_run",
        "feasible",
        "reason",
    }
    assert t[RETRIES].dtype.kind == "i"  # flat, pivotable columns
    # every trial is judged by the interval rule, and says why it failed
    assert (t["feasible"] == (t["success_rate_ci_low"] >= 0.99)).all()
    three = t[t[RETRIES] == 3]
    assert len(three) and not three["feasible"].any()
    assert three["reason"].str.contains("success_rate ci_low .* not >= 0.99").all()
    # common random numbers: success never drops as retries grow
    by_r = t.drop_duplicates(RETRIES).sort_values(RETRIES)
    assert by_r["success_rate"].is_monotonic_increasing
    meta = res.best.meta["tuned"]
    assert meta["values"] == {RETRIES: 4} and meta["seed"] == 0 and meta["runs"] == 2000
    assert set(meta["predicted"]) == {"attempts_per_run", "success_rate"}
    assert meta["predicted"]["success_rate"]["ciLow"] >= 0.99
    assert len(meta["modelsDigest"]) == 16 and meta["orchkitVersion"] == ok.__version__


def test_same_seed_gives_identical_trials_and_another_seed_does_not():
    a, b = tune_retries(trials=10), tune_retries(trials=10)
    pd.testing.assert_frame_equal(a.trials, b.trials)
    c = tune_retries(trials=10, seed=1)
    assert not a.trials[["success_rate"]].equals(c.trials[["success_rate"]])


def test_the_tuned_plan_round_trips_and_exports_for_the_seed(tmp_path):
    best = tune_retries(trials=8).best
    best.save(tmp_path / "tuned.json")
    assert ok.Plan.load(tmp_path / "tuned.json") == best
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seed_form = best.to_dict(compat="seed")
    assert "meta" not in seed_form and seed_form["steps"][0]["retryPolicy"]["maxRetries"] == 4


def test_verify_measures_the_optimism_on_a_fresh_seed():
    res = tune_retries(trials=12)
    v = res.verify()
    assert list(v["metric"]) == ["attempts_per_run", "success_rate"]
    assert (v["trial"] == res.best.meta["tuned"]["trial"]).all()
    row = v.set_index("metric").loc["success_rate"]
    assert row["verified"] != row["predicted"]  # fresh runs
    assert row["optimism"] == pytest.approx(row["predicted"] - row["verified"])
    assert abs(row["verified"] - (1 - P_ERR**5)) < 0.006  # ~4 SE of 2000 runs
    with pytest.warns(UserWarning, match="same runs"):
        same = res.verify(seed=0)
    assert (same["optimism"].abs() < 1e-12).all()


PAIR = ok.Plan.model_validate(
    {
        "id": "pair",
        "parallel": True,
        "steps": [
            {
                "id": "a",
                "agentId": "slow",
                "action": "go",
                "timeout": 1000,
                "retryPolicy": {"maxRetries": 2, "backoffMs": 0},
            },
            {
                "id": "b",
                "agentId": "slow",
                "action": "go",
                "timeout": 1000,
                "retryPolicy": {"maxRetries": 2, "backoffMs": 0},
            },
        ],
    }
)
SLOW = {
    "agents": {"slow": {"latency": {"dist": "lognormal", "median": 100, "p95": 600}, "error": 0.05}}
}


def test_pareto_plans_are_not_dominated_by_any_feasible_trial():
    res = ok.tune(
        PAIR,
        SLOW,
        {
            "steps.*.timeout": ok.Float(50, 1000, log=True),
            "steps.*.retryPolicy.maxRetries": ok.Int(0, 4),
        },
        minimize=["makespan_p95_ms", "attempts_per_run"],
        constraints={"success_rate": ">= 0.9"},
        trials=40,
        runs=500,
        progress=False,
    )
    front = res.pareto
    assert len(front) >= 2
    ok_trials = res.trials[res.trials["feasible"]]
    objs = ["makespan_p95_ms", "attempts_per_run"]
    points = [tuple(p.meta["tuned"]["predicted"][m]["value"] for m in objs) for p in front]
    assert len(set(points)) == len(points)
    for p in points:
        for q in ok_trials[objs].itertuples(index=False):
            assert not (
                all(qi <= pi for qi, pi in zip(q, p)) and any(qi < pi for qi, pi in zip(q, p))
            )
    # and every feasible trial is matched or dominated by a point of the front
    for q in ok_trials[objs].itertuples(index=False):
        assert any(all(pi <= qi for pi, qi in zip(p, q)) for p in points)
    with pytest.raises(ValueError, match="use .pareto"):
        res.best  # noqa: B018 - the property raises
    fig = res.chart()
    assert "Pareto front" in [t.name for t in fig.data]  # chart details: tests/test_charts.py
    names = {t.name for t in tune_retries(trials=6).chart().data}
    assert names >= {"feasible trial", "best feasible so far"}


def test_invalid_trial_plans_are_infeasible_with_the_reason():
    res = ok.tune(
        RETRY,
        FLAKY,
        {"steps.call.timeout": ok.Float(-20, 50)},
        minimize="makespan_mean_ms",
        constraints={"success_rate": ">= 0.5"},
        trials=12,
        runs=200,
        progress=False,
    )
    bad = res.trials[res.trials["steps.call.timeout"] <= 0]
    assert len(bad) and not bad["feasible"].any()
    assert bad["reason"].str.contains("(?s)invalid: .*step 'call'.*greater than 0").all()
    assert res.best.steps[0].timeout_ms > 10  # a timeout under the 10 ms latency always fails


def test_model_paths_tune_capacity_with_common_random_numbers():
    plan = ok.Plan.model_validate(
        {
            "id": "fan",
            "parallel": True,
            "steps": [{"id": f"s{i}", "agentId": "x", "action": "go"} for i in range(4)],
        }
    )
    models = {"agents": {"x": {"capacity": 1, "latency": {"dist": "constant", "value": 100}}}}
    res = ok.tune(
        plan,
        models,
        {"agents.x.capacity": ok.Int(1, 4)},
        minimize="makespan_mean_ms",
        constraints={"makespan_p95_ms": "<= 250"},
        trials=10,
        runs=100,
        progress=False,
    )
    t = res.trials.drop_duplicates("agents.x.capacity").set_index("agents.x.capacity")
    for cap, row in t.iterrows():  # ceil(4 / capacity) waves of 100 ms
        assert row["makespan_mean_ms"] == pytest.approx(100 * -(-4 // cap))
        assert row["feasible"] == (cap >= 2)
    assert res.best_models.capacity("x") == 4 and res.best.meta["tuned"]["values"] == {
        "agents.x.capacity": 4
    }


def test_bad_tune_input_is_named_before_running():
    space = {RETRIES: ok.Int(0, 3)}
    with pytest.raises(ValueError, match="unknown metric 'p95'.*makespan_p95_ms"):
        ok.tune(RETRY, FLAKY, space, minimize="p95", trials=2, runs=10, progress=False)
    with pytest.raises(ValueError, match="constraints\\['success_rate'\\].*'>= NUMBER'"):
        ok.tune(
            RETRY,
            FLAKY,
            space,
            minimize="attempts_per_run",
            constraints={"success_rate": "at least 0.9"},
            progress=False,
        )
    with pytest.raises(ok.PlanValidationError, match="names step 'nope'"):
        ok.tune(RETRY, FLAKY, {"steps.nope.timeout": ok.Float(1, 2)}, minimize="attempts_per_run")
    with pytest.raises(ok.PlanValidationError, match="names no agent entry"):
        ok.tune(RETRY, FLAKY, {"agents.y.capacity": ok.Int(1, 2)}, minimize="attempts_per_run")
    with pytest.raises(TypeError, match="space\\['x'\\] must be ok.Int"):
        ok.tune(RETRY, FLAKY, {"x": [1, 2]}, minimize="attempts_per_run")
    with pytest.raises(ValueError, match="sampler must be"):
        ok.tune(RETRY, FLAKY, space, minimize="attempts_per_run", sampler="cmaes")
    with pytest.raises(ValueError, match="low <= high"):
        ok.Int(3, 1)
    with pytest.raises(TypeError, match="non-empty list"):
        ok.Choice([])


def test_choice_of_objects_is_a_flat_column_and_maps_back():
    policies = [None, {"maxRetries": 2, "backoffMs": 5}]
    res = ok.tune(
        RETRY,
        FLAKY,
        {"steps.call.retryPolicy": ok.Choice(policies)},
        minimize="makespan_mean_ms",
        constraints={"success_rate": ">= 0.9"},
        trials=6,
        runs=300,
        progress=False,
    )
    column = res.trials["steps.call.retryPolicy"]
    assert set(column.dropna()) == {json.dumps(policies[1], sort_keys=True)} and column.isna().any()
    assert res.best.steps[0].retry_policy.max_retries == 2


def test_space_paths_are_checked_together_and_a_bad_one_is_named():
    """maxRetries alone is not a valid retryPolicy on a step without one, but with
    backoffMs it is: the paths are checked together (combinations of their ends), and a
    path is refused, by name, only when no combination makes it valid."""
    bare = ok.Plan.model_validate(
        {"id": "bare", "steps": [{"id": "call", "agentId": "x", "action": "go"}]}
    )
    pair = {
        "steps.*.retryPolicy.maxRetries": ok.Int(0, 3),
        "steps.*.retryPolicy.backoffMs": ok.Float(100, 1000),
    }
    args = dict(minimize="makespan_mean_ms", trials=4, runs=50, seed=0, progress=False)
    for space in (pair, dict(reversed(pair.items()))):  # either order
        res = ok.tune(bare, FLAKY, space, **args)
        assert res.trials["reason"].eq("").all(), res.trials["reason"].tolist()
        assert res.best.steps[0].retry_policy is not None
    with pytest.raises(
        ok.PlanValidationError, match=r"space\['steps\.\*\.retryPolicy\.maxRetries'\]"
    ):
        ok.tune(bare, FLAKY, {"steps.*.retryPolicy.maxRetries": ok.Int(0, 3)}, **args)
    with pytest.raises(
        ok.PlanValidationError, match=r"space\['steps\.nope\.timeout'\].*names step 'nope'"
    ):
        ok.tune(bare, FLAKY, {**pair, "steps.nope.timeout": ok.Float(1, 2)}, **args)
    with pytest.raises(
        ok.PlanValidationError, match=r"(?s)space\['steps\.call\.timeout'\].*greater than 0"
    ):
        ok.tune(bare, FLAKY, {**pair, "steps.call.timeout": ok.Float(-2, -1)}, **args)
    # one end failing is an infeasible region, not a wrong space; so is one combination
    res = ok.tune(bare, FLAKY, {**pair, "steps.call.timeout": ok.Float(-20, 50)}, **args)
    assert len(res.trials) == 4


# ------------------------------------------------------------------ ok.compare (§7.4)


def test_compare_puts_observed_and_predicted_side_by_side():
    models = {
        "agents": {
            "x": {"latency": {"dist": "lognormal", "median": 100, "p95": 300}, "error": 0.05}
        }
    }
    a = ok.monte_carlo(RETRY, models, runs=3000, seed=1, progress=False)
    b = ok.monte_carlo(RETRY, models, runs=3000, seed=2, progress=False)
    slower = {
        "agents": {
            "x": {"latency": {"dist": "lognormal", "median": 130, "p95": 300}, "error": 0.05}
        }
    }
    c = ok.monte_carlo(RETRY, slower, runs=3000, seed=2, progress=False)
    same, other = ok.compare(a, b), ok.compare(a.runs, c)
    assert list(same.index) == [
        "makespan_mean_ms",
        "makespan_p50_ms",
        "makespan_p95_ms",
        "makespan_p99_ms",
        "success_rate",
    ]
    assert list(same.columns[:6]) == [
        "observed",
        "observed_ci_low",
        "observed_ci_high",
        "predicted",
        "predicted_ci_low",
        "predicted_ci_high",
    ]
    assert same.loc["makespan_mean_ms", "observed"] == pytest.approx(
        a.summary()["makespan_mean_ms"]
    )
    assert same.ks_p > 0.01 and other.ks_p < 1e-6  # the KS test sees a 30% slower median
    assert same["overlap"].all()
    assert other.loc["makespan_p50_ms", "relative"] > 0.15
    assert "two-sample KS" in repr(same)
    fig = other.chart()  # the CDFs (chart details: tests/test_charts.py)
    cdfs = [t.name for t in fig.data if t.mode == "lines" and t.yaxis == "y"]
    assert cdfs == ["observed (3000 runs)", "predicted (3000 runs)"]
    with pytest.raises(TypeError, match="observed must be"):
        ok.compare(42, b)


def test_compare_takes_a_workload_studys_own_steady_state_intervals():
    queue = {"id": "q", "steps": [{"id": "s", "agentId": "srv", "action": "serve"}]}
    models = {"agents": {"srv": {"capacity": 1, "latency": {"dist": "exponential", "mean": 10}}}}
    study = ok.monte_carlo(
        queue,
        models,
        seed=3,
        progress=False,
        keep_spans=False,
        workload=ok.Workload(rate_per_s=80, horizon_ms=50_000),
    )
    table = ok.compare(study.runs, study)  # the same runs: as a bare frame, and as a study
    summary = study.summary().metrics
    for metric in ("makespan_mean_ms", "makespan_p95_ms", "success_rate"):
        assert table.loc[metric, "predicted_ci_low"] == summary.loc[metric, "ci_low"]
        assert table.loc[metric, "predicted_ci_high"] == summary.loc[metric, "ci_high"]
    # a frame alone says nothing of dependence: i.i.d. intervals, far narrower at rho = 0.8
    width = table["observed_ci_high"] - table["observed_ci_low"]
    steady = table["predicted_ci_high"] - table["predicted_ci_low"]
    assert steady["makespan_mean_ms"] > 3 * width["makespan_mean_ms"]


# ------------------------------------------------------------------ orchkit tune (§7.5)


def test_cli_tune_writes_the_tuned_plan_with_its_provenance(tmp_path, capsys):
    from orchkit.cli import main

    RETRY.save(tmp_path / "plan.json")
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(FLAKY))
    (tmp_path / "space.yaml").write_text(f"{RETRIES}: {{int: [0, 8]}}\n")
    out = tmp_path / "tuned.json"
    code = main(
        [
            "tune",
            str(tmp_path / "plan.json"),
            "--models",
            str(tmp_path / "models.yaml"),
            "--space",
            str(tmp_path / "space.yaml"),
            "--minimize",
            "attempts_per_run",
            "--constraint",
            "success_rate>=0.99",
            "--trials",
            "16",
            "--runs",
            "2000",
            "--seed",
            "0",
            "-o",
            str(out),
            "--trials-csv",
            str(tmp_path / "t.csv"),
            "--verify",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    tuned = ok.Plan.load(out)
    assert tuned.steps[0].retry_policy.max_retries == 4
    assert tuned.meta["tuned"]["constraints"] == {"success_rate": ">= 0.99"}
    assert f"{RETRIES}=4" in text and "optimism" in text and "feasible)" in text
    assert len(pd.read_csv(tmp_path / "t.csv")) == 16


def test_cli_tune_bad_input_exits_2_with_the_reason(tmp_path, capsys):
    from orchkit.cli import main

    RETRY.save(tmp_path / "plan.json")
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(FLAKY))
    base = [
        "tune",
        str(tmp_path / "plan.json"),
        "--models",
        str(tmp_path / "models.yaml"),
        "--minimize",
        "attempts_per_run",
        "--trials",
        "2",
        "--runs",
        "10",
    ]
    cases = {
        "{int: [0]}": "takes \\[low, high\\]",
        "{integer: [0, 2]}": "exactly one of int, float or choice",
        "{int: [0, 2], lg: true}": "unknown keys \\['lg'\\]",
        "[1, 2]": "expected a mapping",
    }
    for spec, message in cases.items():
        (tmp_path / "space.yaml").write_text(f"{RETRIES}: {spec}\n" if spec[0] == "{" else spec)
        assert main([*base, "--space", str(tmp_path / "space.yaml")]) == 2
        assert re.search(message, capsys.readouterr().err), spec
    (tmp_path / "space.yaml").write_text(f"{RETRIES}: {{int: [0, 2]}}\n")
    assert (
        main([*base, "--space", str(tmp_path / "space.yaml"), "--constraint", "success_rate=1"])
        == 2
    )
    assert "METRIC>=NUMBER" in capsys.readouterr().err
    assert main([*base[:-4], "--minimize", "p95", "--space", str(tmp_path / "space.yaml")]) == 2
    assert "unknown metric 'p95'" in capsys.readouterr().err
    assert (
        main(
            [*base, "--space", str(tmp_path / "space.yaml"), "--constraint", "success_rate>=0.9999"]
        )
        == 1
    )
    assert "no trial met the constraints" in capsys.readouterr().err


# ------------------------------------------------------------------ parsers take any input

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.floats(-1e3, 1e3) | st.text(max_size=5),
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.dictionaries(
            st.sampled_from(["int", "float", "choice", "log", "step", "x"]), kids, max_size=3
        )
    ),
    max_leaves=8,
)


@settings(derandomize=True, max_examples=80, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), _json, max_size=3) | _json)
def test_space_files_either_parse_or_fail_with_a_named_error(data):
    from orchkit._studies.tune import Choice, Float, Int, space_from_dict

    try:
        space = space_from_dict(data, "space.yaml")
    except ok.PlanValidationError as exc:
        assert str(exc).startswith("space.yaml")
        return
    assert space and all(isinstance(v, (Int, Float, Choice)) for v in space.values())


@settings(derandomize=True, max_examples=80, deadline=None)
@given(st.text(max_size=12) | st.sampled_from([">= 0.9", "<=20000", " >= 1e-3 ", ">=", "= 3"]))
def test_constraint_bounds_either_parse_or_name_the_format(text):
    from orchkit._studies.tune import parse_constraints

    try:
        ((op, bound),) = parse_constraints({"success_rate": text}).values()
    except ValueError as exc:
        assert "'>= NUMBER' or '<= NUMBER'" in str(exc)
        return
    assert op in (">=", "<=") and bound == float(text.strip()[2:])


# ------------------------------------------------------ minimize a setting or a cost (§13.4)

FAN = ok.Plan.model_validate(
    {
        "id": "fan",
        "parallel": True,
        "steps": [{"id": f"s{i}", "agentId": "x", "action": "go"} for i in range(4)],
    }
)
ONE_SLOT = {"agents": {"x": {"capacity": 1, "latency": {"dist": "constant", "value": 100}}}}
CAPACITY = "agents.x.capacity"


def test_tune_minimises_a_setting_subject_to_the_constraints():
    """``minimize`` a path of the space: the smallest capacity whose p95 interval meets
    250 ms is 2 (ceil(4 / capacity) waves of 100 ms); the "grid" sampler tries each of
    1..4 once and stops, however many trials were asked."""
    res = ok.tune(
        FAN,
        ONE_SLOT,
        {CAPACITY: ok.Int(1, 4)},
        minimize=CAPACITY,
        constraints={"makespan_p95_ms": "<= 250"},
        trials=20,
        runs=100,
        sampler="grid",
        progress=False,
    )
    assert sorted(res.trials[CAPACITY]) == [1, 2, 3, 4]
    assert res.minimize == [CAPACITY]
    assert res.best_models.capacity("x") == 2
    tuned = res.best.meta["tuned"]
    assert tuned["values"] == {CAPACITY: 2} and tuned["predicted"][CAPACITY] == {"value": 2}
    assert "makespan_p95_ms" in tuned["predicted"]
    check = res.verify(seed=1)
    assert list(check["metric"]) == ["makespan_p95_ms"]  # a setting is not re-measured
    res.chart()


def test_tune_minimises_a_callable_cost_and_verify_recomputes_it():
    def cost(params, metrics):  # slots cost 100 ms each, next to the mean makespan
        return 100 * params[CAPACITY] + metrics["makespan_mean_ms"]

    res = ok.tune(
        FAN,
        ONE_SLOT,
        {CAPACITY: ok.Int(1, 4)},
        minimize=cost,
        trials=8,
        runs=50,
        sampler="grid",
        progress=False,
    )
    by_cap = res.trials.set_index(CAPACITY)["cost"]
    assert dict(by_cap) == pytest.approx({1: 500, 2: 400, 3: 500, 4: 500})
    assert res.minimize == ["cost"] and res.best_models.capacity("x") == 2
    check = res.verify(seed=3).set_index("metric")
    assert check.loc["cost", "verified"] == pytest.approx(400)
    assert check.loc["cost", "optimism"] == pytest.approx(0)
    unnamed = ok.tune(
        FAN,
        ONE_SLOT,
        {CAPACITY: ok.Int(1, 2)},
        minimize=[lambda p, m: m["makespan_p95_ms"], "attempts_per_run"],
        trials=2,
        runs=20,
        sampler="grid",
        progress=False,
    )
    assert unnamed.minimize == ["cost", "attempts_per_run"] and "cost" in unnamed.trials


def test_bad_minimize_is_named():
    space = {CAPACITY: ok.Int(1, 4)}
    with pytest.raises(ValueError, match="not one of the space's"):
        ok.tune(FAN, ONE_SLOT, space, minimize="agents.y.capacity", trials=1, progress=False)
    with pytest.raises(TypeError, match="must be a number"):
        ok.tune(FAN, ONE_SLOT, {"timeout": ok.Choice(["a", "b"])}, minimize="timeout")
    with pytest.raises(TypeError, match="minimize must be a metric name, a path"):
        ok.tune(FAN, ONE_SLOT, space, minimize=[3], trials=1, progress=False)
    with pytest.raises(TypeError, match="minimize callable 'cost' must return a number"):
        ok.tune(
            FAN, ONE_SLOT, space, minimize=lambda p, m: "cheap", trials=1, runs=5, progress=False
        )
    with pytest.raises(ValueError, match="sampler='grid' .* needs ok.Int or ok.Choice"):
        ok.tune(
            RETRY,
            FLAKY,
            {"steps.call.timeout": ok.Float(1, 2)},
            minimize="attempts_per_run",
            sampler="grid",
        )


def _samplers():
    import optuna

    grid = {RETRIES: [0, 1, 2, 3]}
    return {
        "TPESampler": optuna.samplers.TPESampler(seed=0),
        "RandomSampler": optuna.samplers.RandomSampler(seed=0),
        "NSGAIISampler": optuna.samplers.NSGAIISampler(seed=0, population_size=4),
        "NSGAIIISampler": optuna.samplers.NSGAIIISampler(seed=0, population_size=4),
        "QMCSampler": optuna.samplers.QMCSampler(seed=0),
        "BruteForceSampler": optuna.samplers.BruteForceSampler(seed=0),
        "GridSampler": optuna.samplers.GridSampler(grid, seed=0),
        "PartialFixedSampler": optuna.samplers.PartialFixedSampler(
            {RETRIES: 2}, optuna.samplers.RandomSampler(seed=0)
        ),
    }


SAMPLERS = [
    "TPESampler",
    "RandomSampler",
    "NSGAIISampler",
    "NSGAIIISampler",
    "QMCSampler",
    "BruteForceSampler",
    "GridSampler",
    "PartialFixedSampler",
]  # CmaEsSampler and GPSampler need cmaes / torch, which orchkit does not install


@pytest.mark.parametrize("name", SAMPLERS)
def test_tune_works_with_every_optuna_sampler(name):
    """Each sampler drives the search; GridSampler and BruteForceSampler end it themselves
    once every point is tried (they call study.stop(), which optuna allows only inside
    optimize(): tune's old ask-and-tell loop raised there)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. QMC's experimental warning
        sampler = _samplers()[name]
        res = ok.tune(
            RETRY,
            FLAKY,
            {RETRIES: ok.Int(0, 3)},
            minimize="attempts_per_run",
            constraints={"success_rate": ">= 0.9"},
            trials=10,
            runs=300,
            sampler=sampler,
            progress=False,
        )
    values = list(res.trials[RETRIES])
    if name in ("GridSampler", "BruteForceSampler"):
        assert sorted(values) == [0, 1, 2, 3]  # each once, then the sampler stops the search
    elif name == "PartialFixedSampler":
        assert set(values) == {2}
    else:
        assert len(values) == 10
    assert res.best.meta["tuned"]["values"][RETRIES] >= 2  # 0.3^(r+1) <= 0.1 needs r >= 1
