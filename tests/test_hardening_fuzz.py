"""Hypothesis over the whole input space of the plan parser (issue 7): random plan-shaped
dicts, mutations of valid plans, and random or mutated JSON/YAML texts and files. The only
acceptable outcomes are a valid Plan (which then round-trips through save/load unchanged) or
one PlanValidationError with a short message — never another exception, never a hang."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import orchkit as ok

SETTINGS = settings(
    max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
KEYS = [
    "id",
    "steps",
    "parallel",
    "timeout",
    "fallbackPlan",
    "maxConcurrency",
    "failFast",
    "meta",
    "agentId",
    "action",
    "input",
    "dependencies",
    "retryPolicy",
    "hedge",
    "maxRetries",
    "backoffMs",
    "strategy",
    "maxBackoffMs",
    "jitter",
    "retryOn",
    "delayMs",
    "maxHedges",
    "dependecies",
    "",
    " ",
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(
        ["a", "b", "s1", "error", "timeout", "linear", "exponential", " ", "", "5000", "yes"]
    )
    | st.text(max_size=6)
)
VALUES = st.recursive(
    SCALARS,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(KEYS), c, max_size=5),
    max_leaves=25,
)
SEEDS = [ok.examples.plan(name).to_dict() for name in ok.examples.names()]


def _judge(make) -> None:
    """Build a plan with ``make()``: a valid plan must round-trip, anything else must be a
    PlanValidationError whose message is short (a prefix of the input at most)."""
    try:
        plan = make()
    except ok.PlanValidationError as exc:
        assert len(str(exc)) < 4000, str(exc)[:200]
        return
    again = ok.Plan.model_validate(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.json"
        plan.save(path)
        assert ok.Plan.load(path) == plan


@st.composite
def mutated_seed_plan(draw):
    """A seed plan with a few random edits: a value replaced, a key dropped or added."""
    data = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        node = data
        while True:  # walk down to a random container
            children = (
                list(node.values())
                if isinstance(node, dict)
                else node
                if isinstance(node, list)
                else []
            )
            children = [c for c in children if isinstance(c, (dict, list)) and c]
            if not children or draw(st.booleans()):
                break
            node = draw(st.sampled_from(children))
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node) + KEYS))
            op = draw(st.sampled_from(["set", "drop"]))
            if op == "drop":
                node.pop(key, None)
            else:
                node[key] = draw(VALUES)
        elif isinstance(node, list) and node:
            node[draw(st.integers(0, len(node) - 1))] = draw(VALUES)
    return data


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8))
def test_random_plan_dicts(obj):
    _judge(lambda: ok.Plan.model_validate(obj))


@SETTINGS
@given(mutated_seed_plan())
def test_mutated_seed_plans(obj):
    _judge(lambda: ok.Plan.model_validate(obj))


@st.composite
def mutated_text(draw):
    """A seed plan as JSON or YAML text with random characters inserted, deleted or replaced."""
    fmt = draw(st.sampled_from(["json", "yaml"]))
    data = draw(st.sampled_from(SEEDS))
    text = json.dumps(data, indent=2) if fmt == "json" else yaml.safe_dump(data)
    chars = list(text)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(chars)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        c = draw(st.sampled_from(list("{}[]:,\"'-&*!?#|> \n\t0aé\ufeff\x00") + ["\ud800"]))
        if op == "insert":
            chars.insert(i, c)
        elif chars:
            i = min(i, len(chars) - 1)
            if op == "delete":
                del chars[i]
            else:
                chars[i] = c
    return fmt, "".join(chars)


@SETTINGS
@given(mutated_text())
def test_mutated_plan_texts(fmt_text):
    fmt, text = fmt_text
    _judge(lambda: ok.Plan.from_text(text, fmt))


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from([".json", ".yaml", ".yml"]))
def test_random_plan_files(blob, suffix):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"plan{suffix}"
        path.write_bytes(blob)
        _judge(lambda: ok.Plan.load(path))
