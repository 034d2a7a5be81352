"""Hardening (issue 7), the input half: every bad plan file, plan dict, agent model, CLI
argument or API argument is an orchkit error (or a TypeError/ValueError naming the
parameter) or a valid object, never a hang, an overflow or a raw traceback."""

from __future__ import annotations

import time

import pytest

import orchkit as ok
from orchkit._engine.core import compile_plan
from orchkit._spec.plan import MAX_MS, RetryPolicy

CONST = {"agents": {"*": {"latency": {"dist": "constant", "value": 10}, "error": 1.0}}}


def retry_plan(max_retries: int, strategy: str = "linear", **rp) -> ok.Plan:
    return ok.Plan.model_validate(
        {
            "id": "r",
            "steps": [
                {
                    "id": "s",
                    "agentId": "a",
                    "action": "x",
                    "retryPolicy": {
                        "maxRetries": max_retries,
                        "backoffMs": 5,
                        "strategy": strategy,
                        **rp,
                    },
                }
            ],
        }
    )


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
    capped = RetryPolicy(
        max_retries=10**6, backoff_ms=5, strategy="exponential", max_backoff_ms=60_000
    )
    assert capped.delay_ms(10**6) == 60_000
    assert capped.delay_ms(3) == 20
    # the default cap is documented and reached smoothly
    assert rp.delay_ms(10**6) == MAX_MS


@pytest.mark.parametrize("method", ["fast", "simpy"])
def test_exponential_budget_beyond_1024_simulates(method):
    plan = ok.Plan.model_validate({**retry_plan(2000, "exponential", maxBackoffMs=1).to_dict()})
    res = ok.monte_carlo(plan, CONST, runs=3, seed=1, method=method, progress=False)
    assert (res.runs["status"] == "failed").all()
    assert (res.runs["attempts"] == 2001).all()


# ------------------------------------------------------------------ plan files and dicts

import json  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GOOD_YAML = "id: p\nsteps:\n  - {id: a, agentId: x, action: go}\n"


def S(**kw):
    return {"id": "s", "agentId": "a", "action": "x", **kw}


def bomb(levels: int = 9, fan: int = 10) -> str:
    """A 'billion laughs' YAML plan: fan**levels strings from a few hundred bytes."""
    lines = ["  l0: &l0 [" + ",".join(["lol"] * fan) + "]"]
    lines += [
        f"  l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * fan) + "]" for i in range(1, levels + 1)
    ]
    return (
        "id: p\nmeta:\n"
        + "\n".join(lines)
        + f"\nsteps: [{{id: a, agentId: x, action: go, input: *l{levels}}}]\n"
    )


BAD_TEXTS = {
    # name: (suffix, bytes, a word the message must contain)
    "binary": (".json", bytes(range(256)) * 4, "UTF-8"),
    "latin-1": (".yaml", "id: caf\xe9\n".encode("latin-1"), "UTF-8"),
    "deep JSON": (".json", b"[" * 100_000 + b"]" * 100_000, "nest"),
    "deep YAML": (".yaml", b"a: " + b"[" * 100_000, "nest"),
    "5,000-digit JSON number": (".json", b'{"id": "p", "x": 1' + b"0" * 5000 + b"}", "digit"),
    "5,000-digit YAML number": (".yaml", b"id: p\nx: 1" + b"0" * 5000, "digit"),
    "lone surrogate": (".json", b'{"id": "\\ud800", "steps": []}', "surrogate"),
    "!!int ~": (".yaml", b"id: p\ntimeout: !!int ~\n", "int"),
    "!!timestamp x": (".yaml", b"id: p\ntimeout: !!timestamp x\n", "date"),
    "invalid date": (
        ".yaml",
        b"id: p\nsteps: [{id: a, agentId: x, action: go, input: 2024-02-30}]",
        "date",
    ),
    "valid date": (
        ".yaml",
        b"id: p\nsteps: [{id: a, agentId: x, action: go, input: 2024-02-28}]",
        "quote",
    ),
    "non-string key": (".yaml", b"id: p\n1: x\n", "key"),
    "complex key": (".yaml", b"? [a, b]\n: c\n", "key"),
    "!!set": (".yaml", b"id: p\nsteps: [{id: a, agentId: x, action: go, input: !!set {a}}]", "set"),
    "!!bool x": (".yaml", b"id: p\nparallel: !!bool x\n", "YAML"),
    "list top level": (".json", b"[1, 2]", "object"),
    "string top level": (".yaml", b"just text", "object"),
    "empty file": (".yaml", b"", "object"),
    "duplicate JSON key": (
        ".json",
        b'{"id": "p", "steps": [{"id": "b", "agentId": "x", "action": "go", '
        b'"dependencies": ["a"], "dependencies": []}]}',
        "duplicate",
    ),
    "duplicate YAML key": (".yaml", b"id: p\nid: q\nsteps: []\n", "duplicate"),
    "NaN": (".json", b'{"id": "p", "timeout": NaN}', "NaN"),
    "Infinity": (".json", b'{"id": "p", "timeout": Infinity}', "Infinity"),
    "1e400": (
        ".json",
        b'{"id": "p", "steps": [{"id": "a", "agentId": "x", "action": "go", "timeout": 1e400}]}',
        "finite",
    ),
    ".inf": (".yaml", b"id: p\nsteps: [{id: a, agentId: x, action: go, timeout: .inf}]", "finite"),
    ".nan in input": (
        ".yaml",
        b"id: p\nsteps: [{id: a, agentId: x, action: go, input: {v: .nan}}]",
        "finite",
    ),
    "alias bomb": (".yaml", bomb().encode(), "alias"),
    "recursive alias": (".yaml", b"id: p\nsteps: &s [*s]\n", "contains"),
}


@pytest.mark.parametrize("name", list(BAD_TEXTS))
def test_every_bad_file_is_one_short_plan_validation_error(tmp_path, name):
    suffix, data, word = BAD_TEXTS[name]
    path = tmp_path / f"plan{suffix}"
    path.write_bytes(data)
    t0 = time.perf_counter()
    with pytest.raises(ok.PlanValidationError) as info:
        ok.Plan.load(path)
    assert time.perf_counter() - t0 < 1.0
    msg = str(info.value)
    assert word.lower() in msg.lower(), msg
    assert len(msg) < 700  # a short prefix of the input at most, never all of it


def test_alias_bomb_is_rejected_before_it_expands():
    text = bomb(levels=9, fan=10)  # 10**9 strings once expanded
    assert len(text) < 1024
    t0 = time.perf_counter()
    with pytest.raises(ok.PlanValidationError, match="alias"):
        ok.Plan.from_text(text, "yaml")
    assert time.perf_counter() - t0 < 0.2
    # a few aliases that expand modestly are fine (and come out as plain values)
    plan = ok.Plan.from_text(bomb(levels=2, fan=3), "yaml")
    assert plan.steps[0].input == [[["lol"] * 3] * 3] * 3


def test_a_byte_order_mark_is_ignored(tmp_path):
    for suffix, text in (
        (".yaml", GOOD_YAML),
        (".json", json.dumps(ok.Plan.from_text(GOOD_YAML, "yaml").to_dict())),
    ):
        path = tmp_path / f"bom{suffix}"
        path.write_bytes(b"\xef\xbb\xbf" + text.encode())
        assert ok.Plan.load(path) == ok.Plan.from_text(GOOD_YAML, "yaml")


def test_missing_file_and_directory_are_plan_validation_errors(tmp_path):
    with pytest.raises(ok.PlanValidationError, match="cannot read plan file"):
        ok.Plan.load(tmp_path / "nope.json")
    with pytest.raises(ok.PlanValidationError, match="cannot read plan file"):
        ok.Plan.load(tmp_path)


def test_messages_quote_a_short_prefix_only():
    huge = "y" * 100_000
    for bad in (
        {"id": "p", "steps": [S(timeout=huge)]},
        {"id": "p", "steps": huge},
        {"id": "p", "steps": [S(input={"k": {1, 2, *range(10_000)}})]},
    ):
        with pytest.raises(ok.PlanValidationError) as info:
            ok.Plan.model_validate(bad)
        assert len(str(info.value)) < 500, str(info.value)[:200]
    with pytest.raises(ok.PlanValidationError) as info:
        ok.Plan.from_text("[" + "1," * 100_000 + "1]")
    assert len(str(info.value)) < 300


STRICT = {
    "timeout: true": ({"id": "p", "steps": [S(timeout=True)]}, "timeout"),
    'timeout: "5000"': ({"id": "p", "steps": [S(timeout="5000")]}, "timeout"),
    "plan timeout: false": ({"id": "p", "steps": [S()], "timeout": False}, "timeout"),
    'parallel: "yes"': ({"id": "p", "steps": [S()], "parallel": "yes"}, "parallel"),
    "parallel: 1": ({"id": "p", "steps": [S()], "parallel": 1}, "parallel"),
    "maxRetries: true": (
        {"id": "p", "steps": [S(retryPolicy={"maxRetries": True, "backoffMs": 1})]},
        "maxRetries",
    ),
    "maxRetries: 2.0": (
        {"id": "p", "steps": [S(retryPolicy={"maxRetries": 2.0, "backoffMs": 1})]},
        "maxRetries",
    ),
    'backoffMs: "10"': (
        {"id": "p", "steps": [S(retryPolicy={"maxRetries": 2, "backoffMs": "10"})]},
        "backoffMs",
    ),
    "jitter: true": (
        {"id": "p", "steps": [S(retryPolicy={"maxRetries": 2, "backoffMs": 1, "jitter": True})]},
        "jitter",
    ),
    "failFast: 0": ({"id": "p", "steps": [S()], "failFast": 0}, "failFast"),
    "maxConcurrency: true": (
        {"id": "p", "steps": [S()], "parallel": True, "maxConcurrency": True},
        "maxConcurrency",
    ),
    "timeout: NaN": ({"id": "p", "steps": [S(timeout=float("nan"))]}, "timeout"),
    "timeout: inf": ({"id": "p", "steps": [S()], "timeout": float("inf")}, "timeout"),
    "backoffMs: inf": (
        {"id": "p", "steps": [S(retryPolicy={"maxRetries": 1, "backoffMs": float("inf")})]},
        "backoffMs",
    ),
    "maxBackoffMs: nan": (
        {
            "id": "p",
            "steps": [
                S(retryPolicy={"maxRetries": 1, "backoffMs": 1, "maxBackoffMs": float("nan")})
            ],
        },
        "maxBackoffMs",
    ),
    "input with NaN": ({"id": "p", "steps": [S(input={"v": float("nan")})]}, "input"),
    "input with a set": ({"id": "p", "steps": [S(input={"v": {1, 2}})]}, "input"),
    "input with an object": ({"id": "p", "steps": [S(input=[object()])]}, "input"),
    "input with int keys": ({"id": "p", "steps": [S(input={1: "a"})]}, "input"),
    "input containing itself": (
        lambda: (d := {}, d.__setitem__("d", d), {"id": "p", "steps": [S(input=d)]})[-1],
        "input",
    ),
    "whitespace plan id": ({"id": "  ", "steps": [S()]}, "blank"),
    "whitespace step id": ({"id": "p", "steps": [S(id="\t")]}, "blank"),
    "whitespace agentId": ({"id": "p", "steps": [S(agentId=" ")]}, "blank"),
    "whitespace action": ({"id": "p", "steps": [S(action="\n")]}, "blank"),
    "whitespace dependency": ({"id": "p", "steps": [S(dependencies=[" "])]}, "blank"),
    "empty fallback plan": ({"id": "p", "steps": [S()], "fallbackPlan": {}}, "plan 'p'"),
    "fallback plan without steps": (
        {"id": "p", "steps": [S()], "fallbackPlan": {"id": "fb", "steps": []}},
        "plan 'p'",
    ),
    "bad step in an id-less fallback": (
        {"id": "p", "steps": [S()], "fallbackPlan": {"steps": [S(timeout=-1)]}},
        "fallback plan of plan 'p'",
    ),
    "list, not a plan": ([{"id": "p"}], "mapping"),
    "timeout: 1e300": ({"id": "p", "steps": [S(timeout=1e300)]}, "timeout"),
    "plan timeout over 1e12": ({"id": "p", "steps": [S()], "timeout": 1e12 + 1}, "timeout"),
    "hedge delayMs: 1e300": (
        {"id": "p", "steps": [S(hedge={"delayMs": 1e300, "maxHedges": 1})]},
        "delayMs",
    ),
    "timeout: a 5,000-digit int": ({"id": "p", "steps": [S(timeout=10**5000)]}, "timeout"),
    "input with a 5,000-digit int": ({"id": "p", "steps": [S(input={"n": -(10**5000)})]}, "input"),
    "maxRetries: a 301-digit int": (
        {"id": "p", "steps": [S(retryPolicy={"maxRetries": 10**300, "backoffMs": 1})]},
        "maxRetries",
    ),
}


@pytest.mark.parametrize("name", list(STRICT))
def test_strict_types_and_json_values(name):
    data, word = STRICT[name]
    data = data() if callable(data) else data
    with pytest.raises(ok.PlanValidationError) as info:
        ok.Plan.model_validate(data)
    assert word in str(info.value), str(info.value)


def test_the_longest_times_save_and_load_back_equal(tmp_path):
    plan = ok.Plan.model_validate(
        {
            "id": "p",
            "timeout": 1e12,
            "steps": [
                S(
                    timeout=1e12 - 0.5,
                    retryPolicy={"maxRetries": 10**299, "backoffMs": 1e12},
                    hedge={"delayMs": 1e12, "maxHedges": 1},
                )
            ],
        }
    )
    plan.save(tmp_path / "p.json")
    assert ok.Plan.load(tmp_path / "p.json") == plan


def test_seed_plans_load_as_they_are_and_round_trip(tmp_path):
    paths = sorted((ROOT / "data" / "plans").glob("*.json"))
    assert len(paths) >= 6
    for path in paths:
        plan = ok.Plan.load(path)
        plan.save(tmp_path / "p.json")
        assert ok.Plan.load(tmp_path / "p.json") == plan


def test_python_values_are_normalised_to_json():
    np = pytest.importorskip("numpy")
    plan = ok.Plan.model_validate(
        {
            "id": "p",
            "timeout": np.float64(500),
            "steps": [
                S(
                    input={"t": (1, 2), "n": np.int64(3)},
                    retryPolicy={"maxRetries": np.int64(2), "backoffMs": np.float32(1.5)},
                )
            ],
        }
    )
    assert plan.steps[0].input == {"t": [1, 2], "n": 3}
    assert type(plan.steps[0].input["n"]) is int
    assert plan.steps[0].retry_policy.max_retries == 2


def test_max_concurrency_on_a_sequential_plan_warns():
    with pytest.warns(ok.PlanWarning, match="maxConcurrency 2 has no effect.*parallel: false"):
        ok.Plan.model_validate({"id": "p", "steps": [S()], "maxConcurrency": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok.Plan.model_validate({"id": "p", "steps": [S()], "maxConcurrency": 2, "parallel": True})


# ------------------------------------------------------------------ agent model files

import math  # noqa: E402
import random  # noqa: E402

import numpy as np  # noqa: E402

ONE_STEP = ok.Plan.model_validate({"id": "one", "steps": [S()]})

OVERFLOWING = {
    "lognormal sigma 1e3": {"dist": "lognormal", "mu": 0, "sigma": 1e3},
    "lognormal mu 800": {"dist": "lognormal", "mu": 800, "sigma": 1},
    "lognormal p95/median 1e300": {"dist": "lognormal", "median": 1, "p95": 1e300},
    "gamma cv 1e-200": {"dist": "gamma", "mean": 100, "cv": 1e-200},
    "gamma cv 1e200": {"dist": "gamma", "mean": 100, "cv": 1e200},
    "weibull p95/median 1e300": {"dist": "weibull", "median": 1, "p95": 1e300},
    "weibull shape 1e-3": {"dist": "weibull", "shape": 1e-3, "scale": 100},
    "exponential mean 1e300": {"dist": "exponential", "mean": 1e300},
    "uniform high 1e308": {"dist": "uniform", "low": 0, "high": 1e308},
    "constant 1e300": {"dist": "constant", "value": 1e300},
}


@pytest.mark.parametrize("name", list(OVERFLOWING))
def test_models_that_would_overflow_are_rejected_with_the_range(name):
    with pytest.raises(ok.PlanValidationError) as info:
        ok.AgentModels.from_dict({"agents": {"a": {"latency": OVERFLOWING[name]}}})
    msg = str(info.value)
    assert "agent 'a' latency" in msg and any(w in msg for w in ("range", "at most")), msg


def finite_on_both_paths(models: ok.AgentModels) -> None:
    """Draws are finite on both samplers, and one simulated run ends with a finite time
    on the SimPy path and on the fast path."""
    dist = models.resolve("a", "x").latency
    assert all(math.isfinite(dist.sample(random.Random(i))) for i in range(200))
    assert np.isfinite(dist.sample_array(np.random.default_rng(1), 2000)).all()
    for method in ("simpy", "fast"):
        res = ok.monte_carlo(ONE_STEP, models, runs=20, seed=3, method=method, progress=False)
        assert np.isfinite(res.runs["makespan_ms"]).all(), method
        assert set(res.runs["status"]) <= {"succeeded", "failed"}


BOUNDARY = {
    "lognormal sigma 10": {"dist": "lognormal", "mu": math.log(1e12), "sigma": 10},
    "lognormal widest p95/median": {"dist": "lognormal", "median": 1e-3, "p95": 1e3},
    "gamma cv 1e-9": {"dist": "gamma", "mean": 1e12, "cv": 1e-9},
    "gamma cv 10": {"dist": "gamma", "mean": 1e12, "cv": 10},
    "weibull shape 0.1": {"dist": "weibull", "shape": 0.1, "scale": 1e12},
    "exponential mean 1e12": {"dist": "exponential", "mean": 1e12},
}


@pytest.mark.parametrize("name", list(BOUNDARY))
def test_models_at_the_edge_of_the_range_simulate_finitely_on_both_paths(name):
    finite_on_both_paths(ok.AgentModels.from_dict({"agents": {"a": {"latency": BOUNDARY[name]}}}))


def test_model_files_go_through_the_safe_loader(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "agents:\n  a: {latency: {dist: constant, value: 1}}\n  a: {latency: "
        "{dist: constant, value: 2}}\n"
    )
    with pytest.raises(ok.PlanValidationError, match="duplicate"):
        ok.AgentModels.load(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ok.PlanValidationError, match="UTF-8"):
        ok.AgentModels.load(path)
    path.write_text(
        bomb().replace(
            "id: p\nmeta:", "agents:\n a: {latency: {dist: constant, value: 1}}\ndescription:"
        )
    )
    with pytest.raises(ok.PlanValidationError, match="alias"):
        ok.AgentModels.load(path)


wild_number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=1e-300, max_value=1e300).map(lambda v: v * 1.0),
    st.sampled_from([0, 1, -1, 1e-200, 1e200, 1e12, 1e13, 1e-9, 10, 10.5, True, "5"]),
    st.integers(-(10**20), 10**20),
)
DIST_KEYS = {
    "constant": ["value"],
    "exponential": ["mean"],
    "lognormal": ["median", "p95"],
    "lognormal2": ["mu", "sigma"],
    "gamma": ["mean", "cv"],
    "uniform": ["low", "high"],
    "weibull": ["median", "p95"],
    "weibull2": ["shape", "scale"],
}


@st.composite
def model_dicts(draw):
    kind = draw(st.sampled_from(sorted(DIST_KEYS)))
    latency = {"dist": kind.rstrip("2"), **{k: draw(wild_number) for k in DIST_KEYS[kind]}}
    entry = {"latency": latency}
    if draw(st.booleans()):
        entry["error"] = draw(st.one_of(st.floats(0, 1), wild_number))
    return {"agents": {"a": entry}}


@settings(
    derandomize=True, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(model_dicts())
def test_model_dicts_are_an_error_or_simulate_finitely_on_both_paths(data):
    try:
        models = ok.AgentModels.from_dict(data)
    except ok.PlanValidationError:
        return
    finite_on_both_paths(models)


# ------------------------------------------------------------------ CLI

import subprocess  # noqa: E402
import sys  # noqa: E402

from orchkit.cli import main  # noqa: E402

EXE = Path(sys.executable).parent / "orchkit"
MODELS = {"agents": {"*": {"latency": {"dist": "constant", "value": 10}}}}


@pytest.fixture
def files(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"id": "p", "steps": [S()]}))
    models = tmp_path / "models.json"
    models.write_text(json.dumps(MODELS))
    binary = tmp_path / "binary.json"
    binary.write_bytes(bytes(range(256)))
    return {"plan": str(plan), "models": str(models), "binary": str(binary), "dir": str(tmp_path)}


def one_error_line(capsys, code: int) -> str:
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


BAD_ARGS = {
    "missing plan": (["validate", "{dir}/nope.json"], "cannot read plan file"),
    "plan is a folder": (["validate", "{dir}"], "cannot read plan file"),
    "binary plan": (["validate", "{binary}"], "UTF-8"),
    "export to a missing folder": (
        ["export", "{plan}", "-o", "{dir}/no/such/out.json"],
        "No such file",
    ),
    "export onto a folder": (["export", "{plan}", "-o", "{dir}"], "directory"),
    "gantt into a missing folder": (
        [
            "simulate",
            "{plan}",
            "--models",
            "{models}",
            "--runs",
            "5",
            "--gantt",
            "{dir}/no/such/g.html",
        ],
        "No such file",
    ),
    "binary models": (["simulate", "{plan}", "--models", "{binary}", "--runs", "5"], "UTF-8"),
    "workload: a word": (
        ["simulate", "{plan}", "--models", "{models}", "--workload", "rate=fast"],
        "not a number",
    ),
    "workload: nan rate": (
        ["simulate", "{plan}", "--models", "{models}", "--workload", "rate=nan,horizon=1000"],
        "rate_per_s",
    ),
    "workload: arrivals of words": (
        ["simulate", "{plan}", "--models", "{models}", "--workload", "arrivals=0;x;9"],
        "not a number",
    ),
    "workload: only commas": (
        ["simulate", "{plan}", "--models", "{models}", "--workload", ",,"],
        "workload",
    ),
    "workload: unknown key": (
        ["simulate", "{plan}", "--models", "{models}", "--workload", "speed=3"],
        "key=value",
    ),
    "negative runs": (["simulate", "{plan}", "--models", "{models}", "--runs", "-3"], "runs"),
}


@pytest.mark.parametrize("name", list(BAD_ARGS))
def test_cli_bad_input_is_one_line_and_exit_2(files, capsys, name):
    argv, word = BAD_ARGS[name]
    line = one_error_line(capsys, main([a.format(**files) for a in argv]))
    assert word in line, line


def test_installed_command_prints_no_traceback(files):
    proc = subprocess.run(
        [str(EXE), "export", files["plan"], "-o", files["dir"] + "/x/y.json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_cli_warnings_are_one_line(files, capsys):
    plan = Path(files["dir"]) / "seq.json"
    plan.write_text(json.dumps({"id": "q", "steps": [S()], "maxConcurrency": 3}))
    assert main(["validate", str(plan)]) == 0
    err = capsys.readouterr().err
    assert (
        err.startswith("warning: plan 'q': maxConcurrency 3 has no effect") and err.count("\n") == 1
    )


ARG_WORDS = st.sampled_from(
    [
        "--runs",
        "--seed",
        "--workload",
        "--method",
        "--json",
        "-o",
        "--compat",
        "seed",
        "fast",
        "simpy",
        "auto",
        "0",
        "3",
        "-1",
        "2.5",
        "1e9",
        "nan",
        "rate=5,horizon=100",
        "interval=0,horizon=10",
        "arrivals=1;2",
        "rate=1e300,horizon=1e300",
        "=",
        ",",
        ";",
        "",
        "{plan}",
        "{binary}",
        "{dir}",
        "{dir}/out/x.json",
        "{models}",
    ]
)


@st.composite
def cli_args(draw):
    cmd = draw(st.sampled_from(["validate", "export", "simulate"]))
    words = draw(st.lists(st.one_of(ARG_WORDS, st.text(max_size=8)), max_size=6))
    head = [cmd, draw(st.sampled_from(["{plan}", "{binary}", "{dir}", "x"]))]
    if cmd == "simulate":
        head += ["--models", draw(st.sampled_from(["{models}", "{plan}", "{binary}"]))]
        if "--runs" not in words:
            head += ["--runs", "3"]
    return head + words


@settings(
    derandomize=True,
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(argv=cli_args())
def test_cli_argument_strings_give_an_exit_code_never_a_traceback(files, capsys, argv):
    argv = [a.replace("{", "{{").replace("}", "}}") if a.count("{") != 1 else a for a in argv]
    argv = [a.format(**files) for a in argv]
    if "--runs" in argv:  # keep the property fast: huge run counts are valid, just slow
        i = argv.index("--runs")
        if i + 1 < len(argv) and argv[i + 1].lstrip("-").isdigit() and int(argv[i + 1]) > 100:
            argv[i + 1] = "5"
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors: exit 2 with usage on stderr
        code = exc.code
    out, err = capsys.readouterr()
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err
    if code == 2 and err.startswith("error:"):
        assert err.count("\n") == 1, err


# ------------------------------------------------------------------ Python API arguments

PLAN = {"id": "p", "steps": [S()]}
BAD_API = {
    "simulate seed='x'": (lambda: ok.simulate(PLAN, MODELS, seed="x"), TypeError, "seed"),
    "simulate seed=1.5": (lambda: ok.simulate(PLAN, MODELS, seed=1.5), TypeError, "seed"),
    "simulate models=5": (lambda: ok.simulate(PLAN, 5), TypeError, "models"),
    "simulate plan=[...]": (lambda: ok.simulate([PLAN], MODELS), TypeError, "plan"),
    "monte_carlo runs=2.5": (lambda: ok.monte_carlo(PLAN, MODELS, runs=2.5), TypeError, "runs"),
    "monte_carlo runs='10'": (lambda: ok.monte_carlo(PLAN, MODELS, runs="10"), TypeError, "runs"),
    "monte_carlo runs=True": (lambda: ok.monte_carlo(PLAN, MODELS, runs=True), TypeError, "runs"),
    "monte_carlo runs=0": (lambda: ok.monte_carlo(PLAN, MODELS, runs=0), ValueError, "runs"),
    "monte_carlo seed='x'": (lambda: ok.monte_carlo(PLAN, MODELS, seed="x"), TypeError, "seed"),
    "monte_carlo keep_spans='x'": (
        lambda: ok.monte_carlo(PLAN, MODELS, keep_spans="x"),
        TypeError,
        "keep_spans",
    ),
    "monte_carlo keep_spans=-1": (
        lambda: ok.monte_carlo(PLAN, MODELS, keep_spans=-1),
        ValueError,
        "keep_spans",
    ),
    "monte_carlo chunk_runs=0": (
        lambda: ok.monte_carlo(PLAN, MODELS, chunk_runs=0),
        ValueError,
        "chunk_runs",
    ),
    "monte_carlo progress='no'": (
        lambda: ok.monte_carlo(PLAN, MODELS, progress="no"),
        TypeError,
        "progress",
    ),
    "sweep runs=2.5": (
        lambda: ok.sweep(PLAN, MODELS, {"timeout": [5]}, runs=2.5),
        TypeError,
        "runs",
    ),
    "sweep seed='x'": (
        lambda: ok.sweep(PLAN, MODELS, {"timeout": [5]}, seed="x"),
        TypeError,
        "seed",
    ),
    "sweep grid of a scalar": (lambda: ok.sweep(PLAN, MODELS, {"timeout": 5}), TypeError, "grid"),
    "sweep grid of a string": (
        lambda: ok.sweep(PLAN, MODELS, {"timeout": "500"}),
        TypeError,
        "grid",
    ),
}


@pytest.mark.parametrize("name", list(BAD_API))
def test_api_argument_types_are_checked_up_front(name):
    call, exc_type, word = BAD_API[name]
    with pytest.raises(exc_type) as info:
        call()
    assert word in str(info.value), str(info.value)


def test_api_accepts_numpy_ints():
    res = ok.monte_carlo(
        PLAN, MODELS, runs=np.int64(5), seed=np.int32(2), keep_spans=np.int64(2), progress=False
    )
    assert len(res.runs) == 5
    assert ok.simulate(PLAN, MODELS, seed=np.int64(2)).status == "succeeded"


HOSTILE = {  # the same mistakes in every file a user writes: one reader, the same errors
    "duplicate key": ("x: 1\nx: 2\n", "duplicate"),
    "alias bomb": (bomb().replace("id: p\nmeta:", "description:"), "alias"),
    "too deep": ("a: " + "[" * 150 + "]" * 150 + "\n", "deep"),
    "binary": ("\x89PNG\r\n\x1a\n" + "\x00" * 20, "UTF-8"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize("kind", ["plan", "models", "policies"])
def test_plans_models_and_policies_share_the_safe_reader(tmp_path, kind, name):
    """A policies file with a duplicate key loaded silently (last wins) while the same
    mistake in a plan was refused: every file now goes through the plans' reader."""
    text, word = HOSTILE[name]
    if kind == "policies" and name == "duplicate key":  # a meaningful duplicate: two windows
        text = "breakers:\n  tutor-*:\n    window: 10\n    window: 20\n"
    path = tmp_path / f"{kind}.yaml"
    path.write_bytes(text.encode("latin-1") if name == "binary" else text.encode())
    load = {"plan": ok.Plan.load, "models": ok.AgentModels.load, "policies": ok.Policies.load}
    with pytest.raises(ok.PlanValidationError, match=word) as info:
        load[kind](path)
    assert str(path) in str(info.value) or name == "binary"
