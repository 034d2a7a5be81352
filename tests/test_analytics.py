"""Learning analytics (SPEC §18): BKT by EM recovers known parameters, the input parser
names every bad column and row, join() labels each response with the run that served it,
outcomes() finds a learning cost of tutor timeouts that is there (and none that is not),
and the learning agent's own P(correct) stands beside BKT's on held-out learners."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import orchkit as ok

ROOT = Path(__file__).resolve().parents[1]
TRUE = {"prior": 0.2, "learn": 0.15, "guess": 0.2, "slip": 0.1}


def _load_simulator():
    spec = importlib.util.spec_from_file_location(
        "simulations.learners", ROOT / "simulations" / "learners.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


learners = _load_simulator()


# -- BKT ------------------------------------------------------------------------------------


def test_parameters_are_recovered_from_400_learners_by_20_opportunities():
    """The issue's check: prior 0.2, learn 0.15, guess 0.2, slip 0.1 -> each fitted
    parameter within ±0.05, AUC within 0.02 of the generating model's own."""
    df = learners.bkt_cohort(400, 20, **TRUE, seed=0)
    model = ok.analytics.fit_bkt(df)
    fitted = model.params.loc["skill"]
    errors = {k: abs(fitted[k] - v) for k, v in TRUE.items()}
    assert max(errors.values()) <= 0.05, (fitted.to_dict(), errors)
    truth = ok.analytics.BKTModel.from_params({"skill": TRUE})
    assert abs(model.auc(df) - truth.auc(df)) <= 0.02, (model.auc(df), truth.auc(df))
    info = model.info.loc["skill"]
    assert info["converged"] and info["restarts_agreeing"] == 5 and info["responses"] == 8000


def test_recovery_is_not_one_lucky_seed():
    """Over 20 seeded cohorts of 400 x 20: the median worst error is under 0.03 and at
    least 17 of 20 fits have every parameter within ±0.05 (the estimates' own spread:
    the prior's standard error is ~0.025 at 400 learners; measured: 18 of 20, median
    0.014, worst 0.056)."""
    worst = []
    for seed in range(20):
        df = learners.bkt_cohort(400, 20, **TRUE, seed=100 + seed)
        fitted = ok.analytics.fit_bkt(df, seed=seed).params.loc["skill"]
        worst.append(max(abs(fitted[k] - v) for k, v in TRUE.items()))
    assert np.median(worst) < 0.03, worst
    assert sum(w <= 0.05 for w in worst) >= 17, worst


def test_forgetting_is_fitted_when_asked():
    df = learners.bkt_cohort(2000, 20, **TRUE, forget=0.05, seed=3)
    fitted = ok.analytics.fit_bkt(df, forgets=True).params.loc["skill"]
    assert abs(fitted["forget"] - 0.05) <= 0.02 and abs(fitted["learn"] - 0.15) <= 0.03
    plain = ok.analytics.fit_bkt(learners.bkt_cohort(400, 20, **TRUE, seed=0), forgets=True)
    assert plain.params.loc["skill", "forget"] < 0.03  # none in the data: (almost) none fitted
    assert "forget" not in ok.analytics.fit_bkt(df).params.columns


def test_same_seed_same_numbers_and_guess_and_slip_stay_below_half():
    df = learners.bkt_cohort(300, 15, **TRUE, seed=5)
    a, b = ok.analytics.fit_bkt(df, seed=7), ok.analytics.fit_bkt(df, seed=7)
    pd.testing.assert_frame_equal(a.params, b.params)
    # answers that are coin flips, or "learning" that makes learners worse: BKT's other,
    # unidentifiable labelling is never chosen
    rng = np.random.default_rng(0)
    flips = df.assign(correct=rng.integers(0, 2, len(df)))
    upside_down = learners.bkt_cohort(500, 20, prior=0.2, learn=0.15, guess=0.8, slip=0.9, seed=1)
    for data in (flips, upside_down):
        p = ok.analytics.fit_bkt(data).params.loc["skill"]
        assert p["guess"] < 0.5 and p["slip"] < 0.5, p.to_dict()


def test_mastery_and_predict_follow_the_bkt_formulas_row_by_row():
    """Two learners, rows shuffled and indexed by labels: each row's P(correct) and
    P(mastered) are the hand-computed forward recursion, aligned with the index."""
    p = {"prior": 0.3, "learn": 0.2, "guess": 0.25, "slip": 0.1}
    model = ok.analytics.BKTModel.from_params({"add": p}, skill="concept", order="t")
    answers = {"ann": [0, 1, 1], "bob": [1, 0]}
    rows = [
        {"learner_id": who, "concept": "add", "correct": c, "t": 1000.0 * i}
        for who, seq in answers.items()
        for i, c in enumerate(seq)
    ]
    frame = pd.DataFrame(rows, index=[f"r{i}" for i in range(len(rows))]).iloc[[3, 0, 4, 2, 1]]
    expect_pc, expect_m = {}, {}
    for who, seq in answers.items():
        known = p["prior"]
        for i, c in enumerate(seq):
            label = f"r{[r['learner_id'] for r in rows].index(who) + i}"
            expect_pc[label] = known * (1 - p["slip"]) + (1 - known) * p["guess"]
            like1 = (1 - p["slip"]) if c else p["slip"]
            like0 = p["guess"] if c else (1 - p["guess"])
            post = known * like1 / (known * like1 + (1 - known) * like0)
            known = post + (1 - post) * p["learn"]
            expect_m[label] = known
    pc, m = model.predict(frame), model.mastery(frame)
    assert list(pc.index) == list(frame.index) == list(m.index)
    for label in frame.index:
        assert pc[label] == pytest.approx(expect_pc[label], abs=1e-12)
        assert m[label] == pytest.approx(expect_m[label], abs=1e-12)


def test_learners_and_cohort_count_mastery_and_wheel_spinning():
    p = {"prior": 0.1, "learn": 0.3, "guess": 0.2, "slip": 0.1}
    model = ok.analytics.BKTModel.from_params({"s": p})
    seqs = {"fast": [1, 1, 1, 1], "spinner": [0] * 12, "new": [0, 0]}
    frame = pd.DataFrame(
        [
            {"learner_id": w, "skill": "s", "correct": c, "ts_ms": float(i)}
            for w, seq in seqs.items()
            for i, c in enumerate(seq)
        ]
    )
    per = model.learners(frame)
    assert per.loc[("fast", "s"), "mastered"] and per.loc[("fast", "s"), "opportunities"] == 4
    assert per.loc[("fast", "s"), "opportunities_to_mastery"] <= 4
    assert per.loc[("fast", "s"), "wheel_spinning"] == 0.0
    assert per.loc[("spinner", "s"), "wheel_spinning"] == 1.0
    assert math.isnan(per.loc[("new", "s"), "wheel_spinning"])  # undecided after 2
    table = model.cohort(frame)
    assert table.loc["s", "mastery_rate"] == pytest.approx(1 / 3)
    assert table.loc["all", "wheel_spin_rate"] == 0.5  # of the two decided pairs


# -- the input parser -------------------------------------------------------------------------


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "learner_id": [f"L{i % 3}" for i in range(n)],
            "skill": ["add"] * n,
            "correct": [i % 2 for i in range(n)],
            "ts_ms": [float(i) for i in range(n)],
        },
        index=[100 + i for i in range(n)],
    )


BAD_CORRECT = st.sampled_from([2, -1, 0.5, "yes", None, float("nan"), "1"])
BAD_TIME = st.sampled_from([float("nan"), float("inf"), None, "soon", True])


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    n=st.integers(3, 30),
    data=st.data(),
    defect=st.sampled_from(["correct", "ts_ms", "learner_id", "missing"]),
)
def test_a_bad_frame_is_one_error_naming_the_column_and_its_rows(n, data, defect):
    frame = _frame(n).astype({"correct": object, "ts_ms": object, "learner_id": object})
    if defect == "missing":
        gone = data.draw(st.sampled_from(["learner_id", "skill", "correct", "ts_ms"]))
        with pytest.raises(ok.PlanValidationError, match=f"missing column.*'{gone}'"):
            ok.analytics.fit_bkt(frame.drop(columns=gone))
        return
    rows = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n)))
    labels = [int(frame.index[i]) for i in rows]
    for i in rows:
        value = {"correct": BAD_CORRECT, "ts_ms": BAD_TIME, "learner_id": st.just(None)}[defect]
        frame.iat[i, frame.columns.get_loc(defect)] = data.draw(value)
    with pytest.raises(ok.PlanValidationError) as err:
        ok.analytics.fit_bkt(frame)
    text = str(err.value)
    assert f"column '{defect}'" in text
    assert f"rows {', '.join(map(str, labels[:5]))}" in text
    assert f"({len(rows)} of {n} rows)" in text
    assert text.count("column '") == 1  # only the bad column is named


def test_the_parser_accepts_booleans_and_datetimes():
    frame = _frame(6)
    frame["correct"] = frame["correct"].astype(bool)
    frame["ts_ms"] = pd.to_datetime(frame["ts_ms"], unit="s", utc=True)
    model = ok.analytics.BKTModel.from_params({"add": TRUE})
    assert model.mastery(frame).notna().all()
    with pytest.raises(ok.PlanValidationError, match="no BKT parameters for skill.*'sub'"):
        model.mastery(frame.assign(skill="sub"))
    with pytest.raises(ok.PlanValidationError, match="guess and slip below 0.5"):
        ok.analytics.BKTModel.from_params({"add": {**TRUE, "guess": 0.6}})


# -- join -----------------------------------------------------------------------------------------


def _span(run, step, agent, outcome, queued, end, plan="p", hedge=False):
    return {
        "run_id": run,
        "plan_id": plan,
        "step_id": step,
        "agent_id": agent,
        "action": "a",
        "attempt": 1,
        "queued_ms": queued,
        "start_ms": queued,
        "end_ms": end,
        "outcome": outcome,
        "error": None,
        "hedge": hedge,
    }


def test_join_labels_each_response_with_its_runs_tutor_outcome_and_latency():
    spans = pd.DataFrame(
        [
            _span("ok", "score", "learning-agent-1", "succeeded", 0, 40),
            _span("ok", "hint", "tutor-agent-1", "succeeded", 40, 1240),
            _span("retry", "hint", "tutor-agent-1", "timeout", 0, 3000),
            _span("retry", "hint", "tutor-agent-1", "succeeded", 3500, 4100),
            _span("to", "hint", "tutor-agent-1", "timeout", 10, 3010),
            _span("fb", "hint", "tutor-agent-1", "error", 0, 200),
            _span("fb", "canned", "learning-agent-1", "succeeded", 200, 210, plan="fallback"),
            _span("shed", "hint", "tutor-agent-1", "shed", 5, 5),
            _span("open", "hint", "tutor-agent-1", "rejected", 0, 0),
            _span("err", "hint", "tutor-agent-1", "error", 0, 900),
            _span("hedged", "hint", "tutor-agent-1", "cancelled", 0, 700),
            _span("hedged", "hint", "tutor-agent-2", "succeeded", 300, 650, hedge=True),
            _span("solo", "score", "learning-agent-1", "succeeded", 0, 30),
        ]
    )
    runs = ["ok", "retry", "to", "fb", "shed", "open", "err", "hedged", "solo", "nowhere"]
    responses = pd.DataFrame({"run_id": runs, "learner_id": "L", "correct": 1})
    j = ok.analytics.join(responses, spans).set_index("run_id")
    assert j["outcome"].astype(str).to_dict() == {
        "ok": "ok",
        "retry": "ok",
        "to": "timeout",
        "fb": "fallback",
        "shed": "shed",
        "open": "shed",
        "err": "error",
        "hedged": "ok",
        "solo": "none",
        "nowhere": "unknown",
    }
    assert j.loc["ok", "tutor_ms"] == 1200 and j.loc["retry", "tutor_ms"] == 4100
    assert j.loc["to", "tutor_ms"] == 3000 and j.loc["hedged", "tutor_ms"] == 650
    assert math.isnan(j.loc["solo", "tutor_ms"]) and math.isnan(j.loc["nowhere", "tutor_ms"])
    assert j["hedged"].to_dict() == {r: r == "hedged" for r in runs}
    assert j.loc["retry", "tutor_attempts"] == 2
    # a Monte-Carlo study's spans, and ids of another type: one clear error
    mc = ok.monte_carlo(ok.examples.plan("parallel_analysis"), ok.examples.models(), runs=50)
    assert (
        ok.analytics.join(pd.DataFrame({"run_id": range(50)}), mc)["outcome"] != "unknown"
    ).all()
    with pytest.raises(ok.PlanValidationError, match="same ids, of the same type"):
        ok.analytics.join(pd.DataFrame({"run_id": [str(i) for i in range(50)]}), mc.spans)
    with pytest.raises(ok.PlanValidationError, match="missing column 'run_id'"):
        ok.analytics.join(pd.DataFrame({"run": [1]}), mc.spans)


# -- outcomes: the causal check ---------------------------------------------------------------

TUTOR_PLAN = {
    "id": "tutoring",
    "steps": [
        {"id": "feedback", "agentId": "tutor-agent-1", "action": "give_feedback", "timeout": 3000}
    ],
}


def _served_cohort(n_learners, n_items, learn_after_timeout, seed):
    """Tutor runs drawn from the example models (latency median 1.5 s, p95 6 s; a 3 s step
    timeout times out ~1 in 5), one per answer; learners learn with probability 0.15 after
    an answered interaction and ``learn_after_timeout`` after a timed-out one."""
    runs = n_learners * n_items
    mc = ok.monte_carlo(TUTOR_PLAN, ok.examples.models(), runs=runs, seed=seed, keep_spans=True)
    served = ok.analytics.join(pd.DataFrame({"run_id": np.arange(runs)}), mc.spans)
    timed_out = (served["outcome"] == "timeout").to_numpy().reshape(n_learners, n_items)
    learn = np.where(timed_out, learn_after_timeout, 0.15)
    cohort = learners.bkt_cohort(n_learners, n_items, **{**TRUE, "learn": learn}, seed=seed)
    cohort["run_id"] = np.arange(runs)
    return ok.analytics.join(cohort, mc.spans), timed_out.mean()


def test_outcomes_show_the_learning_that_tutor_timeouts_cost():
    joined, share = _served_cohort(2000, 20, 0.05, seed=11)
    assert 0.1 < share < 0.3
    table = ok.analytics.outcomes(joined, seed=0)
    gain = table.loc[("outcome", "timeout", "gain")]
    assert gain["diff"] < 0 and gain["diff_high"] < 0, gain.to_dict()
    ok_rate = table.loc[("outcome", "ok", "norm_gain")]
    to_rate = table.loc[("outcome", "timeout", "norm_gain")]
    assert to_rate["value"] < ok_rate["value"] and to_rate["diff_high"] < 0
    # one model for every group pulls the rates together (true: 0.15 and 0.05): the
    # difference is conservative, never exaggerated
    assert 0.05 < to_rate["value"] and ok_rate["value"] < 0.15
    assert set(table.index.get_level_values("by")) == {"outcome", "latency"}
    # the timeouts sit in the slowest latency band, which learns less than the fastest
    slowest = table.xs(("latency", "gain"), level=("by", "metric")).iloc[-1]
    assert slowest.name.startswith("≥") and slowest["diff_high"] < 0


def test_outcomes_find_no_cost_where_there_is_none():
    joined, _ = _served_cohort(2000, 20, 0.15, seed=11)
    table = ok.analytics.outcomes(joined, seed=0)
    gain = table.loc[("outcome", "timeout", "gain")]
    assert gain["diff_low"] <= 0 <= gain["diff_high"], gain.to_dict()


def test_outcomes_are_seeded_and_the_chart_draws_them():
    joined, _ = _served_cohort(200, 10, 0.05, seed=2)
    a = ok.analytics.outcomes(joined, seed=4, boot=200, by=("outcome", "latency", "hedged"))
    b = ok.analytics.outcomes(joined, seed=4, boot=200, by=("outcome", "latency", "hedged"))
    pd.testing.assert_frame_equal(a, b)
    assert set(a.columns) == {
        "n",
        "learners",
        "value",
        "ci_low",
        "ci_high",
        "diff",
        "diff_low",
        "diff_high",
    }
    fig = ok.analytics.outcomes_chart(a, metric="next_correct")
    assert len(fig.data) == 3 and [t.type for t in fig.data] == ["bar"] * 3
    assert fig.data[0].x[0].startswith("ok<br>n=")
    with pytest.raises(ok.PlanValidationError, match="metric must be one of"):
        ok.analytics.outcomes_chart(a, metric="joy")
    with pytest.raises(ok.PlanValidationError, match="call ok.analytics.join first"):
        ok.analytics.outcomes(joined.drop(columns=["outcome"]))
    edges = ok.analytics.outcomes(joined, bands=[1000, 3000], by=("latency",), boot=50)
    assert list(edges.xs("gain", level="metric").index.get_level_values("group")) == [
        "< 1,000 ms",
        "1,000–3,000 ms",
        "≥ 3,000 ms",
    ]


# -- the learning agent beside BKT ------------------------------------------------------------


def test_the_learning_agents_p_correct_and_bkts_side_by_side_on_held_out_learners():
    """The learning agent's model (a logistic regression on answer history and item
    difficulty) and BKT per concept, fitted on 80 % of a simulated cohort (400 learners x
    40 items, the repository's learner simulator), scored on the other 20 %: both near
    0.84 AUC, within 0.02 of each other (the oracle, the simulator's own P(correct), 0.92)."""
    pytest.importorskip("sklearn")
    from orchkit.agents.learning import build_training_set, fit_mastery_model

    df = learners.generate(400, 40, seed=100)
    ids = df["learner_id"].unique()
    test_ids = np.random.default_rng(0).choice(ids, size=len(ids) // 5, replace=False)
    held = df["learner_id"].isin(test_ids)
    concepts = list(learners.CONCEPTS)
    X_train, y_train = build_training_set(df[~held], concepts)
    X_test, y_test = build_training_set(df[held], concepts)
    agent = fit_mastery_model(X_train, y_train).predict_proba(X_test)[:, 1]
    bkt = ok.analytics.fit_bkt(df[~held], skill="concept", order="seq")
    from sklearn.metrics import roc_auc_score

    agent_auc, bkt_auc = roc_auc_score(y_test, agent), bkt.auc(df[held])
    oracle = roc_auc_score(df.loc[held, "correct"], df.loc[held, "p_correct"])
    print(f"held-out AUC: learning agent {agent_auc:.4f}, BKT {bkt_auc:.4f}, oracle {oracle:.4f}")
    assert 0.8 < agent_auc < oracle and 0.8 < bkt_auc < oracle
    assert abs(agent_auc - bkt_auc) < 0.02
