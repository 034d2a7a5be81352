"""Overload policies (SPEC §17): the file format of admission, throttle and autoscale rules,
their errors, tune/sweep paths and the round trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import orchkit as ok
from orchkit._spec.inputs import StudyInputs, path_target

SPEC_YAML = """\
admission:
  "tutor-agent-*":
    limit: {kind: aimd, initialLimit: 10, minLimit: 1, maxLimit: 200, backoffRatio: 0.9}
    discipline: fifo
    codel: {targetMs: 50, intervalMs: 500}
    maxLength: 100
throttle: {k: 2.0, windowMs: 120000}
autoscale:
  "tutor-agent-*": {metric: in_flight, target: 4, min: 1, max: 16, pollMs: 30000,
                    provisionMs: 60000, scaleDownStabilizationMs: 300000}
"""


def test_the_spec_file_loads_and_round_trips(tmp_path):
    path = tmp_path / "overload.yaml"
    path.write_text(SPEC_YAML)
    pol = ok.Policies.load(path)
    adm = pol.admission_for("tutor-agent-3")
    assert isinstance(adm, ok.AdmissionPolicy)
    assert (adm.limit.kind, adm.limit.initial_limit, adm.limit.backoff_ratio) == ("aimd", 10, 0.9)
    assert (adm.codel.target_ms, adm.codel.interval_ms, adm.max_length) == (50, 500, 100)
    assert adm.discipline == "fifo" and adm.lifo_after == 500  # CoDel's interval
    assert pol.throttle == ok.ThrottlePolicy(k=2.0, window_ms=120_000)
    scale = pol.autoscale_for("tutor-agent-3")
    assert isinstance(scale, ok.AutoscalePolicy)
    assert (scale.target, scale.min, scale.max, scale.provision_ms) == (4, 1, 16, 60_000)
    assert pol.admission_for("learning-1") is None and pol.autoscale_for("learning-1") is None
    rules = pol.overload("learning-1")  # the throttle serves every agent
    assert rules == (None, pol.throttle, None)
    assert pol and pol.has_overload and not pol.breakers
    (tmp_path / "p.json").write_text(json.dumps(pol.to_dict()))
    assert ok.Policies.load(tmp_path / "p.json") == pol
    assert ok.Policies.from_dict(pol.to_dict()) == pol
    assert "admission" not in ok.Policies.from_dict({"breakers": {}}).to_dict()
    assert not ok.Policies.from_dict({})
    # a deployment bundle carries them
    plan = ok.Plan.model_validate(
        {"id": "p", "steps": [{"id": "s", "agentId": "tutor-agent-1", "action": "a"}]}
    )
    bundle = ok.Deployment({"p": plan}, {"tutor-agent-*": {"capacity": 2}}, pol)
    assert ok.Deployment.from_dict(bundle.to_dict()).policies == pol


def test_limit_kinds_and_defaults():
    pol = ok.Policies.from_dict(
        {
            "admission": {
                "f": {"limit": {"kind": "fixed", "limit": 8}},
                "g": {"limit": {"kind": "gradient2"}, "discipline": "adaptive_lifo"},
                "l": {"discipline": "lifo", "lifoAfterMs": 20},
            }
        }
    )
    assert pol.admission_for("f").limit == ok.FixedLimit(kind="fixed", limit=8)
    g = pol.admission_for("g").limit
    assert isinstance(g, ok.Gradient2Limit)
    assert (g.initial_limit, g.min_limit, g.max_limit) == (20, 1, 200)
    assert (g.smoothing, g.queue_size, g.long_window) == (0.2, 4, 600)
    assert pol.admission_for("g").lifo_after == 100  # no CoDel: 100 ms
    assert pol.admission_for("l").lifo_after == 20
    assert pol.admission_for("l").limit is None


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"admision": {}}, ["unknown section 'admision'", "did you mean 'admission'"]),
        ({"admission": ["t"]}, ["'admission' must map"]),
        ({"admission": {"t-*": 3}}, ["admission 't-*'", "must be a mapping"]),
        (
            {"admission": {"t-*": {"maxLenght": 3}}},
            ["admission 't-*'", "unknown key 'maxLenght'", "did you mean 'maxLength'"],
        ),
        (
            {"admission": {"t": {"limit": {"kind": "aimd", "backofRatio": 0.5}}}},
            ["admission 't'", "'limit.backofRatio'", "did you mean 'backoffRatio'"],
        ),
        (
            {"admission": {"t": {"limit": {"kind": "aimd", "backoffRatio": 1.5}}}},
            ["admission 't'", "'limit.backoffRatio'", "1.5", "use a number < 1"],
        ),
        (
            {"admission": {"t": {"limit": {"kind": "aimd", "initialLimit": 300}}}},
            ["admission 't'", "minLimit <= initialLimit <= maxLimit", "initialLimit 300"],
        ),
        (
            {"admission": {"t": {"limit": {"kind": "gradient2", "minLimit": 5, "maxLimit": 4}}}},
            ["admission 't'", "minLimit 5", "maxLimit 4"],
        ),
        (
            {"admission": {"t": {"limit": {"kind": "aimdd"}}}},
            ["'limit' needs kind: fixed, aimd or gradient2", "did you mean 'aimd'"],
        ),
        ({"admission": {"t": {"limit": {"limit": 3}}}}, ["needs kind"]),
        (
            {"admission": {"t": {"limit": {"kind": "fixed", "limit": 2.0}}}},
            ["'limit.limit'", "whole number"],
        ),
        (
            {"admission": {"t": {"discipline": "lifox"}}},
            ["'discipline'", "'fifo', 'lifo' or 'adaptive_lifo'"],
        ),
        (
            {"admission": {"t": {"codel": {"targetMS": 3}}}},
            ["'codel.targetMS'", "did you mean 'targetMs'"],
        ),
        ({"admission": {"t": {"codel": {"targetMs": 0}}}}, ["'codel.targetMs'", "> 0"]),
        ({"admission": {"t": {"maxLength": -1}}}, ["'maxLength'", ">= 0"]),
        ({"admission": {"t": {"maxLength": True}}}, ["'maxLength'", "whole number"]),
        ({"throttle": {"kk": 1}}, ["throttle", "unknown key 'kk'", "did you mean 'k'"]),
        ({"throttle": {"k": "2"}}, ["throttle", "'k'", "a number"]),
        ({"throttle": [2]}, ["'throttle' must be a mapping"]),
        ({"throttle": {"windowMs": -5}}, ["throttle", "'windowMs'", "> 0"]),
        ({"autoscale": {"t": {"target": 1}}}, ["autoscale 't'", "'max'", "required"]),
        ({"autoscale": {"t": {"target": 1, "max": 2, "min": 3}}}, ["min (3)", "max (2)"]),
        (
            {"autoscale": {"t": {"target": 1, "max": 2, "metric": "qlen"}}},
            ["'metric'", "'in_flight' or 'queue_length'"],
        ),
        (
            {"autoscale": {"t": {"target": 1, "max": 2, "polMs": 5}}},
            ["autoscale 't'", "did you mean 'pollMs'"],
        ),
    ],
)
def test_errors_name_the_section_pattern_field_and_fix(bad, words):
    with pytest.raises(ok.PlanValidationError) as err:
        ok.Policies.from_dict(bad, "pol.yaml")
    msg = str(err.value)
    assert msg.startswith("pol.yaml")
    for w in words:
        assert w in msg, (w, msg)


def test_every_parameter_is_a_tune_path():
    pol = ok.Policies.from_dict(
        {
            "admission": {
                "tutor.v2-*": {
                    "limit": {"kind": "aimd", "initialLimit": 10},
                    "codel": {"targetMs": 50},
                }
            },
            "throttle": {"k": 2},
            "autoscale": {"tutor.v2-*": {"target": 4, "max": 16}},
        }
    )
    changed = pol.with_values(
        {
            "admission.tutor.v2-*.maxLength": 7,
            "admission.tutor.v2-*.discipline": "lifo",
            "admission.tutor.v2-*.limit.backoffRatio": 0.5,
            "admission.tutor.v2-*.limit.maxLimit": 40,
            "admission.tutor.v2-*.codel.intervalMs": 250,
            "throttle.k": 1.5,
            "throttle.windowMs": 60_000,
            "autoscale.tutor.v2-*.target": 2,
            "autoscale.tutor.v2-*.provisionMs": 1000,
        }
    )
    adm = changed.admission_for("tutor.v2-1")
    assert (adm.max_length, adm.discipline) == (7, "lifo")
    assert (adm.limit.backoff_ratio, adm.limit.max_limit, adm.limit.initial_limit) == (0.5, 40, 10)
    assert (adm.codel.target_ms, adm.codel.interval_ms) == (50, 250)
    assert changed.throttle == ok.ThrottlePolicy(k=1.5, window_ms=60_000)
    sc = changed.autoscale_for("tutor.v2-1")
    assert (sc.target, sc.provision_ms, sc.max) == (2, 1000, 16)
    assert pol.admission_for("tutor.v2-1").max_length is None  # unchanged
    # a nested setting the policy did not have yet is added
    assert pol.with_values({"admission.tutor.v2-*.lifoAfterMs": 30}).admission_for(
        "tutor.v2-1"
    ).lifo_after == pytest.approx(30)
    for path, words in [
        ("admission.nope.maxLength", ["names no admission pattern", "tutor.v2-*"]),
        ("admission.tutor.v2-*.limit.x.y", ["not a path of admission"]),
        ("admission.tutor.v2-*.limit.backoffRatio.x", ["not a path of admission"]),
        ("throttle", ["not a throttle path"]),
        ("throttle.kk", ["unknown key 'kk'"]),
        ("autoscale.tutor.v2-*.tarket", ["did you mean 'target'"]),
        ("overload.x.y", ["not a policy path"]),
    ]:
        with pytest.raises(ok.PlanValidationError) as err:
            pol.with_values({path: 1})
        for w in words:
            assert w in str(err.value), (w, str(err.value))
    with pytest.raises(ok.PlanValidationError, match="'limit.backoffRatio'"):
        pol.with_values({"admission.tutor.v2-*.limit.backoffRatio": 2})
    # the front door routes these paths to the policies
    for path in ("admission.a.maxLength", "throttle.k", "autoscale.a.target"):
        assert path_target(path) == "policies"
    plan = ok.examples.plan("parallel_analysis")
    base = StudyInputs.of(plan, ok.examples.models(), policies=pol)
    moved = base.with_values({"throttle.k": 3})
    assert moved.plan is plan and moved.models is base.models
    assert moved.policies.throttle.k == 3
    with pytest.raises(ok.PlanValidationError, match="policies"):
        StudyInputs.of(plan, ok.examples.models()).with_values({"throttle.k": 3})


_ADMISSION_KEYS = ["limit", "discipline", "codel", "maxLength", "lifoAfterMs", "typo"]
_VALUES = st.one_of(
    st.integers(-3, 300), st.floats(-1, 2), st.text(max_size=3), st.none(), st.booleans()
)
_LIMITS = st.one_of(
    _VALUES,
    st.fixed_dictionaries(
        {"kind": st.sampled_from(["fixed", "aimd", "gradient2", "nope"])},
        optional={
            k: _VALUES
            for k in (
                "limit",
                "initialLimit",
                "minLimit",
                "maxLimit",
                "backoffRatio",
                "smoothing",
                "queueSize",
                "longWindow",
                "typo",
            )
        },
    ),
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "limit": _LIMITS,
            "discipline": st.sampled_from(["fifo", "lifo", "adaptive_lifo", "x", 3]),
            "codel": st.one_of(
                _VALUES,
                st.fixed_dictionaries({}, optional={"targetMs": _VALUES, "intervalMs": _VALUES}),
            ),
            "maxLength": _VALUES,
            "lifoAfterMs": _VALUES,
            "typo": _VALUES,
        },
    )
)
def test_admission_parser_accepts_or_names_the_problem(spec):
    try:
        pol = ok.Policies.from_dict({"admission": {"x-*": spec}})
    except ok.PlanValidationError as exc:
        assert "admission 'x-*'" in str(exc)
        return
    adm = pol.admission_for("x-1")
    lim = adm.limit
    if lim is not None and lim.kind != "fixed":
        assert 1 <= lim.min_limit <= lim.initial_limit <= lim.max_limit
    if lim is not None and lim.kind == "fixed":
        assert lim.limit >= 1
    assert adm.max_length is None or adm.max_length >= 0
    assert adm.lifo_after > 0
    assert ok.Policies.from_dict(pol.to_dict()) == pol


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            k: _VALUES
            for k in (
                "metric",
                "target",
                "min",
                "max",
                "pollMs",
                "provisionMs",
                "scaleDownStabilizationMs",
                "typo",
            )
        },
    ),
    st.fixed_dictionaries({}, optional={"k": _VALUES, "windowMs": _VALUES, "typo": _VALUES}),
)
def test_autoscale_and_throttle_parsers_accept_or_name_the_problem(scale, throttle):
    try:
        pol = ok.Policies.from_dict({"autoscale": {"x-*": scale}})
    except ok.PlanValidationError as exc:
        assert "autoscale 'x-*'" in str(exc)
    else:
        sc = pol.autoscale_for("x-1")
        assert 1 <= sc.min <= sc.max and sc.target > 0 and sc.poll_ms > 0
    try:
        pol = ok.Policies.from_dict({"throttle": throttle})
    except ok.PlanValidationError as exc:
        assert "throttle" in str(exc)
    else:
        assert pol.throttle.k > 0 and pol.throttle.window_ms > 0
