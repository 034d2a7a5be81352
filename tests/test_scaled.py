"""AgentModels.scaled (SPEC §13.1): what-if models. Every quantile of every latency
distribution of the matching entries is multiplied (their actions' and outages' too),
error / hang / capacity are set when given, and the original is unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import orchkit as ok

DISTS = {
    "constant": {"dist": "constant", "value": 50},
    "exponential": {"dist": "exponential", "mean": 80},
    "lognormal": {"dist": "lognormal", "median": 250, "p95": 900},
    "lognormal-mu": {"dist": "lognormal", "mu": 5.0, "sigma": 0.6},
    "gamma": {"dist": "gamma", "mean": 80, "cv": 0.5},
    "uniform": {"dist": "uniform", "low": 2, "high": 8},
    "empirical": {"dist": "empirical", "samples": [10, 20, 20, 35, 90]},
    "weibull": {"dist": "weibull", "median": 300, "p95": 1200},
    "weibull-shape": {"dist": "weibull", "shape": 1.5, "scale": 400},
}
QS = (0.05, 0.25, 0.5, 0.9, 0.95, 0.99)


def quantile(dist, q: float) -> float:
    if isinstance(dist, ok.ActionModel):
        dist = dist.latency
    if dist.name == "gamma":  # no closed form in orchkit: scipy's
        return float(stats.gamma.ppf(q, dist.shape, scale=dist.scale))
    return dist.quantile(q)


def models_of(kind: str) -> ok.AgentModels:
    spec = DISTS[kind]
    return ok.AgentModels.from_dict(
        {
            "agents": {
                "llm-*": {
                    "capacity": 4,
                    "latency": spec,
                    "error": 0.02,
                    "hang": 0.001,
                    "actions": {"summarise": {"latency": spec, "error": 0.1}, "tag": {"hang": 0}},
                    "outages": [{"startMs": 1000, "endMs": 2000, "latency": spec}],
                },
                "db": {"latency": {"dist": "constant", "value": 5}},
            }
        }
    )


@pytest.mark.parametrize("kind", list(DISTS))
@pytest.mark.parametrize("k", [2.0, 0.5, 3.7])
def test_every_quantile_of_every_distribution_kind_is_multiplied(kind, k):
    before = models_of(kind)
    saved = before.to_dict()
    after = before.scaled("llm-*", latency=k)
    assert before.to_dict() == saved  # the original is unchanged
    for action in ("ask", "summarise", "tag"):
        old, new = before.resolve("llm-1", action), after.resolve("llm-1", action)
        for q in QS:
            assert quantile(new, q) == pytest.approx(k * quantile(old, q), rel=1e-9)
        assert new.latency.mean_ms == pytest.approx(k * old.latency.mean_ms, rel=1e-9)
        assert type(new.latency) is type(old.latency)
        o_old, o_new = old.outages[0].model, new.outages[0].model  # outages' latency too
        for q in QS:
            assert quantile(o_new, q) == pytest.approx(k * quantile(o_old, q), rel=1e-9)
        assert (new.error, new.hang) == (old.error, old.hang)  # only latency was asked
    assert after.capacity("llm-1") == 4
    assert after.resolve("db", "x") == before.resolve("db", "x")  # not matched: untouched
    # and the draws scale: same seed, k times the latency
    a = before.resolve("llm-1", "ask").latency.sample_array(np.random.default_rng(1), 200)
    b = after.resolve("llm-1", "ask").latency.sample_array(np.random.default_rng(1), 200)
    assert b == pytest.approx(k * a, rel=1e-9)


def test_error_hang_and_capacity_are_set_on_the_entry_and_its_actions():
    before = models_of("lognormal")
    after = before.scaled("llm-*", error=0.05, hang=0.01, capacity=12)
    for action in ("ask", "summarise", "tag"):
        m = after.resolve("llm-7", action)
        assert (m.error, m.hang) == (0.05, 0.01)
        assert m.latency == before.resolve("llm-7", action).latency  # latency=1: as it was
        assert m.outages[0].model.error == 1.0  # an outage keeps its own (the agent is down)
    assert after.capacity("llm-7") == 12 and before.capacity("llm-7") == 4
    assert before.resolve("llm-7", "summarise").error == 0.1


def test_a_glob_scales_every_entry_it_matches_and_the_saved_file_reads_back(tmp_path):
    before = ok.examples.models()
    after = before.scaled("*", latency=2)
    for agent, action in [
        ("tutor-agent-1", "prepare_conversation"),
        ("learning-agent-1", "predict_with_rules"),
        ("speech-agent-1", "analyze_speech"),
        ("agent1", "x"),
    ]:
        old, new = before.resolve(agent, action).latency, after.resolve(agent, action).latency
        assert new.mean_ms == pytest.approx(2 * old.mean_ms)
    path = tmp_path / "slower.yaml"
    after.save(path)
    back = ok.AgentModels.load(path)
    assert back.to_dict() == after.to_dict()
    # the case: the tutor LLM got 2x slower (median 800 -> 1600, p95 3000 -> 6000)
    tutor = before.scaled("tutor-agent-*", latency=2).to_dict()["agents"]["tutor-agent-*"]
    assert tutor["actions"]["prepare_conversation"]["latency"] == {
        "dist": "lognormal",
        "median": 1600,
        "p95": 6000,
    }


def test_a_pattern_matching_no_entry_names_the_entries():
    models = ok.examples.models()
    with pytest.raises(
        ok.PlanValidationError,
        match=r"scaled\('tutor-agent-1'\) matches no agent entry \(entries: learning-agent-\*, "
        r"tutor-agent-\*, speech-agent-\*, agent\*\); did you mean 'tutor-agent-\*'",
    ):
        models.scaled("tutor-agent-1", latency=2)
    with pytest.raises(ok.PlanValidationError, match="matches no agent entry"):
        models.scaled("nobody", latency=2)


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, True, "2"])
def test_a_bad_factor_is_named(bad):
    with pytest.raises(ok.PlanValidationError, match="latency is a factor"):
        ok.examples.models().scaled("tutor-agent-*", latency=bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"error": 1.5}, "'error' is a probability"),
        ({"capacity": 0}, "'capacity' must be an integer >= 1"),
        ({"latency": 1e12}, "latencies are at most"),
    ],
)
def test_out_of_range_results_are_validated_like_a_file(kwargs, message):
    with pytest.raises(ok.PlanValidationError, match=message):
        ok.examples.models().scaled("tutor-agent-*", **kwargs)
