"""Agent models (SPEC §4.1): distributions against closed forms, matching rules,
overrides, validation messages, file round trips, determinism, fitting."""

from __future__ import annotations

import json
import math
import pickle
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from orchkit import PlanValidationError
from orchkit._spec.models import (
    OUTCOMES,
    ActionModel,
    AgentModels,
    Constant,
    Empirical,
    Exponential,
    Gamma,
    Lognormal,
    distribution_from_dict,
)
from orchkit._spec.plan import Plan

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "data" / "agents" / "default.yaml"
N = 100_000
Z = 5.0  # tolerance in standard errors: a false alarm has probability ~6e-7 per check

# (spec, scipy frozen distribution with the same law)
CASES = [
    ({"dist": "exponential", "mean": 200}, stats.expon(scale=200)),
    (
        {"dist": "lognormal", "median": 1500, "p95": 6000},
        stats.lognorm(s=math.log(4) / stats.norm.ppf(0.95), scale=1500),
    ),
    ({"dist": "lognormal", "mu": 5.0, "sigma": 0.8}, stats.lognorm(s=0.8, scale=math.exp(5.0))),
    ({"dist": "gamma", "mean": 80, "cv": 0.5}, stats.gamma(a=4, scale=20)),
    ({"dist": "gamma", "mean": 80, "cv": 2.0}, stats.gamma(a=0.25, scale=320)),
    ({"dist": "uniform", "low": 2, "high": 8}, stats.uniform(loc=2, scale=6)),
]
QS = (0.05, 0.5, 0.95, 0.99)


def models(agents: dict, **top) -> AgentModels:
    return AgentModels.from_dict({"agents": agents, **top})


def message(data: dict) -> str:
    with pytest.raises(PlanValidationError) as info:
        AgentModels.from_dict(data)
    return str(info.value)


def lat(**spec) -> dict:
    return {"latency": spec}


# ---------------------------------------------------------------- distributions


def _check_sample_law(draws: np.ndarray, dist, ref) -> None:
    n = len(draws)
    se = ref.std() / math.sqrt(n)
    assert abs(draws.mean() - ref.mean()) < Z * se, (draws.mean(), ref.mean())
    for q in QS:
        # distribution-free: the share of draws below the true q-quantile is ~ Binomial(n, q)/n
        frac = np.mean(draws <= ref.ppf(q))
        assert abs(frac - q) < Z * math.sqrt(q * (1 - q) / n), (q, frac)


@pytest.mark.parametrize("spec,ref", CASES, ids=[str(c[0]) for c in CASES])
def test_closed_forms_match_scipy(spec, ref):
    d = distribution_from_dict(spec)
    assert d.mean_ms == pytest.approx(ref.mean(), rel=1e-12)
    if isinstance(d, Gamma):
        with pytest.raises(NotImplementedError, match="no closed-form quantile"):
            d.quantile(0.5)
    else:
        for q in QS:
            assert d.quantile(q) == pytest.approx(ref.ppf(q), rel=1e-9)


@pytest.mark.parametrize("spec,ref", CASES, ids=[str(c[0]) for c in CASES])
def test_sample_matches_the_law(spec, ref):
    d = distribution_from_dict(spec)
    rng = random.Random(12345)
    _check_sample_law(np.array([d.sample(rng) for _ in range(N)]), d, ref)


@pytest.mark.parametrize("spec,ref", CASES, ids=[str(c[0]) for c in CASES])
def test_sample_array_matches_the_law(spec, ref):
    d = distribution_from_dict(spec)
    draws = d.sample_array(np.random.default_rng(54321), N)
    assert draws.shape == (N,) and draws.dtype == np.float64
    _check_sample_law(draws, d, ref)


def test_lognormal_median_p95_parametrisation_is_exact():
    d = distribution_from_dict({"dist": "lognormal", "median": 1500, "p95": 6000})
    assert d.quantile(0.5) == pytest.approx(1500, rel=1e-12)
    assert d.quantile(0.95) == pytest.approx(6000, rel=1e-12)
    assert d.to_dict() == {"dist": "lognormal", "median": 1500, "p95": 6000}
    assert d.quantile(0.0) == 0.0 and d.quantile(1.0) == math.inf


def test_constant_and_empirical():
    c = distribution_from_dict({"dist": "constant", "value": 42})
    assert c.sample(random.Random(0)) == 42.0 and c.mean_ms == 42.0 and c.quantile(0.99) == 42.0
    assert (c.sample_array(np.random.default_rng(0), 5) == 42.0).all()

    samples = [5.0, 1.0, 3.0, 3.0, 10.0, 7.5]
    e = distribution_from_dict({"dist": "empirical", "samples": samples})
    assert e.mean_ms == pytest.approx(np.mean(samples))
    for q in (0.0, 0.1, 0.5, 0.51, 0.9, 1.0):
        assert e.quantile(q) == np.quantile(samples, q, method="inverted_cdf")
    rng = random.Random(3)
    draws = np.array([e.sample(rng) for _ in range(60_000)])
    arr = e.sample_array(np.random.default_rng(3), 60_000)
    for x in set(samples):
        p = samples.count(x) / len(samples)
        tol = Z * math.sqrt(p * (1 - p) / 60_000)
        assert abs(np.mean(draws == x) - p) < tol
        assert abs(np.mean(arr == x) - p) < tol


def test_quantile_rejects_q_outside_unit_interval():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Exponential(10.0).quantile(1.5)


def test_same_seed_same_draws_for_every_distribution():
    dists = [distribution_from_dict(s) for s, _ in CASES] + [
        Constant(3.0),
        Empirical((1.0, 2.0, 9.0)),
    ]
    for d in dists:
        a, b = random.Random(99), random.Random(99)
        assert [d.sample(a) for _ in range(50)] == [d.sample(b) for _ in range(50)]
        assert np.array_equal(
            d.sample_array(np.random.default_rng(7), 50),
            d.sample_array(np.random.default_rng(7), 50),
        )
        if not isinstance(d, Constant):  # a different seed gives different draws
            a, c = random.Random(99), random.Random(100)
            assert [d.sample(a) for _ in range(50)] != [d.sample(c) for _ in range(50)]


PINNED = {  # random.Random(2024): the same on every machine and Python >= 3.11 (SPEC §4.3)
    "exponential": ({"mean": 200}, [127.00989078755269, 260.5850689395058, 72.40968775069457]),
    "lognormal": (
        {"median": 1500, "p95": 6000},
        [1318.045354300364, 2586.27909944809, 1252.5167255590156],
    ),
    "gamma": ({"mean": 80, "cv": 0.5}, [76.45895038763494, 58.46954948124675, 69.72779840563062]),
    "uniform": ({"low": 2, "high": 8}, [4.820544310586424, 6.3695857485392455, 3.8225081503481446]),
    "empirical": ({"samples": [1, 2, 3, 4]}, [4.0, 2.0, 3.0]),
}


@pytest.mark.parametrize("name", PINNED)
def test_draws_are_pinned(name):
    params, expected = PINNED[name]
    d = distribution_from_dict({"dist": name, **params})
    rng = random.Random(2024)
    assert [d.sample(rng) for _ in range(3)] == pytest.approx(expected, rel=1e-12)


def test_to_dict_round_trips_every_form():
    for spec in [s for s, _ in CASES] + [
        {"dist": "constant", "value": 0},
        {"dist": "empirical", "samples": [1, 2.5]},
    ]:
        assert distribution_from_dict(spec).to_dict() == spec
        assert distribution_from_dict(
            distribution_from_dict(spec).to_dict()
        ) == distribution_from_dict(spec)


# ---------------------------------------------------------------- action models


def test_draw_outcome_frequencies_and_hang_latency():
    m = ActionModel(Constant(10.0), error=0.2, hang=0.1)
    rng = random.Random(5)
    draws = [m.draw(rng) for _ in range(N)]
    for outcome, p in (("ok", 0.7), ("error", 0.2), ("hang", 0.1)):
        frac = sum(o == outcome for _, o in draws) / N
        assert abs(frac - p) < Z * math.sqrt(p * (1 - p) / N), outcome
    assert all(lat == math.inf for lat, o in draws if o == "hang")
    assert all(lat == 10.0 for lat, o in draws if o != "hang")

    lat_arr, code = m.draw_arrays(np.random.default_rng(5), N)
    for c, p in enumerate((0.7, 0.2, 0.1)):
        assert abs(np.mean(code == c) - p) < Z * math.sqrt(p * (1 - p) / N), OUTCOMES[c]
    assert np.isinf(lat_arr[code == 2]).all() and (lat_arr[code != 2] == 10.0).all()


def test_draw_uses_a_fixed_order_of_draws():
    """latency first, then exactly one rng.random() for the outcome, whatever the outcome."""
    m = ActionModel(Lognormal.from_median_p95(100.0, 400.0), error=0.3, hang=0.3)
    a, b = random.Random(11), random.Random(11)
    for _ in range(200):
        latency, outcome = m.draw(a)
        expected = m.latency.sample(b)
        u = b.random()
        assert outcome == ("hang" if u < 0.3 else "error" if u < 0.6 else "ok")
        assert latency == (math.inf if outcome == "hang" else expected)
    assert a.getstate() == b.getstate()


def test_action_model_is_frozen_and_picklable():
    m = ActionModel(Gamma(80.0, 0.5), error=0.1)
    with pytest.raises(AttributeError):
        m.error = 0.5  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(m)) == m
    am = AgentModels.load(DEFAULT)
    clone = pickle.loads(pickle.dumps(am))
    assert clone.resolve("tutor-agent-123", "prepare_hints") == am.resolve(
        "tutor-agent-123", "prepare_hints"
    )


# ---------------------------------------------------------------- matching


def test_exact_id_beats_any_glob_wherever_it_is_listed():
    for agents in (
        {
            "learning-agent-*": lat(dist="constant", value=1),
            "learning-agent-123": lat(dist="constant", value=2),
        },
        {
            "learning-agent-123": lat(dist="constant", value=2),
            "learning-agent-*": lat(dist="constant", value=1),
        },
    ):
        m = models(agents)
        assert m.resolve("learning-agent-123", "x").latency == Constant(2.0)
        assert m.resolve("learning-agent-9", "x").latency == Constant(1.0)


def test_most_literal_characters_wins_then_file_order():
    m = models(
        {
            "*": lat(dist="constant", value=1),
            "tutor-*": lat(dist="constant", value=2),
            "tutor-agent-*": lat(dist="constant", value=3),
            "a?c*": lat(dist="constant", value=4),
            "ab*": lat(dist="constant", value=5),
            "x[0-9]yz": lat(dist="constant", value=6),
            "x*": lat(dist="constant", value=7),
        }
    )
    assert m.match("tutor-agent-1") == "tutor-agent-*"
    assert m.match("tutor-x") == "tutor-*"
    assert m.match("other") == "*"
    assert m.match("abcd") == "a?c*"  # 2 literals each: the first listed wins
    assert m.match("x5yz") == "x[0-9]yz"  # brackets are not literal: 3 > 1
    assert m.match("Tutor-agent-1") == "*"  # case-sensitive on every platform
    swapped = models({"ab*": lat(dist="constant", value=5), "a?c*": lat(dist="constant", value=4)})
    assert swapped.match("abcd") == "ab*"
    assert m.resolve("tutor-agent-1", "a").latency == Constant(3.0)


def test_per_action_overrides_merge_over_the_agent_entry():
    m = models(
        {
            "tutor-*": {
                "capacity": 4,
                "latency": {"dist": "lognormal", "median": 1500, "p95": 6000},
                "error": 0.03,
                "hang": 0.002,
                "actions": {
                    "prepare_hints": {"error": 0.2},
                    "fast": {"latency": {"dist": "constant", "value": 5}},
                    "predict_*": {"hang": 0.5},
                    "predict_with_gpt4": {"error": 0.1},
                },
            }
        }
    )
    base = Lognormal.from_median_p95(1500.0, 6000.0)
    assert m.resolve("tutor-1", "other") == ActionModel(base, 0.03, 0.002)
    assert m.resolve("tutor-1", "prepare_hints") == ActionModel(base, 0.2, 0.002)
    assert m.resolve("tutor-1", "fast") == ActionModel(Constant(5.0), 0.03, 0.002)
    assert m.resolve("tutor-1", "predict_x") == ActionModel(base, 0.03, 0.5)
    # the exact action wins; entries do not merge with each other
    assert m.resolve("tutor-1", "predict_with_gpt4") == ActionModel(base, 0.1, 0.002)
    assert m.capacity("tutor-1") == 4
    assert m.resolve("tutor-1", "fast") is m.resolve("tutor-1", "fast")  # cached


def test_defaults_and_unlimited_capacity():
    m = models({"a": lat(dist="exponential", mean=10)})
    assert m.resolve("a", "x") == ActionModel(Exponential(10.0), 0.0, 0.0)
    assert m.capacity("a") is None


def test_unknown_agent_lists_the_patterns():
    m = models(
        {"tutor-*": lat(dist="exponential", mean=10), "speech-*": lat(dist="exponential", mean=10)}
    )
    for call in (lambda: m.resolve("learnin-agent-1", "x"), lambda: m.capacity("learnin-agent-1")):
        with pytest.raises(PlanValidationError) as info:
            call()
        assert "'learnin-agent-1'" in str(info.value) and "tutor-*, speech-*" in str(info.value)


def test_check_plan_walks_the_fallback_chain():
    m = models(
        {
            "learning-agent-*": lat(dist="exponential", mean=10),
            "tutor-*": lat(dist="exponential", mean=10),
        }
    )
    plan = Plan.model_validate(
        {
            "id": "main",
            "steps": [{"id": "s1", "agentId": "learning-agent-1", "action": "a"}],
            "fallbackPlan": {
                "id": "fb",
                "steps": [
                    {"id": "t1", "agentId": "tutor-agent-1", "action": "b"},
                    {"id": "t2", "agentId": "speech-agent-7", "action": "c"},
                ],
            },
        }
    )
    with pytest.raises(PlanValidationError) as info:
        m.check_plan(plan)
    msg = str(info.value)
    for part in ("plan 'fb'", "step 't2'", "agent 'speech-agent-7'", "learning-agent-*, tutor-*"):
        assert part in msg, (part, msg)


def test_default_models_serve_every_seed_plan():
    m = AgentModels.load(DEFAULT)
    plans = sorted((ROOT / "data" / "plans").glob("*.json"))
    assert plans
    for path in plans:
        m.check_plan(Plan.load(path))
    assert m.match("learning-agent-learner_123-1638360000000") == "learning-agent-*"
    assert m.match("agent2") == "agent*"
    # the profiles say what docs/guides/simulation.md says they say
    tutor = m.resolve("tutor-agent-123", "generate_feedback").latency
    assert tutor.quantile(0.5) == pytest.approx(1500) and tutor.quantile(0.95) == pytest.approx(
        6000
    )
    assert m.capacity("tutor-agent-123") == 4
    assert m.resolve("learning-agent-123", "predict_with_ml").latency.mean_ms < 100
    assert m.resolve("learning-agent-123", "predict_with_gpt4").latency.quantile(0.5) > 1000
    assert "ASSUMPTION" in DEFAULT.read_text()


# ---------------------------------------------------------------- validation messages


@pytest.mark.parametrize(
    "agents,parts",
    [
        (
            {"tutor-*": lat(dist="lognorm", median=1, p95=2)},
            [
                "agent 'tutor-*'",
                "unknown dist 'lognorm'",
                "did you mean 'lognormal'",
                "constant, exponential, lognormal, gamma, uniform, empirical",
            ],
        ),
        ({"a": {"latency": {"mean": 3}}}, ["agent 'a' latency", "missing 'dist'"]),
        ({"a": lat(dist="exponential")}, ["exponential is missing 'mean'"]),
        (
            {"a": lat(dist="lognormal", median=100)},
            ["lognormal is missing 'p95'", "{median, p95} or {mu, sigma}"],
        ),
        (
            {"a": lat(dist="exponential", mean=5, median=3)},
            ["exponential does not take 'median'", "{mean}"],
        ),
        ({"a": lat(dist="lognormal", median=5, sigma=1)}, ["lognormal does not take 'sigma'"]),
        (
            {"a": lat(dist="lognormal", median=1500, p95=1500)},
            ["p95 > median", "median=1500", "p95=1500"],
        ),
        ({"a": lat(dist="lognormal", median=0, p95=10)}, ["'median' must be > 0"]),
        ({"a": lat(dist="lognormal", mu=3, sigma=0)}, ["'sigma' must be > 0"]),
        ({"a": lat(dist="exponential", mean=0)}, ["'mean' must be > 0"]),
        ({"a": lat(dist="gamma", mean=-5, cv=1)}, ["'mean' must be > 0"]),
        ({"a": lat(dist="gamma", mean=5, cv=0)}, ["'cv' must be > 0"]),
        ({"a": lat(dist="constant", value=-1)}, ["'value'", ">= 0"]),
        (
            {"a": lat(dist="exponential", mean="200ms")},
            ["'mean' must be a finite number", "'200ms'"],
        ),
        ({"a": lat(dist="uniform", low=9, high=3)}, ["low <= high", "low=9", "high=3"]),
        ({"a": lat(dist="uniform", low=-1, high=3)}, ["'low'", ">= 0"]),
        ({"a": lat(dist="empirical", samples=[])}, ["non-empty list"]),
        ({"a": lat(dist="empirical", samples=[3, -1])}, [">= 0", "[-1]"]),
        (
            {"a": {**lat(dist="constant", value=1), "error": 1.5}},
            ["agent 'a'", "'error' is a probability", "[0, 1]", "got 1.5"],
        ),
        ({"a": {**lat(dist="constant", value=1), "error": 2}}, ["2% is 0.02"]),
        (
            {"a": {**lat(dist="constant", value=1), "hang": -0.1}},
            ["'hang' is a probability", "got -0.1"],
        ),
        (
            {"a": {**lat(dist="constant", value=1), "error": "0.1"}},
            ["'error' is a probability", "'0.1'"],
        ),
        (
            {"a": {**lat(dist="constant", value=1), "error": 0.7, "hang": 0.5}},
            ["error + hang = 1.2 > 1"],
        ),
        (
            {"a": {**lat(dist="constant", value=1), "capacity": 0}},
            ["'capacity' must be an integer >= 1", "got 0"],
        ),
        (
            {"a": {**lat(dist="constant", value=1), "capacity": 2.5}},
            ["'capacity' must be an integer >= 1"],
        ),
        (
            {"a": {**lat(dist="constant", value=1), "capacity": True}},
            ["'capacity' must be an integer >= 1"],
        ),
        (
            {"a": {"latncy": {"dist": "constant", "value": 1}}},
            ["agent 'a'", "unknown key 'latncy'", "did you mean 'latency'"],
        ),
        ({"a": {"error": 0.1}}, ["agent 'a'", "missing 'latency'"]),
        (
            {"a": {**lat(dist="constant", value=1), "actions": {"x": {"eror": 0.1}}}},
            ["agent 'a' action 'x'", "unknown key 'eror'", "did you mean 'error'"],
        ),
        (
            {"a": {**lat(dist="constant", value=1), "actions": {"x": {"capacity": 2}}}},
            ["agent 'a' action 'x'", "'capacity' belongs to the agent"],
        ),
        (
            {
                "a": {
                    **lat(dist="constant", value=1),
                    "actions": {"x": {"latency": {"dist": "exp"}}},
                }
            },
            ["agent 'a' action 'x' latency", "unknown dist 'exp'"],
        ),
        (
            {"a": {**lat(dist="constant", value=1), "actions": {"x": {"error": 3}}}},
            ["agent 'a' action 'x'", "'error' is a probability"],
        ),
        (
            {"a": {**lat(dist="constant", value=1), "error": 0.6, "actions": {"x": {"hang": 0.6}}}},
            ["agent 'a' action 'x'", "error + hang"],
        ),
        (
            {"a": {**lat(dist="constant", value=1), "actions": ["x"]}},
            ["'actions' must be a mapping"],
        ),
        ({"a": "fast"}, ["agent 'a'", "expected a mapping"]),
        ({5: lat(dist="constant", value=1)}, ["must be strings", "5"]),
    ],
)
def test_invalid_models_name_the_agent_and_the_fix(agents, parts):
    msg = message({"agents": agents})
    for part in parts:
        assert part in msg, (part, msg)


def test_invalid_top_level():
    assert "unknown top-level key 'agent'" in message({"agent": {}})
    assert "did you mean 'agents'" in message({"agent": {}})
    assert "'agents' must be a non-empty mapping" in message({"agents": {}})
    assert "expected a mapping" in message([])  # type: ignore[arg-type]


def test_load_errors_name_the_file(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("agents: {a: [unclosed\n")
    with pytest.raises(PlanValidationError, match="m.yaml: not valid YAML"):
        AgentModels.load(bad)
    with pytest.raises(PlanValidationError, match="cannot read agent models file"):
        AgentModels.load(tmp_path / "missing.yaml")
    typo = tmp_path / "t.json"
    typo.write_text(
        json.dumps({"agents": {"a": {"latency": {"dist": "constant", "value": 1}, "hnag": 0.1}}})
    )
    with pytest.raises(PlanValidationError, match=r"t\.json: agent 'a': unknown key 'hnag'"):
        AgentModels.load(typo)


# ---------------------------------------------------------------- files


def test_default_yaml_round_trips(tmp_path):
    m = AgentModels.load(DEFAULT)
    assert m.to_dict() == yaml.safe_load(DEFAULT.read_text())
    for name in ("copy.yaml", "copy.json"):
        m.save(tmp_path / name)
        again = AgentModels.load(tmp_path / name)
        assert again.to_dict() == m.to_dict()
        assert again.patterns == m.patterns
        for agent in ("learning-agent-123", "tutor-agent-123", "speech-agent-123", "agent1"):
            for action in ("predict_with_ml", "predict_with_gpt4", "analyze_speech", "x"):
                assert again.resolve(agent, action) == m.resolve(agent, action)
                assert again.capacity(agent) == m.capacity(agent)


# ---------------------------------------------------------------- fitting


def test_fit_recovers_lognormal_latency_and_error_rate():
    truth = {
        ("tutor-agent-1", "hint"): (Lognormal(7.0, 0.6), 0.1),
        ("tutor-agent-1", "chat"): (Lognormal(6.0, 0.3), 0.0),
        ("speech-agent-1", "analyze_speech"): (Lognormal(5.5, 0.4), 0.05),
    }
    rng = random.Random(2)
    rows = []
    for (agent, action), (dist, p_err) in truth.items():
        m = ActionModel(dist, error=p_err)
        for i in range(4000):
            latency, outcome = m.draw(rng)
            rows.append(
                {
                    "run_id": i,
                    "plan_id": "p",
                    "step_id": action,
                    "agent_id": agent,
                    "action": action,
                    "attempt": 1,
                    "queued_ms": 0.0,
                    "start_ms": 100.0,
                    "end_ms": 100.0 + latency,
                    "outcome": "succeeded" if outcome == "ok" else "error",
                    "error": None,
                }
            )
    rows.append({**rows[0], "outcome": "timeout", "end_ms": 1e9})  # censored: ignored
    fitted = AgentModels.fit(pd.DataFrame(rows))
    assert fitted.patterns == ["speech-agent-1", "tutor-agent-1"]
    for (agent, action), (dist, p_err) in truth.items():
        got = fitted.resolve(agent, action)
        se_mu = dist.sigma / math.sqrt(4000)
        assert abs(got.latency.mu - dist.mu) < Z * se_mu
        assert abs(got.latency.sigma - dist.sigma) < Z * dist.sigma / math.sqrt(2 * 4000)
        assert abs(got.error - p_err) < Z * math.sqrt(max(p_err * (1 - p_err), 1e-9) / 4000) + 1e-12
    AgentModels.from_dict(fitted.to_dict())  # a fitted model is a valid file


def test_fit_rejects_frames_it_cannot_use():
    with pytest.raises(PlanValidationError, match="lacks columns"):
        AgentModels.fit(pd.DataFrame({"agent_id": ["a"]}))
    frame = pd.DataFrame(
        {
            "agent_id": ["a"],
            "action": ["x"],
            "start_ms": [0.0],
            "end_ms": [5.0],
            "outcome": ["timeout"],
        }
    )
    with pytest.raises(PlanValidationError, match="nothing to fit"):
        AgentModels.fit(frame)
