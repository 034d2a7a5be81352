"""ok.tune (SPEC §7.1) and the plan's free-form ``meta`` (SPEC §7.2)."""

from __future__ import annotations

import json
import warnings

import pytest

import orchkit as ok

# ------------------------------------------------------------------ Plan.meta (§7.2)

META_PLAN = {"id": "m", "steps": [{"id": "a", "agentId": "x", "action": "go"}],
             "meta": {"tunedBy": "orchkit", "predicted": {"success_rate": [0.99, 0.98, 1.0]}}}


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
        ok.Plan.model_validate({**{k: v for k, v in META_PLAN.items() if k != "meta"},
                                "mata": {}})


def test_meta_is_ignored_by_the_simulator():
    models = {"agents": {"x": {"latency": {"dist": "constant", "value": 5}}}}
    bare = {k: v for k, v in META_PLAN.items() if k != "meta"}
    with_meta = ok.monte_carlo(META_PLAN, models, runs=50, seed=1, progress=False)
    without = ok.monte_carlo(bare, models, runs=50, seed=1, progress=False)
    assert with_meta.runs.equals(without.runs)
    assert json.loads(json.dumps(ok.Plan.model_validate(META_PLAN).to_dict()))["meta"]
