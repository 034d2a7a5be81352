"""Deployment bundles (SPEC §14): one strict file that loads back equal and carries tuned
capacities and policies wherever the bundle is simulated or served."""

from __future__ import annotations

import json

import pytest

import orchkit as ok
from orchkit import Deployment

POLICIES = {
    "breakers": {"tutor-agent-*": {"window": 10, "minCalls": 5, "failureRate": 0.5, "openMs": 1000}}
}


def bundle(**changes):
    kw = {
        "plans": {"session_initialization": ok.examples.plan("parallel_analysis")},
        "agents": {"tutor-agent-*": {"capacity": 3}, "learning-agent-7": {"capacity": None}},
        "policies": POLICIES,
        "models": ok.examples.models(),
        "meta": {"seed": 4, "slo": {"makespan_p95_ms": 3000}},
    }
    kw.update(changes)
    return Deployment(**kw)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_saves_and_loads_back_equal(tmp_path, suffix):
    d = bundle()
    d.save(tmp_path / f"d{suffix}")
    back = Deployment.load(tmp_path / f"d{suffix}")
    assert back == d and back.to_dict() == d.to_dict()
    assert back.plan().id == d.plan("session_initialization").id
    assert back.meta == {"seed": 4, "slo": {"makespan_p95_ms": 3000}}


def test_capacities_by_most_specific_pattern_and_in_simulation():
    d = bundle()
    assert d.capacity("tutor-agent-12") == 3
    assert d.capacity("learning-agent-7") is None and d.capacity("nobody") is None
    models = d.simulated_models()
    assert models.capacity("tutor-agent-1") == 3
    assert ok.examples.models().capacity("tutor-agent-1") != 3  # the models are not changed
    # where the bundle is simulated, its capacity binds and is never exceeded
    one = ok.Plan.model_validate(
        {"id": "ask", "steps": [{"id": "t", "agentId": "tutor-agent-123", "action": "go"}]}
    )
    mine = ok.AgentModels.from_dict(
        {
            "agents": {
                "tutor-agent-*": {"latency": {"dist": "exponential", "mean": 100}, "capacity": 8}
            }
        }
    )
    d = bundle(plans={"ask": one}, models=mine, agents={"tutor-agent-*": {"capacity": 3}})
    wl = ok.Workload(rate_per_s=25, horizon_ms=20_000)  # ρ = 0.83 at 3 slots
    mc = ok.monte_carlo(d.plan(), d.simulated_models(), seed=1, workload=wl, progress=False)
    assert mc.summary().agents.set_index("agent_id").loc["tutor-agent-123", "capacity"] == 3
    sp = mc.spans[(mc.spans["agent_id"] == "tutor-agent-123") & mc.spans["start_ms"].notna()]
    events = sorted(
        [(s, 1) for s in sp["start_ms"]] + [(e, -1) for e in sp["end_ms"]],
        key=lambda x: (x[0], x[1]),
    )
    in_flight, most = 0, 0
    for _, step in events:
        in_flight += step
        most = max(most, in_flight)
    assert most == 3  # the capacity binds (40 runs/s would need more) and is never exceeded


@pytest.mark.parametrize(
    "text, words",
    [
        (
            "plans: {a: {id: p, steps: [{id: s, agentId: x, action: y}]}}\nplanz: {}\n",
            ["unknown key 'planz'", "plans"],
        ),
        (
            "plans: {a: {id: p, steps: [{id: s, agentId: x, action: y}]}}\n"
            "agents: {x: {capacity: 0}}\n",
            ["agents.x", "capacity must be an int >= 1"],
        ),
        (
            "plans: {a: {id: p, steps: [{id: s, agentId: x, action: y}]}}\n"
            "agents: {x: {capacty: 2}}\n",
            ["did you mean 'capacity'"],
        ),
        (
            "plans: {a: {id: p, steps: [{id: s, agentId: x, action: y}]}}\n"
            "agents: {x: {capacity: true}}\n",
            ["capacity must be an int"],
        ),
        ("plans: {a: {id: p, steps: []}}\n", ["plans.a", "steps"]),
        ("plans: {}\n", ["non-empty mapping"]),
        ("agents: {}\n", ["missing required key 'plans'"]),
        (
            "plans: {a: {id: p, steps: [{id: s, agentId: x, action: y}]}}\nplans: {}\n",
            ["duplicate"],
        ),
        (
            "plans: {a: {id: p, steps: [{id: s, agentId: x, action: y}]}}\n"
            "policies: {breakers: {x: {openMs: -1}}}\n",
            ["policies", "openMs"],
        ),
        (
            "plans: {a: {id: p, steps: [{id: s, agentId: x, action: y}]}}\nmeta: [1]\n",
            ["'meta' must be a mapping"],
        ),
    ],
)
def test_loading_is_strict_and_names_the_field(tmp_path, text, words):
    path = tmp_path / "d.yaml"
    path.write_text(text)
    with pytest.raises(ok.PlanValidationError) as info:
        Deployment.load(path)
    for w in words:
        assert w in str(info.value), str(info.value)


def test_choosing_a_plan_by_role():
    p = ok.examples.plan("parallel_analysis")
    only = Deployment({"mine": p})
    assert only.plan() is only.plans["mine"]
    two = Deployment({"a": p, "b": p})
    with pytest.raises(ok.PlanValidationError, match="several plans"):
        two.plan()
    with pytest.raises(ok.PlanValidationError, match="no plan 'c'"):
        two.plan("c")
    with pytest.raises(ok.PlanValidationError, match="no models"):
        only.simulated_models()


# ------------------------------------------------------------------ produced by studies


SLOW_TUTOR = {"agents": {"tutor-agent-*": {"latency": {"dist": "exponential", "mean": 100}}}}
ASK = {"id": "ask", "steps": [{"id": "t", "agentId": "tutor-agent-123", "action": "go"}]}


def test_capacity_for_gives_a_bundle_with_its_answer_and_provenance(tmp_path):
    wl = ok.Workload(rate_per_s=25, horizon_ms=60_000)
    cp = ok.capacity_for(ASK, SLOW_TUTOR, slo={"makespan_p95_ms": 400}, workload=wl, progress=False)
    assert cp.feasible
    d = cp.deployment(role="session_initialization")
    assert d.capacity("tutor-agent-123") == cp.capacities["tutor-agent-*"]
    assert d.plan().id == "ask" and d.models is not None
    meta = d.meta["capacityFor"]
    assert meta["seed"] == 0 and meta["slo"] == {"makespan_p95_ms": "<= 400"}
    p95 = meta["predicted"]["makespan_p95_ms"]
    assert p95["ciLow"] <= p95["value"] <= p95["ciHigh"] <= 400
    d.save(tmp_path / "d.yaml")
    assert ok.Deployment.load(tmp_path / "d.yaml") == d
    # the bundle simulated predicts what capacity_for found (same seed, same workload)
    again = ok.monte_carlo(d.plan(), d.simulated_models(), seed=0, workload=wl, progress=False)
    assert again.summary()["makespan_p95_ms"] == pytest.approx(p95["value"])
    infeasible = ok.capacity_for(
        ASK, SLOW_TUTOR, slo={"makespan_p95_ms": 50}, workload=wl, progress=False
    )
    with pytest.raises(ok.PlanValidationError, match="no capacity to deploy"):
        infeasible.deployment()


def test_tune_gives_a_bundle_of_its_best_trial():
    pytest.importorskip("optuna")
    wl = ok.Workload(rate_per_s=25, horizon_ms=20_000)
    res = ok.tune(
        ASK,
        SLOW_TUTOR,
        {"agents.tutor-agent-*.capacity": ok.Int(3, 8)},
        minimize="agents.tutor-agent-*.capacity",
        constraints={"makespan_p95_ms": "<= 400"},
        trials=8,
        runs=500,
        workload=wl,
        progress=False,
    )
    d = res.deployment()
    best = res.deployment(role="session_initialization")
    tuned = d.meta["tuned"]
    assert d.capacity("tutor-agent-1") == tuned["values"]["agents.tutor-agent-*.capacity"]
    assert best.plan().meta["tuned"] == tuned and list(d.plans) == ["ask"]


# ------------------------------------------------------------------ command line


def test_cli_simulate_a_deployment_predicts_the_bundle(tmp_path, capsys):
    from orchkit.cli import main

    d = bundle(
        plans={"session_initialization": ok.Plan.model_validate(ASK)},
        models=ok.AgentModels.from_dict(SLOW_TUTOR),
        agents={"tutor-agent-*": {"capacity": 3}},
        policies=None,
    )
    d.save(tmp_path / "d.yaml")
    wl = "rate=25,horizon=20000"
    assert (
        main(["simulate", "--deployment", str(tmp_path / "d.yaml"), "--workload", wl, "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    mc = ok.monte_carlo(
        d.plan(),
        d.simulated_models(),
        seed=0,
        workload=ok.Workload(rate_per_s=25, horizon_ms=20_000),
        progress=False,
    )
    assert out["metrics"]["makespan_p95_ms"]["value"] == pytest.approx(
        mc.summary()["makespan_p95_ms"]
    )
    assert [a["capacity"] for a in out["agents"]] == [3]
    for argv, words in [
        (
            ["simulate", "--deployment", str(tmp_path / "d.yaml"), "--plan", "nope"],
            "no plan 'nope'",
        ),
        (
            ["simulate", "parallel_analysis", "--deployment", str(tmp_path / "d.yaml")],
            "drop the plan argument",
        ),
        (["simulate", "parallel_analysis", "--plan", "x"], "--plan NAME picks"),
    ]:
        assert main(argv) == 2
        assert words in capsys.readouterr().err


def test_worker_concurrency_from_a_bundle():
    from orchkit._worker import deployment_concurrency

    d = bundle()
    assert deployment_concurrency(d, ["tutor-agent-*"]) == 3
    assert deployment_concurrency(d, ["tutor-agent-9"]) == 3
    with pytest.raises(ValueError, match="gives no capacity to speech-agent-1"):
        deployment_concurrency(d, ["speech-agent-1"])
