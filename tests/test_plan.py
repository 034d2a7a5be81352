"""The plan format (SPEC §2): validation messages, JSON/YAML in and out, seed export."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import yaml

import orchkit as ok
from orchkit import OrchkitError, Plan, PlanValidationError, SeedCompatWarning

ROOT = Path(__file__).resolve().parent.parent
SEED_PLANS = sorted((ROOT / "data" / "plans").glob("*.json"))


def S(id, **kw):
    return {"id": id, "agentId": "agent-1", "action": "act", **kw}


def rp(**kw):
    return {"maxRetries": 1, "backoffMs": 10, **kw}


def invalid(data) -> str:
    with pytest.raises(PlanValidationError) as info:
        Plan.model_validate(data)
    return str(info.value)


def chain(fallbacks: int) -> dict:
    plan = {"id": f"p{fallbacks}", "steps": [S("a")]}
    for k in range(fallbacks - 1, -1, -1):
        plan = {"id": f"p{k}", "steps": [S("a")], "fallbackPlan": plan}
    return plan


# ------------------------------------------------------------------ errors


def test_plan_validation_error_is_a_value_error_and_an_orchkit_error():
    with pytest.raises(ValueError):
        Plan.model_validate({"id": "p", "steps": []})
    with pytest.raises(OrchkitError):
        Plan.model_validate({"id": "p", "steps": []})
    assert issubclass(PlanValidationError, ValueError)
    assert issubclass(PlanValidationError, OrchkitError)


# every case: the data, then words the message must contain (plan, step, fix)
CASES = {
    "duplicate ids": ({"id": "dup", "steps": [S("a"), S("a")]}, ["'dup'", "'a'", "unique"]),
    "unknown dependency": (
        {"id": "p", "steps": [S("load"), S("score"), S("report", dependencies=["fetch"])]},
        ["'p'", "'report'", "'fetch'", "load, score, report"],
    ),
    "unknown dependency, close match": (
        {"id": "p", "steps": [S("fetch"), S("b", dependencies=["fetc"])]},
        ["'p'", "'b'", "'fetc'", "did you mean 'fetch'"],
    ),
    "self dependency": (
        {"id": "p", "steps": [S("a", dependencies=["a"])]},
        ["'p'", "'a'", "itself", "remove 'a'"],
    ),
    "two-step cycle": (
        {"id": "p", "steps": [S("a", dependencies=["b"]), S("b", dependencies=["a"])]},
        ["'p'", "cycle", "a -> b -> a", "remove"],
    ),
    "three-step cycle": (
        {
            "id": "p",
            "steps": [
                S("x"),
                S("a", dependencies=["c"]),
                S("b", dependencies=["a"]),
                S("c", dependencies=["b", "x"]),
            ],
        },
        ["'p'", "a -> b -> c -> a"],
    ),
    "typo'd step field": (
        {"id": "p", "steps": [S("a"), S("b", dependecies=["a"])]},
        ["'p'", "'b'", "'dependecies'", "did you mean 'dependencies'"],
    ),
    "typo'd plan field": (
        {"id": "p", "paralel": True, "steps": [S("a")]},
        ["'p'", "'paralel'", "did you mean 'parallel'"],
    ),
    "typo'd retry field": (
        {
            "id": "p",
            "steps": [S("a", retryPolicy={"maxRetries": 1, "backoffMs": 5, "maxBackofMs": 9})],
        },
        ["'p'", "'a'", "retryPolicy", "'maxBackofMs'", "did you mean 'maxBackoffMs'"],
    ),
    "negative step timeout": (
        {"id": "p", "steps": [S("a", timeout=-5)]},
        ["'p'", "'a'", "'timeout'", "-5", "> 0"],
    ),
    "zero step timeout": (
        {"id": "p", "steps": [S("a", timeout=0)]},
        ["'p'", "'a'", "'timeout'", "> 0"],
    ),
    "zero plan timeout": (
        {"id": "p", "timeout": 0, "steps": [S("a")]},
        ["'p'", "'timeout'", "> 0"],
    ),
    "negative backoff": (
        {"id": "p", "steps": [S("a", retryPolicy=rp(backoffMs=-1))]},
        ["'p'", "'a'", "'backoffMs'", ">= 0"],
    ),
    "negative max backoff": (
        {"id": "p", "steps": [S("a", retryPolicy=rp(maxBackoffMs=-3))]},
        ["'p'", "'a'", "'maxBackoffMs'", ">= 0"],
    ),
    "negative retries": (
        {"id": "p", "steps": [S("a", retryPolicy=rp(maxRetries=-1))]},
        ["'p'", "'a'", "'maxRetries'", ">= 0"],
    ),
    "bad retry strategy": (
        {"id": "p", "steps": [S("a", retryPolicy=rp(strategy="quadratic"))]},
        ["'p'", "'a'", "'strategy'", "'quadratic'", "'linear'", "'exponential'", "'fixed'"],
    ),
    "jitter above 1": (
        {"id": "p", "steps": [S("a", retryPolicy=rp(jitter=1.5))]},
        ["'p'", "'a'", "'jitter'", "1.5", "<= 1"],
    ),
    "bad retryOn": (
        {"id": "p", "steps": [S("a", retryPolicy=rp(retryOn=["crash"]))]},
        ["'p'", "'a'", "'retryOn'", "'error'", "'timeout'"],
    ),
    "empty steps": ({"id": "p", "steps": []}, ["'p'", "'steps'", "must not be empty"]),
    "zero maxConcurrency": (
        {"id": "p", "maxConcurrency": 0, "steps": [S("a")]},
        ["'p'", "'maxConcurrency'", ">= 1"],
    ),
    "missing action": (
        {"id": "p", "steps": [{"id": "a", "agentId": "x"}]},
        ["'p'", "'a'", "missing", "'action'"],
    ),
    "fallback chain deeper than 16": (chain(17), ["'p0'", "17", "at most 16"]),
    "error inside a fallback plan": (
        {
            "id": "main",
            "steps": [S("a")],
            "fallbackPlan": {"id": "fb", "steps": [S("x", timeOut=3)]},
        },
        ["'fb'", "'x'", "'timeOut'", "did you mean 'timeout'"],
    ),
    "cycle inside a fallback plan": (
        {
            "id": "main",
            "steps": [S("a")],
            "fallbackPlan": {
                "id": "fb",
                "steps": [S("x", dependencies=["y"]), S("y", dependencies=["x"])],
            },
        },
        ["'fb'", "x -> y -> x"],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_validation_case_names_plan_step_and_fix(name):
    data, words = CASES[name]
    message = invalid(data)
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"


def test_a_fallback_chain_of_16_is_fine():
    assert len(Plan.model_validate(chain(16)).chain()) == 17


def test_zero_backoff_and_zero_retries_are_valid():
    plan = Plan.model_validate(
        {"id": "p", "steps": [S("a", retryPolicy={"maxRetries": 0, "backoffMs": 0})]}
    )
    assert plan.steps[0].retry_policy.backoff_ms == 0


def test_snake_case_keys_and_keyword_construction_work_too():
    plan = Plan.model_validate(
        {
            "id": "p",
            "steps": [{"id": "a", "agent_id": "x", "action": "y", "timeout_ms": 5}],
            "fail_fast": True,
        }
    )
    assert plan.steps[0].agent_id == "x" and plan.steps[0].timeout_ms == 5 and plan.fail_fast
    with pytest.raises(PlanValidationError, match="cycle a -> b -> a"):
        Plan(id="p", steps=[S("a", dependencies=["b"]), S("b", dependencies=["a"])])


@pytest.mark.parametrize(
    "text, fmt, words",
    [
        ('{"id": "p", "steps": [', "json", ["not valid JSON", "line 1"]),
        ("{bad json}", "json", ["not valid JSON"]),
        ("id: [unclosed", "yaml", ["not valid YAML"]),
        ("id: p\nsteps:\n  - id: a\n   agentId: x", "yaml", ["not valid YAML"]),
        ("[1, 2]", "json", ["must be a JSON object", "list"]),
        ("just a string", "yaml", ["must be a YAML object", "str"]),
    ],
)
def test_malformed_text_is_a_plan_validation_error(text, fmt, words):
    with pytest.raises(PlanValidationError) as info:
        Plan.from_text(text, fmt, source="plan.txt")
    for word in words:
        assert word in str(info.value)
    assert "plan.txt" in str(info.value)


def test_malformed_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"id": "p", "steps": [}')
    with pytest.raises(PlanValidationError, match="broken.json: not valid JSON"):
        Plan.load(bad)
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("id: p\nsteps: [\n")
    with pytest.raises(PlanValidationError, match="broken.yaml: not valid YAML"):
        Plan.load(bad_yaml)
    with pytest.raises(PlanValidationError, match="cannot read plan file"):
        Plan.load(tmp_path / "missing.json")


def test_model_validate_json_rejects_bad_json():
    with pytest.raises(PlanValidationError):
        Plan.model_validate_json("{")
    assert (
        Plan.model_validate_json(
            '{"id": "p", "steps": [{"id": "a", "agentId": "x", "action": "y"}]}'
        ).id
        == "p"
    )


# ------------------------------------------------------------------ round trips


FULL = {
    "id": "full",
    "parallel": True,
    "timeout": 5000,
    "maxConcurrency": 2,
    "failFast": True,
    "steps": [
        S("a", input={"x": [1, 2.5, None, "s"]}),
        S(
            "b",
            dependencies=["a"],
            timeout=250.5,
            retryPolicy={
                "maxRetries": 3,
                "backoffMs": 100,
                "strategy": "exponential",
                "maxBackoffMs": 1000,
                "jitter": 0.2,
                "retryOn": ["timeout"],
            },
        ),
    ],
    "fallbackPlan": {"id": "fb", "steps": [S("z", timeout=40)], "timeout": 100},
}


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_save_then_load_gives_an_equal_plan(tmp_path, suffix):
    plan = Plan.model_validate(FULL)
    path = tmp_path / f"plan{suffix}"
    plan.save(path)
    again = Plan.load(path)
    assert again == plan
    assert again.to_dict() == plan.to_dict()
    text = path.read_text()
    on_disk = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    assert on_disk == plan.to_dict()


def test_to_dict_is_camel_case_and_in_milliseconds():
    data = Plan.model_validate(FULL).to_dict()
    assert data["maxConcurrency"] == 2 and data["failFast"] is True and data["timeout"] == 5000
    b = data["steps"][1]
    assert b["agentId"] == "agent-1" and b["timeout"] == 250.5
    assert b["retryPolicy"] == {
        "maxRetries": 3,
        "backoffMs": 100,
        "strategy": "exponential",
        "maxBackoffMs": 1000,
        "jitter": 0.2,
        "retryOn": ["timeout"],
    }
    assert data["fallbackPlan"]["timeout"] == 100
    assert Plan.model_validate(data) == Plan.model_validate(FULL)


def test_yaml_text_loads_like_json():
    text = yaml.safe_dump(FULL)
    assert Plan.from_text(text, "yaml") == Plan.model_validate(FULL)


@pytest.mark.parametrize("path", SEED_PLANS, ids=lambda p: p.stem)
def test_seed_plans_load_as_they_are_and_round_trip(path):
    raw = json.loads(path.read_text())
    plan = Plan.load(path)
    assert plan.id == raw["id"]
    assert [s.id for s in plan.steps] == [s["id"] for s in raw["steps"]]
    dumped = plan.to_dict()
    assert Plan.model_validate(dumped) == plan
    # the seed's own fields survive unchanged
    for s_raw, s_out in zip(raw["steps"], dumped["steps"]):
        for key in ("id", "agentId", "action", "input"):
            assert s_out[key] == s_raw[key]
        assert s_out.get("dependencies", []) == s_raw.get("dependencies", [])
        assert s_out.get("retryPolicy") == s_raw.get("retryPolicy")
    assert plan.to_dict(compat="seed") == dumped  # nothing to drop: no warning either


def test_the_seed_plans_are_shipped():
    assert {p.stem for p in SEED_PLANS} >= {
        "session_initialization",
        "learning_activity",
        "parallel_analysis",
        "retry_example",
        "ml_with_gpt4_fallback",
        "graceful_degradation",
    }
    fb = Plan.load(ROOT / "data/plans/ml_with_gpt4_fallback.json")
    assert [p.id for p in fb.chain()] == ["main_plan", "fallback_plan"]
    assert fb.timeout_ms == 5000 and fb.fallback_plan.timeout_ms == 10000
    retry = Plan.load(ROOT / "data/plans/retry_example.json").steps[0].retry_policy
    assert (retry.max_retries, retry.backoff_ms, retry.strategy) == (3, 1000, "linear")


def test_seed_plans_load_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in SEED_PLANS:
            Plan.load(path).to_dict(compat="seed")


# ------------------------------------------------------------------ seed export


def test_seed_export_drops_extension_fields_and_names_them():
    plan = Plan.model_validate(FULL)
    with pytest.warns(SeedCompatWarning) as caught:
        data = plan.to_dict(compat="seed")
    message = str(caught[0].message)
    for field in (
        "maxConcurrency",
        "failFast",
        "step 'b': timeout",
        "retryPolicy.strategy",
        "retryPolicy.maxBackoffMs",
        "retryPolicy.jitter",
        "retryPolicy.retryOn",
        "plan 'fb' step 'z': timeout",
    ):
        assert field in message, field
    assert "maxConcurrency" not in data and "failFast" not in data
    assert data["steps"][1]["retryPolicy"] == {"maxRetries": 3, "backoffMs": 100}
    assert "timeout" not in data["steps"][1]
    assert data["timeout"] == 5000  # the seed reads the plan timeout: kept
    assert data["fallbackPlan"] == {
        "id": "fb",
        "steps": [{"id": "z", "agentId": "agent-1", "action": "act", "input": {}}],
        "parallel": False,
        "timeout": 100,
    }
    assert sorted(plan.seed_dropped_fields()) == sorted(
        line.strip() for line in message.split(": ", 1)[1].split(", ")
    )
    # what the seed keeps still loads, and is what we had minus the extensions
    back = Plan.model_validate(data)
    assert back.steps[1].retry_policy.strategy == "linear" and back.max_concurrency is None


def test_seed_export_through_save_warns_too(tmp_path):
    with pytest.warns(SeedCompatWarning):
        Plan.model_validate(FULL).save(tmp_path / "seed.json", compat="seed")
    assert "maxConcurrency" not in json.loads((tmp_path / "seed.json").read_text())


def test_unknown_compat_is_rejected():
    with pytest.raises(ValueError, match="compat"):
        Plan.model_validate(FULL).to_dict(compat="typescript")


# ------------------------------------------------------------------ retry delays


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("linear", [100, 200, 300, 400]),
        ("exponential", [100, 200, 400, 500]),
        ("fixed", [100, 100, 100, 100]),
    ],
)
def test_retry_policy_delay_ms(strategy, expected):
    policy = ok.RetryPolicy(max_retries=4, backoff_ms=100, strategy=strategy, max_backoff_ms=500)
    assert [policy.delay_ms(k) for k in range(1, 5)] == expected
    jittered = ok.RetryPolicy(max_retries=1, backoff_ms=100, jitter=0.5)
    assert jittered.delay_ms(1, uniform=0.0) == 50 and jittered.delay_ms(1, uniform=1.0) == 150


# ------------------------------------------------------------------ bind


def _session_plan() -> Plan:
    return Plan.model_validate(
        {
            "id": "init",
            "fallbackPlan": {
                "id": "fb",
                "steps": [{"id": "f", "agentId": "learning-agent", "action": "x"}],
            },
            "steps": [
                {
                    "id": "a",
                    "agentId": "learning-agent",
                    "action": "init",
                    "input": {"sessionId": "?", "subject": "math"},
                },
                {"id": "b", "agentId": "tutor-agent", "action": "init", "dependencies": ["a"]},
            ],
        }
    )


def test_bind_sets_agents_and_inputs_without_touching_the_original():
    plan = _session_plan()
    bound = plan.bind(
        agent_ids={"learning-agent": "learning-agent-ana"},
        inputs={"a": {"sessionId": "s1", "subject": "art"}},
        timeout_ms=5000,
        fallback=False,
    )
    assert [s.agent_id for s in bound.steps] == ["learning-agent-ana", "tutor-agent"]
    assert bound.steps[0].input == {"sessionId": "s1", "subject": "art"}
    assert bound.steps[1] is plan.steps[1]  # an untouched step is shared, not copied
    assert bound.timeout_ms == 5000 and bound.fallback_plan is None
    assert [s.agent_id for s in plan.steps] == ["learning-agent", "tutor-agent"]
    assert plan.fallback_plan is not None and plan.timeout_ms is None
    # the same plan as the dict round trip the service used to make
    d = plan.to_dict()
    d["steps"][0]["agentId"] = "learning-agent-ana"
    d["steps"][0]["input"] = {"sessionId": "s1", "subject": "art"}
    d.pop("fallbackPlan")
    d["timeout"] = 5000
    assert bound == Plan.model_validate(d)
    # a deadline the plan has is kept
    assert plan.bind(timeout_ms=5000).bind(timeout_ms=9).timeout_ms == 5000


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"inputs": {"a": {"x": float("nan")}}}, ["plan 'init' step 'a' input", "x"]),
        ({"inputs": {"a": {"x": object()}}}, ["step 'a'", "x"]),
        ({"inputs": {"zz": {}}}, ["no step zz", "steps: a, b"]),
        ({"agent_ids": {"tutor-agent": "  "}}, ["step 'b'", "non-blank"]),
        ({"agent_ids": {"tutor-agent": 7}}, ["step 'b'", "non-blank"]),
        ({"timeout_ms": -1}, ["timeout_ms", "(0, 1e+12]"]),
        ({"timeout_ms": float("inf")}, ["timeout_ms"]),
    ],
)
def test_bind_rejects_what_a_plan_file_would(kwargs, words):
    with pytest.raises(PlanValidationError) as info:
        _session_plan().bind(**kwargs)
    for w in words:
        assert w in str(info.value)


async def test_a_bound_plan_runs_live():
    from orchkit.testing import ScriptedAgent

    bound = _session_plan().bind(
        agent_ids={"learning-agent": "l1", "tutor-agent": "t1"}, timeout_ms=2000, fallback=False
    )
    orch = ok.Orchestrator()
    for agent_id in ("l1", "t1"):
        await orch.register_agent(ScriptedAgent(agent_id))
    result = await orch.orchestrate(bound)
    assert result.success and result.spans["agent_id"].tolist() == ["l1", "t1"]
    records = result.span_records()  # the service's rows: plain dicts, no DataFrame
    assert [r["agent_id"] for r in records] == ["l1", "t1"]
    assert set(records[0]) == set(ok.SPAN_COLUMNS)
    await orch.shutdown()
